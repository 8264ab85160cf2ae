package store

import (
	"testing"
	"time"

	"ipnd/ipn"
)

// TestParkedUntilItsPayment: a refund that names only its payment intent
// waits (Parked counts it) until the payment naming the order arrives;
// then it is applied to that order and no longer counted.
func TestParkedUntilItsPayment(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	refund := payOutcome(t, db, "", "re_1", now)
	refund.Event.Type, refund.Event.Status, refund.Event.ParentTxnID = ipn.TypeRefund, ipn.StatusRefunded, "pi_1"
	db.Pending(now, 100)
	recs, err := db.Finish([]ipn.Outcome{refund}, refund.ID, now)
	if err != nil || recs[0].State != ipn.StateApplied || recs[0].OrderID != "" {
		t.Fatalf("%+v %v", recs, err)
	}
	if n, err := db.Parked(); err != nil || n != 1 {
		t.Fatalf("Parked = %d, %v; want 1", n, err)
	}
	pay := payOutcome(t, db, "A1", "pi_1", now)
	db.Pending(now, 100)
	recs, err = db.Finish([]ipn.Outcome{pay}, pay.ID, now)
	if err != nil || recs[0].OrderTo != ipn.OrderRefunded {
		t.Fatalf("the payment with its parked refund: %+v %v", recs, err)
	}
	if n, err := db.Parked(); err != nil || n != 0 {
		t.Fatalf("Parked = %d, %v after its payment; want 0", n, err)
	}
	_, p, err := db.Get(refund.ID)
	if err != nil || p.Event.OrderID != "A1" {
		t.Fatalf("the refund's event names order %q (%v), want A1", p.Event.OrderID, err)
	}
}
