package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/admin/ui"
	"ipnd/ipn"
	"ipnd/store"
)

// postDecision posts body to path with the admin token and an
// Idempotency-Key, and returns the status and the answer.
func postDecision(t *testing.T, srv *httptest.Server, path, body, key string) (int, DecisionAnswer, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans DecisionAnswer
	json.Unmarshal(b, &ans)
	return resp.StatusCode, ans, string(b)
}

// TestIdempotencyKeyWithAnotherBody: an Idempotency-Key sent again with
// another body for the same order and decision (another note's text)
// answered 200 "repeated" and silently dropped the second request; it
// is refused (409), as a key reused for another order or decision is.
// The same body again is still the repeat it was.
func TestIdempotencyKeyWithAnotherBody(t *testing.T) {
	srv, _ := newAPI(t)
	req, _ := http.NewRequest("POST", srv.URL+"/api/orders", strings.NewReader(
		`{"id":"K-1","amount":"5.00","currency":"USD","customer_email":"kim@example.com"}`))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create order: %d", resp.StatusCode)
	}
	if st, ans, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"first"}`, "k-1"); st != 200 || ans.Repeated {
		t.Fatalf("first note: %d %s", st, b)
	}
	if st, ans, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"first"}`, "k-1"); st != 200 || !ans.Repeated {
		t.Fatalf("the same note again: %d %s, want 200 repeated", st, b)
	}
	st, ans, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"second, another one"}`, "k-1")
	if st != http.StatusConflict || !strings.Contains(b, "idempotency key reused") {
		t.Errorf("the key again with another note: %d repeated=%v %s, want 409", st, ans.Repeated, b)
	}
	if st, _, b := postDecision(t, srv, "/api/orders/K-1/cancel", `{"note":"x"}`, "k-1"); st != http.StatusConflict {
		t.Errorf("the key again for a cancel: %d %s, want 409", st, b)
	}
	if st, _, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"k"}`, strings.Repeat("k", 256)); st != http.StatusBadRequest {
		t.Errorf("a 256-byte key: %d %s, want 400", st, b)
	}
}

// openStream opens GET /api/events and returns the response once its
// first line arrived (or the refusal).
func openStream(t *testing.T, srv *httptest.Server) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == 200 {
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	return resp
}

// TestEventFollowersBounded: every GET /api/events held a goroutine, a
// connection and a buffer of 256 events, without a bound: idle
// followers could pile up until memory or file descriptors ran out.
// Past store.MaxFollowers at once a follower is refused (503 with
// Retry-After, counted); when one leaves, a new one is taken.
func TestEventFollowersBounded(t *testing.T) {
	srv, db := newAPI(t)
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	for range store.MaxFollowers {
		resp := openStream(t, srv)
		if resp.StatusCode != 200 {
			t.Fatalf("follower %d: %d", len(open)+1, resp.StatusCode)
		}
		open = append(open, resp)
	}
	resp := openStream(t, srv)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("follower %d: %d (Retry-After %q), want 503 with Retry-After", store.MaxFollowers+1, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if db.LiveFollowers() != store.MaxFollowers || db.LiveRefused() != 1 {
		t.Errorf("followers %d refused %d, want %d and 1", db.LiveFollowers(), db.LiveRefused(), store.MaxFollowers)
	}
	open[0].Body.Close()
	open = open[1:]
	deadline := time.Now().Add(10 * time.Second)
	for db.LiveFollowers() >= store.MaxFollowers {
		if time.Now().After(deadline) {
			t.Fatal("a follower that left is still counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp = openStream(t, srv)
	open = append(open, resp)
	if resp.StatusCode != 200 {
		t.Errorf("a follower after one left: %d, want 200", resp.StatusCode)
	}
}

// signInVia posts the dashboard's sign-in form through "a proxy on
// loopback" (the test's client) for the client at xff, with
// X-Forwarded-Proto proto ("" none).
func signInVia(t *testing.T, srv *httptest.Server, token, xff, proto string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/login", strings.NewReader("token="+token))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-For", xff)
	if proto != "" {
		req.Header.Set("X-Forwarded-Proto", proto)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "ipnd_session" {
			return c
		}
	}
	return nil
}

// TestAdminBehindProxy: behind a TLS-terminating proxy on the same
// machine every client of the admin listener was 127.0.0.1: one
// stranger's wrong tokens locked the merchant out (429), and the
// session cookie was never Secure. With admin.trusted_proxies naming the
// proxy, the wrong-token limit is per client (X-Forwarded-For from the
// proxy) and the cookie is Secure when the proxy says https
// (X-Forwarded-Proto); from any other peer those headers are ignored.
func TestAdminBehindProxy(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/ipnd.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok", TrustedProxies: loopback}))
	defer srv.Close()
	for range 15 {
		signInVia(t, srv, "guess", "203.0.113.9", "https")
	}
	if resp := signInVia(t, srv, "guess", "203.0.113.9", "https"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the stranger's 16th wrong token: %d, want 429", resp.StatusCode)
	}
	resp := signInVia(t, srv, "tok", "198.51.100.7", "https")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the merchant behind the same proxy: %d, want 303 (not locked out by the stranger)", resp.StatusCode)
	}
	if c := sessionCookie(resp); c == nil || !c.Secure {
		t.Errorf("cookie over https at the proxy: %+v, want Secure", c)
	}
	if c := sessionCookie(signInVia(t, srv, "tok", "198.51.100.7", "")); c == nil || c.Secure {
		t.Errorf("cookie without X-Forwarded-Proto: %+v, want not Secure (plain HTTP, the SSH tunnel)", c)
	}
	// Spoofed headers from a peer that is not a trusted proxy change nothing.
	db2, err := store.Open(t.TempDir()+"/ipnd.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	direct := httptest.NewServer(Handler(Options{Store: db2, Token: "tok"}))
	defer direct.Close()
	for i := range 15 {
		signInVia(t, direct, "guess", "203.0.113."+strconv.Itoa(i), "https")
	}
	if resp := signInVia(t, direct, "tok", "198.51.100.7", "https"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("untrusted peer with a new X-Forwarded-For each time: %d, want 429 (the header is not believed)", resp.StatusCode)
	}
}

type swapHandler struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *swapHandler) set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }
func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	h.ServeHTTP(w, r)
}

// TestEventsEndWhenTokenRotated: rotating a leaked admin token (a
// config reload with another) refused the old one everywhere but on an
// event stream already open: ipnd tail with the old token went on
// receiving every order id and transition. The stream ends now.
func TestEventsEndWhenTokenRotated(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/ipnd.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sessions := ui.NewSessions(0)
	h := &swapHandler{h: Handler(Options{Store: db, Token: "tok", Sessions: sessions})}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp := openStream(t, srv)
	defer resp.Body.Close()
	h.set(Handler(Options{Store: db, Token: "rotated", Sessions: sessions}))
	if _, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
		Body: []byte("{}"), DedupKey: "after-rotation"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(resp.Body); got <- string(b) }() // ends when the server ends the stream
	select {
	case b := <-got:
		if strings.Contains(b, "data:") {
			t.Errorf("the old token's stream got an event after the rotation:\n%s", b)
		}
	case <-time.After(10 * time.Second):
		t.Error("the old token's stream is still open 10 s after the rotation and an event")
	}
}

// TestIdempotencyKeyExpires: a key is remembered store.IdempotencyTTL
// (24 hours): within it the same request is a repeat, past it the key
// is free again (a new decision).
func TestIdempotencyKeyExpires(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/ipnd.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok", Now: clock}))
	defer srv.Close()
	o, err := ipn.NewRegisteredOrder("X-1", "5.00", "USD", "x@example.com", "", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	if st, ans, b := postDecision(t, srv, "/api/orders/X-1/notes", `{"text":"one"}`, "day-key"); st != 200 || ans.Repeated {
		t.Fatalf("note: %d %s", st, b)
	}
	mu.Lock()
	now = now.Add(store.IdempotencyTTL - time.Minute)
	mu.Unlock()
	if st, ans, b := postDecision(t, srv, "/api/orders/X-1/notes", `{"text":"one"}`, "day-key"); st != 200 || !ans.Repeated {
		t.Fatalf("the same note within 24 hours: %d %s, want a repeat", st, b)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if st, ans, b := postDecision(t, srv, "/api/orders/X-1/notes", `{"text":"two"}`, "day-key"); st != 200 || ans.Repeated {
		t.Fatalf("the key after 24 hours with another note: %d %s, want a new decision", st, b)
	}
}

// TestDNSRebindingRefused: a web page whose name the attacker points at
// 127.0.0.1 (DNS rebinding) reached the loopback admin listener from the
// merchant's browser as a same-origin page: no session cookie, but its
// wrong tokens (on /login or /api) counted against the merchant's
// address, and an open /metrics was readable. Over plain HTTP, where
// the admin listener is always on loopback, a request for a name other
// than localhost or an IP address is refused (421) before anything
// else; over TLS (the certificate must match) and from a trusted proxy
// any name is taken.
func TestDNSRebindingRefused(t *testing.T) {
	srv, _ := newAPI(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	send := func(srv *httptest.Server, method, path, host string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader("token=guess"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Host = host
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port} {
		for _, p := range []string{"/login", "/api/orders"} {
			method := "POST"
			if p == "/api/orders" {
				method = "GET"
			}
			if st := send(srv, method, p, host); st != http.StatusMisdirectedRequest {
				t.Errorf("%s %s for Host %q: %d, want 421", method, p, host, st)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port, "LOCALHOST", "admin.localhost:" + port} {
		if st := send(srv, "GET", "/login", host); st != http.StatusOK {
			t.Errorf("GET /login for Host %q: %d, want 200", host, st)
		}
	}
	db, err := store.Open(t.TempDir()+"/ipnd.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tlsSrv := httptest.NewTLSServer(Handler(Options{Store: db, Token: "tok"}))
	defer tlsSrv.Close()
	if st := send(tlsSrv, "GET", "/login", "pay.example.com:8081"); st != http.StatusOK {
		t.Errorf("over TLS, Host pay.example.com: %d, want 200", st)
	}
	proxied := httptest.NewServer(Handler(Options{Store: db, Token: "tok",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}))
	defer proxied.Close()
	if st := send(proxied, "GET", "/login", "admin.example.com"); st != http.StatusOK {
		t.Errorf("from a trusted proxy, Host admin.example.com: %d, want 200", st)
	}
}
