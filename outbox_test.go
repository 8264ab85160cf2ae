package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// fakeSMTP is an in-process SMTP server (go-smtp) that keeps every
// message it accepts and answers as the test tells it.
type fakeSMTP struct {
	t      testing.TB
	addr   string
	mu     sync.Mutex
	srv    *smtp.Server
	got    []*mail.Message
	raw    [][]byte
	forget bool           // accept messages without keeping them (benchmarks)
	tries  map[string]int // DATA attempts per recipient
	answer func(rcpt string, try int) *smtp.SMTPError
}

func newFakeSMTP(t testing.TB, addr string) *fakeSMTP {
	f := &fakeSMTP{t: t, tries: map[string]int{}}
	f.start(addr)
	t.Cleanup(f.stop)
	return f
}

func (f *fakeSMTP) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &fakeSession{f: f}, nil }))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ErrorLog = log.New(io.Discard, "", 0) // clients that hang up at shutdown are not news
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go srv.Serve(ln)
}

func (f *fakeSMTP) stop() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (f *fakeSMTP) port() string { _, p, _ := net.SplitHostPort(f.addr); return p }

func (f *fakeSMTP) messages() []*mail.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*mail.Message(nil), f.got...)
}

func (f *fakeSMTP) to(addr string) []*mail.Message {
	var out []*mail.Message
	for _, m := range f.messages() {
		if strings.Contains(m.Header.Get("To"), addr) {
			out = append(out, m)
		}
	}
	return out
}

type fakeSession struct {
	f    *fakeSMTP
	rcpt string
}

func (s *fakeSession) Reset()                                    {}
func (s *fakeSession) Logout() error                             { return nil }
func (s *fakeSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.rcpt = to; return nil }
func (s *fakeSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f := s.f
	f.mu.Lock()
	f.tries[s.rcpt]++
	try, answer := f.tries[s.rcpt], f.answer
	f.mu.Unlock()
	if answer != nil {
		if e := answer(s.rcpt, try); e != nil {
			return e
		}
	}
	m, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		return err
	}
	f.mu.Lock()
	if !f.forget {
		f.got = append(f.got, m)
		f.raw = append(f.raw, b)
	}
	f.mu.Unlock()
	return nil
}

func mailConfig(smtpPort, extra string) string {
	return fmt.Sprintf(`[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "Shop <shop@example.com>"
timeout = "2s"
[email]
merchant_to = "owner@example.com"
merchant_name = "Example Shop"
reply_to = "help@example.com"
max_attempts = 3
[pipeline]
outbox_retry_base = "20ms"
outbox_retry_cap = "100ms"
%s`, smtpPort, extra)
}

func payOrder(d *daemon, post func(string, string, map[string]any) int, id, email string) {
	d.api("POST", "/api/orders", map[string]any{"id": id, "amount": "19.99", "currency": "USD", "customer_email": email,
		"metadata": map[string]string{"download_url": "https://example.com/dl/" + id}}, nil)
	post("m-"+id, "payment.completed", map[string]any{"order_id": id, "txn_id": "T-" + id, "amount": "19.99",
		"currency": "USD", "customer_email": email, "customer_name": "Ann Lee"})
}

func TestEmailDelivery(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	smtpd.answer = func(rcpt string, try int) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(rcpt, "greylist") && try == 1:
			return &smtp.SMTPError{Code: 451, Message: "try again later"}
		case strings.HasPrefix(rcpt, "bounce"):
			return &smtp.SMTPError{Code: 550, Message: "no such user"}
		}
		return nil
	}
	d, post := webhookDaemon(t, mailConfig(smtpd.port(), ""))

	// A paid order sends exactly one email, with both parts.
	payOrder(d, post, "O-1", "ann@example.com")
	waitFor(t, "the payment email", 10*time.Second, func() bool { return len(smtpd.to("ann@example.com")) == 1 })
	m := smtpd.to("ann@example.com")[0]
	body, _ := io.ReadAll(m.Body)
	if m.Header.Get("Subject") == "" || !strings.Contains(m.Header.Get("Subject"), "O-1") ||
		m.Header.Get("Message-Id") == "" || !strings.Contains(m.Header.Get("Reply-To"), "help@example.com") ||
		!bytes.Contains(body, []byte("text/plain")) || !bytes.Contains(body, []byte("text/html")) ||
		!bytes.Contains(body, []byte("https://example.com/dl/O-1")) {
		t.Errorf("payment email:\n%v\n%s", m.Header, body)
	}

	// 451 once, then accepted: delivered once.
	payOrder(d, post, "O-2", "greylist@example.com")
	waitFor(t, "the greylisted email", 10*time.Second, func() bool { return len(smtpd.to("greylist@example.com")) == 1 })

	// 550: dead, listed; after the retry endpoint (and a fixed address) it goes.
	payOrder(d, post, "O-3", "bounce@example.com")
	var dead struct{ Items []ipn.OutboxItem }
	waitFor(t, "a dead email", 10*time.Second, func() bool {
		d.api("GET", "/api/outbox?state=dead", nil, &dead)
		return len(dead.Items) == 1
	})
	if it := dead.Items[0]; it.Effect.To != "bounce@example.com" || it.Attempts != 1 || !strings.Contains(it.LastError, "550") {
		t.Errorf("dead item = %+v, want one permanent attempt with the 550", it)
	}
	smtpd.mu.Lock()
	smtpd.answer = nil
	smtpd.mu.Unlock()
	if code := d.api("POST", fmt.Sprintf("/api/outbox/%d/retry", dead.Items[0].ID), nil, nil); code != 202 {
		t.Fatalf("retry = %d", code)
	}
	waitFor(t, "the retried email", 10*time.Second, func() bool { return len(smtpd.to("bounce@example.com")) == 1 })

	// SMTP down for a while, then up: delivered exactly once.
	smtpd.stop()
	payOrder(d, post, "O-4", "late@example.com")
	waitFor(t, "failed attempts while down", 10*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		for _, it := range pending.Items {
			if it.Effect.To == "late@example.com" && it.Attempts >= 1 {
				return true
			}
		}
		return false
	})
	smtpd.start(smtpd.addr)
	waitFor(t, "the email after the outage", 10*time.Second, func() bool { return len(smtpd.to("late@example.com")) == 1 })

	// Nothing went twice: every Message-ID is unique.
	seen := map[string]bool{}
	for _, m := range smtpd.messages() {
		id := m.Header.Get("Message-Id")
		if seen[id] {
			t.Errorf("message %s delivered twice", id)
		}
		seen[id] = true
	}
	if code := d.api("POST", "/api/outbox/1/retry", nil, nil); code != 409 {
		t.Errorf("retry of a sent item = %d, want 409", code)
	}
}

// TestShopCallbacks: the shop verifies every callback with the
// standard-webhooks library; 500s and timeouts are retried; each event is
// processed exactly once.
func TestShopCallbacks(t *testing.T) {
	secret := "whsec_" + "c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz" // base64 of a test key
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	processed := map[string]int{}
	tries := map[string]int{}
	orders := map[string]string{}
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("callback does not verify: %v", err)
			w.WriteHeader(400)
			return
		}
		id := r.Header.Get("Webhook-Id")
		var ev struct {
			Data struct {
				Order struct{ ID string }
			}
		}
		json.Unmarshal(body, &ev)
		mu.Lock()
		tries[id]++
		n := tries[id]
		mu.Unlock()
		switch {
		case strings.HasSuffix(ev.Data.Order.ID, "0") && n == 1:
			w.WriteHeader(500)
			return
		case strings.HasSuffix(ev.Data.Order.ID, "5") && n == 1:
			<-r.Context().Done() // past shop.timeout (2s): ipnd gives up on this try
			return
		}
		mu.Lock()
		processed[id]++
		orders[id] = ev.Data.Order.ID
		mu.Unlock()
	}))
	defer shop.Close()
	_, post := webhookDaemon(t, fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\ntimeout = \"2s\"\n[pipeline]\noutbox_retry_base = \"20ms\"\noutbox_retry_cap = \"100ms\"\n", shop.URL, secret))
	for i := 0; i < 20; i++ {
		post(fmt.Sprintf("m%d", i), "payment.completed", map[string]any{"order_id": fmt.Sprintf("S-%d", i), "txn_id": fmt.Sprintf("T%d", i), "amount": "5.00", "currency": "EUR"})
	}
	waitFor(t, "20 callbacks processed", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(processed) == 20
	})
	mu.Lock()
	defer mu.Unlock()
	for id, n := range processed {
		if n != 1 {
			t.Errorf("callback %s (%s) processed %d times", id, orders[id], n)
		}
	}
	retried := 0
	for _, n := range tries {
		if n > 1 {
			retried++
		}
	}
	if retried != 4 { // S-0, S-10 (500) and S-5, S-15 (timeout)
		t.Errorf("%d callbacks needed a retry, want 4", retried)
	}
}

// TestNotificationScript: a script that fails twice then succeeds runs
// three times with the event JSON on stdin; one that hangs is killed at
// shop.timeout and ends dead.
func TestNotificationScript(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "notify.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
if [ "$IPND_ORDER_ID" = "HANG" ]; then exec sleep 30; fi
cat > "$0.stdin.$IPND_ORDER_ID"
n=$(cat "$0.count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$0.count"
[ $n -ge 3 ]
`), 0o700)
	d, post := webhookDaemon(t, fmt.Sprintf("[shop]\ncommand = [%q]\ntimeout = \"1s\"\nmax_attempts = 5\n[pipeline]\noutbox_retry_base = \"20ms\"\noutbox_retry_cap = \"50ms\"\n", script))
	post("m1", "payment.completed", map[string]any{"order_id": "S-1", "txn_id": "T1", "amount": "5.00", "currency": "EUR"})
	waitFor(t, "the script to succeed", 10*time.Second, func() bool {
		var sent struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=sent", nil, &sent)
		return len(sent.Items) == 1
	})
	if n, _ := os.ReadFile(script + ".count"); strings.TrimSpace(string(n)) != "3" {
		t.Errorf("script ran %q times, want 3", n)
	}
	stdin, _ := os.ReadFile(script + ".stdin.S-1")
	var ev struct {
		Type string
		Data struct {
			Order struct{ ID, Paid string }
			Event struct{ Amount string }
		}
	}
	if err := json.Unmarshal(stdin, &ev); err != nil || ev.Type != "order.paid" || ev.Data.Order.ID != "S-1" ||
		ev.Data.Order.Paid != "5.00" || ev.Data.Event.Amount != "5.00" {
		t.Errorf("script stdin = %s (%v)", stdin, err)
	}
	start := time.Now()
	post("m2", "payment.completed", map[string]any{"order_id": "HANG", "txn_id": "T2", "amount": "5.00", "currency": "EUR"})
	var dead struct{ Items []ipn.OutboxItem }
	waitFor(t, "the hanging script to be given up", 30*time.Second, func() bool {
		d.api("GET", "/api/outbox?state=dead", nil, &dead)
		return len(dead.Items) == 1
	})
	if it := dead.Items[0]; it.Attempts != 5 || !strings.Contains(it.LastError, "killed after 1s") {
		t.Errorf("hanging script item = %+v", it)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Errorf("5 attempts of a script killed at 1s took %s", el)
	}
}

// TestKill9WithQueuedEmails: 100 emails wait (SMTP down) when ipnd is
// killed with SIGKILL; after a restart with SMTP up all 100 arrive, once.
func TestKill9WithQueuedEmails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	smtpAddr := ln.Addr().String()
	ln.Close() // nothing listens there yet: SMTP is down
	_, port, _ := net.SplitHostPort(smtpAddr)
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`%s
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, strings.Replace(mailConfig(port, ""), "max_attempts = 3", "max_attempts = 1000", 1), secret))
	child, exited := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	key, _ := gateway.DecodeWebhookSecret(secret)
	for i := 0; i < 100; i++ {
		body, _ := json.Marshal(map[string]any{"type": "payment.completed", "data": map[string]any{
			"order_id": fmt.Sprintf("K-%d", i), "txn_id": fmt.Sprintf("KT-%d", i), "amount": "1.00", "currency": "USD",
			"customer_email": fmt.Sprintf("c%d@example.com", i)}})
		id, ts := fmt.Sprintf("k%d", i), time.Now().Unix()
		req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/shop", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Webhook-Id", id)
		req.Header.Set("Webhook-Timestamp", fmt.Sprint(ts))
		req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, id, ts, body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("post %d: %v %v", i, err, resp)
		}
		resp.Body.Close()
	}
	waitFor(t, "100 emails queued and failing", 30*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		tried := 0
		for _, it := range pending.Items {
			if it.Effect.Kind == ipn.EffectEmailCustomer && it.Attempts > 0 {
				tried++
			}
		}
		return tried == 100
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	smtpd := newFakeSMTP(t, smtpAddr)
	startChild(t, dir, cfg)
	waitFor(t, "100 emails delivered", 30*time.Second, func() bool { return len(smtpd.messages()) >= 100 })
	seen := map[string]bool{}
	for _, m := range smtpd.messages() {
		if id := m.Header.Get("Message-Id"); seen[id] {
			t.Errorf("%s delivered twice", id)
		} else {
			seen[id] = true
		}
	}
	if len(seen) != 100 {
		t.Errorf("%d distinct emails, want 100", len(seen))
	}
}
