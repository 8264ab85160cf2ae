package main

// Black-box tests of what the merchant is told (issue 10): orders,
// emails and shop callbacks in real flows, over real HTTP, a real bbolt
// file and the in-process SMTP server.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn"
	ipngateway "ipnd/ipn/gateway"
)

// stripePoster posts Stripe events signed the way Stripe signs them.
func stripePoster(t *testing.T, d *daemon, gateway, secret string) func(id, typ, object string) {
	return func(id, typ, object string) {
		t.Helper()
		body := []byte(fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2024-06-20","type":%q,"livemode":true,"data":{"object":%s}}`, id, typ, object))
		now := time.Now().Unix()
		req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/"+gateway, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Stripe-Signature", fmt.Sprintf("t=%d,v1=%x", now, ipngateway.StripeSignature(secret, now, body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("post %s: %v", id, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("post %s: HTTP %d", id, resp.StatusCode)
		}
	}
}

// shopReceiver is the merchant's shop: it keeps every callback body.
type shopReceiver struct {
	mu     sync.Mutex
	bodies []map[string]any
}

func newShopReceiver(t *testing.T) (*shopReceiver, string) {
	s := &shopReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			s.mu.Lock()
			s.bodies = append(s.bodies, m)
			s.mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

// forOrder returns the callbacks about one order, in arrival order.
func (s *shopReceiver) forOrder(id string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, b := range s.bodies {
		if data, _ := b["data"].(map[string]any); data != nil {
			if o, _ := data["order"].(map[string]any); o != nil && o["id"] == id {
				out = append(out, b)
			}
		}
	}
	return out
}

// mailText returns each message to one recipient as its raw text
// (headers and body; the raw bytes can be read any number of times).
func mailText(t *testing.T, f *fakeSMTP, to string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for i, m := range f.got {
		if strings.Contains(m.Header.Get("To"), to) {
			out = append(out, m.Header.Get("Subject")+"\n"+string(f.raw[i]))
		}
	}
	return out
}

func waitOrder(t *testing.T, d *daemon, id string, status ipn.OrderStatus) ipn.Order {
	t.Helper()
	var o ipn.Order
	waitFor(t, fmt.Sprintf("order %s %s", id, status), 15*time.Second, func() bool {
		o = ipn.Order{}
		d.api("GET", "/api/orders/"+id, nil, &o)
		return o.Status == status
	})
	return o
}

const stripeGatewayConfig = "[[gateway]]\nname = \"stripe\"\nkind = \"stripe\"\nsecret = \"whsec_trust\"\n"

// TestStripeCheckoutLifecycle follows one Checkout payment through its
// life as Stripe reports it: the session, the payment intent and the
// charge (one payment), two refunds that name only the charge and the
// payment intent, with Stripe's cumulative amount_refunded.
func TestStripeCheckoutLifecycle(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	d, _ := webhookDaemon(t, mailConfig(smtpd.port(), fmt.Sprintf("[shop]\nurl = %q\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n", shopURL)+stripeGatewayConfig))
	post := stripePoster(t, d, "stripe", "whsec_trust")
	d.api("POST", "/api/orders", map[string]any{"id": "CO-1", "amount": "25.00", "currency": "USD", "customer_email": "jenny@example.com"}, nil)

	post("evt_1", "checkout.session.completed", `{"id":"cs_test_a1","object":"checkout.session","client_reference_id":"CO-1","payment_intent":"pi_3A","amount_total":2500,"currency":"usd","mode":"payment","payment_status":"paid","status":"complete","customer_details":{"email":"jenny@example.com","name":"Jenny Rosen"},"metadata":{}}`)
	post("evt_2", "payment_intent.succeeded", `{"id":"pi_3A","object":"payment_intent","amount":2500,"amount_received":2500,"currency":"usd","latest_charge":"ch_3A","status":"succeeded","metadata":{}}`)
	post("evt_3", "charge.succeeded", `{"id":"ch_3A","object":"charge","amount":2500,"amount_refunded":0,"currency":"usd","payment_intent":"pi_3A","paid":true,"status":"succeeded","billing_details":{"email":"jenny@example.com","name":"Jenny Rosen"},"metadata":{}}`)
	d.drained(3)
	o := waitOrder(t, d, "CO-1", ipn.OrderPaid)
	if o.Paid != "25.00" || len(o.Flags) != 0 {
		t.Fatalf("after session + intent + charge: paid %s flags %v, want one payment of 25.00 and no flags\n%+v", o.Paid, o.Flags, o.History)
	}

	post("evt_4", "charge.refunded", `{"id":"ch_3A","object":"charge","amount":2500,"amount_refunded":1000,"currency":"usd","payment_intent":"pi_3A","refunded":false,"status":"succeeded","metadata":{}}`)
	o = waitOrder(t, d, "CO-1", ipn.OrderPartiallyRefunded)
	if o.Refunded != "10.00" {
		t.Errorf("after a 10.00 refund: refunded %s", o.Refunded)
	}
	post("evt_5", "charge.refunded", `{"id":"ch_3A","object":"charge","amount":2500,"amount_refunded":2500,"currency":"usd","payment_intent":"pi_3A","refunded":true,"status":"succeeded","metadata":{}}`)
	o = waitOrder(t, d, "CO-1", ipn.OrderRefunded)
	if o.Refunded != "25.00" || o.Paid != "25.00" {
		t.Errorf("after the full refund: paid %s refunded %s", o.Paid, o.Refunded)
	}

	var mails []string
	waitFor(t, "three customer emails", 15*time.Second, func() bool {
		mails = mailText(t, smtpd, "jenny@example.com")
		return len(mails) >= 3
	})
	var paid, refunds []string
	for _, m := range mails {
		switch {
		case strings.Contains(m, "payment received"):
			paid = append(paid, m)
		case strings.Contains(m, "refund issued"):
			refunds = append(refunds, m)
		}
	}
	if len(paid) != 1 || len(refunds) != 2 {
		t.Fatalf("%d payment and %d refund emails, want 1 and 2:\n%s", len(paid), len(refunds), strings.Join(mails, "\n----\n"))
	}
	if !strings.Contains(paid[0], "payment of 25.00 USD") {
		t.Errorf("payment email does not state 25.00 USD:\n%s", paid[0])
	}
	// Each refund email states its own amount and the total as of then.
	wantRefund := map[string]string{"10.00": "10.00", "15.00": "25.00"}
	for _, m := range refunds {
		found := false
		for own, total := range wantRefund {
			if strings.Contains(m, "refund of "+own+" USD") && strings.Contains(m, "in total for this order: "+total+" USD") {
				found = true
				delete(wantRefund, own)
				break
			}
		}
		if !found {
			t.Errorf("refund email with unexpected amounts:\n%s", m)
		}
	}

	// The shop: one order.paid, order.partially_refunded, order.refunded
	// (in any order: each names the order's version; 1 is the
	// registration, and the intent and the charge are duplicates of the
	// session, so they add none).
	var types []string
	waitFor(t, "three shop callbacks", 15*time.Second, func() bool {
		types = types[:0]
		for _, b := range shop.forOrder("CO-1") {
			o := b["data"].(map[string]any)["order"].(map[string]any)
			types = append(types, fmt.Sprintf("%s@%v", b["type"], o["version"]))
		}
		return len(types) >= 3
	})
	slices.Sort(types)
	if strings.Join(types, ",") != "order.paid@2,order.partially_refunded@3,order.refunded@4" {
		t.Errorf("shop callbacks %v, want order.paid, order.partially_refunded, order.refunded with their versions", types)
	}
}

// TestStripeDisputeAndOrphans: a dispute naming only the charge reaches
// the order, its funds are withdrawn and reinstated; a refund that
// arrives before its payment is applied when the payment arrives; a
// merchant who sends only charge.succeeded gets a paid order.
func TestStripeDisputeAndOrphans(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	d, _ := webhookDaemon(t, mailConfig(smtpd.port(), stripeGatewayConfig))
	post := stripePoster(t, d, "stripe", "whsec_trust")

	post("evt_d1", "checkout.session.completed", `{"id":"cs_test_d","object":"checkout.session","client_reference_id":"DP-1","payment_intent":"pi_D","amount_total":4200,"currency":"eur","mode":"payment","payment_status":"paid","customer_details":{"email":"d@example.com"}}`)
	post("evt_d2", "payment_intent.succeeded", `{"id":"pi_D","object":"payment_intent","amount":4200,"currency":"eur","latest_charge":"ch_D","status":"succeeded","metadata":{}}`)
	waitOrder(t, d, "DP-1", ipn.OrderPaid)
	post("evt_d3", "charge.dispute.created", `{"id":"dp_D","object":"dispute","amount":4200,"currency":"eur","charge":"ch_D","payment_intent":"pi_D","reason":"fraudulent","status":"needs_response","metadata":{}}`)
	waitOrder(t, d, "DP-1", ipn.OrderDisputed)
	post("evt_d4", "charge.dispute.funds_withdrawn", `{"id":"dp_D","object":"dispute","amount":4200,"currency":"eur","charge":"ch_D","payment_intent":"pi_D","reason":"fraudulent","status":"needs_response","metadata":{}}`)
	waitOrder(t, d, "DP-1", ipn.OrderReversed)
	post("evt_d5", "charge.dispute.closed", `{"id":"dp_D","object":"dispute","amount":4200,"currency":"eur","charge":"ch_D","payment_intent":"pi_D","reason":"fraudulent","status":"won","metadata":{}}`)
	post("evt_d6", "charge.dispute.funds_reinstated", `{"id":"dp_D","object":"dispute","amount":4200,"currency":"eur","charge":"ch_D","payment_intent":"pi_D","reason":"fraudulent","status":"won","metadata":{}}`)
	o := waitOrder(t, d, "DP-1", ipn.OrderPaid)
	if o.Paid != "42.00" || len(o.Flags) != 0 {
		t.Errorf("after a won dispute: paid %s flags %v", o.Paid, o.Flags)
	}
	waitFor(t, "the dispute emails", 10*time.Second, func() bool { return len(smtpd.to("owner@example.com")) >= 2 })
	d.drained(6)

	// A refund before its payment: kept, then applied with the payment.
	post("evt_o1", "charge.refunded", `{"id":"ch_O","object":"charge","amount":3000,"amount_refunded":500,"currency":"usd","payment_intent":"pi_O","metadata":{}}`)
	d.drained(7)
	post("evt_o2", "checkout.session.completed", `{"id":"cs_test_o","object":"checkout.session","client_reference_id":"OR-1","payment_intent":"pi_O","amount_total":3000,"currency":"usd","mode":"payment","payment_status":"paid","customer_details":{"email":"o@example.com"}}`)
	o = waitOrder(t, d, "OR-1", ipn.OrderPartiallyRefunded)
	if o.Paid != "30.00" || o.Refunded != "5.00" {
		t.Errorf("refund before payment: paid %s refunded %s, want 30.00 / 5.00", o.Paid, o.Refunded)
	}
	if n := d.notification(7); n.Event == nil || n.Event.OrderID != "OR-1" {
		t.Errorf("the early refund's notification does not name its order: %+v", n.Event)
	}

	// Only charge.succeeded, with the order id in its metadata.
	post("evt_c1", "charge.succeeded", `{"id":"ch_C","object":"charge","amount":1999,"currency":"usd","payment_intent":"pi_C","paid":true,"status":"succeeded","billing_details":{"email":"c@example.com"},"metadata":{"order_id":"CH-1"}}`)
	if o := waitOrder(t, d, "CH-1", ipn.OrderPaid); o.Paid != "19.99" {
		t.Errorf("charge.succeeded alone: paid %s", o.Paid)
	}
	// A subscription: its invoices name only the subscription.
	post("evt_s1", "checkout.session.completed", `{"id":"cs_test_s","object":"checkout.session","client_reference_id":"SUB-1","mode":"subscription","subscription":"sub_S","invoice":"in_S1","amount_total":900,"currency":"usd","payment_status":"paid","customer_details":{"email":"s@example.com"}}`)
	post("evt_s2", "invoice.paid", `{"id":"in_S1","object":"invoice","subscription":"sub_S","amount_paid":900,"currency":"usd","payment_intent":"pi_S1","metadata":{}}`)
	post("evt_s3", "invoice.paid", `{"id":"in_S2","object":"invoice","subscription":"sub_S","amount_paid":900,"currency":"usd","payment_intent":"pi_S2","metadata":{}}`)
	d.drained(12)
	if o := waitOrder(t, d, "SUB-1", ipn.OrderPaid); o.Paid != "18.00" {
		t.Errorf("subscription order: paid %s, want two invoices of 9.00", o.Paid)
	}
	merchant := mailText(t, smtpd, "owner@example.com")
	// One email when the dispute opened, one when it ended (issue 19
	// point 2: it ended won).
	opened, ended := 0, 0
	for _, m := range merchant {
		subject, _, _ := strings.Cut(m, "\n")
		if strings.Contains(subject, "dispute or reversal on order") {
			opened++
		}
		if strings.Contains(subject, "dispute or reversal ended") {
			ended++
		}
	}
	if opened != 1 || ended != 1 {
		t.Errorf("%d dispute opened and %d ended emails to the merchant, want 1 and 1:\n%s", opened, ended, strings.Join(merchant, "\n----\n"))
	}
}

// TestMoneyIsChecked: a payment of zero or less, an unknown currency or
// more digits than the currency has is stored but not applied.
func TestMoneyIsChecked(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	d, post := webhookDaemon(t, mailConfig(smtpd.port(), ""))
	d.api("POST", "/api/orders", map[string]any{"id": "NEG-1", "amount": "5.00", "currency": "USD", "customer_email": "neg@example.com"}, nil)
	cases := []struct {
		data   map[string]any
		reason string
	}{
		{map[string]any{"order_id": "NEG-1", "txn_id": "N1", "amount": "-5.00", "currency": "USD", "customer_email": "neg@example.com"}, "zero or less"},
		{map[string]any{"order_id": "NEG-2", "txn_id": "N2", "amount": "-5.00", "currency": "USD", "customer_email": "neg@example.com"}, "zero or less"},
		{map[string]any{"order_id": "ZERO-1", "txn_id": "N3", "amount": "0.00", "currency": "USD", "customer_email": "neg@example.com"}, "zero or less"},
		{map[string]any{"order_id": "CUR-1", "txn_id": "N4", "amount": "5.00", "currency": "XYZ", "customer_email": "neg@example.com"}, "unknown currency"},
		{map[string]any{"order_id": "COIN-1", "txn_id": "N5", "amount": "0.5", "currency": "FOOCOIN", "customer_email": "neg@example.com"}, "unknown currency"},
	}
	for i, tc := range cases {
		if code := post(fmt.Sprintf("neg-%d", i), "payment.completed", tc.data); code != 200 {
			t.Fatalf("case %d: HTTP %d", i, code)
		}
	}
	d.drained(len(cases))
	for i, tc := range cases {
		n := d.notification(uint64(i + 1))
		detail := ""
		if len(n.History) > 0 {
			detail = n.History[len(n.History)-1].Detail
		}
		if n.State != ipn.StateInvalid || !strings.Contains(detail, tc.reason) {
			t.Errorf("case %d (%v): state %s %q, want invalid with %q", i, tc.data, n.State, detail, tc.reason)
		}
	}
	var o ipn.Order
	d.api("GET", "/api/orders/NEG-1", nil, &o)
	if o.Status != ipn.OrderAwaitingPayment || o.Paid != "0.00" || len(o.History) != 1 {
		t.Errorf("registered order after a negative payment: %s paid %s, %d history entries; want untouched", o.Status, o.Paid, len(o.History))
	}
	for _, id := range []string{"NEG-2", "ZERO-1", "CUR-1", "COIN-1"} {
		if code := d.api("GET", "/api/orders/"+id, nil, nil); code != 404 {
			t.Errorf("order %s: HTTP %d, want 404 (never created)", id, code)
		}
	}
	// A correct payment afterwards is the only email.
	payOrder(d, post, "OK-1", "ok@example.com")
	waitFor(t, "the good payment's email", 10*time.Second, func() bool { return len(smtpd.to("ok@example.com")) == 1 })
	if n := len(smtpd.to("neg@example.com")); n != 0 {
		t.Errorf("%d emails for refused payments", n)
	}
}

// TestShopToldWhatToDo: a price edited in the payment form puts the
// order in review and the shop is told order.review with the flag, never
// a payment it could fulfil on; the correct payment of another order is
// order.paid. The script gets the same JSON.
func TestShopToldWhatToDo(t *testing.T) {
	shop, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "notify.sh")
	os.WriteFile(script, []byte("#!/bin/sh\ncat > \"$0.stdin.$IPND_ORDER_ID\"\n"), 0o700)
	d, post := webhookDaemon(t, fmt.Sprintf("[shop]\nurl = %q\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ncommand = [%q]\n", shopURL, script))
	d.api("POST", "/api/orders", map[string]any{"id": "EDIT-1", "amount": "19.99", "currency": "USD", "customer_email": "e@example.com"}, nil)
	d.api("POST", "/api/orders", map[string]any{"id": "GOOD-1", "amount": "19.99", "currency": "USD", "customer_email": "g@example.com"}, nil)
	post("e1", "payment.completed", map[string]any{"order_id": "EDIT-1", "txn_id": "TE1", "amount": "1.99", "currency": "USD"})
	post("g1", "payment.completed", map[string]any{"order_id": "GOOD-1", "txn_id": "TG1", "amount": "19.99", "currency": "USD"})
	var edit, good []map[string]any
	waitFor(t, "both callbacks", 15*time.Second, func() bool {
		edit, good = shop.forOrder("EDIT-1"), shop.forOrder("GOOD-1")
		return len(edit) >= 1 && len(good) >= 1
	})
	if len(edit) != 1 || edit[0]["type"] != "order.review" {
		t.Fatalf("edited price: callbacks %v, want one order.review", edit)
	}
	order := edit[0]["data"].(map[string]any)["order"].(map[string]any)
	event := edit[0]["data"].(map[string]any)["event"].(map[string]any)
	if order["status"] != "review" || fmt.Sprint(order["flags"]) != "[amount_mismatch]" || order["amount"] != "19.99" || event["amount"] != "1.99" {
		t.Errorf("order.review data: order %v event %v", order, event)
	}
	if len(good) != 1 || good[0]["type"] != "order.paid" {
		t.Errorf("correct payment: callbacks %v, want one order.paid", good)
	}
	var stdin []byte
	waitFor(t, "the script's stdin", 10*time.Second, func() bool {
		stdin, _ = os.ReadFile(script + ".stdin.EDIT-1")
		return len(stdin) > 0
	})
	var se struct{ Type string }
	if json.Unmarshal(stdin, &se); se.Type != "order.review" {
		t.Errorf("script stdin type %q, want order.review: %s", se.Type, stdin)
	}
}

// TestRefundEmailStatesRefund: a 5.00 refund of a 19.99 order says 5.00,
// with 5.00 refunded in total; a second one of 2.50 says 2.50 and 7.50.
func TestRefundEmailStatesRefund(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	d, post := webhookDaemon(t, mailConfig(smtpd.port(), ""))
	payOrder(d, post, "RF-1", "rf@example.com")
	waitOrder(t, d, "RF-1", ipn.OrderPaid)
	post("r1", "payment.refunded", map[string]any{"order_id": "RF-1", "txn_id": "R1", "parent_txn_id": "T-RF-1", "amount": "5.00", "currency": "USD"})
	waitOrder(t, d, "RF-1", ipn.OrderPartiallyRefunded)
	post("r2", "payment.refunded", map[string]any{"order_id": "RF-1", "txn_id": "R2", "parent_txn_id": "T-RF-1", "amount": "2.50", "currency": "USD"})
	var mails []string
	waitFor(t, "two refund emails", 15*time.Second, func() bool {
		mails = nil
		for _, m := range mailText(t, smtpd, "rf@example.com") {
			if strings.Contains(m, "refund issued") {
				mails = append(mails, m)
			}
		}
		return len(mails) == 2
	})
	want := [][2]string{{"5.00", "5.00"}, {"2.50", "7.50"}}
	for _, w := range want {
		ok := false
		for _, m := range mails {
			ok = ok || strings.Contains(m, "refund of "+w[0]+" USD") && strings.Contains(m, "in total for this order: "+w[1]+" USD")
		}
		if !ok {
			t.Errorf("no refund email of %s (total %s):\n%s", w[0], w[1], strings.Join(mails, "\n----\n"))
		}
	}
}

// TestPayPalReceiverIsTheAccountPaid: business names the merchant but
// receiver_email/receiver_id are another account: review, not paid. A
// live PayPal gateway without receivers does not start.
func TestPayPalReceiverIsTheAccountPaid(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	d.api("POST", "/api/orders", map[string]any{"id": "PP-1", "amount": "19.95", "currency": "USD", "customer_email": "buyer@example.com"}, nil)
	body := ipnBody("txn_id", "PPT1", "invoice", "PP-1", "business", "shop@example.com",
		"receiver_email", "attacker@example.net", "receiver_id", "ATTACKER1")
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	o := waitOrder(t, d, "PP-1", ipn.OrderReview)
	if !strings.Contains(strings.Join(o.Flags, ","), ipn.FlagReceiverMismatch) || o.Paid != "0.00" {
		t.Errorf("PP-1: flags %v paid %s, want receiver_mismatch and nothing paid", o.Flags, o.Paid)
	}

	// A sandbox account's VERIFIED payment, through the sandbox gateway,
	// to the merchant's own (sandbox) receiver: a real order is not paid.
	d.api("POST", "/api/orders", map[string]any{"id": "REAL-1", "amount": "19.95", "currency": "USD", "customer_email": "buyer@example.com"}, nil)
	sb := ipnBody("txn_id", "SBT1", "invoice", "REAL-1", "test_ipn", "1")
	fake.remember(sb)
	if code := d.postIPN("paypal-sandbox", sb); code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	if o := waitOrder(t, d, "REAL-1", ipn.OrderReview); !strings.Contains(strings.Join(o.Flags, ","), ipn.FlagTestPayment) || o.Paid != "0.00" {
		t.Errorf("REAL-1 after a sandbox payment: flags %v paid %s, want test_payment and nothing paid", o.Flags, o.Paid)
	}
	// ... while an order the sandbox created is a test order, paid.
	sb2 := ipnBody("txn_id", "SBT2", "invoice", "TEST-1", "test_ipn", "1")
	fake.remember(sb2)
	d.postIPN("paypal-sandbox", sb2)
	if o := waitOrder(t, d, "TEST-1", ipn.OrderPaid); !o.Test {
		t.Errorf("TEST-1: %+v, want a paid test order", o)
	}

	cfg := writeConfig(t, "[[gateway]]\nname = \"paypal\"\nkind = \"paypal\"\n")
	out, err := runCmd(t, envFunc(), "check", "-config", cfg)
	if err == nil || !strings.Contains(err.Error(), "receivers") {
		t.Errorf("check of a live paypal gateway without receivers: %v\n%s", err, out)
	}
}

// An early payment intent (no order id) waits; the Checkout Session that
// names the order and repeats the same payment creates the order with
// one payment and adopts the intent as the same fact.
func TestStripeIntentBeforeSession(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	d, _ := webhookDaemon(t, mailConfig(smtpd.port(), stripeGatewayConfig))
	post := stripePoster(t, d, "stripe", "whsec_trust")
	post("evt_u1", "payment_intent.succeeded", `{"id":"pi_U","object":"payment_intent","amount":1500,"currency":"usd","latest_charge":"ch_U","status":"succeeded","metadata":{}}`)
	d.drained(1)
	post("evt_u2", "checkout.session.completed", `{"id":"cs_test_u","object":"checkout.session","client_reference_id":"UN-1","payment_intent":"pi_U","amount_total":1500,"currency":"usd","mode":"payment","payment_status":"paid","customer_details":{"email":"u@example.com"}}`)
	o := waitOrder(t, d, "UN-1", ipn.OrderPaid)
	if o.Paid != "15.00" || len(o.Flags) != 0 {
		t.Errorf("UN-1: paid %s flags %v, want one payment of 15.00", o.Paid, o.Flags)
	}
	waitFor(t, "one payment email", 10*time.Second, func() bool { return len(smtpd.to("u@example.com")) == 1 })
	if n := d.notification(1); n.Event == nil || n.Event.OrderID != "UN-1" {
		t.Errorf("the early intent did not reach its order: %+v", n.Event)
	}
	// A refund naming only the charge of that intent reaches it too.
	post("evt_u3", "charge.refunded", `{"id":"ch_U","object":"charge","amount":1500,"amount_refunded":1500,"currency":"usd","payment_intent":"pi_U","metadata":{}}`)
	waitOrder(t, d, "UN-1", ipn.OrderRefunded)

	// A subscription's first invoice before its Checkout Session: the
	// order and the subscription record both get the payment.
	post("evt_p1", "invoice.paid", `{"id":"in_P1","object":"invoice","subscription":"sub_P","amount_paid":900,"currency":"usd","payment_intent":"pi_P1","metadata":{}}`)
	d.drained(4)
	post("evt_p2", "checkout.session.completed", `{"id":"cs_test_p","object":"checkout.session","client_reference_id":"SP-1","mode":"subscription","subscription":"sub_P","invoice":"in_P1","amount_total":900,"currency":"usd","payment_status":"paid","customer_details":{"email":"p@example.com"}}`)
	if o := waitOrder(t, d, "SP-1", ipn.OrderPaid); o.Paid != "9.00" {
		t.Errorf("SP-1 paid %s, want 9.00", o.Paid)
	}
	var sub struct{ Payments []string }
	d.api("GET", "/api/subscriptions/sub_P", nil, &sub)
	if len(sub.Payments) != 1 {
		t.Errorf("subscription sub_P payments %v, want the early invoice's", sub.Payments)
	}
}
