package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/admin"
	"ipnd/ipn"
)

// TestFailingShopForensicsAndDiscard: a failing shop showed "HTTP 500"
// and nothing else, and a dead item kept ipnd_outbox_dead (and its
// alert) up until it was retried successfully. Each attempt now keeps
// the shop's status and response body and the script's exit status and
// stderr (API and ipnd outbox show); discarding the dead items drops
// ipnd_outbox_dead and counts them as ipnd_outbox_discarded; a retry of
// every dead item of a lane queues them again.
func TestFailingShopForensicsAndDiscard(t *testing.T) {
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error":"inventory service down"}`)
	}))
	defer shop.Close()
	script := filepath.Join(t.TempDir(), "notify.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho 'cannot reach the inventory database' >&2\nexit 3\n"), 0o700)
	d, post := webhookDaemon(t, fmt.Sprintf("[shop]\nurl = %q\nsecret = \"whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz\"\n"+
		"command = [%q]\ntimeout = \"5s\"\nmax_attempts = 2\n[pipeline]\noutbox_retry_base = \"20ms\"\noutbox_retry_cap = \"50ms\"\n", shop.URL, script))
	post("f1", "payment.completed", map[string]any{"order_id": "F-1", "txn_id": "TF", "amount": "5.00", "currency": "EUR"})
	var items []ipn.OutboxItem
	waitFor(t, "the callback and the script run dead", 20*time.Second, func() bool {
		items = outboxOf(t, d, "F-1")
		dead := 0
		for _, it := range items {
			if it.State == ipn.OutboxDead {
				dead++
			}
		}
		return dead == 2
	})
	env := envFunc()
	for _, it := range items {
		var det admin.OutboxDetail
		if st := d.api("GET", fmt.Sprintf("/api/outbox/%d", it.ID), nil, &det); st != 200 || len(det.Attempts) != 2 {
			t.Fatalf("GET /api/outbox/%d: HTTP %d, %d attempts, want 2", it.ID, st, len(det.Attempts))
		}
		a := det.Attempts[1]
		out, stderr, code := runCode(t, env, "outbox", "show", "-config", d.cfg, fmt.Sprint(it.ID))
		if code != 0 {
			t.Fatalf("outbox show: exit %d %s", code, stderr)
		}
		switch it.Effect.Kind {
		case ipn.EffectShopCallback:
			if a.HTTPStatus != 500 || !strings.Contains(a.Response, "inventory service down") || a.Result != ipn.OutboxDead {
				t.Errorf("callback attempt %+v: want HTTP 500 and the body", a)
			}
			if !strings.Contains(out, "HTTP status: 500") || !strings.Contains(out, "inventory service down") {
				t.Errorf("outbox show of the callback:\n%s", out)
			}
		case ipn.EffectShopScript:
			if a.ExitStatus == nil || *a.ExitStatus != 3 || !strings.Contains(a.Stderr, "cannot reach the inventory database") {
				t.Errorf("script attempt %+v: want exit 3 and the stderr", a)
			}
			if !strings.Contains(out, "exit status: 3") || !strings.Contains(out, "cannot reach the inventory database") {
				t.Errorf("outbox show of the script:\n%s", out)
			}
		}
	}
	deadSeries := `ipnd_outbox_dead{kind="shop_callback"}`
	if v := d.scrape(deadSeries); v != 1 {
		t.Fatalf("%s = %v, want 1", deadSeries, v)
	}
	// Retry every dead callback: queued again (and dead again).
	if out, stderr, code := runCode(t, env, "outbox", "retry", "-config", d.cfg, "-dead", "-kind", "shop_callback"); code != 0 ||
		!strings.Contains(out, "1 dead items queued again") {
		t.Fatalf("outbox retry -dead: exit %d %s %s", code, out, stderr)
	}
	waitFor(t, "the retried callback dead again", 20*time.Second, func() bool {
		return d.scrape(deadSeries) == 1 && d.scrape(`ipnd_outbox_pending{kind="shop_callback"}`) == 0
	})
	for _, it := range items {
		out, stderr, code := runCode(t, env, "outbox", "discard", "-config", d.cfg, "-note", "shop replaced", fmt.Sprint(it.ID))
		if code != 0 || !strings.Contains(out, "discarded") {
			t.Fatalf("outbox discard: exit %d %s %s", code, out, stderr)
		}
	}
	if v := d.scrape(deadSeries); v != 0 {
		t.Errorf("%s = %v after the discard, want 0", deadSeries, v)
	}
	if v := d.scrape(`ipnd_outbox_discarded{kind="shop_callback"}`); v != 1 {
		t.Errorf("ipnd_outbox_discarded = %v, want 1", v)
	}
	if out, _, _ := runCode(t, env, "outbox", "-config", d.cfg, "dead"); !strings.Contains(out, "(no items)") {
		t.Errorf("dead items after the discard:\n%s", out)
	}
	// A sent item cannot be discarded; a discarded one again is a repeat.
	if _, stderr, code := runCode(t, env, "outbox", "discard", "-config", d.cfg, fmt.Sprint(items[0].ID)); code != 0 {
		t.Errorf("discard again: exit %d %s", code, stderr)
	}
}

// TestEmailAttemptShowsSMTPReply: an email the server refused once
// shows the server's reply with that attempt, then the success.
func TestEmailAttemptShowsSMTPReply(t *testing.T) {
	d, post, smtpd, _ := decisionDaemon(t, "")
	smtpd.mu.Lock()
	smtpd.answer = func(rcpt string, try int) *smtp.SMTPError {
		if strings.Contains(rcpt, "cy@example.com") && try == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "mailbox busy, try later"}
		}
		return nil
	}
	smtpd.mu.Unlock()
	post("s1", "payment.completed", map[string]any{"order_id": "S-1", "txn_id": "TS", "amount": "5.00", "currency": "EUR",
		"customer_email": "cy@example.com"})
	var mail ipn.OutboxItem
	waitFor(t, "the payment email sent", 20*time.Second, func() bool {
		for _, it := range outboxOf(t, d, "S-1") {
			if it.Effect.Template == ipn.TemplatePaymentReceived && it.State == ipn.OutboxSent {
				mail = it
				return true
			}
		}
		return false
	})
	var det admin.OutboxDetail
	d.api("GET", fmt.Sprintf("/api/outbox/%d", mail.ID), nil, &det)
	if len(det.Attempts) != 2 || !strings.Contains(det.Attempts[0].SMTPReply, "451") ||
		!strings.Contains(det.Attempts[0].SMTPReply, "mailbox busy") || det.Attempts[1].Result != ipn.OutboxSent {
		t.Errorf("attempts %+v: want the 451 reply, then sent", det.Attempts)
	}
	if strings.Contains(fmt.Sprint(det.Attempts), "cy@example.com") {
		t.Errorf("attempts name the customer's address: %+v", det.Attempts)
	}
}
