package main

import (
	"slices"
	"testing"

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
