package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"ipnd/ipn"
)

// applyEvent records notification key applying ev to its order.
func applyEvent(t *testing.T, db *DB, key string, ev *ipn.Event, now time.Time) {
	t.Helper()
	nid, _, err := db.Append(context.Background(), sample("g", key, "{}"))
	if err != nil {
		t.Fatal(err)
	}
	db.Pending(now, 1000)
	if _, err := db.Finish([]ipn.Outcome{{ID: nid, State: ipn.StateApplied, Event: ev, EventKey: key, ApplyOrder: true}}, nid, now); err != nil {
		t.Fatal(err)
	}
}

// An order kept in the tally layout (more facts than fit in its value)
// is approved as a small one: paid, its flag approved, one payment email
// and one callback, the status counts moved; the same Idempotency-Key
// again changes nothing; a new flag puts it in review again.
func TestDecideLargeOrder(t *testing.T) {
	db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	o, err := ipn.NewRegisteredOrder("BIG", "10.00", "USD", "c@example.com", "", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	for i := range inlineEntries + 2 {
		applyEvent(t, db, fmt.Sprintf("k%d", i), &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted,
			TxnID: fmt.Sprintf("T%d", i), OrderID: "BIG", Amount: "1.00", Currency: "USD"}, now)
	}
	got, _ := db.GetOrder("BIG")
	if got.Status != ipn.OrderReview || len(got.Facts) != inlineEntries+2 {
		t.Fatalf("order %s with %d facts, want review", got.Status, len(got.Facts))
	}
	before, _ := db.ListOutbox("", 1000)
	v := max(got.Changes, len(got.History))
	d := Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionApprove, By: "admin", Why: "paid in parts"}, Version: v, Key: "k-1"}
	res, err := db.DecideOrder("BIG", d, now)
	if err != nil || res.Order.Status != ipn.OrderPaid || res.Repeated {
		t.Fatalf("approve: %v %+v", err, res)
	}
	if res.Order.Changes != v+1 || res.Order.History[len(res.Order.History)-1].By != "admin" {
		t.Errorf("after approve: changes %d, last %+v", res.Order.Changes, res.Order.History[len(res.Order.History)-1])
	}
	again, err := db.DecideOrder("BIG", d, now.Add(time.Second))
	if err != nil || !again.Repeated || again.Order.Changes != v+1 {
		t.Errorf("the same key again: %v repeated=%v changes %d", err, again.Repeated, again.Order.Changes)
	}
	if _, err := db.DecideOrder("BIG", Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionApprove}}, now); !errors.Is(err, ipn.ErrNotInReview) {
		t.Errorf("approve a paid order: %v", err)
	}
	if _, err := db.DecideOrder("BIG", Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionCancel}, Key: "k-1"}, now); !errors.Is(err, ErrKeyReused) {
		t.Errorf("the key on another decision: %v", err)
	}
	after, _ := db.ListOutbox("", 1000)
	var added []string
	for _, it := range after[:len(after)-len(before)] {
		added = append(added, it.Effect.Kind+"/"+it.Effect.Template)
	}
	if fmt.Sprint(added) != "[shop_callback/ shop_script/ email_customer/payment_received]" {
		t.Errorf("queued %v, want one payment email and one callback (and its script run)", added)
	}
	counts, _ := db.OrderCounts()
	if counts[ipn.OrderPaid] != 1 || counts[ipn.OrderReview] != 0 {
		t.Errorf("order counts %v", counts)
	}
	applyEvent(t, db, "k-eur", &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "TE", OrderID: "BIG",
		Amount: "1.00", Currency: "EUR"}, now)
	got, _ = db.GetOrder("BIG")
	if got.Status != ipn.OrderReview || fmt.Sprint(got.ApprovedFlags) != "[amount_mismatch]" {
		t.Errorf("after a payment in another currency: %s approved %v", got.Status, got.ApprovedFlags)
	}
	// Stale version.
	if _, err := db.DecideOrder("BIG", Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionApprove}, Version: v}, now); !errors.Is(err, ErrStale) {
		t.Errorf("stale version: %v", err)
	}
	// Cancel: final.
	if res, err := db.DecideOrder("BIG", Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionCancel, By: "cli"}}, now); err != nil || res.Order.Status != ipn.OrderCanceled {
		t.Fatalf("cancel: %v", err)
	}
	applyEvent(t, db, "k-late", &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusFailed, TxnID: "TL", OrderID: "BIG",
		Amount: "1.00", Currency: "USD"}, now)
	if got, _ = db.GetOrder("BIG"); got.Status != ipn.OrderCanceled {
		t.Errorf("a canceled order after a late failed payment: %s", got.Status)
	}
	if _, err := db.DecideOrder("BIG", Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionCancel}}, now); !errors.Is(err, ipn.ErrFinal) {
		t.Errorf("cancel twice: %v", err)
	}
}
