package pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	sub     func(id string) (*ipn.Subscription, error)
	replay  func(id uint64, now time.Time) error
	expire  func(now time.Time) (int, error)
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
		sub:    db.GetSubscription,
		replay: db.Replay,
		expire: func(now time.Time) (int, error) { db.SetParkFor(parkFor); return db.ExpireParked(now) },
	}
}

// parkFor is orders.park_for in the scenario.
const parkFor = 72 * time.Hour

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
		sub:    func(id string) (*ipn.Subscription, error) { return db.GetSubscription(ctx, id) },
		replay: func(id uint64, now time.Time) error { return db.Replay(ctx, id, now) },
		expire: func(now time.Time) (int, error) { db.SetParkFor(parkFor); return j.ExpireParked(now) },
	}
}

// webhook is a notification of gateway "test" (Standard Webhooks: the
// signature was checked at receipt; the pipeline normalizes the body).
func webhook(key, typ, data string) *ipn.Notification {
	return &ipn.Notification{Gateway: "test", DedupKey: key, ReceivedAt: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC),
		RemoteAddr: "192.0.2.1", ContentType: "application/json", Headers: map[string][]string{"Webhook-Id": {key}},
		Body: []byte(`{"type":"` + typ + `","data":{` + data + `}}`)}
}

// runUntilIdle runs a pipeline over b's journal (gateways test and
// paypal, whose postbacks go to verify) until every notification up to
// last is settled, and stops it.
func runUntilIdle(t *testing.T, b *backend, verify string, last uint64) {
	t.Helper()
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := gateway.New(gateway.Config{Name: "paypal", Kind: "paypal", VerifyURL: verify, Receivers: []string{"shop@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := pipeline.New(pipeline.Options{Journal: b.journal, Gateways: []gateway.Gateway{g, pp}, BatchDelay: time.Millisecond,
		Receivers: map[string][]string{"paypal": {"shop@example.com"}},
		RetryBase: 10 * time.Millisecond, RetryCap: 40 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
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

// paypalIPN is a PayPal IPN (verified by postback) of txn id txn.
func paypalIPN(txn, invoice string) *ipn.Notification {
	return &ipn.Notification{Gateway: "paypal", DedupKey: "trk-" + txn, ReceivedAt: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC),
		RemoteAddr: "192.0.2.2", ContentType: "application/x-www-form-urlencoded", Headers: map[string][]string{},
		Body: []byte("txn_type=web_accept&payment_status=Completed&txn_id=" + txn + "&mc_gross=19.95&mc_currency=USD&invoice=" + invoice +
			"&receiver_email=shop%40example.com&payer_email=buyer%40example.com")}
}

// verifier is PayPal's postback as the scenario wants it: PP1's first
// two postbacks fail (HTTP 503: it is retried), PP2 is INVALID, the
// rest VERIFIED.
func verifier(t *testing.T) string {
	var mu sync.Mutex
	calls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		txn := r.PostForm.Get("txn_id")
		mu.Lock()
		calls[txn]++
		n := calls[txn]
		mu.Unlock()
		switch {
		case txn == "PP1" && n <= 2:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case txn == "PP2":
			fmt.Fprint(w, "INVALID")
		default:
			fmt.Fprint(w, "VERIFIED")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// conformance stores the scenario's notifications in b and processes
// them, expires the parked events past park_for, replays three
// notifications and processes them again; it returns what the store
// holds after each phase, as text to compare.
func conformance(t *testing.T, b *backend) string {
	t.Helper()
	verify := verifier(t)
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
		// 7: a refund whose payment never comes (parked, then expired).
		webhook("m7", "payment.refunded", `"txn_id":"R9","parent_txn_id":"P9","amount":"1.00","currency":"USD"`),
		// 8: not an event ipnd understands.
		webhook("m8", "payment.completed", `"amount":"x1"`),
		// 9: PayPal, verified on the third postback; 10: PayPal, INVALID.
		paypalIPN("PP1", "ORD-P1"),
		paypalIPN("PP2", "ORD-P2"),
	}
	// 11..22: an order that outgrows the small layout (facts kept apart).
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
	var out strings.Builder
	runUntilIdle(t, b, verify, last)
	describe(t, b, &out, last)

	n, err := b.expire(time.Now().Add(parkFor + time.Hour))
	fmt.Fprintf(&out, "\nexpired past park_for: %d %v\n", n, err)
	describe(t, b, &out, last)

	for _, id := range []uint64{2, 3, 7} {
		if err := b.replay(id, time.Now()); err != nil {
			t.Fatalf("%s: replay %d: %v", b.name, id, err)
		}
	}
	fmt.Fprintf(&out, "\nreplayed 2, 3 and 7\n")
	runUntilIdle(t, b, verify, last)
	describe(t, b, &out, last)
	return out.String()
}

// describe writes what b holds: notifications up to last, orders,
// subscription, parked events, outbox.
func describe(t *testing.T, b *backend, out *strings.Builder, last uint64) {
	for id := uint64(1); id <= last; id++ {
		p, err := b.state(id)
		if err != nil {
			t.Fatalf("%s: state %d: %v", b.name, id, err)
		}
		fmt.Fprintf(out, "notification %d: %s duplicate_of=%d attempts=%d", id, p.State, p.DuplicateOf, p.Attempts)
		if p.Event != nil {
			fmt.Fprintf(out, " order=%s amount=%s", p.Event.OrderID, p.Event.Amount)
		}
		// Without the entries of waiting (received): how the postbacks
		// and the steps met depends on timing.
		var hist []string
		for _, h := range p.History {
			if h.State != ipn.StateReceived || h.Detail == "replay requested" {
				hist = append(hist, string(h.State)+":"+h.Detail)
			}
		}
		fmt.Fprintf(out, " history=%q\n", hist)
	}
	for _, id := range []string{"O1", "O2", "O3", "O4", "ORD-P1", "paypal:P9"} {
		o, err := b.order(id)
		if errors.Is(err, ipn.ErrNotFound) {
			fmt.Fprintf(out, "order %s: none\n", id)
			continue
		}
		if err != nil {
			t.Fatalf("%s: order %s: %v", b.name, id, err)
		}
		var changes []string
		for _, h := range o.History {
			changes = append(changes, fmt.Sprintf("%s>%s by %d", h.From, h.To, h.Notification))
		}
		fmt.Fprintf(out, "order %s: %s paid=%s refunded=%s facts=%d history=%d changes=%d flags=%v txns=%v %q\n",
			id, o.Status, o.Paid, o.Refunded, len(o.Facts), len(o.History), o.Changes, o.Flags, o.TxnIDs, changes)
	}
	s, err := b.sub("S1")
	if err != nil {
		t.Fatalf("%s: subscription S1: %v", b.name, err)
	}
	fmt.Fprintf(out, "subscription S1: %s order=%s\n", s.Status, s.OrderID)
	n, err := b.parked()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(out, "parked: %d\n", n)
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		fmt.Fprintf(out, "outbox %d: %s %s order=%s cause=%q template=%s notification=%d\n",
			it.ID, it.Effect.Kind, it.State, it.Effect.OrderID, it.Effect.Cause, it.Effect.Template, it.Notification)
	}
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
		"order O4: review", "facts=12", "notification 9: applied duplicate_of=0 attempts=2", "notification 10: invalid",
		"expired past park_for: 1 <nil>", "notification 7: failed", "parked: 0", "subscription S1: active"} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q:\n%s", must, want)
		}
	}
	t.Logf("both backends:\n%s", want)
}
