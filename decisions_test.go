package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
)

// decideAPI posts a decision to the admin API with an optional
// Idempotency-Key and returns the status and the answer.
func decideAPI(t *testing.T, d *daemon, path string, body any, key string) (int, admin.DecisionAnswer) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", d.addr("admin")+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer t")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out admin.DecisionAnswer
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// outboxOf lists the outbox items of one order (every state).
func outboxOf(t *testing.T, d *daemon, order string) []ipn.OutboxItem {
	t.Helper()
	var list struct{ Items []ipn.OutboxItem }
	d.api("GET", "/api/outbox?limit=1000", nil, &list)
	var out []ipn.OutboxItem
	for _, it := range list.Items {
		if it.Effect.OrderID == order {
			out = append(out, it)
		}
	}
	return out
}

// settled waits until no outbox item of the order is pending.
func settled(t *testing.T, d *daemon, order string) []ipn.OutboxItem {
	t.Helper()
	var items []ipn.OutboxItem
	waitFor(t, "the outbox items of "+order+" delivered", 20*time.Second, func() bool {
		items = outboxOf(t, d, order)
		for _, it := range items {
			if it.State == ipn.OutboxPending {
				return false
			}
		}
		return true
	})
	return items
}

func decisionDaemon(t *testing.T, extra string) (*daemon, func(msgID, typ string, data map[string]any) int, *fakeSMTP, *shopReceiver) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	d, post := webhookDaemon(t, fmt.Sprintf(`[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "orders@example.com"
timeout = "2s"
[email]
merchant_to = "owner@example.com"
[shop]
url = %q
secret = "whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz"
timeout = "5s"
[pipeline]
outbox_retry_base = "20ms"
outbox_retry_cap = "100ms"
%s`, smtpd.port(), shopURL, extra))
	return d, post, smtpd, shop
}

func shopTypes(s *shopReceiver, order string) []string {
	var out []string
	for _, b := range s.forOrder(order) {
		out = append(out, fmt.Sprint(b["type"]))
	}
	return out
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// TestApproveOrderInReview: an order in review (amount_mismatch) could
// not be approved (404 "no such route"), though the review email names
// POST /api/orders/:id/approve. Approved, it becomes paid with its flag
// kept and marked approved, the customer gets the payment email and the
// shop order.paid, once, whatever the repeats: the same Idempotency-Key
// answers the same order, a second approve is 409 (not in review), a
// stale version 409; a new flag puts it in review again.
func TestApproveOrderInReview(t *testing.T) {
	d, post, smtpd, shop := decisionDaemon(t, "")
	d.api("POST", "/api/orders", map[string]any{"id": "R-1", "amount": "49.95", "currency": "USD", "customer_email": "ann@example.com"}, nil)
	if st := post("msg_r1", "payment.completed", map[string]any{"txn_id": "TX-1", "order_id": "R-1", "amount": "1.99",
		"currency": "USD", "status": "completed", "customer_email": "ann@example.com"}); st != 200 {
		t.Fatalf("post: %d", st)
	}
	o := waitOrder(t, d, "R-1", ipn.OrderReview)
	settled(t, d, "R-1")
	version := max(o.Changes, len(o.History))

	if st, _ := decideAPI(t, d, "/api/orders/R-1/approve", map[string]any{"version": version - 1}, ""); st != http.StatusConflict {
		t.Fatalf("approve with a stale version: HTTP %d, want 409", st)
	}
	st, ans := decideAPI(t, d, "/api/orders/R-1/approve", map[string]any{"version": version, "note": "customer paid the rest by bank"}, "click-1")
	if st != 200 || ans.Order.Status != ipn.OrderPaid || ans.Repeated {
		t.Fatalf("approve: HTTP %d %+v", st, ans)
	}
	if fmt.Sprint(ans.Order.Flags) != "[amount_mismatch]" || fmt.Sprint(ans.Order.ApprovedFlags) != "[amount_mismatch]" {
		t.Errorf("flags %v approved %v: want the flag kept and approved", ans.Order.Flags, ans.Order.ApprovedFlags)
	}
	if ans.Change.By != "admin" || !strings.Contains(ans.Change.Reason, "customer paid the rest by bank") ||
		ans.Change.From != ipn.OrderReview || ans.Change.To != ipn.OrderPaid {
		t.Errorf("history entry %+v: want who (admin), why, review -> paid", ans.Change)
	}
	// The double click (the same request again): the same key answers
	// the same order, nothing new. (The key with another body is 409:
	// admin/review21_test.go.)
	st, again := decideAPI(t, d, "/api/orders/R-1/approve", map[string]any{"version": version, "note": "customer paid the rest by bank"}, "click-1")
	if st != 200 || !again.Repeated || again.Order.Status != ipn.OrderPaid || max(again.Order.Changes, len(again.Order.History)) != version+1 {
		t.Fatalf("repeated approve: HTTP %d repeated=%v version %d", st, again.Repeated, again.Order.Changes)
	}
	// Another approve without the key: not in review any more.
	if st, _ := decideAPI(t, d, "/api/orders/R-1/approve", nil, ""); st != http.StatusConflict {
		t.Errorf("second approve: HTTP %d, want 409", st)
	}
	// And from the CLI.
	if _, stderr, code := runCode(t, envFunc(), "orders", "approve", "-config", d.cfg, "R-1"); code != 1 || !strings.Contains(stderr, "not in review") {
		t.Errorf("ipnd orders approve again: exit %d %s", code, stderr)
	}

	items := settled(t, d, "R-1")
	paidMails := 0
	for _, it := range items {
		if it.Effect.Template == ipn.TemplatePaymentReceived {
			paidMails++
		}
	}
	if paidMails != 1 {
		t.Errorf("%d payment emails queued, want 1", paidMails)
	}
	waitFor(t, "the shop's order.paid", 10*time.Second, func() bool { return count(shopTypes(shop, "R-1"), "order.paid") >= 1 })
	for _, b := range shop.forOrder("R-1") {
		if b["type"] == "order.paid" {
			o := b["data"].(map[string]any)["order"].(map[string]any)
			if fmt.Sprint(o["approved_flags"]) != "[amount_mismatch]" || fmt.Sprint(o["flags"]) != "[amount_mismatch]" {
				t.Errorf("order.paid order %v: want the flag kept and approved", o)
			}
		}
	}
	waitFor(t, "the customer's payment email", 10*time.Second, func() bool { return len(mailText(t, smtpd, "ann@example.com")) >= 1 })
	if n := count(shopTypes(shop, "R-1"), "order.paid"); n != 1 {
		t.Errorf("shop got order.paid %d times, want 1 (%v)", n, shopTypes(shop, "R-1"))
	}
	if n := len(mailText(t, smtpd, "ann@example.com")); n != 1 {
		t.Errorf("customer got %d emails, want 1", n)
	}
	// Resend the payment email: a new item, a second email.
	for _, it := range settled(t, d, "R-1") {
		if it.Effect.Template != ipn.TemplatePaymentReceived || strings.Contains(it.Effect.Cause, "resend") {
			continue
		}
		if out, stderr, code := runCode(t, envFunc(), "outbox", "resend", "-config", d.cfg, fmt.Sprint(it.ID)); code != 0 || !strings.Contains(out, "queued again") {
			t.Fatalf("outbox resend: exit %d %s %s", code, out, stderr)
		}
		if out, _, _ := runCode(t, envFunc(), "outbox", "show", "-config", d.cfg, fmt.Sprint(it.ID)); !strings.Contains(out, "attempt 1") || !strings.Contains(out, ": sent") {
			t.Errorf("outbox show of a sent email:\n%s", out)
		}
	}
	waitFor(t, "the resent payment email", 10*time.Second, func() bool { return len(mailText(t, smtpd, "ann@example.com")) == 2 })
	var full ipn.Order
	d.api("GET", "/api/orders/R-1", nil, &full)
	decisions := 0
	for _, h := range full.History {
		if h.By != "" && strings.Contains(h.Reason, "approved") {
			decisions++
		}
	}
	if decisions != 1 {
		t.Errorf("%d decisions in the history, want 1: %+v", decisions, full.History)
	}

	// A new flag (paid in full again: double_payment) raises review again.
	post("msg_r2", "payment.completed", map[string]any{"txn_id": "TX-2", "order_id": "R-1", "amount": "49.95",
		"currency": "USD", "status": "completed", "customer_email": "ann@example.com"})
	o = waitOrder(t, d, "R-1", ipn.OrderReview)
	if fmt.Sprint(o.Flags) != "[amount_mismatch double_payment]" {
		t.Errorf("flags %v after a second payment", o.Flags)
	}
}

// TestCancelNoteDisputeAndAdd: cancel (order.canceled to the shop, 409
// once final), a note (history only), a dispute the gateway never
// closed, and registering an order, from the CLI and the API.
func TestCancelNoteDisputeAndAdd(t *testing.T) {
	d, post, _, shop := decisionDaemon(t, stripeGatewayConfig)
	env := envFunc()
	if out, stderr, code := runCode(t, env, "orders", "add", "-config", d.cfg, "C-1", "-amount", "10.00", "-currency", "usd",
		"-email", "bob@example.com"); code != 0 || !strings.Contains(out, "C-1 registered") {
		t.Fatalf("orders add: exit %d %s %s", code, out, stderr)
	}
	if _, stderr, code := runCode(t, env, "orders", "add", "-config", d.cfg, "C-1", "-amount", "10.00", "-currency", "usd", "-email", "bob@example.com"); code != 1 ||
		!strings.Contains(stderr, "409") {
		t.Errorf("orders add twice: exit %d %s", code, stderr)
	}
	post("msg_c1", "payment.completed", map[string]any{"txn_id": "TX-C1", "order_id": "C-1", "amount": "10.00",
		"currency": "USD", "status": "completed"})
	o := waitOrder(t, d, "C-1", ipn.OrderPaid)
	v := max(o.Changes, len(o.History))
	if out, stderr, code := runCode(t, env, "orders", "note", "-config", d.cfg, "C-1", "customer", "called"); code != 0 ||
		!strings.Contains(out, "note by cli: customer called") {
		t.Fatalf("orders note: exit %d %s %s", code, out, stderr)
	}
	// The note moved the version: a cancel with the version seen before is stale.
	if _, stderr, code := runCode(t, env, "orders", "cancel", "-config", d.cfg, "-version", fmt.Sprint(v), "C-1"); code != 1 ||
		!strings.Contains(stderr, "409") {
		t.Errorf("cancel with a stale version: exit %d %s", code, stderr)
	}
	out, stderr, code := runCode(t, env, "orders", "cancel", "-config", d.cfg, "-note", "out of stock", "C-1")
	if code != 0 || !strings.Contains(out, "canceled") {
		t.Fatalf("orders cancel: exit %d %s %s", code, out, stderr)
	}
	if st, _ := decideAPI(t, d, "/api/orders/C-1/cancel", nil, ""); st != http.StatusConflict {
		t.Errorf("cancel a canceled order: HTTP %d, want 409", st)
	}
	var c ipn.Order
	d.api("GET", "/api/orders/C-1", nil, &c)
	if c.Status != ipn.OrderCanceled || c.History[len(c.History)-1].By != "cli" ||
		!strings.Contains(c.History[len(c.History)-1].Reason, "out of stock") ||
		!strings.Contains(c.History[len(c.History)-2].Reason, "customer called") {
		t.Errorf("after note and cancel: %s %+v", c.Status, c.History)
	}
	waitFor(t, "the shop's order.canceled", 10*time.Second, func() bool { return count(shopTypes(shop, "C-1"), "order.canceled") == 1 })

	// A Stripe dispute Stripe never closes: the merchant closes it won.
	spost := stripePoster(t, d, "stripe", "whsec_trust")
	spost("evt_x1", "checkout.session.completed", `{"id":"cs_x","object":"checkout.session","client_reference_id":"DP-9","payment_intent":"pi_X","amount_total":4200,"currency":"eur","mode":"payment","payment_status":"paid"}`)
	waitOrder(t, d, "DP-9", ipn.OrderPaid)
	spost("evt_x2", "charge.dispute.created", `{"id":"dp_X","object":"dispute","amount":4200,"currency":"eur","charge":"ch_X","payment_intent":"pi_X","reason":"fraudulent","status":"needs_response","metadata":{}}`)
	waitOrder(t, d, "DP-9", ipn.OrderDisputed)
	if st, _ := decideAPI(t, d, "/api/orders/DP-9/dispute", map[string]any{"outcome": "maybe"}, ""); st != http.StatusBadRequest {
		t.Errorf("dispute outcome maybe: HTTP %d, want 400", st)
	}
	if out, stderr, code := runCode(t, env, "orders", "dispute", "-config", d.cfg, "DP-9", "won"); code != 0 || !strings.Contains(out, "paid") {
		t.Fatalf("orders dispute won: exit %d %s %s", code, out, stderr)
	}
	var dp ipn.Order
	d.api("GET", "/api/orders/DP-9", nil, &dp)
	if last := dp.History[len(dp.History)-1]; last.By != "cli" || !strings.Contains(last.Reason, "dispute dp_X won") {
		t.Errorf("dispute decision in the history: %+v", last)
	}
	if st, _ := decideAPI(t, d, "/api/orders/DP-9/dispute", map[string]any{"outcome": "lost"}, ""); st != http.StatusConflict {
		t.Errorf("close a closed dispute: HTTP %d, want 409", st)
	}
}
