package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestRetentionPurge, with a controlled clock: notifications received
// before the cutoff lose body, headers and remote address, and the
// customer's data leaves their events, their delivered outbox items and
// their orders, once those are older too; younger ones and everything
// accounting needs are untouched; a notification still waiting for a
// postback keeps its body; a second pass finds nothing more; it resumes
// across a reopen.
func TestRetentionPurge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	old := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	young := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	cutoff := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	bodies := map[uint64]string{}
	add := func(at time.Time, i int) uint64 {
		n := sample("g", fmt.Sprintf("m%d", i), fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":"O%d","amount":"5.00","currency":"EUR","customer_email":"c%d@example.com"}}`, i, i))
		n.ReceivedAt = at
		id, _, err := db.Append(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		bodies[id] = string(n.Body)
		return id
	}
	// Process notifications 1..n at clock now: applied, order created, a
	// customer email queued and delivered.
	process := func(now time.Time, ids ...uint64) {
		work, err := db.Pending(now, 100)
		if err != nil {
			t.Fatal(err)
		}
		var outs []ipn.Outcome
		var cursor uint64
		for _, w := range work {
			id := w.Notification.ID
			cursor = max(cursor, id)
			i := int(id)
			ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("T%d", i),
				OrderID: fmt.Sprintf("O%d", i), Amount: "5.00", Currency: "EUR", CustomerEmail: fmt.Sprintf("c%d@example.com", i), CustomerName: "Ann Lee"}
			outs = append(outs, ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("g", ev),
				ApplyOrder: true, Context: ipn.ApplyContext{Gateway: "g"}})
		}
		if _, err := db.Finish(outs, cursor, now); err != nil {
			t.Fatal(err)
		}
		items, err := db.ListOutbox(OutboxPending, 100)
		if err != nil {
			t.Fatal(err)
		}
		var res []ipn.OutboxResult
		for _, it := range items {
			res = append(res, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1,
				Detail: ipn.AttemptDetail{HTTPStatus: 200, Response: "thanks, Ann Lee"}})
		}
		if err := db.FinishOutbox(res, now); err != nil {
			t.Fatal(err)
		}
	}
	add(old, 1)
	add(old, 2)
	process(old)
	add(young, 3)
	process(young)

	p, err := db.Purge(cutoff, 200)
	if err != nil {
		t.Fatal(err)
	}
	// Each order queued an email, a shop callback and a script run (no
	// EffectKinds given): all three carry the customer.
	if p.Notifications != 2 || p.Orders != 2 || p.OutboxItems != 6 {
		t.Errorf("purged %+v, want 2 notifications, 2 orders, 6 outbox items", p)
	}
	// What the shop answered may name the customer: gone with the rest.
	all, _ := db.ListOutbox("", 100)
	for _, it := range all {
		attempts, err := db.OutboxAttempts(it.ID)
		if err != nil || len(attempts) != 1 || attempts[0].HTTPStatus != 200 {
			t.Fatalf("attempts of %d: %v %+v", it.ID, err, attempts)
		}
		if oldItem := it.CreatedAt.Before(cutoff); (attempts[0].Response == "") != oldItem {
			t.Errorf("item %d (old %v) after the purge: response %q", it.ID, oldItem, attempts[0].Response)
		}
	}
	for id := uint64(1); id <= 3; id++ {
		n, st, err := db.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(bodies[id]))
		if id <= 2 {
			if n.Purged.IsZero() || len(n.Body) != 0 || n.Headers != nil || n.RemoteAddr != "" || n.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("notification %d not purged: %+v", id, n)
			}
			if st.Event.CustomerEmail != "" || st.Event.CustomerName != "" || st.Event.Amount != "5.00" || st.Event.TxnID == "" || n.DedupKey == "" {
				t.Errorf("notification %d event after purge: %+v (dedup %q)", id, st.Event, n.DedupKey)
			}
		} else if !n.Purged.IsZero() || string(n.Body) != bodies[id] || st.Event.CustomerEmail == "" {
			t.Errorf("young notification %d touched: %+v %+v", id, n, st.Event)
		}
	}
	for i, want := range map[int]bool{1: true, 2: true, 3: false} {
		o, err := db.GetOrder(fmt.Sprintf("O%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if purged := o.CustomerEmail == ""; purged != want || o.Paid != "5.00" || o.Status != ipn.OrderPaid || len(o.History) == 0 {
			t.Errorf("order O%d: email %q paid %s status %s; want purged=%v with its totals and history", i, o.CustomerEmail, o.Paid, o.Status, want)
		}
	}
	items, _ := db.ListOutbox("", 100)
	for _, it := range items {
		old := it.CreatedAt.Before(cutoff)
		if scrubbed := it.Effect.To == "" && it.Effect.Event.CustomerEmail == ""; scrubbed != old {
			t.Errorf("outbox item %d (created %s): to %q", it.ID, it.CreatedAt, it.Effect.To)
		}
	}
	counts, _ := db.OrderCounts()
	if counts[ipn.OrderPaid] != 3 {
		t.Errorf("order counts after purge: %v", counts)
	}

	// A notification still waiting for a postback keeps its body, and so
	// does everything after it, until it is final.
	waiting := add(old, 4)
	work, _ := db.Pending(young, 100)
	if _, err := db.Finish([]ipn.Outcome{{ID: waiting, State: ipn.StateReceived, RetryAt: young.Add(time.Hour), Attempts: 1}}, waiting, young); err != nil || len(work) != 1 {
		t.Fatal(err, work)
	}
	if p, err := db.Purge(cutoff, 200); err != nil || p.Notifications != 0 {
		t.Errorf("purge with a postback pending: %+v %v", p, err)
	}
	if n, _, _ := db.Get(waiting); !n.Purged.IsZero() {
		t.Error("a notification waiting for its postback lost its body")
	}

	// Nothing more to do, also after a reopen.
	db.Close()
	db = openAt(t, path, Options{})
	defer db.Close()
	if p, err := db.Purge(cutoff, 200); err != nil || p.Notifications != 0 || p.OutboxItems != 0 || p.Orders != 0 {
		t.Errorf("second pass: %+v %v", p, err)
	}
	if err := db.Check(); err != nil {
		t.Error(err)
	}
}
