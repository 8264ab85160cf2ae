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
	"ipnd/notify"
	"ipnd/pipeline"
	"ipnd/record"
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
	// The outbox worker's side (outbox_test.go): the store as the worker
	// sees it (until the test ends), the attempts kept of an item, the
	// kinds of effects queued.
	deliveries func() notify.Outbox
	attempts   func(id uint64) ([]ipn.OutboxAttempt, error)
	setKinds   func(map[string]bool)
	reads      dashReader // the dashboard's reads (dashboard_test.go)
}

func boltBackend(t testing.TB) *backend {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return boltOn(db)
}

// boltOn is the bbolt store db as a backend.
func boltOn(db *store.DB) *backend {
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
		cursor:     db.Cursor,
		sub:        db.GetSubscription,
		replay:     db.Replay,
		expire:     func(now time.Time) (int, error) { db.SetParkFor(parkFor); return db.ExpireParked(now) },
		deliveries: func() notify.Outbox { return db },
		attempts:   db.OutboxAttempts,
		setKinds:   db.SetEffectKinds,
		reads:      db,
	}
}

// parkFor is orders.park_for in the scenario.
const parkFor = 72 * time.Hour

// leadingJournal opens db's journal under a lease this process holds.
func leadingJournal(t testing.TB, db *DB) (*Journal, *Leader) {
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

func pgBackend(t testing.TB, db *DB) *backend {
	ctx := context.Background()
	j, l := leadingJournal(t, db)
	dctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
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
		sub:        func(id string) (*ipn.Subscription, error) { return db.GetSubscription(ctx, id) },
		replay:     func(id uint64, now time.Time) error { return db.Replay(ctx, id, now) },
		expire:     func(now time.Time) (int, error) { db.SetParkFor(parkFor); return j.ExpireParked(now) },
		deliveries: func() notify.Outbox { return db.Deliveries(dctx, l, j.epoch) },
		attempts:   func(id uint64) ([]ipn.OutboxAttempt, error) { return db.OutboxAttempts(ctx, id) },
		setKinds:   db.SetEffectKinds,
		reads:      db.Dashboard(),
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
	// 23..32: an order that outgrows the small layout before it learns
	// its currency (its facts are all read again: OrderState.Full).
	for i := range 9 {
		notes = append(notes, webhook(fmt.Sprintf("m5_%d", i), "payment.pending",
			fmt.Sprintf(`"txn_id":"T5_%d","order_id":"O5","amount":"2.00"`, i)))
	}
	notes = append(notes, webhook("m5_c", "payment.completed", `"txn_id":"T5_0","order_id":"O5","amount":"2.00","currency":"EUR"`))
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

	for _, id := range []uint64{2, 3, 7, 12, 32} {
		if err := b.replay(id, time.Now()); err != nil {
			t.Fatalf("%s: replay %d: %v", b.name, id, err)
		}
	}
	fmt.Fprintf(&out, "\nreplayed 2, 3, 7, 12 and 32\n")
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
	for _, id := range []string{"O1", "O2", "O3", "O4", "O5", "ORD-P1", "paypal:P9"} {
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

// payment is the outcome of a completed payment of order on gateway
// "test", as the pipeline decides it.
func payment(id uint64, txn, order string) ipn.Outcome {
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: txn, OrderID: order, Amount: "10.00", Currency: "USD"}
	return ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("test", ev), ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "test"}}
}

// count returns the rows of table.
func count(t *testing.T, db *DB, table string) int {
	t.Helper()
	var n int
	if err := db.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pipelineTables are the tables a batch writes.
var pipelineTables = []string{"processing", "retries", "facts", "payment_refs", "orphans", "parked_due", "orders",
	"order_facts", "order_history", "subscriptions", "outbox"}

// TestPGStaleLeaderFinishRefused: a process whose lease ended (it
// stalled past its TTL) while another took over cannot record its
// batch: Finish fails with ErrNotLeader and nothing of it is applied;
// the new leader records the same batch.
func TestPGStaleLeaderFinishRefused(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db, other := open(t, c.DSN()), open(t, c.DSN())
	for i := 1; i <= 2; i++ {
		if _, _, err := db.Append(ctx, webhook(fmt.Sprintf("m%d", i), "payment.completed", `"txn_id":"T"`)); err != nil {
			t.Fatal(err)
		}
	}
	stale, _ := leadingJournal(t, db)
	outs := []ipn.Outcome{payment(1, "T1", "O1"), payment(2, "T2", "O2")}
	if _, err := stale.Finish(outs[:1], 1, time.Now()); err != nil {
		t.Fatalf("Finish while leading: %v", err)
	}
	// The lease runs out; the other process takes it over.
	if _, err := db.pool.Exec(ctx, `UPDATE ipnd_leader SET expires_at = now()`); err != nil {
		t.Fatal(err)
	}
	fresh, _ := leadingJournal(t, other)
	if _, err := stale.Finish(outs[1:], 2, time.Now()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("the stale leader's Finish = %v, want ErrNotLeader", err)
	}
	if p, err := db.State(ctx, 2); p != nil || err != nil {
		t.Fatalf("notification 2 after the refused batch: %+v %v", p, err)
	}
	if c, _ := db.Cursor(ctx); c != 1 {
		t.Errorf("cursor after the refused batch = %d, want 1", c)
	}
	if _, err := db.GetOrder(ctx, "O2"); !errors.Is(err, ipn.ErrNotFound) {
		t.Errorf("order O2 after the refused batch: %v", err)
	}
	if n, err := stale.ExpireParked(time.Now()); n != 0 || err != nil {
		t.Errorf("ExpireParked with nothing parked = %d, %v", n, err)
	}
	recs, err := fresh.Finish(outs[1:], 2, time.Now())
	if err != nil || recs[0].State != ipn.StateApplied {
		t.Fatalf("the new leader's Finish = %+v, %v", recs, err)
	}
	if o, err := db.GetOrder(ctx, "O2"); err != nil || o.Status != ipn.OrderPaid {
		t.Errorf("order O2 after the new leader's batch: %+v %v", o, err)
	}
}

// TestPGFinishFailingHalfwayAppliesNothing: a statement that fails in
// the middle of a batch (here a trigger refusing the third notification's
// state) leaves nothing of the batch applied: no state, order, fact,
// reference or outbox item, and the cursor where it was. Once the fault
// is gone the same batch is recorded whole.
func TestPGFinishFailingHalfwayAppliesNothing(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db := open(t, c.DSN())
	for i := 1; i <= 5; i++ {
		if _, _, err := db.Append(ctx, webhook(fmt.Sprintf("m%d", i), "payment.completed", `"txn_id":"T"`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.pool.Exec(ctx, `CREATE FUNCTION refuse_third() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'injected: the third write fails'; END $$;
		CREATE TRIGGER refuse_third BEFORE INSERT ON processing FOR EACH ROW WHEN (NEW.id = 3) EXECUTE FUNCTION refuse_third()`); err != nil {
		t.Fatal(err)
	}
	j, _ := leadingJournal(t, db)
	var outs []ipn.Outcome
	for i := uint64(1); i <= 5; i++ {
		outs = append(outs, payment(i, fmt.Sprintf("T%d", i), fmt.Sprintf("O%d", i)))
	}
	if _, err := j.Finish(outs, 5, time.Now()); err == nil || !strings.Contains(err.Error(), "the third write fails") {
		t.Fatalf("Finish with the third write refused = %v", err)
	}
	for _, table := range pipelineTables {
		if n := count(t, db, table); n != 0 {
			t.Errorf("%d rows in %s after the failed batch", n, table)
		}
	}
	if c, _ := db.Cursor(ctx); c != 0 {
		t.Errorf("cursor after the failed batch = %d", c)
	}
	if _, err := db.pool.Exec(ctx, `DROP TRIGGER refuse_third ON processing`); err != nil {
		t.Fatal(err)
	}
	recs, err := j.Finish(outs, 5, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.State != ipn.StateApplied {
			t.Errorf("notification %d: %s", i+1, r.State)
		}
	}
	if n := count(t, db, "orders"); n != 5 {
		t.Errorf("%d orders after the batch, want 5", n)
	}
	if c, _ := db.Cursor(ctx); c != 5 {
		t.Errorf("cursor = %d, want 5", c)
	}
}

// TestPGDamagedRecordsStallNothing: rows that do not decode into their
// type (an order, a processing record, a notification's headers) fail
// the notifications that read them, with the reason, and the others of
// the same batch are applied; the pipeline goes on.
func TestPGDamagedRecordsStallNothing(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db := open(t, c.DSN())
	notes := []*ipn.Notification{
		webhook("m1", "payment.completed", `"txn_id":"T1","order_id":"O-DMG","amount":"1.00","currency":"USD"`),
		webhook("m2", "payment.completed", `"txn_id":"T2","order_id":"O2","amount":"1.00","currency":"USD"`),
		webhook("m3", "payment.completed", `"txn_id":"T3","order_id":"O3","amount":"1.00","currency":"USD"`),
		webhook("m4", "payment.completed", `"txn_id":"T4","order_id":"O4","amount":"1.00","currency":"USD"`),
	}
	for _, n := range notes {
		if _, _, err := db.Append(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO orders (id, status, updated_at, record) VALUES ('O-DMG', 'paid', now(), '{"status": 7}')`,
		`INSERT INTO processing (id, state, record) VALUES (2, 'received', '[1, 2]')`,
		`UPDATE notifications SET headers = '"not headers"' WHERE id = 4`,
	} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	b := pgBackend(t, db)
	runUntilIdle(t, b, "http://127.0.0.1:1/", 4)
	want := map[uint64]string{1: `order "O-DMG"`, 2: "state of notification 2", 4: "notification 4: headers"}
	for id := uint64(1); id <= 4; id++ {
		p, err := db.State(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		last := p.History[len(p.History)-1]
		if w, ok := want[id]; ok {
			if p.State != ipn.StateFailed || !strings.Contains(last.Detail, w) {
				t.Errorf("notification %d: %s %q, want failed naming %s", id, p.State, last.Detail, w)
			}
		} else if p.State != ipn.StateApplied {
			t.Errorf("notification %d: %s %q, want applied", id, p.State, last.Detail)
		}
	}
	if n := b.journal.(*Journal).DamagedSeen(); n != 3 {
		t.Errorf("DamagedSeen = %d, want 3", n)
	}
	if o, err := db.GetOrder(ctx, "O3"); err != nil || o.Status != ipn.OrderPaid {
		t.Errorf("O3: %+v %v", o, err)
	}
}

// TestPGLeaderWokenByOtherProcess: the leader's pipeline, idle, processes
// a notification another process ingested (NOTIFY), also after its
// listening connection was cut.
func TestPGLeaderWokenByOtherProcess(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db, other := open(t, c.DSN()), open(t, c.DSN())
	b := pgBackend(t, db)
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	p := pipeline.New(pipeline.Options{Journal: b.journal, Gateways: []gateway.Gateway{g}, BatchDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(rctx) }()
	defer func() { cancel(); <-ran }()
	applied := func(id uint64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if st, _ := db.State(ctx, id); st != nil && st.State == ipn.StateApplied {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("notification %d ingested by the other process is not processed in 20 s", id)
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
	}
	if _, _, err := other.Append(ctx, webhook("m1", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"1.00","currency":"USD"`)); err != nil {
		t.Fatal(err)
	}
	applied(1)
	// The listening connection is cut: the journal connects again.
	if _, err := db.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN `+ingestChannel+`'`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var listening bool
		if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'LISTEN `+ingestChannel+`')`).Scan(&listening); err != nil {
			t.Fatal(err)
		}
		if listening {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the journal does not listen again")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	if _, _, err := other.Append(ctx, webhook("m2", "payment.completed", `"txn_id":"T2","order_id":"O2","amount":"1.00","currency":"USD"`)); err != nil {
		t.Fatal(err)
	}
	applied(2)
}

// TestPGReplayWaitsForTheBatch: a replay asked while the leader's batch
// holds the notification waits for it, and is applied after it, not lost
// under the batch's write.
func TestPGReplayWaitsForTheBatch(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db, other := open(t, c.DSN()), open(t, c.DSN())
	if _, _, err := db.Append(ctx, webhook("m1", "payment.completed", `"txn_id":"T1"`)); err != nil {
		t.Fatal(err)
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	batch := &pgTx{db: db, ctx: ctx, tx: tx}
	n, err := batch.Notification(1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := batch.State(1)
	if err != nil || p != nil {
		t.Fatalf("State = %+v, %v", p, err)
	}
	replayed := make(chan error, 1)
	go func() { replayed <- other.Replay(ctx, 1, time.Now()) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var waiting bool
		if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-replayed:
			t.Fatalf("the replay did not wait for the batch: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the replay neither waits nor ends")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	p = record.Received(n)
	p.State = ipn.StateApplied
	p.History = append(p.History, ipn.HistoryEntry{At: time.Now().UTC(), State: ipn.StateApplied})
	if err := batch.PutState(1, p); err != nil {
		t.Fatal(err)
	}
	if err := batch.flush(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-replayed; err != nil {
		t.Fatal(err)
	}
	p, err = db.State(ctx, 1)
	if err != nil || p.State != ipn.StateReceived || len(p.History) != 3 || p.History[1].State != ipn.StateApplied ||
		p.History[2].Detail != "replay requested" {
		t.Fatalf("after the batch and the replay: %+v %v", p, err)
	}
	if n := count(t, db, "retries"); n != 1 {
		t.Errorf("%d retries scheduled, want the replay's", n)
	}
}

// TestPGTakeoverResumes: two processes on one database, each ingesting;
// the leader stops in the middle of the stream and the other takes over
// the pipeline where it left off: every notification applied exactly
// once (one fact and one applied entry each, one order each), each
// outbox item queued once.
func TestPGTakeoverResumes(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	dbs := []*DB{open(t, c.DSN()), open(t, c.DSN())}
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	var leaders []*Leader
	var stops []context.CancelFunc
	var runs sync.WaitGroup
	for _, db := range dbs {
		l := db.NewLeader(2 * time.Second)
		lctx, stop := context.WithCancel(ctx)
		leaders, stops = append(leaders, l), append(stops, stop)
		runs.Add(1)
		go func() {
			defer runs.Done()
			l.Run(lctx, func(lead context.Context, epoch int64) {
				p := pipeline.New(pipeline.Options{Journal: db.Journal(lead, l, epoch), Gateways: []gateway.Gateway{g},
					BatchDelay: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
				p.Run(lead)
			})
		}()
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
		runs.Wait()
	}()
	applied := func() int {
		var n int
		if err := dbs[0].pool.QueryRow(ctx, `SELECT count(*) FROM processing WHERE state = 'applied'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("not in 60 s: %s", what)
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
	}
	first := -1
	waitFor("a leader", func() bool {
		for i, l := range leaders {
			if _, ok := l.Leading(); ok {
				first = i
				return true
			}
		}
		return false
	})
	const n = 400
	ingested := make(chan error, 1)
	go func() {
		for i := range n {
			_, _, err := dbs[i%2].Append(ctx, webhook(fmt.Sprintf("m%d", i), "payment.completed",
				fmt.Sprintf(`"txn_id":"T%d","order_id":"O%d","amount":"1.00","currency":"USD","customer_email":"a@example.com"`, i, i)))
			if err != nil {
				ingested <- err
				return
			}
		}
		ingested <- nil
	}()
	waitFor("a third applied", func() bool { return applied() >= n/3 })
	stops[first]() // the leader goes in the middle of the stream
	waitFor("the first leader to stop", func() bool { _, ok := leaders[first].Leading(); return !ok })
	if left := n - applied(); left == 0 {
		t.Fatal("every notification was applied before the leader stopped: nothing was taken over")
	} else {
		t.Logf("the leader stopped with %d notifications left", left)
	}
	if err := <-ingested; err != nil {
		t.Fatal(err)
	}
	waitFor("every notification applied", func() bool { return applied() == n })
	if _, ok := leaders[1-first].Leading(); !ok {
		t.Error("the other process does not lead")
	}
	for _, q := range []struct {
		sql  string
		want int
	}{
		{`SELECT count(*) FROM orders`, n},
		{`SELECT count(*) FROM order_facts`, 0}, // small orders: their one fact is in the order's row
		{`SELECT count(*) FROM processing WHERE json_array_length(record->'history') <> 2`, 0},
		{`SELECT count(*) FROM facts`, n},
		{`SELECT count(*) FROM outbox`, 3 * n},
		{`SELECT count(DISTINCT id) FROM outbox`, 3 * n},
		{`SELECT value FROM ipnd_counters WHERE name = 'cursor'`, n},
	} {
		var got int
		if err := dbs[0].pool.QueryRow(ctx, q.sql).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != q.want {
			t.Errorf("%s = %d, want %d", q.sql, got, q.want)
		}
	}
	for i := range n {
		o, err := dbs[1].GetOrder(ctx, fmt.Sprintf("O%d", i))
		if err != nil || len(o.Facts) != 1 || o.Paid != "1.00" || o.Status != ipn.OrderPaid {
			t.Fatalf("order O%d: %+v %v", i, o, err)
		}
	}
}
