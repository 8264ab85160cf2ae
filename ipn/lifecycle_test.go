package ipn_test

// The state machine's side of issue 19: refund amounts (point 3), the
// end of a dispute (point 2) and orderless payments (point 1).

import (
	"testing"

	"ipnd/ipn"
)

func refundEffectAmounts(effects []ipn.Effect) (event, email string) {
	for _, e := range effects {
		switch e.Kind {
		case ipn.EffectShopCallback:
			event = e.Event.Amount
		case ipn.EffectEmailCustomer:
			if e.Template == ipn.TemplateRefundIssued {
				email = e.Amount
			}
		}
	}
	return event, email
}

// TestRefundOwnAmount: a refund's amount is its own, positive; a running
// total (Stripe amount_refunded without the charge's list of refunds)
// gives what it adds to the charge's refunds; the order's total stays
// the largest running total per charge, in any order and on replay.
func TestRefundOwnAmount(t *testing.T) {
	pay := usd(ipn.TypePayment, ipn.StatusCompleted, "pi_1", "", "40.00")
	stripeRefund := func(total, own string) *ipn.Event {
		ev := usd(ipn.TypeRefund, ipn.StatusRefunded, "ch_1", "pi_1", own)
		ev.RefundedTotal = total
		return ev
	}

	a := newApplier(t, nil)
	a.apply(pay)
	r1, r2 := stripeRefund("10.00", ""), stripeRefund("25.00", "")
	if ev, mail := refundEffectAmounts(a.apply(r1)); ev != "10.00" || mail != "10.00" {
		t.Errorf("first refund: event amount %q, email %q, want 10.00", ev, mail)
	}
	if ev, mail := refundEffectAmounts(a.apply(r2)); ev != "15.00" || mail != "15.00" {
		t.Errorf("second refund (total 25.00): event amount %q, email %q, want 15.00", ev, mail)
	}
	if a.order.Refunded != "25.00" || a.order.Status != ipn.OrderPartiallyRefunded {
		t.Errorf("after 10 + 15: %s refunded %s", a.order.Status, a.order.Refunded)
	}
	// The same fact again (a replay) keeps its own amount.
	ac := a.context(r2)
	if got := ipn.RefundAmount(a.order, r2, ac); got != "15.00" {
		t.Errorf("RefundAmount of an applied refund = %q, want 15.00", got)
	}
	// Two refunds of the same sum on one charge are two facts.
	r3 := stripeRefund("35.00", "10.00")
	a.apply(r3)
	if a.order.Refunded != "35.00" {
		t.Errorf("a third refund of 10.00: refunded %s, want 35.00", a.order.Refunded)
	}

	// Out of order: the newer total first, then the older one.
	b := newApplier(t, nil)
	b.apply(pay)
	b.apply(stripeRefund("25.00", "15.00"))
	if effects := b.apply(stripeRefund("10.00", "10.00")); len(effects) != 0 {
		t.Errorf("an older total after a newer one queued %+v", effects)
	}
	if b.order.Refunded != "25.00" {
		t.Errorf("newer total first: refunded %s, want 25.00", b.order.Refunded)
	}
	// A refund before its payment (no order yet): its own amount is the total.
	if got := ipn.RefundAmount(nil, stripeRefund("10.00", ""), ipn.ApplyContext{}); got != "10.00" {
		t.Errorf("RefundAmount without an order = %q", got)
	}

	// PayPal: each refund its own txn id and a negative mc_gross.
	c := newApplier(t, nil)
	c.apply(usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "30.00"))
	for i, txn := range []string{"R1", "R2"} {
		ev := usd(ipn.TypeRefund, ipn.StatusRefunded, txn, "P1", "-10.00")
		ev.Unsign()
		if got, mail := refundEffectAmounts(c.apply(ev)); got != "10.00" || mail != "10.00" {
			t.Errorf("PayPal refund %d: event amount %q, email %q, want 10.00", i+1, got, mail)
		}
	}
	if c.order.Refunded != "20.00" {
		t.Errorf("PayPal 10 + 10: refunded %s", c.order.Refunded)
	}
}
