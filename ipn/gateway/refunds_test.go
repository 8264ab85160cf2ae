package gateway_test

import (
	"testing"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// TestRefundAmountsNormalized: every gateway gives a refund's own amount,
// positive, and Stripe's running total in RefundedTotal.
func TestRefundAmountsNormalized(t *testing.T) {
	stripe, err := gateway.New(gateway.Config{Name: "stripe", Kind: "stripe", Secrets: []string{"whsec_x"}})
	if err != nil {
		t.Fatal(err)
	}
	hook, err := gateway.New(gateway.Config{Name: "shop", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name              string
		g                 gateway.Gateway
		body              string
		amount, total, tx string
	}{
		{"stripe with the refunds list", stripe, `{"id":"evt_1","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","amount":4000,"amount_refunded":2500,"currency":"usd","payment_intent":"pi_1","refunds":{"object":"list","data":[{"id":"re_2","amount":1500,"created":200,"status":"succeeded"},{"id":"re_1","amount":1000,"created":100,"status":"succeeded"}]}}}}`, "15.00", "25.00", "ch_1"},
		{"stripe, the newest refund failed", stripe, `{"id":"evt_2","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","amount":4000,"amount_refunded":1000,"currency":"usd","payment_intent":"pi_1","refunds":{"data":[{"id":"re_2","amount":1500,"created":200,"status":"failed"},{"id":"re_1","amount":1000,"created":100,"status":"succeeded"}]}}}}`, "10.00", "10.00", "ch_1"},
		{"stripe without the list", stripe, `{"id":"evt_3","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","amount":4000,"amount_refunded":2500,"currency":"usd","payment_intent":"pi_1"}}}`, "", "25.00", "ch_1"},
		{"stripe, a list that does not add up", stripe, `{"id":"evt_4","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","amount":4000,"amount_refunded":500,"currency":"usd","payment_intent":"pi_1","refunds":{"data":[{"id":"re_9","amount":1500,"created":200}]}}}}`, "", "5.00", "ch_1"},
		{"stripe before amount_refunded: refunded in full", stripe, `{"id":"evt_5","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","amount":1000,"refunded":true,"currency":"usd"}}}`, "", "10.00", "ch_1"},
		{"stripe refunded in full with its total", stripe, `{"id":"evt_6","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","amount":1000,"amount_refunded":1000,"refunded":true,"currency":"usd"}}}`, "", "10.00", "ch_1"},
		{"stripe, partly refunded, old field absent", stripe, `{"id":"evt_7","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","amount":1000,"amount_refunded":300,"refunded":false,"currency":"usd"}}}`, "", "3.00", "ch_1"},
		{"generic refund with a sign and a total", hook, `{"type":"payment.refunded","data":{"txn_id":"R1","parent_txn_id":"P1","amount":"-5.00","refunded_total":"-12.50","currency":"EUR"}}`, "5.00", "12.50", "R1"},
		{"generic payment keeps no total", hook, `{"type":"payment.completed","data":{"txn_id":"P1","amount":"5.00","refunded_total":"1.00","currency":"EUR"}}`, "5.00", "", "P1"},
	} {
		ev, err := tc.g.Normalize(&ipn.Notification{Body: []byte(tc.body)})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ev.Amount != tc.amount || ev.RefundedTotal != tc.total || ev.TxnID != tc.tx {
			t.Errorf("%s: amount %q refunded_total %q txn %q, want %q %q %q", tc.name, ev.Amount, ev.RefundedTotal, ev.TxnID, tc.amount, tc.total, tc.tx)
		}
	}
	pp := gateway.PayPalEvent(map[string]string{"payment_status": "Reversed", "txn_id": "R2", "parent_txn_id": "P1", "mc_gross": "-19.99", "mc_currency": "USD"})
	if pp.Amount != "19.99" {
		t.Errorf("PayPal reversal amount %q, want 19.99", pp.Amount)
	}
}
