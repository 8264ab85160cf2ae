package pg

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
	"ipnd/store"
)

// backend is one store as the conformance scenario drives and reads it.
type backend struct {
	name    string
	journal pipeline.Journal
	append  func(n *ipn.Notification) (uint64, error)
	state   func(id uint64) (*ipn.Processing, error)
	order   func(id string) (*ipn.Order, error)
	parked  func() (int, error)
	outbox  func() ([]ipn.OutboxItem, error)
	cursor  func() uint64
}

func boltBackend(t *testing.T) *backend {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &backend{name: "bbolt", journal: db,
		append: func(n *ipn.Notification) (uint64, error) {
			id, _, err := db.Append(context.Background(), n)
			return id, err
		},
		state: func(id uint64) (*ipn.Processing, error) {
			_, p, err := db.Get(id)
			return p, err
		},
		order:  db.GetOrder,
		parked: db.Parked,
		outbox: func() ([]ipn.OutboxItem, error) {
			items, err := db.ListOutbox("", 1000)
			slices.SortFunc(items, func(a, b ipn.OutboxItem) int { return int(a.ID) - int(b.ID) })
			return items, err
		},
		cursor: db.Cursor,
	}
}

// leadingJournal opens db's journal under a lease this process holds.
func leadingJournal(t *testing.T, db *DB) (*Journal, *Leader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l := db.NewLeader(time.Minute)
	epoch, ok := l.acquire(ctx)
	if !ok {
		t.Fatal("the lease is not free")
	}
	return db.Journal(ctx, l, epoch), l
}

func pgBackend(t *testing.T, db *DB) *backend {
	ctx := context.Background()
	j, _ := leadingJournal(t, db)
	return &backend{name: "postgres", journal: j,
		append: func(n *ipn.Notification) (uint64, error) {
			id, _, err := db.Append(ctx, n)
			return id, err
		},
		state:  func(id uint64) (*ipn.Processing, error) { return db.State(ctx, id) },
		order:  func(id string) (*ipn.Order, error) { return db.GetOrder(ctx, id) },
		parked: func() (int, error) { return db.Parked(ctx) },
		outbox: func() ([]ipn.OutboxItem, error) { return db.Outbox(ctx, 0, 1000) },
		cursor: func() uint64 {
			c, _ := db.Cursor(ctx)
			return c
		},
	}
}

// webhook is a notification of gateway "test" (Standard Webhooks: the
// signature was checked at receipt; the pipeline normalizes the body).
func webhook(key, typ, data string) *ipn.Notification {
	return &ipn.Notification{Gateway: "test", DedupKey: key, ReceivedAt: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC),
		RemoteAddr: "192.0.2.1", ContentType: "application/json", Headers: map[string][]string{"Webhook-Id": {key}},
		Body: []byte(`{"type":"` + typ + `","data":{` + data + `}}`)}
}

// runUntilIdle runs a pipeline over b's journal until every notification
// up to last is settled, and stops it.
func runUntilIdle(t *testing.T, b *backend, last uint64) {
	t.Helper()
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := pipeline.New(pipeline.Options{Journal: b.journal, Gateways: []gateway.Gateway{g}, BatchDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("%s: Run = %v", b.name, err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		done := b.cursor() >= last
		for id := uint64(1); done && id <= last; id++ {
			st, err := b.state(id)
			done = err == nil && st != nil && st.State != ipn.StateReceived
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not every notification up to %d processed in 30 s (cursor %d)", b.name, last, b.cursor())
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// conformance stores the scenario's notifications in b and processes
// them; it returns what the store holds after, as text to compare.
func conformance(t *testing.T, b *backend) string {
	t.Helper()
	notes := []*ipn.Notification{
		// 1: a payment; 2: a copy of it (another message, the same fact).
		webhook("m1", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"10.00","currency":"USD","customer_email":"a@example.com"`),
		webhook("m2", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"10.00","currency":"USD","customer_email":"a@example.com"`),
		// 3: a refund before its payment (parked); 4: a partial refund of O1.
		webhook("m3", "payment.refunded", `"txn_id":"R2","parent_txn_id":"P2","amount":"4.00","currency":"USD"`),
		webhook("m4", "payment.refunded", `"txn_id":"R1","parent_txn_id":"T1","amount":"3.00","currency":"USD"`),
		// 5: the payment the refund 3 waited for (adopts it).
		webhook("m5", "payment.completed", `"txn_id":"P2","order_id":"O2","amount":"20.00","currency":"USD"`),
		// 6: a subscription.
		webhook("m6", "subscription.started", `"txn_id":"S1P","order_id":"O3","subscription_id":"S1","amount":"5.00","currency":"USD"`),
		// 7: a refund whose payment never comes (stays parked).
		webhook("m7", "payment.refunded", `"txn_id":"R9","parent_txn_id":"P9","amount":"1.00","currency":"USD"`),
		// 8: not an event ipnd understands.
		webhook("m8", "payment.completed", `"amount":"x1"`),
	}
	// 9..20: an order that outgrows the small layout (facts kept apart).
	for i := range 12 {
		notes = append(notes, webhook(fmt.Sprintf("m4_%d", i), "payment.completed",
			fmt.Sprintf(`"txn_id":"T4_%d","order_id":"O4","amount":"1.00","currency":"USD"`, i)))
	}
	for _, n := range notes {
		if _, err := b.append(n); err != nil {
			t.Fatal(err)
		}
	}
	last := uint64(len(notes))
	runUntilIdle(t, b, last)

	var out strings.Builder
	for id := uint64(1); id <= last; id++ {
		p, err := b.state(id)
		if err != nil {
			t.Fatalf("%s: state %d: %v", b.name, id, err)
		}
		fmt.Fprintf(&out, "notification %d: %s duplicate_of=%d", id, p.State, p.DuplicateOf)
		if p.Event != nil {
			fmt.Fprintf(&out, " order=%s amount=%s", p.Event.OrderID, p.Event.Amount)
		}
		var hist []string
		for _, h := range p.History {
			hist = append(hist, string(h.State)+":"+h.Detail)
		}
		fmt.Fprintf(&out, " history=%q\n", hist)
	}
	for _, id := range []string{"O1", "O2", "O3", "O4"} {
		o, err := b.order(id)
		if err != nil {
			t.Fatalf("%s: order %s: %v", b.name, id, err)
		}
		fmt.Fprintf(&out, "order %s: %s paid=%s refunded=%s facts=%d history=%d changes=%d flags=%v txns=%v\n",
			id, o.Status, o.Paid, o.Refunded, len(o.Facts), len(o.History), o.Changes, o.Flags, o.TxnIDs)
	}
	n, err := b.parked()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&out, "parked: %d\n", n)
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		fmt.Fprintf(&out, "outbox %d: %s %s order=%s cause=%q template=%s notification=%d\n",
			it.ID, it.Effect.Kind, it.State, it.Effect.OrderID, it.Effect.Cause, it.Effect.Template, it.Notification)
	}
	return out.String()
}

// TestPGConformance runs one scenario (a payment, a copy of it, a refund
// before its payment, parked then adopted, a partial refund, a
// subscription, a refund that stays parked, an event not understood, an
// order that outgrows the small layout) through the real pipeline on
// the bbolt store and on PostgreSQL, and compares what each holds after:
// every notification's state and history, the orders, the parked events
// and the outbox.
func TestPGConformance(t *testing.T) {
	c := pgtest.Start(t)
	want := conformance(t, boltBackend(t))
	got := conformance(t, pgBackend(t, open(t, c.DSN())))
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	for _, must := range []string{"notification 2: duplicate duplicate_of=1", "order O2: partially_refunded", "parked: 1",
		"order O4: review", "facts=12"} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q:\n%s", must, want)
		}
	}
	t.Logf("both backends:\n%s", want)
}
