package ipn

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func decisionEffects(effects []Effect) string {
	var out []string
	for _, e := range effects {
		out = append(out, e.Kind+":"+e.Template)
	}
	return fmt.Sprint(out)
}

func pay(o *Order, txn, amount string, now time.Time) Order {
	next, _ := Apply(o, &Event{Type: TypePayment, Status: StatusCompleted, TxnID: txn, OrderID: o.ID, Amount: amount,
		Currency: "USD", CustomerEmail: "c@example.com"}, ApplyContext{Now: now, Gateway: "g", EventKey: "k-" + txn})
	return next
}

// Approve: review -> what the payments make it, the flags approved and
// kept, the payment email only the first time the order is paid, a
// callback each time; a new flag puts it back in review. Cancel is final.
// A note changes nothing but the history.
func TestDecideOrder(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	o, _ := NewRegisteredOrder("O-1", "10.00", "USD", "c@example.com", "", nil, now)
	o = pay(&o, "T1", "4.00", now)
	if o.Status != OrderReview {
		t.Fatalf("underpaid: %s", o.Status)
	}
	t0, _ := RebuildTally(&o)
	next, change, effects, err := DecideOrder(&o, t0, OrderDecision{Kind: DecisionApprove, By: "admin", Why: "ok"}, now)
	if err != nil || next.Status != OrderPaid || change.From != OrderReview || change.To != OrderPaid || change.By != "admin" {
		t.Fatalf("approve: %v %s %+v", err, next.Status, change)
	}
	if fmt.Sprint(next.Flags) != "[amount_mismatch]" || fmt.Sprint(next.ApprovedFlags) != "[amount_mismatch]" ||
		next.Changes != len(next.History) || len(next.History) != len(o.History)+1 {
		t.Errorf("after approve: flags %v approved %v changes %d history %d", next.Flags, next.ApprovedFlags, next.Changes, len(next.History))
	}
	if got := decisionEffects(effects); got != "[email_customer:payment_received shop_callback:]" {
		t.Errorf("approve effects %s", got)
	}
	if effects[1].Order.Status != OrderPaid || effects[1].Order.Version != next.Changes || effects[0].Cause != "O-1/paid/payment_received" {
		t.Errorf("callback snapshot %+v, email cause %s", effects[1].Order, effects[0].Cause)
	}
	t1, _ := RebuildTally(&next)
	if _, _, _, err := DecideOrder(&next, t1, OrderDecision{Kind: DecisionApprove}, now); !errors.Is(err, ErrNotInReview) {
		t.Errorf("approve again: %v", err)
	}
	// Paid in full again: double_payment, a new flag: review again.
	again := pay(&next, "T2", "10.00", now)
	if again.Status != OrderReview {
		t.Fatalf("paid twice: %s %v", again.Status, again.Flags)
	}
	// Approved again: paid, already reached: no second payment email.
	t2, _ := RebuildTally(&again)
	paid, _, effects, err := DecideOrder(&again, t2, OrderDecision{Kind: DecisionApprove}, now)
	if err != nil || paid.Status != OrderPaid || decisionEffects(effects) != "[shop_callback:]" {
		t.Errorf("second approve: %v %s %s", err, paid.Status, decisionEffects(effects))
	}
	// A note: history only.
	t3, _ := RebuildTally(&paid)
	noted, change, effects, err := DecideOrder(&paid, t3, OrderDecision{Kind: DecisionNote, By: "cli", Why: "called"}, now)
	if err != nil || noted.Status != OrderPaid || len(effects) != 0 || change.Reason != "note by cli: called" {
		t.Errorf("note: %v %s %d %q", err, noted.Status, len(effects), change.Reason)
	}
	if _, _, _, err := DecideOrder(&paid, t3, OrderDecision{Kind: DecisionNote}, now); !errors.Is(err, ErrBadDecision) {
		t.Errorf("empty note: %v", err)
	}
	// Cancel: canceled, stays so; a second cancel is refused.
	canceled, _, effects, err := DecideOrder(&noted, t3, OrderDecision{Kind: DecisionCancel}, now)
	if err != nil || canceled.Status != OrderCanceled || !canceled.Canceled || decisionEffects(effects) != "[shop_callback:]" {
		t.Fatalf("cancel: %v %s %s", err, canceled.Status, decisionEffects(effects))
	}
	if late := pay(&canceled, "T2", "10.00", now.Add(time.Hour)); late.Status != OrderCanceled {
		t.Errorf("the same payment again after cancel: %s", late.Status)
	}
	if _, _, _, err := DecideOrder(&canceled, t3, OrderDecision{Kind: DecisionCancel}, now); !errors.Is(err, ErrFinal) {
		t.Errorf("cancel twice: %v", err)
	}
}
