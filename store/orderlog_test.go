package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
)

// signedPayment is a signed Standard Webhooks notification of payment
// txn of order orderID, 1.00 USD, from gateway "shop".
func signedPayment(orderID, txn string) *ipn.Notification {
	key, _ := gateway.DecodeWebhookSecret(typicalSecret)
	body := fmt.Appendf(nil, `{"type":"payment.completed","data":{"txn_id":%q,"order_id":%q,"amount":"1.00","currency":"USD"}}`, txn, orderID)
	msgID := "msg_" + txn
	at := time.Now().UTC()
	return &ipn.Notification{Gateway: "shop", ReceivedAt: at, ContentType: "application/json", Body: body, DedupKey: msgID,
		Headers: http.Header{"Webhook-Id": {msgID}, "Webhook-Timestamp": {strconv.FormatInt(at.Unix(), 10)},
			"Webhook-Signature": {gateway.SignWebhook(key, msgID, at.Unix(), body)}}}
}

// TestLongOrderValueStaysSmall: an order that many signed notifications
// reach (a shop that reuses one order id) shows every fact and history
// entry, but the value rewritten at each event stops growing once the
// order is past a few facts: the facts and the history are appended
// elsewhere. Before schema 6 the value held them all (it grew by every
// fact and history entry, and each event rewrote it).
func TestLongOrderValueStaysSmall(t *testing.T) {
	db := mustOpen(t)
	gw, err := gateway.New(gateway.Config{Name: "shop", Kind: "standard-webhooks", Secrets: []string{typicalSecret}})
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(pipeline.Options{Journal: db, Gateways: []gateway.Gateway{gw}})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
	}()
	valueSize := func() int {
		var n int
		db.bolt.View(func(tx *bolt.Tx) error {
			n = len(tx.Bucket(bucketOrders).Get([]byte("REUSED")))
			return nil
		})
		return n
	}
	send := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, _, err := db.Append(ctx, signedPayment("REUSED", fmt.Sprintf("T%03d", i))); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for db.Cursor() < uint64(to) {
			if time.Now().After(deadline) {
				t.Fatalf("notifications not processed: cursor %d, want %d", db.Cursor(), to)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	send(1, 20)
	at20 := valueSize()
	send(21, 80)
	at80 := valueSize()
	o, err := db.GetOrder("REUSED")
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Facts) != 80 || len(o.History) != 80 || o.Changes != 80 || len(o.TxnIDs) != 80 || o.Paid != "80.00" {
		t.Fatalf("order after 80 payments: %d facts, %d history entries (changes %d), %d txn ids, paid %s",
			len(o.Facts), len(o.History), o.Changes, len(o.TxnIDs), o.Paid)
	}
	if o.Facts[0].TxnID != "T001" || o.Facts[79].TxnID != "T080" || o.History[79].Notification != 80 {
		t.Errorf("facts or history out of order: first %s, last %s, last change by %d", o.Facts[0].TxnID, o.Facts[79].TxnID, o.History[79].Notification)
	}
	if at80 > at20+32 {
		t.Errorf("the order's value grew from %d bytes after 20 events to %d after 80", at20, at80)
	}
	page, err := db.OrderHistory("REUSED", 70, 5)
	if err != nil || len(page) != 5 || page[0].Notification != 71 {
		t.Errorf("OrderHistory(70, 5) = %d entries (first by %v), %v", len(page), page, err)
	}
	facts, err := db.OrderFacts("REUSED", 78, 10)
	if err != nil || len(facts) != 2 || facts[1].TxnID != "T080" {
		t.Errorf("OrderFacts(78, 10) = %+v, %v", facts, err)
	}
}

// applyKept applies ev to its order as the pipeline does: the state the
// store looks up, the pure decision, the write, in one transaction.
func applyKept(t *testing.T, db *DB, ev *ipn.Event, ac ipn.ApplyContext) []ipn.Effect {
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
		if next.ID == "" {
			return nil
		}
		return db.recordOrder(tx, old, &next, st, w)
	})
	if err != nil {
		t.Fatal(err)
	}
	return effects
}

func randomEvent(r *rand.Rand, orderID string) *ipn.Event {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	types := []ipn.EventType{ipn.TypePayment, ipn.TypePayment, ipn.TypeSubscriptionPayment, ipn.TypeRefund, ipn.TypeReversal,
		ipn.TypeReversalCanceled, ipn.TypeDispute, ipn.TypeSubscriptionStarted, ipn.TypeSubscriptionCanceled}
	statuses := []ipn.EventStatus{ipn.StatusCompleted, ipn.StatusCompleted, ipn.StatusPending, ipn.StatusFailed,
		ipn.StatusRefunded, ipn.StatusReversed, ipn.StatusCanceled, ""}
	return &ipn.Event{Type: types[r.IntN(len(types))], Status: statuses[r.IntN(len(statuses))], OrderID: orderID,
		TxnID: pick("T1", "T2", "T3", "T4", "T5", ""), ParentTxnID: pick("", "", "T1", "T2"),
		Amount: pick("20.00", "10.00", "5.00", "1.00", "0"), Currency: pick("USD", "USD", "USD", "", "EUR"),
		SubscriptionID: pick("", "S1"), Receiver: pick("shop@example.com", "x@example.com")}
}

// TestOrderLayoutMatchesApply: random events applied through the store
// (small orders in their value, larger ones in records, one-off index,
// a refused fact replayed, an order learning its currency) leave every
// order as ipn.Apply leaves an order that holds its facts and history,
// with the same effects.
func TestOrderLayoutMatchesApply(t *testing.T) {
	db := mustOpen(t)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 6))
		id := fmt.Sprintf("O-%d", seed)
		var mem *ipn.Order
		if seed%2 == 0 {
			reg := ipn.Order{ID: id, Status: ipn.OrderAwaitingPayment, Registered: true, Amount: "20.00", Currency: "USD",
				Paid: "0.00", Refunded: "0.00", Flags: []string{}, TxnIDs: []string{}, CreatedAt: t0, UpdatedAt: t0}
			if err := db.CreateOrder(reg); err != nil {
				t.Fatal(err)
			}
			mem = &reg
		}
		var events []*ipn.Event
		for i := range 40 {
			ev := randomEvent(r, id)
			if len(events) > 0 && r.IntN(4) == 0 {
				ev = events[r.IntN(len(events))]
			}
			events = append(events, ev)
			ac := ipn.ApplyContext{Now: t0.Add(time.Duration(i) * time.Minute), Notification: uint64(i + 1), Gateway: "g",
				EventKey: ipn.EventKey("g", ev)}
			if r.IntN(4) == 0 {
				ac.Receivers = []string{"shop@example.com"}
			}
			got := applyKept(t, db, ev, ac)
			want, wantEffects := ipn.Apply(mem, ev, ac)
			if want.ID != "" {
				mem = &want
			}
			if mem == nil {
				continue
			}
			stored, err := db.GetOrder(id)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := mustJSONText(t, stored), mustJSONText(t, mem); a != b {
				t.Fatalf("seed %d step %d (%+v): stored\n%s\nwant\n%s", seed, i, *ev, a, b)
			}
			if a, b := mustJSONText(t, got), mustJSONText(t, wantEffects); a != b {
				t.Fatalf("seed %d step %d: effects\n%s\nwant\n%s", seed, i, a, b)
			}
		}
	}
}

func mustJSONText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSchema4OrdersMoved: a file written by schema 4 (every order's
// facts and history in its value) opens: the large orders move to
// records of their own, the small ones stay, both read as before, and
// later events apply to them as to the order they were.
func TestSchema4OrdersMoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	orders := map[string]*ipn.Order{}
	for _, tc := range []struct {
		id     string
		events int
	}{{"BIG", 30}, {"SMALL", 3}} {
		var o *ipn.Order
		for i := range tc.events {
			ev := &ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("%s-%d", tc.id, i),
				OrderID: tc.id, Amount: "9.99", Currency: "USD", SubscriptionID: "S-" + tc.id}
			next, _ := ipn.Apply(o, ev, ipn.ApplyContext{Now: t0.Add(time.Duration(i) * time.Hour), Notification: uint64(i + 1),
				Gateway: "g", EventKey: ipn.EventKey("g", ev)})
			o = &next
		}
		o.Changes = 0 // schema 4 had no such field
		orders[tc.id] = o
	}
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for id, o := range orders {
			v, _ := json.Marshal(o)
			if err := tx.Bucket(bucketOrders).Put([]byte(id), v); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketOrderCounts).Put([]byte(ipn.OrderPaid), u64(2)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(4))
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}

	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.bolt.View(func(tx *bolt.Tx) error {
		big, _ := getStoredOrder(tx, "BIG")
		small, _ := getStoredOrder(tx, "SMALL")
		if big.Tally == nil || len(big.Facts) != 0 || small.Tally != nil || len(small.Facts) != 3 {
			t.Errorf("after Open: BIG tally %v with %d facts inside; SMALL tally %v with %d facts inside; want BIG moved, SMALL not",
				big.Tally != nil, len(big.Facts), small.Tally != nil, len(small.Facts))
		}
		if v := tx.Bucket(bucketMeta).Get(keySchema); getU64(v) != SchemaVersion {
			t.Errorf("schema %d after Open", getU64(v))
		}
		return nil
	})
	for id, want := range orders {
		got, err := db.GetOrder(id)
		if err != nil {
			t.Fatal(err)
		}
		w := *want
		w.Changes = max(w.Changes, len(w.History))
		if id == "SMALL" {
			w.Changes = 0 // kept as it was
		}
		if a, b := mustJSONText(t, got), mustJSONText(t, &w); a != b {
			t.Errorf("order %s after Open:\n%s\nwant\n%s", id, a, b)
		}
		// A later payment and a refund apply as to the order it was.
		mem := want
		for i, ev := range []*ipn.Event{
			{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusCompleted, TxnID: id + "-next", OrderID: id, Amount: "9.99", Currency: "USD", SubscriptionID: "S-" + id},
			{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, TxnID: id + "-r", ParentTxnID: id + "-0", OrderID: id, Amount: "9.99", Currency: "USD"},
		} {
			ac := ipn.ApplyContext{Now: t0.AddDate(0, 1, i), Notification: uint64(100 + i), Gateway: "g", EventKey: ipn.EventKey("g", ev)}
			applyKept(t, db, ev, ac)
			next, _ := ipn.Apply(mem, ev, ac)
			mem = &next
		}
		got, _ = db.GetOrder(id)
		if got.Status != mem.Status || got.Paid != mem.Paid || got.Refunded != mem.Refunded || len(got.History) != len(mem.History) ||
			got.Changes != len(mem.History) {
			t.Errorf("order %s after two more events: %s paid %s refunded %s, %d entries (changes %d); want %s %s %s, %d",
				id, got.Status, got.Paid, got.Refunded, len(got.History), got.Changes, mem.Status, mem.Paid, mem.Refunded, len(mem.History))
		}
	}
	if n, _ := db.OrderCounts(); n[ipn.OrderPartiallyRefunded] != 2 {
		t.Errorf("order counts %v", n)
	}
}

// TestDeleteOrderRemovesItsRecords: deleting an order kept in records
// leaves nothing of it (another order's records stay), and its count
// goes.
func TestDeleteOrderRemovesItsRecords(t *testing.T) {
	db := mustOpen(t)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range []string{"A", "AB"} { // AB: a prefix that A's is a prefix of, as text
		for i := range 20 {
			ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprint(i), OrderID: id, Amount: "1.00", Currency: "USD"}
			applyKept(t, db, ev, ipn.ApplyContext{Now: t0, Notification: uint64(i + 1), Gateway: "g", EventKey: ipn.EventKey("g", ev)})
		}
	}
	records := func(id string) int {
		n := 0
		db.bolt.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketOrderRecords).Cursor()
			for k, _ := c.Seek(orderPrefix(id)); k != nil && bytes.HasPrefix(k, orderPrefix(id)); k, _ = c.Next() {
				n++
			}
			return nil
		})
		return n
	}
	if records("A") < 40 || records("AB") < 40 {
		t.Fatalf("records before: A %d, AB %d", records("A"), records("AB"))
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error { return deleteOrder(tx, "A") }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetOrder("A"); err == nil || records("A") != 0 || records("AB") < 40 {
		t.Errorf("after deleting A: GetOrder err %v, %d records of A, %d of AB", err, records("A"), records("AB"))
	}
	if n, _ := db.OrderCounts(); n[ipn.OrderReview] != 1 {
		t.Errorf("counts after the delete: %v", n)
	}
}

// TestCloseDisputeOfALongOrder: the merchant's decision closes a dispute
// of an order kept in records, reading all of it (not only the newest
// entries GetOrder shows), and queues the dispute_closed email.
func TestCloseDisputeOfALongOrder(t *testing.T) {
	db := mustOpen(t)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	events := []*ipn.Event{}
	for i := range 20 {
		events = append(events, &ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("T%d", i),
			OrderID: "L", Amount: "5.00", Currency: "USD"})
	}
	events = append(events, &ipn.Event{Type: ipn.TypeDispute, TxnID: "PP-CASE-1", ParentTxnID: "T0", OrderID: "L", Amount: "5.00", Currency: "USD"})
	for i, ev := range events {
		applyKept(t, db, ev, ipn.ApplyContext{Now: t0.Add(time.Duration(i) * time.Hour), Notification: uint64(i + 1), Gateway: "paypal",
			EventKey: ipn.EventKey("paypal", ev)})
	}
	if o, _ := db.GetOrder("L"); o.Status != ipn.OrderDisputed {
		t.Fatalf("before the decision: %s", o.Status)
	}
	o, err := db.CloseDispute("L", ipn.DisputeDecision{Won: true, By: "ann", Why: "case closed in our favour"}, t0.AddDate(0, 0, 2))
	if err != nil || o.Status != ipn.OrderPaid {
		t.Fatalf("CloseDispute = %+v, %v", o, err)
	}
	got, _ := db.GetOrder("L")
	if got.Status != ipn.OrderPaid || len(got.Facts) != 22 || got.Changes != 22 ||
		!strings.Contains(got.History[len(got.History)-1].Reason, "merchant decision by ann: dispute PP-CASE-1 won") {
		t.Errorf("after the decision: %s, %d facts, %d changes, last %q", got.Status, len(got.Facts), got.Changes, got.History[len(got.History)-1].Reason)
	}
	items, _ := db.ListOutbox("", 10)
	found := false
	for _, it := range items {
		found = found || it.Effect.Template == ipn.TemplateDisputeClosed
	}
	if !found {
		t.Errorf("no dispute_closed email queued: %+v", items)
	}
	if _, err := db.CloseDispute("L", ipn.DisputeDecision{Won: true}, t0.AddDate(0, 0, 3)); !errors.Is(err, ipn.ErrNoOpenDispute) {
		t.Errorf("closing it again: %v, want ErrNoOpenDispute", err)
	}
	// The order goes on as one kept in records.
	ev := &ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusCompleted, TxnID: "T99", OrderID: "L", Amount: "5.00", Currency: "USD"}
	applyKept(t, db, ev, ipn.ApplyContext{Now: t0.AddDate(0, 1, 0), Notification: 99, Gateway: "paypal", EventKey: ipn.EventKey("paypal", ev)})
	if got, _ := db.GetOrder("L"); got.Paid != "105.00" || got.Changes != 23 || got.Status != ipn.OrderPaid {
		t.Errorf("after one more payment: %s paid %s, %d changes", got.Status, got.Paid, got.Changes)
	}
}

// TestGetOrderShowsTheNewest: an order longer than GetOrder shows comes
// with its newest 1,000 facts and history entries and their txn ids;
// Changes counts them all and OrderHistory pages from the first.
func TestGetOrderShowsTheNewest(t *testing.T) {
	db := mustOpen(t)
	db.bolt.NoSync = true // 1,100 transactions: the disk's latency is not what is tested
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1100 {
		ev := &ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("T%04d", i), OrderID: "LONG",
			Amount: "1.00", Currency: "USD"}
		applyKept(t, db, ev, ipn.ApplyContext{Now: t0.Add(time.Duration(i) * time.Hour), Notification: uint64(i + 1), Gateway: "g",
			EventKey: ipn.EventKey("g", ev)})
	}
	o, err := db.GetOrder("LONG")
	if err != nil || len(o.Facts) != 1000 || len(o.History) != 1000 || len(o.TxnIDs) != 1000 || o.Changes != 1100 ||
		o.Facts[0].TxnID != "T0100" || o.History[999].Notification != 1100 || o.Paid != "1100.00" {
		t.Fatalf("GetOrder: %d facts (first %s), %d entries, %d txn ids, changes %d, paid %s, %v",
			len(o.Facts), o.Facts[0].TxnID, len(o.History), len(o.TxnIDs), o.Changes, o.Paid, err)
	}
	if h, err := db.OrderHistory("LONG", 0, 2); err != nil || len(h) != 2 || h[0].Notification != 1 {
		t.Errorf("OrderHistory(0, 2) = %+v, %v", h, err)
	}
}
