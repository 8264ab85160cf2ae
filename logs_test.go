package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn/gateway"
	"ipnd/public"
)

// logBuffer collects what ipnd writes to stderr; safe for the concurrent
// writes of every component.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLine is one decoded JSON log record.
type logLine map[string]any

func (l logLine) str(key string) string {
	v, ok := l[key]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// logLines decodes JSON log output, one record a line.
func logLines(t *testing.T, out string) []logLine {
	t.Helper()
	var lines []logLine
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Errorf("log line is not JSON: %v\n%s", err, sc.Text())
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// startLogged runs "ipnd serve -config cfg" through run() until the test
// ends, with its log (stderr) captured, and waits for both listeners.
func startLogged(t *testing.T, dir, cfg string) (*daemon, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{t: t, dir: dir, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, logs) }()
	t.Cleanup(d.stop)
	waitFor(t, "ipnd listening", 10*time.Second, func() bool {
		select {
		case err := <-d.done:
			cancel()
			d.cancel = nil // stop must not wait for it again
			t.Fatalf("serve exited early: %v\n%s", err, logs)
		default:
		}
		_, e1 := os.Stat(filepath.Join(dir, "public.addr"))
		_, e2 := os.Stat(filepath.Join(dir, "admin.addr"))
		return e1 == nil && e2 == nil
	})
	return d, logs
}

// assertNoneLogged fails for each of forbidden found in the log output
// (case-insensitively), showing the line it is in.
func assertNoneLogged(t *testing.T, out string, forbidden []string) {
	t.Helper()
	lower := strings.ToLower(out)
	for _, s := range forbidden {
		if i := strings.Index(lower, strings.ToLower(s)); i >= 0 {
			line := out[strings.LastIndexByte(out[:i], '\n')+1:]
			line, _, _ = strings.Cut(line, "\n")
			t.Errorf("the log contains %q:\n%s", s, line)
		}
	}
}

// TestLogsCarryNoCustomerData runs PayPal (verified, denied, verified
// after a 503), Stripe and Standard Webhooks notifications through the
// real daemon, with their emails and shop callbacks, logging at info level
// into a buffer. The log must hold one "stored" and one "processed" line
// per notification with its id, gateway and outcome, and none of the
// payers' addresses or names, the raw bodies, the signatures, or any
// secret from the config.
func TestLogsCarryNoCustomerData(t *testing.T) {
	const (
		payerEmail    = "margarethe.quill@example.net"
		payerFirst    = "Margarethe"
		payerLast     = "Quillfeather"
		payerStreet   = "17 Hollowmere Lane"
		stripeEmail   = "dorothea.vane@example.org"
		stripeName    = "Dorothea Vanderstraeten"
		hookEmail     = "ignatius.pell@example.com"
		hookName      = "Ignatius Pellworthy"
		stripeSecret  = "whsec_StripeLogTestKq82Zv1Pn"
		adminToken    = "admin-log-test-token-7Yw3Rc9Lm"
		smtpPassword  = "smtp-log-test-password-Hq5Tx"
		merchantEmail = "owner@shop.example"
	)
	hookKey := []byte("log-test-standard-webhooks-key-!")
	hookSecret := "whsec_" + base64.StdEncoding.EncodeToString(hookKey)
	shopKey := []byte("log-test-shop-callback-key-32by!")
	shopSecret := "whsec_" + base64.StdEncoding.EncodeToString(shopKey)

	fake := newFakePayPal(t)
	fake.setAnswer(func(txn string, attempt int) (int, string, time.Duration) {
		switch {
		case txn == "T-LOG-DENIED":
			return 200, "INVALID", 0
		case txn == "T-LOG-RETRY" && attempt == 1:
			return 503, "busy", 0
		}
		return 200, "VERIFIED", 0
	})
	var (
		shopMu    sync.Mutex
		callbacks int
	)
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		shopMu.Lock()
		callbacks++
		shopMu.Unlock()
	}))
	t.Cleanup(shop.Close)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "ipnd.toml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
rate_limit = 0
[admin]
listen = "127.0.0.1:0"
token = %q
%s[log]
level = "info"
format = "json"
[pipeline]
verify_timeout = "2s"
retry_base = "20ms"
retry_cap = "80ms"
[smtp]
password = %q
[email]
merchant_to = %q
[shop]
url = %q
secret = %q
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
[[gateway]]
name = "stripe"
kind = "stripe"
secret = %q
[[gateway]]
name = "hooks"
kind = "standard-webhooks"
secret = %q
`, adminToken, testStore(t, dir), smtpPassword, merchantEmail, shop.URL, shopSecret,
		fake.srv.URL+"/cgi-bin/webscr", stripeSecret, hookSecret)), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	d, logs := startLogged(t, dir, cfg)

	var sent []string // every signature header value sent
	post := func(gateway, contentType string, body []byte, header http.Header) int {
		t.Helper()
		req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/"+gateway, bytes.NewReader(body))
		req.Header = header
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	postPayPal := func(txn string) {
		t.Helper()
		body := ipnBody("txn_id", txn, "ipn_track_id", "track-"+txn, "invoice", "ORDER-"+txn,
			"payer_email", payerEmail, "first_name", payerFirst, "last_name", payerLast,
			"address_name", payerFirst+" "+payerLast, "address_street", payerStreet)
		fake.remember(body)
		if code := post("paypal", "application/x-www-form-urlencoded", body, http.Header{}); code != 200 {
			t.Fatalf("paypal %s: status %d", txn, code)
		}
	}
	stripeBody := []byte(fmt.Sprintf(`{"id":"evt_log_1","type":"checkout.session.completed","livemode":true,`+
		`"data":{"object":{"id":"cs_log_1","object":"checkout.session","client_reference_id":"ORDER-STRIPE-LOG",`+
		`"amount_total":1999,"currency":"eur","payment_intent":"pi_log_1","payment_status":"paid","mode":"payment",`+
		`"customer_details":{"email":%q,"name":%q}}}}`, stripeEmail, stripeName))
	postStripe := func(secret string) int {
		ts := time.Now().Unix()
		sig := fmt.Sprintf("t=%d,v1=%x", ts, gateway.StripeSignature(secret, ts, stripeBody))
		sent = append(sent, sig)
		return post("stripe", "application/json", stripeBody, http.Header{"Stripe-Signature": {sig}})
	}
	hookBody := []byte(fmt.Sprintf(`{"type":"payment.completed","timestamp":"2026-11-24T10:00:00Z","data":`+
		`{"txn_id":"TXN-HOOK-LOG","order_id":"ORDER-HOOK-LOG","amount":"25.00","currency":"USD","status":"completed",`+
		`"customer_email":%q,"customer_name":%q}}`, hookEmail, hookName))
	postHook := func() int {
		ts := time.Now().Unix()
		sig := gateway.SignWebhook(hookKey, "msg_log_1", ts, hookBody)
		sent = append(sent, sig)
		return post("hooks", "application/json", hookBody, http.Header{
			"Webhook-Id": {"msg_log_1"}, "Webhook-Timestamp": {strconv.FormatInt(ts, 10)}, "Webhook-Signature": {sig}})
	}

	// Each is posted once its predecessor is done, so that ids are known.
	state := func(id uint64) string {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/notifications/%d", d.addr("admin"), id), nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var n struct{ State string }
		json.NewDecoder(resp.Body).Decode(&n)
		return n.State
	}
	want := []struct {
		gateway, state string
		post           func()
	}{
		{"paypal", "applied", func() { postPayPal("T-LOG-OK") }},
		{"paypal", "invalid", func() { postPayPal("T-LOG-DENIED") }},
		{"paypal", "applied", func() { postPayPal("T-LOG-RETRY") }},
		{"stripe", "applied", func() {
			if code := postStripe("whsec_not_the_right_one"); code != 401 {
				t.Fatalf("stripe with a wrong secret: status %d, want 401", code)
			}
			if code := postStripe(stripeSecret); code != 200 {
				t.Fatalf("stripe: status %d", code)
			}
		}},
		{"hooks", "applied", func() {
			for range 2 { // the second is a duplicate
				if code := postHook(); code != 200 {
					t.Fatalf("standard webhooks: status %d", code)
				}
			}
		}},
	}
	for i, w := range want {
		w.post()
		id := uint64(i + 1)
		waitFor(t, fmt.Sprintf("notification %d %s", id, w.state), 10*time.Second, func() bool { return state(id) == w.state })
	}
	// Four payments applied: a shop callback for each; wait for their
	// outbox log lines, then stop, so that every line is written.
	waitFor(t, "4 shop callbacks logged", 10*time.Second, func() bool {
		shopMu.Lock()
		n := callbacks
		shopMu.Unlock()
		return n >= 4 && strings.Count(logs.String(), `"kind":"shop_callback"`) >= 4
	})
	d.stop()
	out := logs.String()

	t.Run("no customer data or secrets", func(t *testing.T) {
		forbidden := []string{
			payerEmail, url.QueryEscape(payerEmail), payerFirst, payerLast, payerStreet, url.QueryEscape(payerStreet),
			stripeEmail, stripeName, hookEmail, hookName,
			stripeSecret, strings.TrimPrefix(stripeSecret, "whsec_"),
			hookSecret, strings.TrimPrefix(hookSecret, "whsec_"), string(hookKey),
			shopSecret, strings.TrimPrefix(shopSecret, "whsec_"), string(shopKey),
			adminToken, smtpPassword,
			// raw bodies: field names that appear only in them
			"payer_email", "address_street", "customer_details", "mc_gross",
		}
		forbidden = append(forbidden, sent...)
		for _, s := range sent {
			if _, v1, ok := strings.Cut(s, "v1="); ok {
				forbidden = append(forbidden, v1)
			} else if _, sig, ok := strings.Cut(s, ","); ok {
				forbidden = append(forbidden, sig)
			}
		}
		assertNoneLogged(t, out, forbidden)
	})

	t.Run("one line per notification", func(t *testing.T) {
		lines := logLines(t, out)
		count := func(msg string, match func(logLine) bool) (n int) {
			for _, l := range lines {
				if l.str("msg") == msg && match(l) {
					n++
				}
			}
			return n
		}
		for i, w := range want {
			id := strconv.Itoa(i + 1)
			isThis := func(l logLine) bool { return l.str("id") == id && l.str("gateway") == w.gateway }
			if n := count("notification stored", isThis); n != 1 {
				t.Errorf("%d %q lines for notification %s (%s), want 1", n, "notification stored", id, w.gateway)
			}
			if n := count("notification processed", isThis); n != 1 {
				t.Errorf("%d %q lines for notification %s (%s), want 1", n, "notification processed", id, w.gateway)
			}
			if n := count("notification processed", func(l logLine) bool { return isThis(l) && l.str("state") == w.state }); n != 1 {
				t.Errorf("notification %s (%s): no %q line with state %s", id, w.gateway, "notification processed", w.state)
			}
		}
		// A failed postback is a WARN with when it is tried again, in seconds.
		if n := count("notification verification failed; retrying later", func(l logLine) bool {
			return l.str("id") == "3" && l.str("level") == "WARN" && l.str("retry_in_seconds") != ""
		}); n != 1 {
			t.Errorf("%d WARN lines for the failed postback of notification 3 (503 first), want 1", n)
		}
		if n := count("order transition", func(l logLine) bool { return l.str("to") == "paid" && l.str("order_id") != "" }); n == 0 {
			t.Error("no order transition line to paid")
		}
		for _, l := range lines {
			// Durations are seconds, with the unit in the key.
			if l.str("msg") == "notification stored" && (l.str("duration_seconds") == "" || strings.Contains(l.str("duration_seconds"), "e+")) {
				t.Errorf("stored line without duration_seconds: %v", l)
			}
		}
		if n := count("notification duplicate", func(l logLine) bool { return l.str("gateway") == "hooks" }); n != 1 {
			t.Errorf("%d duplicate lines for gateway hooks, want 1", n)
		}
		if n := count("notification rejected", func(l logLine) bool {
			return l.str("gateway") == "stripe" && l.str("reason") == public.ReasonBadSignature
		}); n != 1 {
			t.Errorf("%d bad_signature lines for gateway stripe, want 1", n)
		}
		if t.Failed() {
			t.Logf("log:\n%s", out)
		}
	})
}

// refusingSMTP is an SMTP server on loopback that accepts the envelope sender
// and answers every RCPT with reply (e.g. a 4xx "try again later" that
// does not repeat the address). It counts the RCPT commands it refused.
func refusingSMTP(t *testing.T, reply string) (port int, refused func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu sync.Mutex
		n  int
		wg sync.WaitGroup
	)
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	serve := func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		io.WriteString(c, "220 fake.test ESMTP\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " ")
			switch verb {
			case "EHLO":
				io.WriteString(c, "250-fake.test\r\n250 8BITMIME\r\n")
			case "HELO", "MAIL", "RSET", "NOOP":
				io.WriteString(c, "250 OK\r\n")
			case "RCPT":
				mu.Lock()
				n++
				mu.Unlock()
				io.WriteString(c, reply+"\r\n")
			case "QUIT":
				io.WriteString(c, "221 bye\r\n")
				return
			default:
				io.WriteString(c, "502 not implemented\r\n")
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); serve(c) }()
		}
	}()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	port, _ = strconv.Atoi(p)
	return port, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestLogsSMTPFailureHidesRecipient: when the mail server refuses a
// customer email, the outbox logs the failure (to be retried) without the
// customer's address, even though the SMTP library puts the recipients in
// its error text.
func TestLogsSMTPFailureHidesRecipient(t *testing.T) {
	const customer = "philippa.oakenshott@example.org"
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("log-test-smtp-failure-secret-32b"))
	port, refused := refusingSMTP(t, "451 4.3.0 Temporary failure, try again later")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ipnd.toml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token = "t"
%s[log]
level = "info"
format = "json"
[smtp]
host = "127.0.0.1"
port = %d
tls = "none"
from = "shop@shop.example"
[pipeline]
outbox_retry_base = "1h"
[[gateway]]
name = "hooks"
kind = "standard-webhooks"
secret = %q
`, testStore(t, dir), port, secret)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	d, logs := startLogged(t, dir, cfg)
	key, _ := gateway.DecodeWebhookSecret(secret)
	body := []byte(fmt.Sprintf(`{"type":"payment.completed","data":{"txn_id":"TXN-SMTP","order_id":"ORDER-SMTP",`+
		`"amount":"5.00","currency":"USD","status":"completed","customer_email":%q}}`, customer))
	ts := time.Now().Unix()
	req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/hooks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Webhook-Id", "msg_smtp_1")
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, "msg_smtp_1", ts, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitFor(t, "the refused customer email logged", 10*time.Second, func() bool {
		return refused() > 0 && strings.Contains(logs.String(), `"kind":"email_customer"`)
	})
	d.stop()
	assertNoneLogged(t, logs.String(), []string{customer})
}
