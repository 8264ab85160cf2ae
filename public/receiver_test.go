package public_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn/gateway"
	"ipnd/public"
	"ipnd/store"
)

// countingObserver records every outcome the receiver reports.
type countingObserver struct {
	mu     sync.Mutex
	counts map[string]int
}

func (o *countingObserver) add(k string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.counts == nil {
		o.counts = map[string]int{}
	}
	o.counts[k]++
}
func (o *countingObserver) Received(g string, _ time.Duration) { o.add("received/" + g) }
func (o *countingObserver) Duplicate(g string)                 { o.add("duplicate/" + g) }
func (o *countingObserver) Rejected(g, r string)               { o.add("rejected/" + g + "/" + r) }
func (o *countingObserver) get(k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[k]
}

type rig struct {
	srv *httptest.Server
	db  *store.DB
	obs *countingObserver
	rcv *public.Receiver
}

func newRig(t *testing.T, mod func(*public.ReceiverOptions)) *rig {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	obs := &countingObserver{}
	opts := public.ReceiverOptions{
		Gateways: []gateway.Gateway{
			mustGateway(t, gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{swSecret}}),
			mustGateway(t, gateway.Config{Name: "stripe", Kind: "stripe", Secrets: []string{"whsec_a"}}),
		},
		Store:        db,
		Observer:     obs,
		MaxBodyBytes: 1024,
	}
	if mod != nil {
		mod(&opts)
	}
	rcv := public.NewReceiver(opts)
	srv := httptest.NewServer(rcv.Handler())
	t.Cleanup(func() {
		srv.Close()
		if err := db.Check(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Error(err)
		}
		db.Close()
	})
	return &rig{srv, db, obs, rcv}
}

func (r *rig) do(t *testing.T, method, path string, h http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, r.srv.URL+path, strings.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func jsonHeader(h http.Header) http.Header {
	h.Set("Content-Type", "application/json")
	return h
}

func TestReceiverStatusCodes(t *testing.T) {
	r := newRig(t, nil)
	now := time.Now().Unix()
	body := `{"type":"payment.completed","data":{"order_id":"O1","amount":"5.00","currency":"EUR"}}`
	good := jsonHeader(webhookHeader(swSecret, "msg_1", now, body))

	cases := []struct {
		name, method, path string
		h                  http.Header
		body               string
		status             int
		count              string
	}{
		{"stored", "POST", "/ipn/test", good, body, 200, "received/test"},
		{"duplicate", "POST", "/ipn/test", good, body, 200, "duplicate/test"},
		{"unknown gateway", "POST", "/ipn/nope", good, body, 404, "rejected/_unknown/unknown_gateway"},
		{"deeper path", "POST", "/ipn/test/x", good, body, 404, "rejected/_unknown/unknown_gateway"},
		{"trailing slash is not redirected", "POST", "/ipn/test/", good, body, 404, "rejected/_unknown/unknown_gateway"},
		{"double slash is not redirected", "POST", "/ipn//test", good, body, 404, "rejected/_unknown/unknown_gateway"},
		{"GET", "GET", "/ipn/test", nil, "", 405, "rejected/test/method"},
		{"odd method", "BREW", "/ipn/test", nil, "", 405, "rejected/test/method"},
		{"too large", "POST", "/ipn/test", good, strings.Repeat("x", 2000), 413, "rejected/test/too_large"},
		{"wrong type", "POST", "/ipn/test", func() http.Header { h := good.Clone(); h.Set("Content-Type", "text/plain"); return h }(), body, 415, "rejected/test/unsupported_media_type"},
		{"forged", "POST", "/ipn/test", jsonHeader(webhookHeader(swSecret2, "msg_2", now, body)), body, 401, "rejected/test/bad_signature"},
		{"stale", "POST", "/ipn/test", jsonHeader(webhookHeader(swSecret, "msg_3", now-3600, body)), body, 401, "rejected/test/stale_timestamp"},
		{"unparsable", "POST", "/ipn/test", jsonHeader(webhookHeader(swSecret, "msg_4", now, "{{")), "{{", 400, "rejected/test/malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := r.obs.get(tc.count)
			resp, got := r.do(t, tc.method, tc.path, tc.h, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: status %d (%q), want %d", tc.method, tc.path, resp.StatusCode, got, tc.status)
			}
			if tc.status == 200 && got != "OK" {
				t.Errorf("body %q, want OK", got)
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "POST" {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
			if d := r.obs.get(tc.count) - before; d != 1 {
				t.Errorf("counter %s moved by %d, want 1 (%v)", tc.count, d, r.obs.counts)
			}
		})
	}
	if s, _ := r.db.Stats(); s.LastID != 1 {
		t.Errorf("store holds %d notifications, want exactly 1", s.LastID)
	}
	n, _, err := r.db.Get(1)
	if err != nil || string(n.Body) != body || http.Header(n.Headers).Get("Webhook-Id") != "msg_1" || n.DedupKey != "msg_1" {
		t.Errorf("stored %+v, %v", n, err)
	}
	if rej := r.rcv.Rejections(); len(rej) != 11 || rej[0].Reason != "malformed" {
		t.Errorf("remembered rejections = %+v", rej)
	}
	resp, got := r.do(t, "GET", "/healthz", nil, "")
	if resp.StatusCode != 200 || got != "ok" {
		t.Errorf("healthz = %d %q", resp.StatusCode, got)
	}
	// Requests outside /ipn/ are not counted as notifications.
	before := len(r.rcv.Rejections())
	if resp, _ := r.do(t, "POST", "/healthz", nil, ""); resp.StatusCode != 405 || len(r.rcv.Rejections()) != before {
		t.Errorf("POST /healthz = %d, counted %d", resp.StatusCode, len(r.rcv.Rejections())-before)
	}

	// The store closes (disk gone): 503, counted, nothing half-written.
	if err := r.db.Check(); err != nil {
		t.Fatal(err)
	}
	r.db.Close()
	resp, _ = r.do(t, "POST", "/ipn/test", jsonHeader(webhookHeader(swSecret, "msg_9", now, body)), body)
	if resp.StatusCode != 503 || r.obs.get("rejected/test/store_unavailable") != 1 {
		t.Errorf("closed store: status %d, counted %d; want 503, 1", resp.StatusCode, r.obs.get("rejected/test/store_unavailable"))
	}
}

func TestReceiverRateLimit(t *testing.T) {
	frozen := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC) // no refill between requests, however slow the run
	r := newRig(t, func(o *public.ReceiverOptions) {
		o.RateLimit, o.RateBurst = 1, 2
		o.Now = func() time.Time { return frozen }
	})
	statuses := []int{}
	var last *http.Response
	for i := 0; i < 3; i++ {
		last, _ = r.do(t, "POST", "/ipn/test", http.Header{"Content-Type": {"text/plain"}}, "x")
		statuses = append(statuses, last.StatusCode)
	}
	if fmt.Sprint(statuses) != "[415 415 429]" {
		t.Fatalf("statuses = %v, want [415 415 429]", statuses)
	}
	if ra := last.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	if r.obs.get("rejected/test/rate_limited") != 1 {
		t.Errorf("rate_limited counted %d times", r.obs.get("rejected/test/rate_limited"))
	}
}

func TestReceiverTrustedProxyAndAllowIPs(t *testing.T) {
	r := newRig(t, func(o *public.ReceiverOptions) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.AllowIPs = map[string][]netip.Prefix{"test": {netip.MustParsePrefix("198.51.100.0/24")}}
	})
	now := time.Now().Unix()
	body := `{"type":"payment.completed","data":{}}`
	h := jsonHeader(webhookHeader(swSecret, "m1", now, body))
	h.Set("X-Forwarded-For", "198.51.100.9, 10.0.0.1")
	// 10.0.0.1 is not a trusted proxy, so it is the client: refused.
	if resp, _ := r.do(t, "POST", "/ipn/test", h, body); resp.StatusCode != 401 {
		t.Errorf("from 10.0.0.1: status %d, want 401", resp.StatusCode)
	}
	h.Set("X-Forwarded-For", "198.51.100.9")
	if resp, _ := r.do(t, "POST", "/ipn/test", h, body); resp.StatusCode != 200 {
		t.Errorf("from 198.51.100.9: status %d, want 200", resp.StatusCode)
	}
	n, _, err := r.db.Get(1)
	if err != nil || n.RemoteAddr != "198.51.100.9" {
		t.Errorf("stored remote = %v, %v", n, err)
	}
}

// TestConcurrentPosters: 64 clients post through HTTP into one store
// (run with -race); every 200 is stored, every duplicate stored once.
func TestConcurrentPosters(t *testing.T) {
	r := newRig(t, nil)
	const clients, each = 64, 10
	now := time.Now().Unix()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("msg_%d_%d", c, i)
				body := fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":%q}}`, id)
				for k := 0; k < 2; k++ {
					req, _ := http.NewRequest("POST", r.srv.URL+"/ipn/test", bytes.NewReader([]byte(body)))
					req.Header = jsonHeader(webhookHeader(swSecret, id, now, body))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("status %d", resp.StatusCode)
					}
				}
			}
		}()
	}
	wg.Wait()
	if s, _ := r.db.Stats(); s.LastID != clients*each {
		t.Errorf("stored %d, want %d", s.LastID, clients*each)
	}
	if got := r.obs.get("received/test") + r.obs.get("duplicate/test"); got != 2*clients*each {
		t.Errorf("counted %d outcomes, want %d", got, 2*clients*each)
	}
	if r.obs.get("received/test") != clients*each {
		t.Errorf("received = %d, want %d", r.obs.get("received/test"), clients*each)
	}
}
