package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestLivePaymentOnTestOrder: a real payment through a live gateway for
// an order the merchant registered as a test order (an order id tested
// with, reused by the shop for a real customer) does not pay it: the
// shop never fulfils a test order and the merchant may delete it, so the
// order goes to review (test_payment), the merchant is told and the
// customer is not told it is paid.
func TestLivePaymentOnTestOrder(t *testing.T) {
	d, post := webhookDaemon(t, "")
	if code := d.api("POST", "/api/orders", map[string]any{"id": "O-TESTED", "amount": "19.99", "currency": "USD",
		"customer_email": "c@example.com", "test": true}, nil); code/100 != 2 {
		t.Fatalf("registering the test order: %d", code)
	}
	if code := post("m-live-1", "payment.completed", map[string]any{"order_id": "O-TESTED", "txn_id": "LIVE-1",
		"amount": "19.99", "currency": "USD", "customer_email": "c@example.com"}); code != 200 {
		t.Fatalf("post: %d", code)
	}
	o := waitOrder(t, d, "O-TESTED", ipn.OrderReview)
	if !slices.Contains(o.Flags, ipn.FlagTestPayment) || o.Paid != "0.00" {
		t.Errorf("flags %v paid %s, want test_payment and nothing counted as paid", o.Flags, o.Paid)
	}
	var ob struct{ Items []struct{ Effect ipn.Effect } }
	d.api("GET", "/api/outbox", nil, &ob)
	review := false
	for _, it := range ob.Items {
		if it.Effect.OrderID != "O-TESTED" {
			continue
		}
		if it.Effect.Template == ipn.TemplatePaymentReceived {
			t.Errorf("the customer is told the test order is paid")
		}
		review = review || it.Effect.Template == ipn.TemplateOrderReview
	}
	if !review {
		t.Errorf("no order_review email for the merchant: %+v", ob.Items)
	}
}

// TestPaymentIntentOnlyMerchant: a merchant who takes Stripe payments
// without Checkout (the PaymentIntents API without metadata.order_id, a
// Dashboard or Invoicing payment) never sends the Checkout Session its
// payment intent waits for. Past orders.park_for the payment becomes an
// order of its own, stripe:<intent>, with the customer's email and the
// shop's order.paid, and its later refund reaches it; the merchant gets
// no "never found its payment" alert for it.
func TestPaymentIntentOnlyMerchant(t *testing.T) {
	f := newFlowDaemon(t, "[orders]\npark_for = \"1s\"\n")
	f.stripe("evt_3QdI1", "payment_intent.succeeded", `{"id":"pi_3QdI1","object":"payment_intent","amount":1500,"amount_received":1500,"currency":"usd","latest_charge":"ch_3QdI1","status":"succeeded","receipt_email":"ida@example.com","metadata":{}}`)
	const order = "stripe:pi_3QdI1"
	if o := waitOrder(t, f.daemon, order, ipn.OrderPaid); o.Paid != "15.00" || o.CustomerEmail != "ida@example.com" {
		t.Errorf("%s: %+v", order, o)
	}
	f.stripe("evt_3QdI2", "charge.refunded", `{"id":"ch_3QdI1","object":"charge","amount":1500,"amount_refunded":500,"currency":"usd","payment_intent":"pi_3QdI1","refunded":false,"metadata":{}}`)
	waitOrder(t, f.daemon, order, ipn.OrderPartiallyRefunded)
	if got := strings.Join(cbTypes(f.byVersion(order, 2)), " "); got != "order.paid order.partially_refunded" {
		t.Errorf("%s callbacks: %s", order, got)
	}
	waitFor(t, "payment email to ida@example.com", 15*time.Second, func() bool {
		for _, m := range mailText(t, f.smtp, "ida@example.com") {
			if strings.Contains(m, "payment received") && strings.Contains(m, order) {
				return true
			}
		}
		return false
	})
	if n := f.notification(1); n.State != "applied" || n.Event == nil || n.Event.OrderID != order {
		t.Errorf("the intent: %s %+v", n.State, n.Event)
	}
	for _, m := range mailText(t, f.smtp, "owner@example.com") {
		if strings.Contains(m, "never found its payment") {
			t.Errorf("the merchant was alerted:\n%s", m)
		}
	}
}

// TestForgedOwnOrderID: order ids of the form <gateway>:<payment id> are
// ipnd's own (a payment that names no order: stripe:pi_..., which a
// shop looks up at Stripe to learn what was bought). A buyer can type
// any order reference (a PayPal button's invoice or custom, a Payment
// Link's client_reference_id): naming one of those ids, a 1.00 PayPal
// payment must not make or pay the order "stripe:pi_..." of a Stripe
// payment the buyer started and never paid. The reference is not taken:
// the payment is an order of its own, and the history says why.
func TestForgedOwnOrderID(t *testing.T) {
	f := newFlowDaemon(t, "")
	const txn = "61E67681CH3238416"
	f.ipn("txn_id", txn, "invoice", "stripe:pi_3QdF1", "mc_gross", "1.00", "payer_email", "eve@example.com")
	own := "paypal:" + txn
	if o := waitOrder(t, f.daemon, own, ipn.OrderPaid); o.Paid != "1.00" {
		t.Errorf("%s: %+v", own, o)
	}
	if code := f.api("GET", "/api/orders/stripe:pi_3QdF1", nil, nil); code != 404 {
		t.Errorf("GET /api/orders/stripe:pi_3QdF1: %d, want 404: the buyer's reference made the order", code)
	}
	if n := f.notification(1); !strings.Contains(n.History[len(n.History)-1].Detail, "stripe:pi_3QdF1") {
		t.Errorf("the history does not say why the reference was not taken: %+v", n.History)
	}
}

// TestDeclinedCheckoutAttemptNotParked: a Checkout customer whose card
// is declined and who gives up leaves a payment_intent.payment_failed
// (and later payment_intent.canceled) that names no order and will never
// be named by a session. They are attempts, not money: they do not wait
// for their order, raise ipnd_parked_events or alert the merchant
// ("never found its payment") for every abandoned checkout.
func TestDeclinedCheckoutAttemptNotParked(t *testing.T) {
	f := newFlowDaemon(t, "[orders]\npark_for = \"1s\"\n")
	f.stripe("evt_3QdD1", "payment_intent.payment_failed", `{"id":"pi_3QdD1","object":"payment_intent","amount":4900,"currency":"usd","status":"requires_payment_method","last_payment_error":{"code":"card_declined"},"metadata":{}}`)
	f.stripe("evt_3QdD2", "payment_intent.canceled", `{"id":"pi_3QdD1","object":"payment_intent","amount":4900,"currency":"usd","status":"canceled","metadata":{}}`)
	for id := uint64(1); id <= 2; id++ {
		n := f.waitState(id, "applied")
		if d := n.History[len(n.History)-1].Detail; !strings.Contains(d, "payment attempt") {
			t.Errorf("notification %d parked: %q", id, d)
		}
	}
	if m := f.metricsText(); !strings.Contains(m, "ipnd_parked_events 0") {
		t.Errorf("parked:\n%s", grepLines(m, "ipnd_parked_events"))
	}
	// A later payment of the same intent (the customer came back) is
	// still the order of its session.
	f.stripe("evt_3QdD3", "checkout.session.completed", `{"id":"cs_live_D1","object":"checkout.session","client_reference_id":"ORDER-D1","payment_intent":"pi_3QdD1","amount_total":4900,"currency":"usd","mode":"payment","payment_status":"paid","status":"complete","customer_details":{"email":"dan@example.com"},"metadata":{}}`)
	waitOrder(t, f.daemon, "ORDER-D1", ipn.OrderPaid)
	for _, m := range mailText(t, f.smtp, "owner@example.com") {
		if strings.Contains(m, "never found its payment") {
			t.Errorf("the merchant was alerted:\n%s", m)
		}
	}
}
