package store

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
)

// TestParkedEventsExpire: an event waiting for its payment is counted
// without a scan, fails past orders.park_for at the clock the caller
// gives (the pipeline's), alerts the merchant once, and a replay after
// its payment arrived applies it.
func TestParkedEventsExpire(t *testing.T) {
	db := mustOpen(t)
	db.SetParkFor(72 * time.Hour)
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for i := 1; i <= 3; i++ {
		if _, _, err := db.Append(context.Background(), sample("stripe", "evt_"+string(rune('0'+i)), "b")); err != nil {
			t.Fatal(err)
		}
	}
	db.Pending(t0, 10) // the records are in bbolt
	refund := func(id uint64, ch string) ipn.Outcome {
		ev := &ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, TxnID: ch, ParentTxnID: "pi_" + ch, Amount: "5.00", Currency: "USD"}
		return ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("stripe", ev), ApplyOrder: true,
			Context: ipn.ApplyContext{Gateway: "stripe"}}
	}
	if _, err := db.Finish([]ipn.Outcome{refund(1, "ch_A"), refund(2, "ch_B")}, 2, t0); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Parked(); n != 2 || err != nil {
		t.Fatalf("Parked = %d, %v; want 2", n, err)
	}
	if due, ok := db.NextDue(); !ok || !due.Equal(t0.Add(72*time.Hour)) {
		t.Errorf("NextDue = %v %v, want the first expiry %v", due, ok, t0.Add(72*time.Hour))
	}
	if n, err := db.ExpireParked(t0.Add(71 * time.Hour)); n != 0 || err != nil {
		t.Fatalf("ExpireParked before park_for = %d, %v", n, err)
	}
	// ch_B's payment arrives (an order of its own): its refund is adopted.
	pay := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "pi_ch_B", Refs: "cs_B ch_B", Amount: "20.00", Currency: "USD"}
	if _, err := db.Finish([]ipn.Outcome{{ID: 3, State: ipn.StateApplied, Event: pay, EventKey: ipn.EventKey("stripe", pay), ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "stripe"}}}, 3, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if o, err := db.GetOrder("stripe:pi_ch_B"); err != nil || o.Status != ipn.OrderPartiallyRefunded {
		t.Fatalf("order of its own: %+v, %v", o, err)
	}
	if n, _ := db.Parked(); n != 1 {
		t.Fatalf("Parked after the adoption = %d, want 1", n)
	}
	// Past park_for: ch_A's refund fails, with the reason, and alerts once.
	if n, err := db.ExpireParked(t0.Add(73 * time.Hour)); n != 1 || err != nil {
		t.Fatalf("ExpireParked past park_for = %d, %v; want 1", n, err)
	}
	if n, _ := db.Parked(); n != 0 {
		t.Errorf("Parked after the expiry = %d", n)
	}
	_, p, _ := db.Get(1)
	if p.State != ipn.StateFailed || !strings.Contains(p.History[len(p.History)-1].Detail, "waited 72h for its payment (no order yet for ch_A, pi_ch_A") {
		t.Errorf("expired: %s %+v", p.State, p.History)
	}
	items, _ := db.OutboxOf(1)
	if len(items) != 1 || items[0].Effect.Template != ipn.TemplateEventUnmatched {
		t.Errorf("outbox of the expired notification: %+v", items)
	}
	if _, ok := db.NextDue(); ok {
		t.Error("NextDue with nothing parked or scheduled")
	}
	if n, _ := db.ExpireParked(t0.Add(200 * time.Hour)); n != 0 {
		t.Errorf("expired again: %d", n)
	}

	// Its payment arrives; a replay applies the refund.
	if _, _, err := db.Append(context.Background(), sample("stripe", "evt_4", "b")); err != nil {
		t.Fatal(err)
	}
	db.Pending(t0, 10)
	payA := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "pi_ch_A", Refs: "ch_A", OrderID: "ORD-A", Amount: "20.00", Currency: "USD"}
	t1 := t0.Add(80 * time.Hour)
	if _, err := db.Finish([]ipn.Outcome{{ID: 4, State: ipn.StateApplied, Event: payA, EventKey: ipn.EventKey("stripe", payA), ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "stripe"}}}, 4, t1); err != nil {
		t.Fatal(err)
	}
	if err := db.Replay(1, t1); err != nil {
		t.Fatal(err)
	}
	if recs, err := db.Finish([]ipn.Outcome{refund(1, "ch_A")}, 0, t1); err != nil || recs[0].State != ipn.StateApplied || recs[0].OrderID != "ORD-A" {
		t.Fatalf("replayed refund: %+v %v", recs, err)
	}
	if o, _ := db.GetOrder("ORD-A"); o.Refunded != "5.00" {
		t.Errorf("ORD-A after the replayed refund: %+v", o)
	}
	if n, _ := db.Parked(); n != 0 {
		t.Errorf("Parked at the end = %d", n)
	}
	items, _ = db.OutboxOf(1)
	alerts := 0
	for _, it := range items {
		if it.Effect.Template == ipn.TemplateEventUnmatched {
			alerts++
		}
	}
	if alerts != 1 {
		t.Errorf("%d alerts for notification 1, want 1", alerts)
	}
}

// TestParkedCountMigrated: orphans an older build parked (no count, no
// index, no time) are counted and indexed when the store opens.
func TestParkedCountMigrated(t *testing.T) {
	db := mustOpen(t)
	if _, _, err := db.Append(context.Background(), sample("stripe", "evt_1", "b")); err != nil {
		t.Fatal(err)
	}
	db.Pending(time.Now(), 10)
	ev := &ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, TxnID: "ch_A", ParentTxnID: "pi_A", Amount: "5.00", Currency: "USD"}
	if _, err := db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateApplied, Event: ev, EventKey: "k", ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "stripe"}}}, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	// As an older build left it.
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketParkedDue); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(keyParked)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error { return migrateParked(tx, time.Now()) })
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := db.Parked(); n != 1 {
		t.Errorf("Parked after the migration = %d, want 1", n)
	}
	db.SetParkFor(time.Hour)
	if n, err := db.ExpireParked(time.Now().Add(2 * time.Hour)); n != 1 || err != nil {
		t.Errorf("ExpireParked of a migrated orphan = %d, %v", n, err)
	}
}

// TestPipelineExpiresParkedEvents: the pipeline itself fails a parked
// event once orders.park_for has passed on its clock, with nothing else
// arriving to wake it. Virtual time (synctest) stands for the 72 hours.
func TestPipelineExpiresParkedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{CheckInterval: time.Hour})
		defer db.Close()
		db.SetParkFor(72 * time.Hour)
		gw, err := gateway.New(gateway.Config{Name: "g", Kind: "standard-webhooks",
			Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
		if err != nil {
			t.Fatal(err)
		}
		p := pipeline.New(pipeline.Options{Journal: db, Gateways: []gateway.Gateway{gw}})
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- p.Run(ctx) }()
		// A refund naming only its payment, which never comes.
		if _, _, err := db.Append(ctx, sample("g", "m1", `{"type":"payment.refunded","data":{"txn_id":"R1","parent_txn_id":"P1","amount":"1.00","currency":"USD"}}`)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n, _ := db.Parked(); n != 1 {
			t.Fatalf("parked = %d, want 1", n)
		}
		time.Sleep(71 * time.Hour)
		synctest.Wait()
		if _, pr, _ := db.Get(1); pr.State != ipn.StateApplied {
			t.Fatalf("after 71h: %s", pr.State)
		}
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		_, pr, _ := db.Get(1)
		if pr.State != ipn.StateFailed || !strings.Contains(pr.History[len(pr.History)-1].Detail, "waited 72h for its payment") {
			t.Errorf("after 73h: %s %+v", pr.State, pr.History)
		}
		if n, _ := db.Parked(); n != 0 {
			t.Errorf("parked after the expiry = %d", n)
		}
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestParkedPaymentBecomesItsOwnOrder: a Stripe payment intent that
// names no order waits for a Checkout Session; a merchant who takes
// payments without Checkout (the PaymentIntents API, Dashboard or
// Invoicing payments) never sends one. Past orders.park_for the payment
// becomes an order of its own (stripe:<intent>), with the events parked
// under its identifiers, instead of failing: a completed payment is
// never left without an order. With orders.require_registered it fails
// as before.
func TestParkedPaymentBecomesItsOwnOrder(t *testing.T) {
	db := mustOpen(t)
	db.SetParkFor(time.Hour)
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for i := 1; i <= 3; i++ {
		if _, _, err := db.Append(context.Background(), sample("stripe", "evt_"+string(rune('0'+i)), "b")); err != nil {
			t.Fatal(err)
		}
	}
	db.Pending(t0, 10)
	intent := func(id uint64, pi string, requireRegistered bool) ipn.Outcome {
		ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: pi, Refs: "ch_" + pi, Amount: "20.00", Currency: "USD",
			CustomerEmail: "c@example.com", Secondary: true}
		return ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("stripe", ev), ApplyOrder: true,
			RequireRegistered: requireRegistered, Context: ipn.ApplyContext{Gateway: "stripe"}}
	}
	refund := &ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, TxnID: "ch_pi_A", ParentTxnID: "pi_A", Amount: "5.00", Currency: "USD"}
	if _, err := db.Finish([]ipn.Outcome{intent(1, "pi_A", false), intent(2, "pi_B", true)}, 2, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Finish([]ipn.Outcome{{ID: 3, State: ipn.StateApplied, Event: refund, EventKey: ipn.EventKey("stripe", refund), ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "stripe"}}}, 3, t0.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.Parked(); n != 3 {
		t.Fatalf("Parked = %d, want 3", n)
	}
	if _, err := db.ExpireParked(t0.Add(61 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	o, err := db.GetOrder("stripe:pi_A")
	if err != nil || o.Status != ipn.OrderPartiallyRefunded || o.Paid != "20.00" || o.Refunded != "5.00" {
		t.Fatalf("stripe:pi_A past park_for: %+v, %v; want its own order, paid 20.00, its refund adopted", o, err)
	}
	if _, p, _ := db.Get(1); p.State != ipn.StateApplied || p.Event == nil || p.Event.OrderID != "stripe:pi_A" {
		t.Errorf("the intent: %s %+v", p.State, p.Event)
	}
	if _, p, _ := db.Get(3); p.State != ipn.StateApplied || p.Event == nil || p.Event.OrderID != "stripe:pi_A" {
		t.Errorf("the refund: %s %+v", p.State, p.Event)
	}
	var templates []string
	for _, id := range []uint64{1, 3} {
		items, _ := db.OutboxOf(id)
		for _, it := range items {
			templates = append(templates, it.Effect.Template)
		}
	}
	if !slices.Contains(templates, ipn.TemplatePaymentReceived) || slices.Contains(templates, ipn.TemplateEventUnmatched) {
		t.Errorf("outbox of the intent and its refund: %q, want payment_received and no event_unmatched", templates)
	}
	// orders.require_registered: the payment names no registered order.
	if _, p, _ := db.Get(2); p.State != ipn.StateFailed {
		t.Errorf("the intent under require_registered: %s, want failed", p.State)
	}
	if _, err := db.GetOrder("stripe:pi_B"); err == nil {
		t.Error("stripe:pi_B made under require_registered")
	}
	if n, _ := db.Parked(); n != 0 {
		t.Errorf("Parked at the end = %d", n)
	}
	if n, _ := db.ExpireParked(t0.Add(200 * time.Hour)); n != 0 {
		t.Errorf("expired again: %d", n)
	}
}
