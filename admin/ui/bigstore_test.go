package ui_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
)

// TestDashboardOldOrderAmongMany: with thousands of payments stored
// (more than 5,000 outbox items after the one looked at), the order page
// of the first order lists its emails and callbacks, and the order
// filter and the search find its notification. The page used to read
// only the newest 5,000 outbox items.
func TestDashboardOldOrderAmongMany(t *testing.T) {
	srv, db, _ := newDashboard(t)
	ran := runPipeline(t, db)
	const n = 3000
	var batch []*ipn.Notification
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":"O%d","txn_id":"T%d","amount":"1.00","currency":"USD","customer_email":"c%d@example.com"}}`, i, i, i)
		batch = append(batch, &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(), ContentType: "application/json",
			Body: []byte(body), DedupKey: fmt.Sprint("m", i)})
	}
	if err := db.BulkAppend(batch); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); db.Cursor() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline processed %d of %d", db.Cursor(), n)
		}
		select {
		case err := <-ran:
			t.Fatalf("pipeline stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	all, err := db.ListOutbox("", 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	var first []uint64
	newer := 0
	for _, it := range all {
		if it.Effect.OrderID == "O1" {
			first = append(first, it.ID)
		}
	}
	for _, it := range all {
		if len(first) > 0 && it.ID > first[len(first)-1] {
			newer++
		}
	}
	if len(first) == 0 || newer <= 5000 {
		t.Fatalf("order O1 has outbox items %v with %d newer; the test needs some and more than 5,000 newer", first, newer)
	}
	c := browser(t)
	csrf := signIn(t, srv, c)
	resp, page := do(t, c, "GET", srv.URL+"/orders/O1", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("order page: %d", resp.StatusCode)
	}
	for _, id := range first {
		if !strings.Contains(page, fmt.Sprintf(`href="/outbox/%d"`, id)) {
			t.Errorf("the order page of O1 does not list its outbox item %d (%d items of other orders are newer)", id, newer)
		}
	}
	// The order filter and the search find its notification, id 1.
	for _, probe := range []struct {
		method, path string
		form         url.Values
	}{{"GET", "/notifications?order=O1", nil}, {"POST", "/notifications", url.Values{"csrf": {csrf}, "q": {"C1@EXAMPLE.COM"}}},
		{"POST", "/notifications", url.Values{"csrf": {csrf}, "q": {"T1"}}}} {
		resp, page := do(t, c, probe.method, srv.URL+probe.path, probe.form)
		if resp.StatusCode != 200 || !strings.Contains(page, `href="/notifications/1"`) || strings.Contains(page, `href="/notifications/2"`) {
			t.Errorf("%s %s %v: %d; want notification 1 and no other", probe.method, probe.path, probe.form.Get("q"), resp.StatusCode)
		}
	}
}

// TestDashboardTimeRange: the notifications list keeps to the days
// asked for (UTC, both included), and its next page link keeps them.
func TestDashboardTimeRange(t *testing.T) {
	srv, db, _ := newDashboard(t)
	days := []time.Time{time.Date(2026, 11, 1, 23, 59, 0, 0, time.UTC), time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 2, 23, 59, 59, 0, time.UTC), time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)}
	for i, at := range days {
		body := fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":"O%d","txn_id":"T%d","amount":"1.00","currency":"USD"}}`, i, i)
		if _, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: at,
			ContentType: "application/json", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	c := browser(t)
	signIn(t, srv, c)
	for q, want := range map[string]string{"from=2026-11-02&to=2026-11-02": "2,3", "from=2026-11-02": "2,3,4",
		"to=2026-11-01": "1", "from=2026-11-04": "", "from=2026-11-01&to=2026-11-03&gateway=test": "1,2,3,4"} {
		resp, page := do(t, c, "GET", srv.URL+"/notifications?"+q, nil)
		var got []string
		for id := 1; id <= 4; id++ {
			if strings.Contains(page, fmt.Sprintf(`href="/notifications/%d"`, id)) {
				got = append(got, fmt.Sprint(id))
			}
		}
		if resp.StatusCode != 200 || strings.Join(got, ",") != want {
			t.Errorf("/notifications?%s: %d, notifications %v, want %s", q, resp.StatusCode, got, want)
		}
	}
	if _, page := do(t, c, "GET", srv.URL+"/notifications?from=yesterday", nil); !strings.Contains(page, "A date is YYYY-MM-DD.") {
		t.Error("a bad date is not said")
	}
}

// runPipeline processes what db stores (gateway "test", Standard
// Webhooks) until the test ends; the channel gets Run's error if it
// stops before.
func runPipeline(t *testing.T, db pipeline.Journal) <-chan error {
	t.Helper()
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := pipeline.New(pipeline.Options{Journal: db, Gateways: []gateway.Gateway{g}, BatchDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ran, done := make(chan error, 1), make(chan struct{})
	go func() { ran <- p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ran
}
