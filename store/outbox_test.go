package store

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// queuePaid records an applied payment of order id with a customer
// address: a payment_received email and a shop callback are queued.
func queuePaid(t *testing.T, db *DB, id string, now time.Time) {
	t.Helper()
	nid, _, err := db.Append(context.Background(), sample("g", id, "{}"))
	if err != nil {
		t.Fatal(err)
	}
	db.Pending(now, 1000)
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T-" + id, OrderID: id,
		Amount: "5.00", Currency: "USD", CustomerEmail: "c@example.com"}
	if _, err := db.Finish([]ipn.Outcome{{ID: nid, State: ipn.StateApplied, Event: ev, EventKey: "k-" + id,
		ApplyOrder: true}}, nid, now); err != nil {
		t.Fatal(err)
	}
}

func lane(t *testing.T, db *DB, kind string, now time.Time) ([]ipn.OutboxItem, time.Time) {
	t.Helper()
	items, next, err := db.DueLane(kind, now, 100)
	if err != nil {
		t.Fatal(err)
	}
	return items, next
}

// Each lane reads only its own kind; a retry scheduled in one lane is
// its next due time and does not show in another.
func TestOutboxLanes(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	queuePaid(t, db, "O2", now)
	mails, next := lane(t, db, ipn.EffectEmailCustomer, now)
	calls, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(mails) != 2 || len(calls) != 2 || !next.IsZero() {
		t.Fatalf("lanes: %d emails, %d callbacks, next %v; want 2, 2, none", len(mails), len(calls), next)
	}
	for _, it := range mails {
		if it.Effect.Kind != ipn.EffectEmailCustomer {
			t.Errorf("customer email lane holds a %s", it.Effect.Kind)
		}
	}
	retry, retried := now.Add(time.Minute), mails[0].ID
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: retried, State: ipn.OutboxPending, Attempts: 1, RetryAt: retry}}, now); err != nil {
		t.Fatal(err)
	}
	if mails, next = lane(t, db, ipn.EffectEmailCustomer, now); len(mails) != 1 || !next.Equal(retry) {
		t.Errorf("after a retry: %d due, next %v; want 1 and %v", len(mails), next, retry)
	}
	if calls, _ = lane(t, db, ipn.EffectShopCallback, now); len(calls) != 2 {
		t.Errorf("a retry in the email lane changed the callback lane: %d due", len(calls))
	}
	if all, _ := db.DueOutbox(now.Add(time.Hour), 100); len(all) != 6 { // and two script runs
		t.Errorf("DueOutbox over every lane: %d items, want 6", len(all))
	}
	few, _ := db.DueOutbox(now.Add(time.Hour), 3)
	if len(few) != 3 || few[2].NextAttempt.Before(few[1].NextAttempt) || few[1].NextAttempt.Before(few[0].NextAttempt) {
		t.Errorf("DueOutbox(3) = %+v, want the 3 earliest, earliest first", few)
	}
	for _, it := range few {
		if it.ID == retried {
			t.Errorf("DueOutbox(3) holds the item retried a minute later, before items due now")
		}
	}
}

// A database written before lanes (due keys without the kind) is read
// by lane after it is opened again.
func TestOutboxDueMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	err := db.bolt.Update(func(tx *bolt.Tx) error { // back to the old layout
		due := tx.Bucket(bucketOutboxDue)
		var keys [][]byte
		due.ForEach(func(k, _ []byte) error { keys = append(keys, append([]byte(nil), k...)); return nil })
		for _, k := range keys {
			_, at, id, _ := splitDueKey(k)
			due.Delete(k)
			old := make([]byte, 16)
			binary.BigEndian.PutUint64(old, uint64(at.UnixNano()))
			binary.BigEndian.PutUint64(old[8:], id)
			due.Put(old, nil)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = reopen(t, path)
	mails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	calls, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(mails) != 1 || len(calls) != 1 {
		t.Errorf("after migration: %d emails, %d callbacks due; want 1, 1", len(mails), len(calls))
	}
	if err := db.Check(); err != nil {
		t.Error(err)
	}
}

// Delivery ids (the callback's webhook-id) differ between two fresh
// databases, and between a database and its restored backup, for the
// same item ids; an item keeps its own across restarts.
func TestDeliveryIDsUniqueAcrossDatabases(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	first := func(db *DB, kind string) []ipn.OutboxItem {
		items, _ := lane(t, db, kind, now.Add(time.Hour))
		return items
	}
	a := reopen(t, filepath.Join(dir, "a.db"))
	b := reopen(t, filepath.Join(dir, "b.db"))
	queuePaid(t, a, "O1", now)
	queuePaid(t, b, "O1", now)
	ia, ib := first(a, ipn.EffectShopCallback)[0], first(b, ipn.EffectShopCallback)[0]
	if ia.ID != ib.ID || ia.Key() == ib.Key() || !strings.HasPrefix(ia.Key(), "ipnd_") {
		t.Errorf("fresh databases: item %d is %q and item %d is %q", ia.ID, ia.Key(), ib.ID, ib.Key())
	}

	f, err := os.Create(filepath.Join(dir, "copy.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Backup(f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	queuePaid(t, a, "O2", now) // the original goes on
	restored := reopen(t, filepath.Join(dir, "copy.db"))
	queuePaid(t, restored, "O3", now) // the restored copy goes on from the backup
	orig, copied := first(a, ipn.EffectShopCallback), first(restored, ipn.EffectShopCallback)
	if len(orig) != 2 || len(copied) != 2 || orig[1].ID != copied[1].ID {
		t.Fatalf("original %+v, copy %+v", orig, copied)
	}
	if orig[0].Key() != copied[0].Key() {
		t.Errorf("an item of the backup changed its id: %q, then %q", orig[0].Key(), copied[0].Key())
	}
	if orig[1].Key() == copied[1].Key() {
		t.Errorf("item %d after the backup has the same id %q in the original and in the restored copy", orig[1].ID, orig[1].Key())
	}
	a.Close()
	a = reopen(t, filepath.Join(dir, "a.db"))
	if again := first(a, ipn.EffectShopCallback); again[0].Key() != orig[0].Key() {
		t.Errorf("after a restart item 1 is %q, was %q", again[0].Key(), orig[0].Key())
	}
}

// A skipped item leaves the queue, is counted, notes the reason in its
// order's history in the same transaction, and can be retried by hand.
func TestOutboxSkipped(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	mails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	it := mails[0]
	before, _ := db.GetOrder("O1")
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: it.ID, State: ipn.OutboxSkipped, Attempts: 1,
		Error: "no recipient: email.merchant_to is empty"}}, now); err != nil {
		t.Fatal(err)
	}
	if due, _ := lane(t, db, ipn.EffectEmailCustomer, now.Add(time.Hour)); len(due) != 0 {
		t.Errorf("a skipped item is still due")
	}
	skipped, _ := db.ListOutbox(OutboxSkipped, 10)
	if len(skipped) != 1 || skipped[0].Attempts != 1 || skipped[0].LastError == "" {
		t.Errorf("skipped items = %+v", skipped)
	}
	if c, _ := db.OutboxCounts(); c[OutboxSkipped][ipn.EffectEmailCustomer] != 1 || c[OutboxPending][ipn.EffectEmailCustomer] != 0 {
		t.Errorf("counts = %v", c)
	}
	o, _ := db.GetOrder("O1")
	if len(o.History) != len(before.History)+1 {
		t.Fatalf("history %+v, want one line more than %+v", o.History, before.History)
	}
	h := o.History[len(o.History)-1]
	if h.From != o.Status || h.To != o.Status || !strings.Contains(h.Reason, "skipped: no recipient: email.merchant_to is empty") ||
		!strings.Contains(h.Reason, ipn.TemplatePaymentReceived) {
		t.Errorf("history line = %+v", h)
	}
	if oc, _ := db.OrderCounts(); oc[o.Status] != 1 {
		t.Errorf("order counts = %v", oc)
	}
	if _, err := db.RetryOutbox(it.ID, now); err != nil {
		t.Errorf("retry of a skipped item: %v", err)
	}
	if due, _ := lane(t, db, ipn.EffectEmailCustomer, now); len(due) != 1 || due[0].Attempts != 0 {
		t.Errorf("after a retry: %+v", due)
	}
}

// queueRefund records an applied full refund of order id (paid 5.00 by
// queuePaid): an order.refunded callback (and script run) is queued.
func queueRefund(t *testing.T, db *DB, id string, now time.Time) {
	t.Helper()
	nid, _, err := db.Append(context.Background(), sample("g", "refund-"+id, "{}"))
	if err != nil {
		t.Fatal(err)
	}
	db.Pending(now, 1000)
	ev := &ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, TxnID: "R-" + id, ParentTxnID: "T-" + id,
		OrderID: id, Amount: "-5.00", Currency: "USD"}
	if _, err := db.Finish([]ipn.Outcome{{ID: nid, State: ipn.StateApplied, Event: ev, EventKey: "kr-" + id,
		ApplyOrder: true}}, nid, now); err != nil {
		t.Fatal(err)
	}
}

// dueOrders lists the callbacks due at now as "order/status", sorted.
func dueOrders(t *testing.T, db *DB, now time.Time) []string {
	t.Helper()
	items, _ := lane(t, db, ipn.EffectShopCallback, now)
	var out []string
	for _, it := range items {
		out = append(out, it.Effect.OrderID+"/"+string(it.Effect.Order.Status))
	}
	slices.Sort(out)
	return out
}

// The callbacks of one order are due one at a time, in the order they
// were queued: a later one only once the earlier one is sent or dead,
// also after the database is closed and opened again (the order's queue
// is stored); other orders are not held back. A manual retry of an older
// item puts it before the order's later pending ones.
func TestOutboxOrderQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "A", now)
	queueRefund(t, db, "A", now)
	queuePaid(t, db, "B", now)
	if got := strings.Join(dueOrders(t, db, now), " "); got != "A/paid B/paid" {
		t.Fatalf("due = %q, want A/paid B/paid (A's refund waits for its payment)", got)
	}
	items, _ := lane(t, db, ipn.EffectShopCallback, now)
	paidA, paidB := items[0], items[1]
	retry := now.Add(time.Minute)
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: paidA.ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: retry, Error: "HTTP 500"},
		{ID: paidB.ID, State: ipn.OutboxSent, Attempts: 1}}, now); err != nil {
		t.Fatal(err)
	}
	queuePaid(t, db, "C", now)
	if got := strings.Join(dueOrders(t, db, now), " "); got != "C/paid" {
		t.Errorf("after A's payment failed: due = %q, want C/paid only", got)
	}
	if _, next := lane(t, db, ipn.EffectShopCallback, now.Add(time.Second)); !next.Equal(retry) {
		t.Errorf("next due %v, want A's retry at %v", next, retry)
	}
	// The listing of pending items shows the waiting ones too.
	pending, _ := db.ListOutbox(OutboxPending, 100)
	var listed []string
	var waitingRefundA uint64
	for _, it := range pending {
		if it.Effect.Kind == ipn.EffectShopCallback {
			listed = append(listed, it.Effect.OrderID+"/"+string(it.Effect.Order.Status))
			if it.Effect.OrderID == "A" && it.Effect.Order.Status == ipn.OrderRefunded {
				waitingRefundA = it.ID
			}
		}
	}
	if got := strings.Join(listed, " "); got != "C/paid A/paid A/refunded" {
		t.Errorf("pending callbacks listed: %q, want C/paid A/paid A/refunded (due first, then waiting)", got)
	}
	// "Retry now" on the waiting one does not let it pass A's payment.
	if _, err := db.RetryOutbox(waitingRefundA, now); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, now), " "); got != "C/paid" {
		t.Errorf("after a manual retry of A's waiting refund: due = %q, want C/paid only", got)
	}

	db.Close()
	db = reopen(t, path)
	if got := strings.Join(dueOrders(t, db, retry), " "); got != "A/paid C/paid" {
		t.Errorf("after a restart, at A's retry: due = %q, want A/paid C/paid", got)
	}
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: paidA.ID, State: ipn.OutboxSent, Attempts: 2}}, retry); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, retry), " "); got != "A/refunded C/paid" {
		t.Errorf("after A's payment was sent: due = %q, want A/refunded C/paid", got)
	}
	// A dead item lets the next one go too; its manual retry comes
	// before the order's later items still pending.
	items, _ = lane(t, db, ipn.EffectShopCallback, retry)
	refundA := items[0]
	queueRefund(t, db, "C", retry)
	paidC := items[1]
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: paidC.ID, State: ipn.OutboxDead, Attempts: 1, Error: "HTTP 410"}}, retry); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, retry), " "); got != "A/refunded C/refunded" {
		t.Errorf("after C's payment went dead: due = %q, want A/refunded C/refunded", got)
	}
	if _, err := db.RetryOutbox(paidC.ID, retry); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, retry), " "); got != "A/refunded C/paid" {
		t.Errorf("after a manual retry of C's payment: due = %q, want A/refunded C/paid", got)
	}
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: refundA.ID, State: ipn.OutboxSent, Attempts: 1},
		{ID: paidC.ID, State: ipn.OutboxSent, Attempts: 1}}, retry); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, retry), " "); got != "C/refunded" {
		t.Errorf("at the end: due = %q, want C/refunded", got)
	}
	// Script runs have their own queue per order: A's script items did
	// not wait for A's callbacks.
	scripts, _ := lane(t, db, ipn.EffectShopScript, retry)
	if len(scripts) != 3 { // A paid, B paid, C paid (A's and C's refunds wait)
		t.Errorf("script lane: %d due, want 3", len(scripts))
	}
	if err := db.Check(); err != nil {
		t.Error(err)
	}
}

// A database written before the order queues (schema 4: every pending
// callback in the due index) gets them on open: only each order's oldest
// pending callback stays due.
func TestOutboxOrderQueueMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "A", now)
	queueRefund(t, db, "A", now)
	queuePaid(t, db, "B", now)
	err := db.bolt.Update(func(tx *bolt.Tx) error { // back to the layout of schema 4
		var pending []*ipn.OutboxItem
		tx.Bucket(bucketOutbox).ForEach(func(k, _ []byte) error {
			it, _ := getOutbox(tx, binary.BigEndian.Uint64(k))
			if it.State == ipn.OutboxPending {
				pending = append(pending, it)
			}
			return nil
		})
		for _, it := range pending {
			tx.Bucket(bucketOutboxDue).Put(dueKey(it.Effect.Kind, it.NextAttempt, it.ID), nil)
		}
		tx.Bucket(bucketMeta).Put(keySchema, u64(4))
		return tx.DeleteBucket(bucketOutboxOrder)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, now), " "); got != "A/paid A/refunded B/paid" {
		t.Fatalf("the old layout: due = %q", got)
	}
	db.Close()
	db = reopen(t, path)
	if got := strings.Join(dueOrders(t, db, now), " "); got != "A/paid B/paid" {
		t.Errorf("after the upgrade: due = %q, want A/paid B/paid", got)
	}
	items, _ := lane(t, db, ipn.EffectShopCallback, now)
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: items[0].ID, State: ipn.OutboxSent, Attempts: 1}}, now); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, now), " "); got != "A/refunded B/paid" {
		t.Errorf("after A's payment was sent: due = %q, want A/refunded B/paid", got)
	}
}

// A result saying an item was not attempted is recorded: the item keeps
// its attempt count, waits until the result's retry time and says why.
func TestOutboxNotAttemptedRecorded(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	mails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	it := mails[0]
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: it.ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: now.Add(time.Minute),
		Error: "smtp: 451 later"}}, now); err != nil {
		t.Fatal(err)
	}
	wait := now.Add(time.Minute + 3*time.Second)
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: it.ID, State: ipn.OutboxPending, Attempts: 1, NotAttempted: true,
		RetryAt: wait, Error: "not attempted: smtp: connection lost after message <x@y>"}}, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	pending, _ := db.ListOutbox(OutboxPending, 10)
	var got *ipn.OutboxItem
	for i := range pending {
		if pending[i].ID == it.ID {
			got = &pending[i]
		}
	}
	if got == nil || got.Attempts != 1 || !got.NextAttempt.Equal(wait) || !strings.Contains(got.LastError, "not attempted") {
		t.Fatalf("after a not-attempted result: %+v, want 1 attempt, next at %v, the reason", got, wait)
	}
	if due, _ := lane(t, db, ipn.EffectEmailCustomer, now.Add(time.Minute)); len(due) != 0 {
		t.Errorf("a not-attempted item is due again at once")
	}
	// A not-attempted result for an item that changed meanwhile (a
	// manual retry reset it to 0 attempts) is ignored, as any other.
	db.RetryOutbox(it.ID, now)
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: it.ID, State: ipn.OutboxPending, Attempts: 1, NotAttempted: true,
		RetryAt: wait}}, now); err != nil {
		t.Fatal(err)
	}
	if due, _ := lane(t, db, ipn.EffectEmailCustomer, now); len(due) != 1 || due[0].Attempts != 0 {
		t.Errorf("a stale not-attempted result changed a retried item: %+v", due)
	}
}

// A damaged or vanished callback at the head of its order's queue is
// dealt with as in any lane (made dead, or its entry dropped), and the
// order's next callback becomes due: it does not wait forever.
func TestDamagedHeadOfAnOrderQueue(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, id := range []string{"A", "B"} {
		queuePaid(t, db, id, now)
		queueRefund(t, db, id, now)
	}
	heads, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(heads) != 2 {
		t.Fatalf("%d callbacks due, want 2", len(heads))
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketOutbox).Put(u64(heads[0].ID), []byte("\x00garbage")); err != nil {
			return err
		}
		return tx.Bucket(bucketOutbox).Delete(u64(heads[1].ID))
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.DueLane(ipn.EffectShopCallback, now, 100); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, now), " "); got != "A/refunded B/refunded" {
		t.Errorf("after the damaged heads: due = %q, want A/refunded B/refunded", got)
	}
}

// A callback damaged while it waits behind an earlier one of its order is
// made dead (said, counted) once it would be due, not dropped from its
// order's queue without a word: the pending count does not keep it
// forever, and the order's next callback goes.
func TestDamagedWaitingItemOfAnOrderQueue(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "A", now)
	queueRefund(t, db, "A", now)
	queueRefund(t, db, "A2", now) // another order, for contrast
	heads, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(heads) != 2 || heads[0].Effect.OrderID != "A" {
		t.Fatalf("due %+v, want A's order.paid and A2's callback", heads)
	}
	waiting, err := db.ListOutbox(ipn.OutboxPending, 100)
	if err != nil {
		t.Fatal(err)
	}
	var refund uint64
	for _, it := range waiting {
		if it.Effect.Kind == ipn.EffectShopCallback && it.Effect.OrderID == "A" && it.ID != heads[0].ID {
			refund = it.ID
		}
	}
	if refund == 0 {
		t.Fatalf("A's waiting refund callback not listed: %+v", waiting)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Put(u64(refund), []byte("\x00garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	seen := db.DamagedSeen()
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: heads[0].ID, State: ipn.OutboxSent, Attempts: 1}}, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.DueLane(ipn.EffectShopCallback, now, 100); err != nil {
		t.Fatal(err)
	}
	if got := db.DamagedSeen() - seen; got != 1 {
		t.Errorf("damaged items made dead = %d, want 1 (the waiting refund callback)", got)
	}
	counts, err := db.OutboxCounts()
	if err != nil {
		t.Fatal(err)
	}
	if p, d := counts[ipn.OutboxPending][ipn.EffectShopCallback], counts[ipn.OutboxDead][ipn.EffectShopCallback]; p != 1 || d != 1 {
		t.Errorf("callbacks pending %d, dead %d; want 1 (A2's), 1 (the damaged one)", p, d)
	}
}

// The recorder commits the results of every lane together: a result for
// an item that is gone or whose record no longer reads must not keep the
// other results of the batch from being recorded (else the whole batch is
// retried forever and every lane waits for it).
func TestFinishOutboxOneBadResultDoesNotBlockTheBatch(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	mails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	it := mails[0]
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: 1 << 40, State: ipn.OutboxSent, Attempts: 1},
		{ID: it.ID, State: ipn.OutboxSent, Attempts: 1}}, now); err != nil {
		t.Fatalf("a result for an item that is gone failed the batch: %v", err)
	}
	if c, _ := db.OutboxCounts(); c[OutboxSent][ipn.EffectEmailCustomer] != 1 {
		t.Errorf("the good result was not recorded: counts = %v", c)
	}
}
