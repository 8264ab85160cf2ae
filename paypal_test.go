package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ipnd/admin"
)

// fakePayPal is a local server that behaves as PayPal's IPN postback
// endpoint: it checks that each postback is "cmd=_notify-validate&" + the
// exact bytes ipnd received, and answers as the test tells it.
type fakePayPal struct {
	t        *testing.T
	srv      *httptest.Server
	mu       sync.Mutex
	sent     map[string][]byte // raw IPN body by txn_id, as the test posted it
	answer   func(txn string, attempt int) (status int, body string, delay time.Duration)
	attempts map[string]int
	verified map[string]int // VERIFIED answers per txn
	mismatch atomic.Int64
	redirect atomic.Int64 // hits on the redirect target: must stay 0
}

func newFakePayPal(t *testing.T) *fakePayPal {
	f := &fakePayPal{t: t, sent: map[string][]byte{}, attempts: map[string]int{}, verified: map[string]int{}}
	f.answer = func(string, int) (int, string, time.Duration) { return 200, "VERIFIED", 0 }
	mux := http.NewServeMux()
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		f.redirect.Add(1)
		io.WriteString(w, "VERIFIED")
	})
	mux.HandleFunc("/cgi-bin/webscr", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw, ok := bytes.CutPrefix(body, []byte("cmd=_notify-validate&"))
		vals, _ := url.ParseQuery(string(raw))
		txn := vals.Get("txn_id")
		f.mu.Lock()
		if !ok || !bytes.Equal(raw, f.sent[txn]) || r.Header.Get("User-Agent") == "" ||
			r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			f.mismatch.Add(1)
		}
		f.attempts[txn]++
		n := f.attempts[txn]
		answer := f.answer
		f.mu.Unlock()
		status, text, delay := answer(txn, n)
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if status == http.StatusFound {
			http.Redirect(w, r, "/moved", http.StatusFound)
			return
		}
		if status == 200 && text == "VERIFIED" {
			f.mu.Lock()
			f.verified[txn]++
			f.mu.Unlock()
		}
		w.WriteHeader(status)
		io.WriteString(w, text)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// newDownPayPal is a fake PayPal that answers 503 until up is set, then
// VERIFIED.
func newDownPayPal(t *testing.T) (*fakePayPal, *atomic.Bool) {
	f := newFakePayPal(t)
	up := new(atomic.Bool)
	f.setAnswer(func(string, int) (int, string, time.Duration) {
		if up.Load() {
			return 200, "VERIFIED", 0
		}
		return 503, "busy", 0
	})
	return f, up
}

func (f *fakePayPal) setAnswer(a func(txn string, attempt int) (int, string, time.Duration)) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *fakePayPal) count(m map[string]int, txn string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[txn]
}

// daemon is an ipnd started through run() on a test config.
type daemon struct {
	t      *testing.T
	dir    string
	cfg    string
	cancel context.CancelFunc
	done   chan error
}

func payPalConfig(t *testing.T, dir, verifyURL string, extra string) string {
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[pipeline]
verify_timeout = "1s"
retry_base = "20ms"
retry_cap = "80ms"
retry_for = "1h"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
[[gateway]]
name = "paypal-sandbox"
kind = "paypal"
sandbox = true
verify_url = %q
receivers = ["shop@example.com"]
%s`, verifyURL, verifyURL, extra))
	return cfg
}

func startDaemon(t *testing.T, dir, cfg string) *daemon {
	t.Helper()
	os.Remove(filepath.Join(dir, "public.addr"))
	os.Remove(filepath.Join(dir, "admin.addr"))
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{t: t, dir: dir, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
	t.Cleanup(d.stop)
	waitFor(t, "ipnd listening", 10*time.Second, func() bool {
		_, err1 := os.Stat(filepath.Join(dir, "public.addr"))
		_, err2 := os.Stat(filepath.Join(dir, "admin.addr"))
		return err1 == nil && err2 == nil
	})
	return d
}

func (d *daemon) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	if err := <-d.done; err != nil {
		d.t.Errorf("serve: %v", err)
	}
}

func (d *daemon) addr(which string) string {
	b, _ := os.ReadFile(filepath.Join(d.dir, which+".addr"))
	return "http://" + strings.TrimSpace(string(b))
}

func (d *daemon) postIPN(gateway string, body []byte) int {
	d.t.Helper()
	resp, err := http.Post(d.addr("public")+"/ipn/"+gateway, "application/x-www-form-urlencoded", bytes.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (d *daemon) notification(id uint64) admin.Notification {
	d.t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/notifications/%d", d.addr("admin"), id), nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var n admin.Notification
	json.NewDecoder(resp.Body).Decode(&n)
	return n
}

func (d *daemon) waitState(id uint64, state string) admin.Notification {
	d.t.Helper()
	var n admin.Notification
	deadline := time.Now().Add(30 * time.Second)
	for {
		n = d.notification(id)
		if string(n.State) == state {
			return n
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out waiting for notification %d %s; it is %+v", id, state, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ipnBody builds a PayPal IPN the way PayPal sends it: form-encoded in
// the charset it names (windows-1252 here).
func ipnBody(fields ...string) []byte {
	base := map[string]string{"charset": "windows-1252", "txn_type": "web_accept", "payment_status": "Completed",
		"mc_gross": "19.95", "mc_currency": "USD", "receiver_email": "shop@example.com", "payer_email": "buyer@example.com",
		"invoice": "ORDER-1", "first_name": "Jos%E9", "last_name": "Doe", "payment_date": "10:00:00 Nov 24, 2026 PST"}
	order := []string{"charset", "txn_type", "payment_status", "mc_gross", "mc_currency", "receiver_email",
		"payer_email", "invoice", "first_name", "last_name", "payment_date"}
	for i := 0; i+1 < len(fields); i += 2 {
		if _, ok := base[fields[i]]; !ok {
			order = append(order, fields[i])
		}
		base[fields[i]] = fields[i+1]
	}
	var b strings.Builder
	for i, k := range order {
		if i > 0 {
			b.WriteByte('&')
		}
		v := base[k]
		if k != "first_name" { // first_name is given already percent-encoded in windows-1252
			v = url.QueryEscape(v)
		}
		b.WriteString(k + "=" + v)
	}
	return []byte(b.String())
}

func (f *fakePayPal) remember(body []byte) {
	vals, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	f.sent[vals.Get("txn_id")] = body
	f.mu.Unlock()
}

func TestPayPalPostbackOutcomes(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	fake.setAnswer(func(txn string, attempt int) (int, string, time.Duration) {
		switch {
		case txn == "T-INVALID":
			return 200, "INVALID", 0
		case strings.HasPrefix(txn, "T-503") && attempt <= 3:
			return 503, "busy", 0
		case txn == "T-SLOW" && attempt <= 2:
			return 200, "VERIFIED", 2 * time.Second // past verify_timeout
		case txn == "T-REDIRECT" && attempt <= 2:
			return http.StatusFound, "", 0
		case txn == "T-GARBAGE" && attempt <= 2:
			return 200, "<html>maintenance</html>", 0
		case txn == "T-NEVER":
			return 500, "down", 0
		}
		return 200, "VERIFIED", 0
	})
	cases := []struct {
		txn      string
		state    string
		attempts int // postbacks the fake saw
	}{
		{"T-VERIFIED", "applied", 1},
		{"T-INVALID", "invalid", 1},
		{"T-503", "applied", 4},
		{"T-SLOW", "applied", 3},
		{"T-REDIRECT", "applied", 3},
		{"T-GARBAGE", "applied", 3},
	}
	for i, tc := range cases {
		body := ipnBody("txn_id", tc.txn, "ipn_track_id", "track-"+tc.txn)
		fake.remember(body)
		if code := d.postIPN("paypal", body); code != 200 {
			t.Fatalf("%s: status %d", tc.txn, code)
		}
		n := d.waitState(uint64(i+1), tc.state)
		if got := fake.count(fake.attempts, tc.txn); got != tc.attempts {
			t.Errorf("%s: %d postbacks, want %d; history %+v", tc.txn, got, tc.attempts, n.History)
		}
		if *n.Body != string(body) {
			t.Errorf("%s: stored body differs from the posted bytes", tc.txn)
		}
	}
	if fake.mismatch.Load() != 0 {
		t.Errorf("%d postbacks were not byte-exact copies with the right headers", fake.mismatch.Load())
	}
	if fake.redirect.Load() != 0 {
		t.Errorf("the redirect was followed %d times", fake.redirect.Load())
	}
	n := d.notification(1)
	if n.Event == nil || n.Event.CustomerName != "José Doe" || n.Event.Amount != "19.95" || n.Event.OrderID != "ORDER-1" {
		t.Errorf("windows-1252 IPN normalized to %+v", n.Event)
	}

	// A notification whose postback never succeeds keeps being retried
	// with backoff (state received, attempts counted) until retry_for.
	body := ipnBody("txn_id", "T-NEVER", "ipn_track_id", "track-never")
	fake.remember(body)
	d.postIPN("paypal", body)
	waitFor(t, "several failed postbacks", 10*time.Second, func() bool {
		return d.notification(7).Attempts >= 3
	})
	if n := d.notification(7); n.State != "received" {
		t.Errorf("T-NEVER state %s, want received while retrying", n.State)
	}
}

// TestPayPalRetryAcrossRestart: VERIFIED after several 503s, with a
// restart of ipnd between two retries.
func TestPayPalRetryAcrossRestart(t *testing.T) {
	fake, up := newDownPayPal(t)
	dir := t.TempDir()
	cfg := payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", "")
	d := startDaemon(t, dir, cfg)
	body := ipnBody("txn_id", "T-R", "ipn_track_id", "track-r")
	fake.remember(body)
	d.postIPN("paypal", body)
	// Two failed attempts recorded (not merely seen by PayPal: a stop can
	// cut the recording of one short, and then it does not count).
	waitFor(t, "two failed postbacks recorded", 10*time.Second, func() bool { return d.notification(1).Attempts >= 2 })
	d.stop()
	before := fake.count(fake.attempts, "T-R")
	up.Store(true)
	d = startDaemon(t, dir, cfg)
	n := d.waitState(1, "applied")
	if fake.count(fake.verified, "T-R") != 1 || fake.count(fake.attempts, "T-R") != before+1 {
		t.Errorf("after restart: %d VERIFIED answers, %d postbacks (before restart %d); want 1 and %d",
			fake.count(fake.verified, "T-R"), fake.count(fake.attempts, "T-R"), before, before+1)
	}
	if n.Attempts < 2 {
		t.Errorf("attempts %d, want the failed ones counted", n.Attempts)
	}
}

func TestPayPalDuplicatesAndDisorder(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	post := func(fields ...string) {
		body := ipnBody(fields...)
		fake.remember(body)
		if code := d.postIPN("paypal", body); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	// 1: the same IPN twice: stored once (id 1).
	post("txn_id", "A", "ipn_track_id", "trk-1")
	post("txn_id", "A", "ipn_track_id", "trk-1")
	// 2: resent with a new track id, same txn and status: applied once.
	post("txn_id", "A", "ipn_track_id", "trk-2")
	// 3, 4: Pending then Completed for one txn: both applied.
	post("txn_id", "B", "ipn_track_id", "trk-3", "payment_status", "Pending", "pending_reason", "echeck")
	post("txn_id", "B", "ipn_track_id", "trk-4")
	// 5: a sandbox message on the live gateway: not applied.
	post("txn_id", "C", "ipn_track_id", "trk-5", "test_ipn", "1")
	// 6: paid to someone else: not applied.
	post("txn_id", "D", "ipn_track_id", "trk-6", "receiver_email", "thief@example.com")
	want := []string{"applied", "duplicate", "applied", "applied", "invalid", "invalid"}
	for i, st := range want {
		n := d.waitState(uint64(i+1), st)
		if i == 1 && n.DuplicateOf != 1 {
			t.Errorf("notification 2 duplicate_of = %d, want 1", n.DuplicateOf)
		}
	}
	if n := d.notification(3); n.Event.Status != "pending" || !strings.Contains(n.Event.GatewayStatus, "echeck") {
		t.Errorf("pending event = %+v", n.Event)
	}
	if n := d.notification(5); !strings.Contains(n.History[len(n.History)-1].Detail, "test_payment") {
		t.Errorf("test IPN history = %+v", n.History)
	}
	if d.notification(7).ID != 0 {
		t.Error("a seventh notification exists: the exact duplicate was stored twice")
	}
	// The same sandbox message on the sandbox gateway is applied.
	body := ipnBody("txn_id", "C", "ipn_track_id", "trk-5", "test_ipn", "1")
	fake.remember(body)
	d.postIPN("paypal-sandbox", body)
	d.waitState(7, "applied")

	// Replay of an applied notification changes nothing and applies nothing twice.
	req, _ := http.NewRequest("POST", d.addr("admin")+"/api/notifications/1/replay", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("replay: %v %v", err, resp)
	}
	n := d.waitState(1, "applied")
	if len(n.History) != 4 || n.History[2].Detail != "replay requested" {
		t.Errorf("history after replay = %+v", n.History)
	}
}

// TestPayPalKill9WhileVerifying: notifications wait for verification
// (PayPal answers 503) when ipnd is killed with SIGKILL; after a restart
// (PayPal back) each is verified once and applied once.
func TestPayPalKill9WhileVerifying(t *testing.T) {
	fake, up := newDownPayPal(t)
	dir := t.TempDir()
	cfg := payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", "")
	cmd, exited := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	const n = 20
	for i := 0; i < n; i++ {
		body := ipnBody("txn_id", fmt.Sprintf("K%d", i), "ipn_track_id", fmt.Sprintf("trk-k%d", i))
		fake.remember(body)
		if code := d.postIPN("paypal", body); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	waitFor(t, "every notification failed a postback", 20*time.Second, func() bool {
		for i := 0; i < n; i++ {
			if fake.count(fake.attempts, fmt.Sprintf("K%d", i)) == 0 {
				return false
			}
		}
		return true
	})
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	up.Store(true)
	startChild(t, dir, cfg)
	for id := uint64(1); id <= n; id++ {
		d.waitState(id, "applied")
	}
	for i := 0; i < n; i++ {
		txn := fmt.Sprintf("K%d", i)
		if v := fake.count(fake.verified, txn); v != 1 {
			t.Errorf("%s verified %d times, want 1", txn, v)
		}
	}
	if fake.mismatch.Load() != 0 {
		t.Errorf("%d postbacks were not byte-exact", fake.mismatch.Load())
	}
}

// holdPayPal starts ipnd with one PayPal gateway whose postbacks go to a
// fake that holds the answer for T-HOLD until release is called, and
// answers the others with answer (nil: VERIFIED). post sends an IPN.
func holdPayPal(t *testing.T, pipeline string, answer func(txn string) (int, string)) (d *daemon, fake *fakePayPal, post func(txn, order string), release func()) {
	t.Helper()
	fake = newFakePayPal(t)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[pipeline]
%s
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
`, pipeline, fake.srv.URL+"/cgi-bin/webscr"))
	held := make(chan struct{})
	release = sync.OnceFunc(func() { close(held) })
	t.Cleanup(release)
	fake.setAnswer(func(txn string, _ int) (int, string, time.Duration) {
		if txn == "T-HOLD" {
			<-held
		}
		if answer != nil {
			status, text := answer(txn)
			return status, text, 0
		}
		return 200, "VERIFIED", 0
	})
	d = startDaemon(t, dir, cfg)
	post = func(txn, order string) {
		t.Helper()
		body := ipnBody("txn_id", txn, "ipn_track_id", "track-"+txn, "invoice", order)
		fake.remember(body)
		if code := d.postIPN("paypal", body); code != 200 {
			t.Fatalf("%s: status %d", txn, code)
		}
	}
	return d, fake, post, release
}

// TestSlowPostbackDoesNotHoldOthers: while one postback hangs (PayPal slow
// to answer, within verify_timeout), the notifications received after it
// are verified and applied; the slow one is applied when its answer comes.
func TestSlowPostbackDoesNotHoldOthers(t *testing.T) {
	d, fake, post, release := holdPayPal(t, `verify_timeout = "60s"`, nil)
	post("T-HOLD", "ORDER-HOLD")
	waitFor(t, "the slow postback under way", 10*time.Second, func() bool { return fake.count(fake.attempts, "T-HOLD") == 1 })
	post("T-A", "ORDER-A")
	post("T-B", "ORDER-B")
	d.waitState(2, "applied")
	d.waitState(3, "applied")
	if n := d.notification(1); n.State != "received" || n.Attempts != 0 {
		t.Fatalf("slow one while its postback hangs: state %s, %d attempts; want received, 0", n.State, n.Attempts)
	}
	release()
	d.waitState(1, "applied")
	if got := fake.count(fake.attempts, "T-HOLD"); got != 1 {
		t.Errorf("T-HOLD: %d postbacks, want 1 (the slow one was not asked again meanwhile)", got)
	}
	// The cursor has passed all three: a restart processes nothing again.
	d.stop()
	d = startDaemon(t, d.dir, d.cfg)
	body := ipnBody("txn_id", "T-C", "ipn_track_id", "track-T-C", "invoice", "ORDER-C")
	fake.remember(body)
	d.postIPN("paypal", body)
	d.waitState(4, "applied")
	for _, txn := range []string{"T-HOLD", "T-A", "T-B"} {
		if got := fake.count(fake.attempts, txn); got != 1 {
			t.Errorf("%s: %d postbacks after a restart, want 1", txn, got)
		}
	}
}

// TestFailedPostbackBehindSlowOneKeepsBackoff: a postback that fails while
// an earlier one hangs is retried on its schedule (an hour here), not at
// every step while the cursor waits at the slow one.
func TestFailedPostbackBehindSlowOneKeepsBackoff(t *testing.T) {
	d, fake, post, release := holdPayPal(t, "verify_timeout = \"60s\"\nretry_base = \"1h\"\nretry_cap = \"1h\"",
		func(txn string) (int, string) {
			if txn == "T-FAIL" {
				return 503, "busy"
			}
			return 200, "VERIFIED"
		})
	post("T-HOLD", "ORDER-HOLD")
	waitFor(t, "the slow postback under way", 10*time.Second, func() bool { return fake.count(fake.attempts, "T-HOLD") == 1 })
	post("T-FAIL", "ORDER-FAIL")
	waitFor(t, "the failed postback recorded", 10*time.Second, func() bool { return d.notification(2).Attempts == 1 })
	// Each of these takes at least one more pipeline step.
	post("T-OK1", "ORDER-OK1")
	d.waitState(3, "applied")
	post("T-OK2", "ORDER-OK2")
	d.waitState(4, "applied")
	if got := fake.count(fake.attempts, "T-FAIL"); got != 1 {
		t.Errorf("T-FAIL: %d postbacks with retry_base 1h, want 1", got)
	}
	release()
	d.waitState(1, "applied")
	if n := d.notification(2); n.State != "received" || n.Attempts != 1 {
		t.Errorf("T-FAIL after the cursor passed: state %s, %d attempts; want received, 1 (retry in an hour)", n.State, n.Attempts)
	}
}
