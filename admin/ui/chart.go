package ui

import (
	"fmt"
	"html/template"
	"slices"
	"strings"
	"sync"
	"time"
)

// The overview's charts add up the hourly counts the store keeps
// (store.HourCounts): 720 per gateway for 30 days, whatever the store
// holds. The counts are kept while the log and the pipeline's cursor
// stay where they were, for chartCacheFor at most (the hour and day bars
// move on).
const chartCacheFor = time.Minute

// counts is received / applied / invalid in one bar.
type counts struct{ Received, Applied, Invalid int }

// gatewayStats is one gateway's bars: 24 hours and 30 days, oldest first.
type gatewayStats struct {
	Gateway string
	Hours   [24]counts
	Days    [30]counts
	Total24 counts
	Total30 counts
}

type chartStats struct {
	At        time.Time
	Gateways  []*gatewayStats
	Scanned   int
	Truncated bool // some bars incomplete (never, since the hourly counts)
}

type statsCache struct {
	mu   sync.Mutex
	last *chartStats
	mark [2]uint64 // the log's newest id and the pipeline's cursor then
}

// get returns the counts, from the cache while nothing was stored or
// processed since, for chartCacheFor at most.
func (c *statsCache) get(db Store, now time.Time) (*chartStats, error) {
	st, err := db.Stats()
	if err != nil {
		return nil, fmt.Errorf("chart counts: %w", err)
	}
	mark := [2]uint64{st.LastID, db.Cursor()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && mark == c.mark && now.Sub(c.last.At) < chartCacheFor && !now.Before(c.last.At) {
		return c.last, nil
	}
	s, err := countLog(db, now)
	if err != nil {
		return nil, err
	}
	c.last, c.mark = s, mark
	return s, nil
}

func countLog(db Store, now time.Time) (*chartStats, error) {
	s := &chartStats{At: now}
	by := map[string]*gatewayStats{}
	hourStart := now.Truncate(time.Hour)
	dayStart := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	hours, err := db.HourCounts(dayStart.AddDate(0, 0, -29))
	if err != nil {
		return nil, fmt.Errorf("chart counts: %w", err)
	}
	for _, hc := range hours {
		age := dayStart.Sub(hc.Hour)
		day := 29
		if age > 0 {
			day = 29 - int((age-1)/(24*time.Hour)) - 1
		}
		if day < 0 || hc.Hour.After(now) {
			continue
		}
		g := by[hc.Gateway]
		if g == nil {
			g = &gatewayStats{Gateway: hc.Gateway}
			by[hc.Gateway] = g
		}
		s.Scanned += hc.Received
		add := func(c *counts) {
			c.Received += hc.Received
			c.Applied += hc.Applied
			c.Invalid += hc.Invalid
		}
		add(&g.Days[day])
		add(&g.Total30)
		if h := int(hourStart.Sub(hc.Hour) / time.Hour); h >= 0 && h < 24 {
			add(&g.Hours[23-h])
			add(&g.Total24)
		}
	}
	return finish(s, by), nil
}

func finish(s *chartStats, by map[string]*gatewayStats) *chartStats {
	for _, g := range by {
		s.Gateways = append(s.Gateways, g)
	}
	slices.SortFunc(s.Gateways, func(a, b *gatewayStats) int { return strings.Compare(a.Gateway, b.Gateway) })
	return s
}

// barChart draws bars of received (with the applied and invalid parts
// inside each) as an SVG; the colours come from style.css classes.
func barChart(title string, bars []counts, labels []string) template.HTML {
	const w, h, pad = 600, 120, 18
	top := 1
	for _, b := range bars {
		top = max(top, b.Received)
	}
	bw := float64(w) / float64(len(bars))
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s">`, w, h+pad, template.HTMLEscapeString(title))
	fmt.Fprintf(&sb, `<title>%s</title>`, template.HTMLEscapeString(title))
	fmt.Fprintf(&sb, `<line class="axis" x1="0" y1="%d" x2="%d" y2="%d"/>`, h, w, h)
	for i, b := range bars {
		x := float64(i)*bw + 1
		bar := func(class string, n, base int) {
			if n == 0 {
				return
			}
			bh := float64(n) / float64(top) * float64(h-4)
			y := float64(h) - float64(base)/float64(top)*float64(h-4) - bh
			fmt.Fprintf(&sb, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d %s</title></rect>`,
				class, x, y, bw-2, bh, template.HTMLEscapeString(labels[i]), n, class)
		}
		other := b.Received - b.Applied - b.Invalid
		bar("applied", b.Applied, 0)
		bar("invalid", b.Invalid, b.Applied)
		bar("other", other, b.Applied+b.Invalid)
		if i%max(1, len(bars)/6) == 0 {
			fmt.Fprintf(&sb, `<text class="label" x="%.1f" y="%d">%s</text>`, x, h+pad-4, template.HTMLEscapeString(labels[i]))
		}
	}
	fmt.Fprintf(&sb, `<text class="label" x="3" y="11">max %d</text>`, top)
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

func hourLabels(now time.Time) []string {
	out := make([]string, 24)
	start := now.Truncate(time.Hour).Add(-23 * time.Hour)
	for i := range out {
		out[i] = start.Add(time.Duration(i) * time.Hour).UTC().Format("15:00")
	}
	return out
}

func dayLabels(now time.Time) []string {
	out := make([]string, 30)
	start := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location()).AddDate(0, 0, -29)
	for i := range out {
		out[i] = start.AddDate(0, 0, i).Format("Jan 2")
	}
	return out
}
