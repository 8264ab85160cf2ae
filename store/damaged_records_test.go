package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// payOutcome appends a notification and returns an applied outcome for a
// completed payment of order with txn id txn.
func payOutcome(t *testing.T, db *DB, order, txn string, now time.Time) ipn.Outcome {
	t.Helper()
	id, _, err := db.Append(context.Background(), sample("g", "k-"+txn, "{}"))
	if err != nil {
		t.Fatal(err)
	}
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: txn, OrderID: order,
		Amount: "5.00", Currency: "USD"}
	return ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: "g\x00" + txn, ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "g"}}
}

// TestDamagedOrderStallsNothing: an order record that no longer decodes
// (a damaged page) fails the notifications for that order, with the
// reason in their history, and every other notification in the same
// batch and after it is applied. Before, the batch's transaction failed
// and the pipeline retried it forever: nothing was processed again.
func TestDamagedOrderStallsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	defer db.Close()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	first := payOutcome(t, db, "A1", "T1", now)
	db.Pending(now, 100)
	if _, err := db.Finish([]ipn.Outcome{first}, first.ID, now); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOrders).Put([]byte("A1"), []byte("\x00garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	again := payOutcome(t, db, "A1", "T2", now) // a second payment of the damaged order
	other := payOutcome(t, db, "B2", "T3", now)
	db.Pending(now, 100)
	recs, err := db.Finish([]ipn.Outcome{again, other}, other.ID, now)
	if err != nil {
		t.Fatalf("one damaged order failed the whole batch: %v", err)
	}
	if recs[0].State != ipn.StateFailed || !strings.Contains(recs[0].Detail, `order "A1"`) ||
		!strings.Contains(recs[0].Detail, "ipnd restore") {
		t.Fatalf("damaged order's notification: %+v", recs[0])
	}
	if recs[1].State != ipn.StateApplied || recs[1].OrderTo != ipn.OrderPaid {
		t.Fatalf("the other order's notification: %+v", recs[1])
	}
	if o, err := db.GetOrder("B2"); err != nil || o == nil || o.Status != ipn.OrderPaid {
		t.Fatalf("B2: %+v %v", o, err)
	}
	_, p, err := db.Get(again.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h := p.History; p.State != ipn.StateFailed || h[len(h)-1].Detail != recs[0].Detail {
		t.Fatalf("history %+v", p)
	}
	if db.DamagedSeen() != 1 {
		t.Fatalf("DamagedSeen %d, want 1", db.DamagedSeen())
	}
	if c := db.Cursor(); c != other.ID {
		t.Fatalf("cursor %d, want %d", c, other.ID)
	}
}

// TestDamagedStateStallsNothing: a notification whose processing record
// no longer decodes is still returned by Pending and recorded as failed;
// the ones after it go on.
func TestDamagedStateStallsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	defer db.Close()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	bad := payOutcome(t, db, "A1", "T1", now)
	good := payOutcome(t, db, "B2", "T2", now)
	db.Pending(now, 100) // applies the journal
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(u64(bad.ID), []byte("\x00garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	work, err := db.Pending(now, 100)
	if err != nil || len(work) != 2 {
		t.Fatalf("Pending: %d items, %v", len(work), err)
	}
	recs, err := db.Finish([]ipn.Outcome{bad, good}, good.ID, now)
	if err != nil {
		t.Fatal(err)
	}
	if recs[0].State != ipn.StateFailed || recs[1].State != ipn.StateApplied {
		t.Fatalf("%+v", recs)
	}
}

// TestDamagedOutboxItemStallsNothing: an outbox item that no longer
// decodes is made dead, saying why, and the lane delivers the items
// after it; a due entry whose item is gone is dropped. Before, DueLane
// failed on it every time: the lane delivered nothing again.
func TestDamagedOutboxItemStallsNothing(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	queuePaid(t, db, "O2", now)
	queuePaid(t, db, "O3", now)
	mails := mustLane(t, db, ipn.EffectEmailCustomer, now)
	if len(mails) != 3 {
		t.Fatalf("%d emails due, want 3", len(mails))
	}
	broken, gone := mails[0].ID, mails[1].ID
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketOutbox).Put(u64(broken), []byte("\x00garbage")); err != nil {
			return err
		}
		return tx.Bucket(bucketOutbox).Delete(u64(gone))
	}); err != nil {
		t.Fatal(err)
	}
	items, _, err := db.DueLane(ipn.EffectEmailCustomer, now, 100)
	if err != nil {
		t.Fatalf("one damaged item stalls its lane: %v", err)
	}
	if len(items) != 1 || items[0].ID != mails[2].ID {
		t.Fatalf("due after the damaged ones: %+v, want item %d", items, mails[2].ID)
	}
	if again := mustLane(t, db, ipn.EffectEmailCustomer, now); len(again) != 1 {
		t.Fatalf("second read: %d due, want 1", len(again))
	}
	dead, err := db.ListOutbox(ipn.OutboxDead, 10)
	if err != nil || len(dead) != 1 || dead[0].ID != broken || !strings.Contains(dead[0].LastError, "does not decode") {
		t.Fatalf("dead items %+v %v", dead, err)
	}
	counts, err := db.OutboxCounts()
	if err != nil {
		t.Fatal(err)
	}
	if c := counts[ipn.OutboxPending][ipn.EffectEmailCustomer]; c != 1 {
		t.Errorf("pending customer emails counted %d, want 1", c)
	}
	if c := counts[ipn.OutboxDead][ipn.EffectEmailCustomer]; c != 1 {
		t.Errorf("dead customer emails counted %d, want 1", c)
	}
}

func mustLane(t *testing.T, db *DB, kind string, now time.Time) []ipn.OutboxItem {
	t.Helper()
	items, _ := lane(t, db, kind, now)
	return items
}

// TestDamagedStateOfARetry: a notification waiting for a postback retry
// whose state no longer decodes is recorded as failed once; its retry
// is dropped, so it is not taken again and again.
func TestDamagedStateOfARetry(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	o := payOutcome(t, db, "A1", "T1", now)
	db.Pending(now, 100)
	retry := ipn.Outcome{ID: o.ID, State: ipn.StateReceived, RetryAt: now.Add(time.Minute), Attempts: 1, Detail: "postback failed"}
	if _, err := db.Finish([]ipn.Outcome{retry}, o.ID, now); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(u64(o.ID), []byte("\x00garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	later := now.Add(2 * time.Minute)
	work, err := db.Pending(later, 100)
	if err != nil || len(work) != 1 {
		t.Fatalf("Pending: %d, %v", len(work), err)
	}
	recs, err := db.Finish([]ipn.Outcome{o}, 0, later)
	if err != nil || recs[0].State != ipn.StateFailed {
		t.Fatalf("%+v %v", recs, err)
	}
	if work, err := db.Pending(later.Add(time.Hour), 100); err != nil || len(work) != 0 {
		t.Fatalf("the failed notification is due again: %d items, %v", len(work), err)
	}
	if _, ok := db.NextDue(); ok {
		t.Fatal("a retry of the failed notification is still scheduled")
	}
}

// TestDamagedLogRecordStallsNothing: a notification whose raw record no
// longer decodes is taken by Pending and recorded as failed, saying so;
// the one after it is applied.
func TestDamagedLogRecordStallsNothing(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	bad := payOutcome(t, db, "A1", "T1", now)
	good := payOutcome(t, db, "B2", "T2", now)
	db.Pending(now, 100) // applies the journal
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLog).Put(u64(bad.ID), []byte("\x00garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	work, err := db.Pending(now, 100)
	if err != nil || len(work) != 2 || work[0].Notification.ID != bad.ID {
		t.Fatalf("Pending: %d items, %v", len(work), err)
	}
	// What the pipeline decides for a record it cannot read: its gateway
	// ("") is not configured.
	failed := ipn.Outcome{ID: bad.ID, State: ipn.StateFailed, Detail: "gateway is no longer configured"}
	recs, err := db.Finish([]ipn.Outcome{failed, good}, good.ID, now)
	if err != nil {
		t.Fatal(err)
	}
	if recs[0].State != ipn.StateFailed || !strings.Contains(recs[0].Detail, "cannot read") || recs[1].State != ipn.StateApplied {
		t.Fatalf("%+v", recs)
	}
	if work, err := db.Pending(now, 100); err != nil || len(work) != 0 {
		t.Fatalf("after: %d pending, %v", len(work), err)
	}
}
