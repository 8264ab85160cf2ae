package ipn_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

var decideT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// applied is an outcome the pipeline found valid: payment txn of order
// (order "" names none), with payment references refs.
func applied(id uint64, order, txn, refs string) ipn.Outcome {
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: txn, OrderID: order,
		Amount: "19.99", Currency: "USD", CustomerEmail: "buyer@example.com", Refs: refs}
	return ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: "gw\x00" + txn, ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "gw"}}
}

func secondary(o ipn.Outcome) ipn.Outcome {
	o.Event.Secondary = true
	return o
}

func received() *ipn.Processing {
	return &ipn.Processing{State: ipn.StateReceived, History: []ipn.HistoryEntry{{At: decideT0, State: ipn.StateReceived}}}
}

func kinds(effects []ipn.Effect) string {
	var k []string
	for _, e := range effects {
		k = append(k, e.Kind)
	}
	return strings.Join(k, ",")
}

// TestDecide covers each branch of the decision the store used to take
// between four functions, by what it returns.
func TestDecide(t *testing.T) {
	registered := mustRegister(t, "A1", "19.99", "USD")
	for _, tc := range []struct {
		name   string
		o      ipn.Outcome
		s      ipn.Stored
		check  func(t *testing.T, d ipn.Decision)
		state  ipn.State
		detail string
	}{{
		name: "new order created and paid",
		o:    applied(2, "A1", "T1", ""), s: ipn.Stored{Order: registered},
		state: ipn.StateApplied,
		check: func(t *testing.T, d ipn.Decision) {
			if d.Fact != ipn.FactClaim || d.Order == nil || d.Order.Status != ipn.OrderPaid {
				t.Fatalf("fact %v order %+v", d.Fact, d.Order)
			}
			if d.Recorded.OrderFrom != ipn.OrderAwaitingPayment || d.Recorded.OrderTo != ipn.OrderPaid ||
				d.Recorded.Reason != d.Order.History[len(d.Order.History)-1].Reason || d.Recorded.Reason == "" {
				t.Fatalf("recorded %+v", d.Recorded)
			}
			if d.AttachTo != d.Order || !reflect.DeepEqual(d.Refs, []string{"T1"}) {
				t.Fatalf("attach %v %v", d.AttachTo, d.Refs)
			}
			if kinds(d.Effects) != "email_customer,shop_callback" {
				t.Fatalf("effects %s", kinds(d.Effects))
			}
		},
	}, {
		name: "same fact as another notification",
		o:    applied(3, "A1", "T1", ""), s: ipn.Stored{FirstOfFact: 2, Order: registered},
		state: ipn.StateDuplicate, detail: "same payment fact as notification 2",
		check: func(t *testing.T, d ipn.Decision) {
			if d.Fact != ipn.FactKeep || d.Order != nil || len(d.Effects) != 0 || d.Processing.DuplicateOf != 2 {
				t.Fatalf("%+v", d)
			}
			if d.AttachTo != registered {
				t.Fatal("a duplicate's references are not attached to its order")
			}
		},
	}, {
		name: "first copy parked, this one names the order",
		o:    applied(3, "A1", "T1", ""), s: ipn.Stored{FirstOfFact: 2, FirstNoOrder: true, Order: registered},
		state: ipn.StateApplied,
		check: func(t *testing.T, d ipn.Decision) {
			if d.Fact != ipn.FactClaim || d.Order == nil {
				t.Fatalf("%+v", d)
			}
		},
	}, {
		name: "no order, a secondary payment (a Stripe intent): parked",
		o:    secondary(applied(4, "", "pi_1", "ch_1")), s: ipn.Stored{},
		state: ipn.StateApplied, detail: "waiting for the event that names its order: no order yet for pi_1, ch_1",
		check: func(t *testing.T, d ipn.Decision) {
			if d.Park == nil || d.Park.EventKey != "gw\x00pi_1" || d.Order != nil || len(d.Effects) != 0 {
				t.Fatalf("%+v", d)
			}
		},
	}, {
		name: "no order, a refund: parked",
		o: func() ipn.Outcome {
			o := applied(4, "", "re_1", "")
			o.Event.Type, o.Event.Status, o.Event.ParentTxnID = ipn.TypeRefund, ipn.StatusRefunded, "pi_1"
			return o
		}(), s: ipn.Stored{},
		state: ipn.StateApplied, detail: "waiting for its payment: no order yet for re_1, pi_1",
		check: func(t *testing.T, d ipn.Decision) {
			if d.Park == nil || d.Order != nil {
				t.Fatalf("%+v", d)
			}
		},
	}, {
		name: "a completed payment naming no order: an order of its own",
		o:    applied(4, "", "61E67681CH3238416", ""), s: ipn.Stored{},
		state: ipn.StateApplied,
		check: func(t *testing.T, d ipn.Decision) {
			if d.Park != nil || d.Order == nil || d.Order.ID != "gw:61E67681CH3238416" || d.Order.Status != ipn.OrderPaid ||
				d.Event.OrderID != "gw:61E67681CH3238416" || d.Processing.Event.OrderID != d.Order.ID {
				t.Fatalf("%+v", d)
			}
			if kinds(d.Effects) != "email_customer,shop_callback" || d.AttachTo == nil {
				t.Fatalf("effects %s attach %v", kinds(d.Effects), d.AttachTo)
			}
		},
	}, {
		name: "reference known: the order it reached",
		o:    applied(5, "", "ch_1", ""), s: ipn.Stored{RefOrder: "A1", Order: registered},
		state: ipn.StateApplied,
		check: func(t *testing.T, d ipn.Decision) {
			if d.Processing.Event.OrderID != "A1" || d.Order == nil || d.Order.ID != "A1" {
				t.Fatalf("%+v", d)
			}
		},
	}, {
		name: "unregistered order refused",
		o: func() ipn.Outcome {
			o := applied(6, "B9", "T9", "")
			o.RequireRegistered = true
			return o
		}(), s: ipn.Stored{FirstOfFact: 6},
		state: ipn.StateInvalid, detail: `order "B9" is not registered (orders.require_registered)`,
		check: func(t *testing.T, d ipn.Decision) {
			if d.Fact != ipn.FactRelease || d.Order != nil || len(d.Effects) != 0 {
				t.Fatalf("%+v", d)
			}
		},
	}, {
		name: "test payment on a live gateway: review, no customer email",
		o: func() ipn.Outcome {
			o := applied(7, "A1", "T7", "")
			o.Event.Test, o.State, o.Detail = true, ipn.StateInvalid, "test_payment: refused"
			return o
		}(), s: ipn.Stored{Order: registered},
		state: ipn.StateInvalid, detail: "test_payment: refused",
		check: func(t *testing.T, d ipn.Decision) {
			if d.Order == nil || d.Order.Status != ipn.OrderReview || d.Subscription || d.AttachTo != nil || d.Fact != ipn.FactKeep {
				t.Fatalf("%+v", d)
			}
			if kinds(d.Effects) != "email_merchant,shop_callback" {
				t.Fatalf("effects %s", kinds(d.Effects))
			}
		},
	}, {
		name:  "never verified: the merchant hears of it",
		o:     ipn.Outcome{ID: 8, State: ipn.StateFailed, Detail: "verification failed"},
		s:     ipn.Stored{},
		state: ipn.StateFailed, detail: "verification failed",
		check: func(t *testing.T, d ipn.Decision) {
			if len(d.Effects) != 1 || d.Effects[0].Template != ipn.TemplateVerificationFailed ||
				d.Effects[0].Cause != "notification/8/verification_failed" {
				t.Fatalf("%+v", d.Effects)
			}
		},
	}, {
		name:  "verification retried later",
		o:     ipn.Outcome{ID: 9, State: ipn.StateReceived, RetryAt: decideT0.Add(time.Minute), Attempts: 1, Detail: "attempt 1 failed"},
		s:     ipn.Stored{},
		state: ipn.StateReceived, detail: "attempt 1 failed",
		check: func(t *testing.T, d ipn.Decision) {
			if !d.Processing.NextAttempt.Equal(decideT0.Add(time.Minute)) || d.Processing.Attempts != 1 {
				t.Fatalf("%+v", d.Processing)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.s.Processing == nil {
				tc.s.Processing = received()
			}
			before := mustJSON(t, tc.s)
			beforeEvent := mustJSON(t, tc.o.Event)
			d := ipn.Decide(tc.o, tc.s, decideT0)
			if string(mustJSON(t, tc.s)) != string(before) || string(mustJSON(t, tc.o.Event)) != string(beforeEvent) {
				t.Fatal("Decide modified its arguments")
			}
			if d.AlreadyFinal || d.Processing.State != tc.state || d.Recorded.State != tc.state || d.Recorded.Detail != tc.detail {
				t.Fatalf("state %s (recorded %s) detail %q, want %s %q", d.Processing.State, d.Recorded.State, d.Recorded.Detail, tc.state, tc.detail)
			}
			h := d.Processing.History
			if len(h) != 2 || h[1].State != tc.state || h[1].Detail != tc.detail || !h[1].At.Equal(decideT0) {
				t.Fatalf("history %+v", h)
			}
			tc.check(t, d)
		})
	}
}

func TestDecideFinalIsLeftAlone(t *testing.T) {
	p := &ipn.Processing{State: ipn.StateApplied}
	d := ipn.Decide(applied(2, "A1", "T1", ""), ipn.Stored{Processing: p}, decideT0)
	if !d.AlreadyFinal || d.Recorded.State != ipn.StateApplied || d.Order != nil || len(d.Effects) != 0 {
		t.Fatalf("%+v", d)
	}
}

// TestAdopt: a refund parked before its payment reaches the order the
// payment created, and says so.
func TestAdopt(t *testing.T) {
	paid := ipn.Decide(applied(2, "A1", "pi_1", ""), ipn.Stored{Processing: received(), Order: mustRegister(t, "A1", "19.99", "USD")}, decideT0).Order
	refund := ipn.Parked{Event: &ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, TxnID: "re_1", ParentTxnID: "pi_1",
		Amount: "19.99", Currency: "USD"}, EventKey: "gw\x00re_1"}
	a := ipn.Adopt(paid, 1, "gw", refund, decideT0.Add(time.Minute))
	if a.Order.Status != ipn.OrderRefunded || a.Event.OrderID != "A1" || refund.Event.OrderID != "" {
		t.Fatalf("status %s event %+v", a.Order.Status, a.Event)
	}
	if a.Detail != `applied to order "A1", which its payment reached` || a.Context.Notification != 1 || a.Subscription {
		t.Fatalf("%+v", a)
	}
}

func TestAssess(t *testing.T) {
	pay := func(f func(*ipn.Event)) *ipn.Event {
		ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T1", OrderID: "A1", Amount: "19.99", Currency: "USD", Receiver: "shop@example.com"}
		if f != nil {
			f(ev)
		}
		return ev
	}
	live := ipn.Policy{Gateway: "gw", Receivers: []string{"Shop@Example.com"}, RequireRegistered: true}
	for _, tc := range []struct {
		name       string
		ev         *ipn.Event
		pol        ipn.Policy
		receiverOK bool
		state      ipn.State
		detail     string
		apply      bool
	}{
		{"applied", pay(nil), live, true, ipn.StateApplied, "", true},
		{"too long an id", pay(func(e *ipn.Event) { e.TxnID = strings.Repeat("x", 256) }), live, true, ipn.StateInvalid, "txn_id is longer than 255 bytes", false},
		{"not money", pay(func(e *ipn.Event) { e.Amount = "1e9" }), live, true, ipn.StateInvalid, "invalid amount: ", false},
		{"test payment on a live gateway", pay(func(e *ipn.Event) { e.Test = true }), live, true, ipn.StateInvalid, "test_payment: ", true},
		{"test payment on a sandbox", pay(func(e *ipn.Event) { e.Test = true }), ipn.Policy{Gateway: "gw", Sandbox: true}, true, ipn.StateApplied, "", true},
		{"another receiver", pay(nil), live, false, ipn.StateInvalid, "receiver_mismatch: ", true},
		{"an own order id named", pay(func(e *ipn.Event) { e.OrderID = "stripe:pi_1" }), ipn.Policy{Gateway: "gw", Gateways: []string{"gw", "stripe"}},
			true, ipn.StateApplied, `order id "stripe:pi_1" not taken`, true},
		{"a colon, no gateway", pay(func(e *ipn.Event) { e.OrderID = "shop:1" }), ipn.Policy{Gateway: "gw", Gateways: []string{"gw", "stripe"}},
			true, ipn.StateApplied, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ipn.Assess(ipn.Outcome{ID: 1, Verified: true}, tc.ev, tc.pol, tc.receiverOK)
			if o.State != tc.state || !strings.HasPrefix(o.Detail, tc.detail) || (tc.detail == "") != (o.Detail == "") || o.ApplyOrder != tc.apply {
				t.Fatalf("state %s detail %q apply %v", o.State, o.Detail, o.ApplyOrder)
			}
			if named := strings.HasPrefix(tc.ev.OrderID, "stripe:"); o.Event != nil && named == (o.Event.OrderID != "") {
				t.Fatalf("event order id %q (named %q)", o.Event.OrderID, tc.ev.OrderID)
			}
			if !o.Verified || o.ID != 1 {
				t.Fatal("Assess lost what the pipeline set")
			}
			if tc.apply && (o.EventKey != ipn.EventKey("gw", tc.ev) || o.Context.Gateway != "gw" || o.RequireRegistered != tc.pol.RequireRegistered) {
				t.Fatalf("%+v", o)
			}
			if (tc.name == "another receiver") != (len(o.Context.Receivers) > 0) {
				t.Fatalf("receivers %v: set only for a mismatch", o.Context.Receivers)
			}
		})
	}
	if !ipn.ReceiverAccepted(pay(nil), []string{"SHOP@example.com"}) || ipn.ReceiverAccepted(pay(nil), []string{"other@example.com"}) ||
		!ipn.ReceiverAccepted(pay(func(e *ipn.Event) { e.Receiver = "" }), []string{"other@example.com"}) {
		t.Fatal("ReceiverAccepted")
	}
}

// TestDecideOrderWithoutHistory: the same fact again for an order that
// has no history (a record written by hand, or damaged in a way that
// still decodes) changes nothing and says no reason; it does not panic.
func TestDecideOrderWithoutHistory(t *testing.T) {
	o := applied(3, "A1", "T1", "")
	bare := &ipn.Order{ID: "A1", Status: ipn.OrderPaid, Currency: "USD",
		Facts: []ipn.OrderFact{{Key: o.EventKey, Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T1", Amount: "19.99"}}}
	d := ipn.Decide(o, ipn.Stored{Processing: received(), Order: bare}, decideT0)
	if d.Processing.State != ipn.StateApplied || d.Recorded.Reason != "" || d.Recorded.OrderTo != ipn.OrderPaid || len(d.Effects) != 0 {
		t.Fatalf("%+v", d.Recorded)
	}
	// An unknown type for that order: nothing to say either.
	other := applied(4, "A1", "T9", "")
	other.Event.Type = ipn.TypeOther
	if d := ipn.Decide(other, ipn.Stored{Processing: received(), Order: bare}, decideT0); d.Recorded.Reason != "" {
		t.Fatalf("%+v", d.Recorded)
	}
}
