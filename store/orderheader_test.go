package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// OrderHeader is the stored order without its facts, history and txn
// ids, its Changes counting the history entries, for small orders (those
// inside its value) and long ones (kept apart) alike.
func TestOrderHeaderLeavesOutEntries(t *testing.T) {
	db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{})
	r := rand.New(rand.NewPCG(5, 6))
	ac := ipn.ApplyContext{Gateway: "g"}
	for n, id := range map[int]string{1: "ONE", 3: "FEW", 4 * inlineEntries: "LONG"} {
		for range n {
			applyKept(t, db, randomEvent(r, id), ac)
		}
		var want *ipn.Order
		db.bolt.View(func(tx *bolt.Tx) error {
			so, err := getStoredOrder(tx, id)
			if err != nil || so == nil {
				return fmt.Errorf("%s: %v", id, err)
			}
			want = &so.Order
			return nil
		})
		if want == nil {
			continue // no event made it an order
		}
		want.Changes = max(want.Changes, len(want.History))
		want.History, want.Facts, want.TxnIDs = nil, nil, nil
		got, err := db.OrderHeader(id)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("OrderHeader(%s) = %+v, %v\nwant %+v", id, got, err, want)
		}
		if got != nil && id != "LONG" && got.Changes == 0 {
			t.Errorf("OrderHeader(%s): no changes counted", id)
		}
	}
	if _, err := db.OrderHeader("NONE"); err == nil {
		t.Error("OrderHeader of no order: no error")
	}
}

func BenchmarkOrderHeader(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "ipnd.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "txn_000123", OrderID: "ORD-000123",
		Amount: "149.90", Currency: "EUR", CustomerEmail: "customer.name@example.com", CustomerName: "Customer Name"}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		next, _ := ipn.Apply(nil, ev, ipn.ApplyContext{Gateway: "shop"})
		return db.recordOrder(tx, nil, &next, nil, nil)
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := db.OrderHeader("ORD-000123"); err != nil {
			b.Fatal(err)
		}
	}
}
