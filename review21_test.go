package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestCLIEscapesTerminalControls: text from outside (an order id a
// buyer chose, as PayPal's invoice or Stripe's client_reference_id, a
// notification's reason, the shop's answer to a callback) reached the
// merchant's terminal as it was through ipnd tail, ipnd orders, ipnd ls
// and ipnd outbox show: an ESC sequence in it could retitle the
// window, clear the screen, move the cursor over earlier lines or hide
// text. Control characters (C0 but tab and newline, DEL, C1) are now
// printed as visible escapes.
func TestCLIEscapesTerminalControls(t *testing.T) {
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, "upstream down\x1b[2J\x1b]0;owned\x07\r\u009b31m")
	}))
	defer shop.Close()
	d, post := webhookDaemon(t, fmt.Sprintf("[shop]\nurl = %q\nsecret = \"whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz\"\n"+
		"timeout = \"5s\"\nmax_attempts = 1\n", shop.URL))
	env := envFunc()
	evil := "E-1\x1b]0;owned\x07\x1b[1A\x1b[2K"
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"tail", "-config", d.cfg, "-n", "3"}, env, &stdout, &stderr) }()
	waitFor(t, "ipnd tail connected", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "following events") })
	if st := post("esc1", "payment.completed", map[string]any{"order_id": evil, "txn_id": "T\x1b[31mX", "amount": "5.00",
		"currency": "EUR", "status": "completed"}); st != 200 {
		t.Fatalf("post: %d", st)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("tail printed only:\n%q", stdout.String())
	}
	var items []ipn.OutboxItem
	waitFor(t, "the callback dead", 20*time.Second, func() bool {
		items = outboxOf(t, d, evil)
		return len(items) > 0 && items[0].State == ipn.OutboxDead
	})
	outputs := map[string]string{"tail": stdout.String()}
	for name, args := range map[string][]string{
		"orders":      {"orders", "-config", d.cfg},
		"ls":          {"ls", "-config", d.cfg},
		"outbox":      {"outbox", "-config", d.cfg, "dead"},
		"outbox show": {"outbox", "show", "-config", d.cfg, fmt.Sprint(items[0].ID)},
	} {
		out, errOut, code := runCode(t, env, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d %s", name, code, errOut)
		}
		outputs[name] = out
	}
	for name, out := range outputs {
		if strings.ContainsAny(out, "\x1b\x07\r\u009b") {
			t.Errorf("%s printed raw control characters:\n%q", name, out)
		}
		if !strings.Contains(out, `E-1\x1b]0;owned\x07`) {
			t.Errorf("%s does not show the order id with its escapes visible:\n%s", name, out)
		}
	}
	if !strings.Contains(outputs["outbox show"], `upstream down\x1b[2J`) {
		t.Errorf("outbox show does not show the shop's answer:\n%s", outputs["outbox show"])
	}
}

// dashSession is a browser signed in to the dashboard.
type dashSession struct {
	c    *http.Client
	base string
}

func signInDashboard(t *testing.T, d *daemon) *dashSession {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	s := &dashSession{base: d.addr("admin"), c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if st, _ := s.post(t, "/login", url.Values{"token": {"t"}}); st != http.StatusSeeOther {
		t.Fatalf("sign in: %d", st)
	}
	return s
}

func (s *dashSession) post(t *testing.T, path string, form url.Values) (int, string) {
	req, _ := http.NewRequest("POST", s.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.c.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *dashSession) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := s.c.Get(s.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d\n%s", path, resp.StatusCode, b)
	}
	return string(b)
}

// formField is the value of the first hidden input name after the
// form's action in page.
func formField(t *testing.T, page, action, name string) string {
	t.Helper()
	i := strings.Index(page, `action="`+action+`"`)
	if i < 0 {
		t.Fatalf("no form %s in the page", action)
	}
	m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(page[i:])
	if m == nil {
		t.Fatalf("form %s has no %s", action, name)
	}
	return html.UnescapeString(m[1])
}

// TestConcurrentDashboardDecisions: two signed-in browsers look at the
// same order in review; one clicks Approve (twice, a double click), the
// other Cancel (twice), all at once. One decision wins, once: one
// transition in the history, at most one payment email and one shop
// callback of its kind; the others are told the order changed (409) or
// are the double click's repeat.
func TestConcurrentDashboardDecisions(t *testing.T) {
	d, post, _, shop := decisionDaemon(t, "")
	d.api("POST", "/api/orders", map[string]any{"id": "CC-1", "amount": "20.00", "currency": "USD", "customer_email": "cat@example.com"}, nil)
	if st := post("cc1", "payment.completed", map[string]any{"txn_id": "TX-CC", "order_id": "CC-1", "amount": "2.00",
		"currency": "USD", "status": "completed", "customer_email": "cat@example.com"}); st != 200 {
		t.Fatalf("post: %d", st)
	}
	waitOrder(t, d, "CC-1", ipn.OrderReview)
	settled(t, d, "CC-1")
	a, b := signInDashboard(t, d), signInDashboard(t, d)
	forms := map[*dashSession]url.Values{}
	for s, decision := range map[*dashSession]string{a: "approve", b: "cancel"} {
		page := s.get(t, "/orders/CC-1")
		action := "/orders/CC-1/decide"
		f := url.Values{"decision": {decision}, "csrf": {formField(t, page, action, "csrf")},
			"version": {formField(t, page, action, "version")}, "key": {formField(t, page, action, "key")}}
		if decision == "cancel" { // the cancel form is after the approve one: its own key
			i := strings.Index(page, `value="cancel"`)
			f.Set("key", regexp.MustCompile(`name="key" value="([^"]*)"`).FindAllStringSubmatch(page[:i], -1)[1][1])
		}
		forms[s] = f
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string][]int{}
	for range 2 {
		for s, f := range forms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, _ := s.post(t, "/orders/CC-1/decide", f)
				mu.Lock()
				statuses[f.Get("decision")] = append(statuses[f.Get("decision")], st)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	items := settled(t, d, "CC-1")
	var o ipn.Order
	d.api("GET", "/api/orders/CC-1", nil, &o)
	decisions := 0
	for _, h := range o.History {
		if h.By == "admin" {
			decisions++
		}
	}
	if decisions != 1 || (o.Status != ipn.OrderPaid && o.Status != ipn.OrderCanceled) {
		t.Fatalf("after approve and cancel at once: %s with %d decisions in the history, want one (%v)\n%+v", o.Status, decisions, statuses, o.History)
	}
	winner := map[ipn.OrderStatus]string{ipn.OrderPaid: "approve", ipn.OrderCanceled: "cancel"}[o.Status]
	for decision, sts := range statuses {
		for _, st := range sts {
			if decision == winner && st != http.StatusSeeOther && st != http.StatusConflict {
				t.Errorf("%s (won): HTTP %d", decision, st)
			}
			if decision != winner && st != http.StatusConflict {
				t.Errorf("%s (lost): HTTP %d, want 409", decision, st)
			}
		}
	}
	paidMails := 0
	for _, it := range items {
		if it.Effect.Template == ipn.TemplatePaymentReceived {
			paidMails++
		}
	}
	types := shopTypes(shop, "CC-1")
	if o.Status == ipn.OrderPaid && (paidMails != 1 || count(types, "order.paid") != 1 || count(types, "order.canceled") != 0) {
		t.Errorf("approved: %d payment emails, shop got %v; want 1 and one order.paid", paidMails, types)
	}
	if o.Status == ipn.OrderCanceled && (paidMails != 0 || count(types, "order.canceled") != 1 || count(types, "order.paid") != 0) {
		t.Errorf("canceled: %d payment emails, shop got %v; want none and one order.canceled", paidMails, types)
	}
}

// TestForensicsEscapedAndNotLogged: what a failing shop answered and
// what a failing script wrote to stderr is kept for the admin (the
// first and the last KiB), shown on the dashboard as text (never
// markup), and never written to the log, at any level.
func TestForensicsEscapedAndNotLogged(t *testing.T) {
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `<script>alert(1)</script> shop-said-secret `+strings.Repeat("x", 3000))
	}))
	defer shop.Close()
	dir := t.TempDir()
	script := filepath.Join(dir, "notify.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nhead -c 3000 /dev/zero | tr '\\0' y >&2\necho '<img src=x onerror=alert(2)> script-said-secret' >&2\nexit 4\n"), 0o700)
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "debug"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[shop]
url = %q
secret = "whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz"
command = [%q]
timeout = "5s"
max_attempts = 1
`, shop.URL, script))
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, &logs) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "ipnd listening", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "admin.addr"))
		return err == nil
	})
	d := &daemon{t: t, dir: dir, cfg: cfg}
	post := signedPoster(t, func() string { return d.addr("public") }, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	post("fx1", "payment.completed", map[string]any{"order_id": "FX-1", "txn_id": "TFX", "amount": "5.00", "currency": "EUR"})
	var items []ipn.OutboxItem
	waitFor(t, "the callback and the script dead", 20*time.Second, func() bool {
		items = outboxOf(t, d, "FX-1")
		dead := 0
		for _, it := range items {
			if it.State == ipn.OutboxDead {
				dead++
			}
		}
		return dead == 2
	})
	s := signInDashboard(t, d)
	for _, it := range items {
		page := s.get(t, fmt.Sprintf("/outbox/%d", it.ID))
		switch it.Effect.Kind {
		case ipn.EffectShopCallback:
			if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt; shop-said-secret") || strings.Contains(page, "<script>alert") ||
				strings.Count(page, "x") > 1024+200 {
				t.Errorf("the callback's page does not show the first KiB of the answer as text:\n%.3000s", page)
			}
		case ipn.EffectShopScript:
			if !strings.Contains(page, "&lt;img src=x onerror=alert(2)&gt; script-said-secret") || strings.Contains(page, "<img src=x") ||
				strings.Count(page, "y") > 1024+200 {
				t.Errorf("the script's page does not show the last KiB of stderr as text:\n%.3000s", page)
			}
		}
	}
	if !strings.Contains(logs.String(), "outbox item dead") {
		t.Fatalf("the log does not say the items are dead (not captured?):\n%s", logs.String())
	}
	for _, secret := range []string{"shop-said-secret", "script-said-secret", "alert("} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log has %q:\n%s", secret, logs.String())
		}
	}
}
