package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/fulfil"
	"ipnd/ipn"
)

// applyFulfilled applies ev as the pipeline records a decision: the
// state looked up, the pure decision, what it delivers, the write.
func applyFulfilled(t *testing.T, db *DB, ev *ipn.Event, ac ipn.ApplyContext) []ipn.Effect {
	t.Helper()
	var effects []ipn.Effect
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		old, st, err := orderState(tx, ev.OrderID, ev, ac)
		if err != nil {
			return err
		}
		var next ipn.Order
		var w *ipn.OrderWrite
		if st != nil {
			next, w, effects = ipn.ApplyState(old, st, ev, ac)
		} else {
			next, effects = ipn.Apply(old, ev, ac)
		}
		if effects, err = db.fulfilOrder(tx, old, &next, w, ev, effects, ac.Now); err != nil {
			return err
		}
		return db.recordOrder(tx, old, &next, st, w)
	})
	if err != nil {
		t.Fatal(err)
	}
	return effects
}

func testCatalog(t *testing.T) *fulfil.Catalog {
	f := filepath.Join(t.TempDir(), "app.zip")
	os.WriteFile(f, []byte("app"), 0o600)
	return &fulfil.Catalog{PublicURL: "https://x.example", Grace: time.Hour, Products: map[string]*fulfil.Product{
		"app": {ID: "app", File: f, DownloadLimit: 5, LinkTTL: time.Hour, License: fulfil.LicenseGenerated, Activations: 1, Format: fulfil.FormatGrouped}}}
}

// TestFulfilmentDisputeClosedByTheMerchant: the merchant's decision on a
// dispute (CloseDispute) restores the deliveries when won and leaves them
// revoked when lost; deleting an order removes its deliveries.
func TestFulfilmentDisputeClosedByTheMerchant(t *testing.T) {
	db := mustOpen(t)
	db.SetCatalog(testCatalog(t))
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range []string{"WON", "LOST"} {
		pay := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T-" + id, OrderID: id, Amount: "5.00", Currency: "USD", Items: "app:1"}
		applyFulfilled(t, db, pay, ipn.ApplyContext{Now: t0, Notification: 1, Gateway: "paypal", EventKey: ipn.EventKey("paypal", pay)})
		dispute := &ipn.Event{Type: ipn.TypeDispute, TxnID: "CASE-" + id, ParentTxnID: "T-" + id, OrderID: id, Amount: "5.00", Currency: "USD"}
		applyFulfilled(t, db, dispute, ipn.ApplyContext{Now: t0.Add(time.Hour), Notification: 2, Gateway: "paypal", EventKey: ipn.EventKey("paypal", dispute)})
		if rec, _, err := db.Deliveries(id); err != nil || !rec.Revoked {
			t.Fatalf("%s disputed: %+v %v, want revoked", id, rec, err)
		}
	}
	if _, err := db.CloseDispute("WON", ipn.DisputeDecision{Won: true, By: "ann"}, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CloseDispute("LOST", ipn.DisputeDecision{Won: false, By: "ann"}, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if rec, lic, _ := db.Deliveries("WON"); rec.Revoked || lic[rec.Deliveries[0].LicenseHash].Disabled {
		t.Errorf("a won dispute left the deliveries revoked: %+v", rec)
	}
	rec, lic, _ := db.Deliveries("LOST")
	if !rec.Revoked || !lic[rec.Deliveries[0].LicenseHash].Disabled {
		t.Errorf("a lost dispute restored the deliveries: %+v", rec)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error { return deleteOrder(tx, "LOST") }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Deliveries("LOST"); err == nil {
		t.Error("the deleted order's deliveries are still there")
	}
	if _, err := db.License(lic[rec.Deliveries[0].LicenseHash].Key); err == nil {
		t.Error("the deleted order's license is still there")
	}
}

// TestFulfilmentReviewOfAnOrderKeptInRecords: an order kept in records
// (longer than its value holds) that becomes paid naming an unknown
// product goes to review, and the history entry written says so.
func TestFulfilmentReviewOfAnOrderKeptInRecords(t *testing.T) {
	db := mustOpen(t)
	db.SetCatalog(testCatalog(t))
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range inlineEntries + 2 {
		ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusFailed, TxnID: fmt.Sprintf("F%d", i), OrderID: "R", Amount: "5.00", Currency: "USD"}
		applyFulfilled(t, db, ev, ipn.ApplyContext{Now: t0.Add(time.Duration(i) * time.Minute), Notification: uint64(i + 1), Gateway: "g", EventKey: ipn.EventKey("g", ev)})
	}
	pay := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "P", OrderID: "R", Amount: "5.00", Currency: "USD", Items: "nope:1"}
	effects := applyFulfilled(t, db, pay, ipn.ApplyContext{Now: t0.Add(time.Hour), Notification: 99, Gateway: "g", EventKey: ipn.EventKey("g", pay)})
	o, err := db.GetOrder("R")
	if err != nil || o.Status != ipn.OrderReview || strings.Join(o.Flags, ",") != ipn.FlagUnknownProduct {
		t.Fatalf("order: %+v %v", o, err)
	}
	h, _ := db.OrderHistory("R", o.Changes-1, 1)
	if len(h) != 1 || h[0].To != ipn.OrderReview || !strings.Contains(h[0].Reason, "unknown_product") {
		t.Errorf("last history entry = %+v", h)
	}
	for _, e := range effects {
		if e.Template == ipn.TemplatePaymentReceived {
			t.Errorf("the customer would be told: %+v", e)
		}
	}
}
