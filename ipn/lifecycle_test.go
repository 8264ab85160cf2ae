package ipn_test

// The state machine's side of issue 19: refund amounts (point 3), the
// end of a dispute (point 2) and orderless payments (point 1).

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

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

func countTemplate(effects []ipn.Effect, template string) int {
	n := 0
	for _, e := range effects {
		if e.Template == template {
			n++
		}
	}
	return n
}

// TestDisputeEnds: each gateway's dispute ends where its money ends, in
// any order of the facts, with one dispute_closed email per ending.
func TestDisputeEnds(t *testing.T) {
	paid := usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "19.99")
	refund := usd(ipn.TypeRefund, ipn.StatusRefunded, "RF1", "P1", "4.99")
	ppCase := usd(ipn.TypeDispute, ipn.StatusPending, "PP-D-1", "P1", "")
	ppReversed := usd(ipn.TypeReversal, ipn.StatusReversed, "RV1", "P1", "19.99")
	ppCanceled := usd(ipn.TypeReversalCanceled, ipn.StatusCompleted, "CR1", "P1", "19.99")
	stCreated := usd(ipn.TypeDispute, ipn.StatusPending, "dp_1", "ch_1", "19.99")
	stWithdrawn := usd(ipn.TypeReversal, ipn.StatusReversed, "dp_1", "ch_1", "19.99")
	stReinstated := usd(ipn.TypeReversalCanceled, ipn.StatusCompleted, "dp_1", "ch_1", "19.99")
	stWon := usd(ipn.TypeDispute, ipn.StatusCanceled, "dp_1", "ch_1", "19.99")
	stLost := usd(ipn.TypeDispute, ipn.StatusReversed, "dp_1", "ch_1", "19.99")
	for _, tc := range []struct {
		name   string
		events []*ipn.Event
		want   ipn.OrderStatus
		closed int // dispute_closed emails
	}{
		{"paypal chargeback won", []*ipn.Event{paid, refund, ppCase, ppReversed, ppCanceled}, ipn.OrderPartiallyRefunded, 1},
		{"paypal chargeback won, cancel first", []*ipn.Event{paid, ppCanceled, ppCase, ppReversed}, ipn.OrderPaid, 0},
		{"paypal case without money", []*ipn.Event{paid, ppCase}, ipn.OrderDisputed, 0},
		{"paypal chargeback lost", []*ipn.Event{paid, ppCase, ppReversed}, ipn.OrderReversed, 0},
		{"stripe won, closed only", []*ipn.Event{paid, stCreated, stWithdrawn, stWon}, ipn.OrderPaid, 1},
		{"stripe won, reinstated then closed", []*ipn.Event{paid, stCreated, stWithdrawn, stReinstated, stWon}, ipn.OrderPaid, 1},
		{"stripe won, no withdrawal", []*ipn.Event{paid, stCreated, stWon}, ipn.OrderPaid, 1},
		{"stripe lost", []*ipn.Event{paid, stCreated, stWithdrawn, stLost}, ipn.OrderReversed, 1},
		{"stripe lost, no withdrawal", []*ipn.Event{paid, stCreated, stLost}, ipn.OrderReversed, 1},
	} {
		a := newApplier(t, nil)
		a.label = tc.name + ": "
		for _, ev := range tc.events {
			a.apply(ev)
		}
		if a.order.Status != tc.want {
			t.Errorf("%s: %s, want %s\n%s", tc.name, a.order.Status, tc.want, historyText(a.order))
		}
		if n := countTemplate(a.effects, ipn.TemplateDisputeClosed); n != tc.closed {
			t.Errorf("%s: %d dispute_closed emails, want %d", tc.name, n, tc.closed)
		}
	}
}

// TestCloseDispute: the merchant closes a dispute the gateway never
// ends (a PayPal complaint): a fact like any other, with who and why in
// the history, a callback and one email; a later word of the gateway
// still counts.
func TestCloseDispute(t *testing.T) {
	a := newApplier(t, nil)
	a.apply(usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "19.99"))
	a.apply(usd(ipn.TypeDispute, ipn.StatusPending, "PP-D-7", "P1", ""))
	if got := ipn.OpenDisputes(a.order); len(got) != 1 || got[0] != "PP-D-7" {
		t.Fatalf("OpenDisputes = %v", got)
	}
	before := mustJSON(t, *a.order)
	next, effects, err := ipn.CloseDispute(a.order, ipn.DisputeDecision{Won: true, By: "ann", Why: "buyer withdrew the complaint"}, applyT0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if string(mustJSON(t, *a.order)) != string(before) {
		t.Error("CloseDispute modified its input")
	}
	if next.Status != ipn.OrderPaid {
		t.Errorf("after a won decision: %s", next.Status)
	}
	last := next.History[len(next.History)-1]
	if !strings.Contains(last.Reason, "merchant decision by ann: dispute PP-D-7 won (buyer withdrew the complaint)") || last.From != ipn.OrderDisputed {
		t.Errorf("history %+v", last)
	}
	if countTemplate(effects, ipn.TemplateDisputeClosed) != 1 || !slices.ContainsFunc(effects, func(e ipn.Effect) bool { return e.Kind == ipn.EffectShopCallback }) {
		t.Errorf("effects %v, want a callback and one dispute_closed email", templates(effects))
	}
	// Nothing left to close; the same decision again is refused.
	if _, _, err := ipn.CloseDispute(&next, ipn.DisputeDecision{Dispute: "PP-D-7", Won: true}, applyT0); !errors.Is(err, ipn.ErrNoOpenDispute) {
		t.Errorf("closing a closed dispute: %v", err)
	}

	// Lost: reversed. Two open disputes need a name.
	b := newApplier(t, nil)
	b.apply(usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "19.99"))
	b.apply(usd(ipn.TypeDispute, ipn.StatusPending, "C1", "P1", ""))
	b.apply(usd(ipn.TypeDispute, ipn.StatusPending, "C2", "P1", ""))
	if _, _, err := ipn.CloseDispute(b.order, ipn.DisputeDecision{Won: false}, applyT0); !errors.Is(err, ipn.ErrNoOpenDispute) {
		t.Errorf("no id with two open disputes: %v", err)
	}
	lost, _, err := ipn.CloseDispute(b.order, ipn.DisputeDecision{Dispute: "C2", By: "cli"}, applyT0)
	if err != nil || lost.Status != ipn.OrderReversed {
		t.Errorf("lost decision: %s %v", lost.Status, err)
	}
	// The decision is a fact: the gateway's later word on the other case
	// is applied on top of it.
	b.order = &lost
	b.apply(usd(ipn.TypeDispute, ipn.StatusCanceled, "C1", "P1", ""))
	if b.order.Status != ipn.OrderReversed {
		t.Errorf("a lost decision then the other case won: %s", b.order.Status)
	}
}

// TestDisputeLostAfterWon: the merchant closed a Stripe dispute as won
// (or the gateway said won), then the gateway says it is lost: the
// order is reversed, and the merchant hears of it (dispute_closed, lost)
// besides the shop; the same loss again tells nobody.
func TestDisputeLostAfterWon(t *testing.T) {
	a := newApplier(t, nil)
	a.apply(usd(ipn.TypePayment, ipn.StatusCompleted, "pi_1", "", "19.99"))
	a.apply(usd(ipn.TypeDispute, ipn.StatusPending, "dp_1", "pi_1", ""))
	won, _, err := ipn.CloseDispute(a.order, ipn.DisputeDecision{Won: true, By: "ann"}, applyT0.Add(time.Hour))
	if err != nil || won.Status != ipn.OrderPaid {
		t.Fatalf("won decision: %s %v", won.Status, err)
	}
	a.order = &won
	lost := usd(ipn.TypeDispute, ipn.StatusReversed, "dp_1", "pi_1", "")
	effects := a.apply(lost)
	if a.order.Status != ipn.OrderReversed {
		t.Fatalf("lost after won: %s", a.order.Status)
	}
	i := slices.IndexFunc(effects, func(e ipn.Effect) bool { return e.Template == ipn.TemplateDisputeClosed })
	if i < 0 || !strings.Contains(effects[i].Reason, "dispute dp_1") || !strings.Contains(effects[i].Reason, "lost") {
		t.Fatalf("effects %v: want a dispute_closed email saying dp_1 is lost", templates(effects))
	}
	// Lost again under another key (a merchant's lost decision is no
	// longer possible: nothing is open): a second lost fact tells nobody.
	again := usd(ipn.TypeDispute, ipn.StatusReversed, "dp_1", "pi_1", "19.99")
	if effects := a.apply(again); countTemplate(effects, ipn.TemplateDisputeClosed) != 0 {
		t.Errorf("the same loss again: %v", templates(effects))
	}
}

// TestOwnOrderID: which payments that name no order make one of their
// own, and its id.
func TestOwnOrderID(t *testing.T) {
	pay := func(f func(*ipn.Event)) *ipn.Event {
		ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "8MC585209K746392H", Amount: "12.00", Currency: "USD"}
		f(ev)
		return ev
	}
	for _, tc := range []struct {
		name string
		ev   *ipn.Event
		want string
	}{
		{"paypal buy now", pay(func(*ipn.Event) {}), "paypal:8MC585209K746392H"},
		{"names an order", pay(func(e *ipn.Event) { e.OrderID = "A-1" }), ""},
		{"pending", pay(func(e *ipn.Event) { e.Status = ipn.StatusPending }), ""},
		{"a stripe intent waits for its session", pay(func(e *ipn.Event) { e.Secondary = true }), ""},
		{"a refund", pay(func(e *ipn.Event) { e.Type, e.Status = ipn.TypeRefund, ipn.StatusRefunded }), ""},
		{"a subscription's start", pay(func(e *ipn.Event) {
			e.Type, e.TxnID, e.SubscriptionID = ipn.TypeSubscriptionStarted, "", "I-BW452GLLEP1G"
		}), "paypal:I-BW452GLLEP1G"},
		{"no id", pay(func(e *ipn.Event) { e.TxnID = "" }), ""},
	} {
		if got := ipn.OwnOrderID("paypal", tc.ev); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDecideSessionAfterParkedIntent: a Stripe intent that named no order
// waits; the Checkout Session of the same payment that names none either
// makes the order of its own (it is not a duplicate of the parked intent).
func TestDecideSessionAfterParkedIntent(t *testing.T) {
	session := applied(7, "", "pi_3QdPL1", "cs_live_a1PL")
	session.Context.Gateway = "stripe"
	d := ipn.Decide(session, ipn.Stored{Processing: received(), FirstOfFact: 5, FirstNoOrder: true}, decideT0)
	if d.Processing.State != ipn.StateApplied || d.Order == nil || d.Order.ID != "stripe:pi_3QdPL1" || d.Fact != ipn.FactClaim {
		t.Fatalf("%+v", d)
	}
	// When the first copy reached an order, this one is a duplicate.
	d = ipn.Decide(session, ipn.Stored{Processing: received(), FirstOfFact: 5}, decideT0)
	if d.Processing.State != ipn.StateDuplicate {
		t.Fatalf("not a duplicate: %+v", d.Processing)
	}
}
