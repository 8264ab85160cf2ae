package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestPrefill: Prefill leaves a store as ipnd would after receiving and
// processing the payments: every notification in the log, processed, the
// cursor past them, their orders paid, no outbox item; a copy of one of
// them is a duplicate and a new one gets the next id.
func TestPrefill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	const n = PrefillBatch + 7
	at := time.Now().UTC()
	gen := func(id uint64) (*ipn.Notification, ipn.Outcome) {
		nt := sample("g", fmt.Sprintf("pre-%d", id), `{}`)
		nt.ReceivedAt = at
		ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("T-%d", id),
			OrderID: fmt.Sprintf("O-%d", id), Amount: "1.00", Currency: "USD", CustomerEmail: "c@example.com"}
		return nt, ipn.Outcome{State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("g", ev), ApplyOrder: true,
			Context: ipn.ApplyContext{Gateway: "g"}}
	}
	if err := Prefill(path, n, gen, nil); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if st, _ := db.Stats(); st.LastID != n {
		t.Errorf("last id %d, want %d", st.LastID, n)
	}
	if c := db.Cursor(); c != n {
		t.Errorf("cursor %d, want %d", c, n)
	}
	if w, err := db.Pending(time.Now(), 64); err != nil || len(w) != 0 {
		t.Errorf("pending after prefill: %d (%v), want none", len(w), err)
	}
	for _, id := range []string{"O-1", fmt.Sprintf("O-%d", n)} {
		if o, err := db.GetOrder(id); err != nil || o.Status != "paid" {
			t.Errorf("order %s after prefill: %+v (%v), want paid", id, o, err)
		}
	}
	if items, err := db.ListOutbox("", 100); err != nil || len(items) != 0 {
		t.Errorf("outbox after prefill: %d items (%v), want none", len(items), err)
	}
	id, dup, err := db.Append(context.Background(), sample("g", "pre-3", `{}`))
	if err != nil || !dup || id != 3 {
		t.Errorf("a copy of notification 3: id %d dup %v (%v), want a duplicate of 3", id, dup, err)
	}
	if id, dup, err := db.Append(context.Background(), sample("g", "new", `{}`)); err != nil || dup || id != n+1 {
		t.Errorf("a new notification: id %d dup %v (%v), want %d", id, dup, err, n+1)
	}
}
