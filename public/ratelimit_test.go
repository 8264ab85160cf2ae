package public_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/public"
)

// from is a request header set naming the client behind the trusted
// loopback proxy.
func from(addr string) http.Header {
	return http.Header{"X-Forwarded-For": {addr}, "Content-Type": {"text/plain"}}
}

// limitedRig is a receiver with a frozen clock (no bucket refills between
// requests, however slow the run), rate 1/s, burst 2, that believes the
// loopback proxy's X-Forwarded-For.
func limitedRig(t *testing.T, clk *clock, mod func(*public.ReceiverOptions)) *rig {
	return newRig(t, func(o *public.ReceiverOptions) {
		o.RateLimit, o.RateBurst = 1, 2
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.Now = clk.Now
		if mod != nil {
			mod(o)
		}
	})
}

func statuses(t *testing.T, r *rig, path string, hs ...http.Header) string {
	t.Helper()
	var got []string
	for _, h := range hs {
		resp, _ := r.do(t, "POST", path, h, "x")
		got = append(got, fmt.Sprint(resp.StatusCode))
	}
	return strings.Join(got, " ")
}

// TestRateLimitIPv6SharesA64: one host owns a whole /64; spreading its
// requests over addresses in it does not buy more than one bucket.
func TestRateLimitIPv6SharesA64(t *testing.T) {
	r := limitedRig(t, &clock{now: time.Unix(1_800_000_000, 0)}, nil)
	got := statuses(t, r, "/ipn/test", from("2001:db8:1:2::1"), from("2001:db8:1:2::2"),
		from("2001:db8:1:2:ffff:ffff:ffff:ffff"), from("2001:db8:1:2:1234::9"))
	if got != "415 415 429 429" {
		t.Errorf("four addresses of one /64: statuses %s, want 415 415 429 429", got)
	}
	// The next /64, and an IPv4 client, have buckets of their own.
	if got := statuses(t, r, "/ipn/test", from("2001:db8:1:3::1"), from("192.0.2.7")); got != "415 415" {
		t.Errorf("another /64 and an IPv4 client: %s, want 415 415", got)
	}
	if n := r.obs.get("rejected/test/rate_limited"); n != 2 {
		t.Errorf("rate_limited counted %d, want 2", n)
	}
}

// TestRateLimitFullTableResetsNobody: a limited client stays limited
// while thousands of other addresses pass, far more than the table holds.
func TestRateLimitFullTableResetsNobody(t *testing.T) {
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	r := limitedRig(t, clk, func(o *public.ReceiverOptions) { o.RateKeys = 64 })
	abuser := from("203.0.113.66")
	if got := statuses(t, r, "/ipn/test", abuser, abuser, abuser); got != "415 415 429" {
		t.Fatalf("abuser: %s, want 415 415 429", got)
	}
	for i := 0; i < 2000; i++ {
		r.do(t, "POST", "/ipn/test", from(fmt.Sprintf("10.%d.%d.1", i/256, i%256)), "x")
		if i%250 == 0 {
			if got := statuses(t, r, "/ipn/test", abuser); got != "429" {
				t.Fatalf("after %d other clients the abuser got %s, want 429 (its bucket was reset)", i+1, got)
			}
		}
	}
	if got := statuses(t, r, "/ipn/test", abuser); got != "429" {
		t.Fatalf("after 2000 other clients the abuser got %s, want 429", got)
	}
	// Once its bucket has refilled the abuser is served again.
	clk.Set(clk.Now().Add(3 * time.Second))
	if got := statuses(t, r, "/ipn/test", abuser); got != "415" {
		t.Errorf("abuser after 3 s: %s, want 415", got)
	}
}

// TestRateLimitCountsEveryIPNRequest: unknown gateway names, other
// methods and known gateways all spend from the same client bucket, and
// a limited request to an unknown name is counted under _unknown.
func TestRateLimitCountsEveryIPNRequest(t *testing.T) {
	r := limitedRig(t, &clock{now: time.Unix(1_800_000_000, 0)}, nil)
	scanner := from("198.51.100.200")
	if got := statuses(t, r, "/ipn/wp-login", scanner, scanner, scanner); got != "404 404 429" {
		t.Errorf("unknown gateway: %s, want 404 404 429", got)
	}
	if n := r.obs.get("rejected/_unknown/rate_limited"); n != 1 {
		t.Errorf("rejected{gateway=_unknown,reason=rate_limited} = %d, want 1 (%v)", n, r.obs.counts)
	}
	// The scanner's bucket is empty for the known gateway too, and for
	// any method or deeper path.
	if got := statuses(t, r, "/ipn/test", scanner); got != "429" {
		t.Errorf("known gateway after the scan: %s, want 429", got)
	}
	for _, tc := range []struct{ method, path string }{{"GET", "/ipn/test"}, {"BREW", "/ipn/test"}, {"POST", "/ipn/a/b"}} {
		if resp, _ := r.do(t, tc.method, tc.path, scanner, ""); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: %d (Retry-After %q), want 429 with Retry-After", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if n := r.obs.get("rejected/_unknown/unknown_gateway"); n != 2 {
		t.Errorf("unknown_gateway counted %d, want 2", n)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if s == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("log line %q: %v", s, err)
		}
		out = append(out, m)
	}
	return out
}

// TestRejectionLogIsBoundedUnderAFlood: a scanner's thousands of refused
// requests give at most one log line per gateway label and reason per
// interval, and the next line counts what was not logged; every
// rejection is still counted.
func TestRejectionLogIsBoundedUnderAFlood(t *testing.T) {
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	logs := &lockedBuffer{}
	r := limitedRig(t, clk, func(o *public.ReceiverOptions) {
		o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		o.RejectLogEvery = 10 * time.Second
	})
	const flood = 3000
	for i := 0; i < flood; i++ {
		// 1000 addresses, three requests each: the third is rate limited.
		r.do(t, "POST", fmt.Sprintf("/ipn/scan-%d", i), from(fmt.Sprintf("10.9.%d.%d", i%1000/250, i%250)), "x")
	}
	lines := logs.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d log lines for %d rejected requests, want 2 (one per reason); first: %v", len(lines), flood, lines[:min(len(lines), 3)])
	}
	counted := r.obs.get("rejected/_unknown/unknown_gateway") + r.obs.get("rejected/_unknown/rate_limited")
	if counted != flood || r.obs.get("rejected/_unknown/rate_limited") != 1000 {
		t.Errorf("counted %d rejections (%v), want %d with 1000 rate limited", counted, r.obs.counts, flood)
	}
	// After the interval, one line per reason carries the suppressed count.
	clk.Set(clk.Now().Add(10 * time.Second))
	r.do(t, "POST", "/ipn/scan", from("10.10.0.1"), "x")
	lines = logs.lines(t)
	last := lines[len(lines)-1]
	if len(lines) != 3 || last["reason"] != "unknown_gateway" || last["suppressed"] != float64(2000-1) {
		t.Errorf("line after the interval = %v (of %d), want reason unknown_gateway with suppressed 1999", last, len(lines))
	}
}
