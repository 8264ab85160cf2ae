package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/record"
	"ipnd/store"
)

// decider is the admin API's decisions and order writes: *store.DB and
// *Dashboard both are one.
type decider interface {
	CreateOrder(o ipn.Order) error
	DecideOrder(id string, d store.Decision, now time.Time) (store.DecisionResult, error)
	DeleteOrder(id string) error
}

var _ decider = (*store.DB)(nil)
var _ decider = (*Dashboard)(nil)

// decideOn is a backend with its decisions.
type decideOn struct {
	*backend
	dec decider
}

func boltDecisions(t *testing.T) decideOn {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return decideOn{boltOn(db), db}
}

func pgDecisions(t *testing.T, db *DB) decideOn {
	return decideOn{pgBackend(t, db), db.Dashboard()}
}

// apply stores a notification of gateway "test" (key) and records the
// pipeline applying ev to its order at now (a test event from a
// sandbox).
func (b decideOn) apply(t *testing.T, key string, ev *ipn.Event, now time.Time) {
	t.Helper()
	id, err := b.append(webhook(key, "payment.completed", `"txn_id":"`+ev.TxnID+`"`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.journal.PendingExcept(now, 1000, nil); err != nil {
		t.Fatal(err)
	}
	out := ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("test", ev), ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "test", Sandbox: ev.Test}}
	if _, err := b.journal.Finish([]ipn.Outcome{out}, id, now); err != nil {
		t.Fatalf("%s: Finish %s: %v", b.name, key, err)
	}
}

func usd(typ ipn.EventType, status ipn.EventStatus, txn, parent, order, amount string) *ipn.Event {
	return &ipn.Event{Type: typ, Status: status, TxnID: txn, ParentTxnID: parent, OrderID: order, Amount: amount, Currency: "USD"}
}

// decisionScenario drives the admin API's decisions on b (orders in
// review, large and small, disputes, notes past the small layout, keys
// repeated, reused and expired, stale versions, test orders deleted and
// paid again) and returns what each call answered and what b holds
// after, as text to compare.
func decisionScenario(t *testing.T, b decideOn) string {
	t.Helper()
	var out strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&out, format+"\n", a...) }
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	version := func(id string) int {
		o, err := b.reads.GetOrder(id)
		if err != nil {
			t.Fatalf("%s: order %s: %v", b.name, id, err)
		}
		return max(o.Changes, len(o.History))
	}

	// Orders: R1 registered and paid too much (review), BIG registered
	// and paid in ten parts (review, its facts kept apart), D1 and D2
	// paid then disputed, N1 paid, TEST1 a test payment, TEST2 a test
	// order registered.
	r1, _ := ipn.NewRegisteredOrder("R1", "10.00", "USD", "r@example.com", "", nil, t0)
	big, _ := ipn.NewRegisteredOrder("BIG", "10.00", "USD", "big@example.com", "", nil, t0)
	t2, _ := ipn.NewRegisteredOrder("TEST2", "3.00", "USD", "t@example.com", "", nil, t0)
	t2.Test = true
	for _, o := range []ipn.Order{r1, big, t2} {
		w("create %s: %v", o.ID, b.dec.CreateOrder(o))
	}
	w("create R1 again: %v", b.dec.CreateOrder(r1))
	b.apply(t, "r1", usd(ipn.TypePayment, ipn.StatusCompleted, "TR1", "", "R1", "12.00"), t0)
	for i := range 10 {
		b.apply(t, fmt.Sprintf("big%d", i), usd(ipn.TypePayment, ipn.StatusCompleted, fmt.Sprintf("TB%d", i), "", "BIG", "1.00"), t0)
	}
	for _, d := range []string{"1", "2"} {
		b.apply(t, "d"+d, usd(ipn.TypePayment, ipn.StatusCompleted, "PD"+d, "", "D"+d, "10.00"), t0)
		b.apply(t, "dp"+d, usd(ipn.TypeDispute, ipn.StatusPending, "DP"+d, "PD"+d, "D"+d, "10.00"), t0.Add(time.Minute))
	}
	b.apply(t, "n1", usd(ipn.TypePayment, ipn.StatusCompleted, "TN1", "", "N1", "5.00"), t0)
	test := usd(ipn.TypePayment, ipn.StatusCompleted, "TT1", "", "TEST1", "2.00")
	test.Test = true
	b.apply(t, "t1", test, t0)

	decide := func(what, id string, d store.Decision, now time.Time) store.DecisionResult {
		res, err := b.dec.DecideOrder(id, d, now)
		line := fmt.Sprintf("%s: err=%v", what, err)
		if err == nil {
			change, _ := json.Marshal(res.Change)
			line += fmt.Sprintf(" repeated=%v order=%s/%s changes=%d history=%d change=%s", res.Repeated, res.Order.ID, res.Order.Status,
				res.Order.Changes, len(res.Order.History), change)
		}
		w("%s", line)
		return res
	}
	dec := func(kind, by, why string) store.Decision {
		return store.Decision{OrderDecision: ipn.OrderDecision{Kind: kind, By: by, Why: why}}
	}
	with := func(d store.Decision, version int, key string) store.Decision {
		d.Version, d.Key = version, key
		return d
	}
	approve, cancel := dec(ipn.DecisionApprove, "admin", "ok"), dec(ipn.DecisionCancel, "cli", "")
	dispute := func(id string, won bool) store.Decision {
		d := dec("", "ann", "case closed")
		d.Dispute = &ipn.DisputeDecision{Dispute: id, Won: won}
		return d
	}

	v := version("R1")
	decide("approve R1", "R1", with(approve, v, "k1"), t0.Add(time.Hour))
	decide("approve R1, the same key", "R1", with(approve, v, "k1"), t0.Add(2*time.Hour))
	decide("cancel R1, the key of the approval", "R1", with(cancel, 0, "k1"), t0.Add(2*time.Hour))
	decide("approve R1, the key with other words", "R1", with(dec(ipn.DecisionApprove, "admin", "other"), v, "k1"), t0.Add(2*time.Hour))
	decide("approve R1, the key with another version", "R1", with(approve, v+1, "k1"), t0.Add(2*time.Hour))
	decide("approve BIG, the key of R1", "BIG", with(approve, 0, "k1"), t0.Add(2*time.Hour))
	decide("approve R1 again", "R1", approve, t0.Add(2*time.Hour))
	decide("approve NONE", "NONE", approve, t0)
	decide("approve NONE, the key of R1", "NONE", with(approve, 0, "k1"), t0.Add(2*time.Hour))
	decide("approve NONE, a new key", "NONE", with(approve, 0, "k-none"), t0)

	v = version("BIG")
	decide("approve BIG, stale", "BIG", with(approve, v-1, ""), t0.Add(time.Hour))
	decide("approve BIG", "BIG", with(approve, v, "k2"), t0.Add(time.Hour))
	decide("approve BIG, the same key", "BIG", with(approve, v, "k2"), t0.Add(time.Hour))
	decide("note BIG without text", "BIG", dec(ipn.DecisionNote, "admin", " "), t0.Add(time.Hour))
	decide("note BIG", "BIG", with(dec(ipn.DecisionNote, "admin", "called the customer"), v+1, "k3"), t0.Add(time.Hour))
	decide("unknown decision on BIG", "BIG", dec("refund", "admin", ""), t0.Add(time.Hour))
	decide("cancel BIG", "BIG", cancel, t0.Add(time.Hour))
	decide("cancel BIG again", "BIG", cancel, t0.Add(time.Hour))

	decide("dispute D1 won", "D1", with(dispute("", true), version("D1"), "k4"), t0.Add(time.Hour))
	decide("dispute D1 won, the same key", "D1", with(dispute("", true), version("D1")-1, "k4"), t0.Add(time.Hour))
	decide("dispute D1 again", "D1", dispute("", false), t0.Add(time.Hour))
	decide("dispute D2 lost", "D2", dispute("DP2", false), t0.Add(time.Hour))
	decide("dispute D2, another case", "D2", dispute("DP9", false), t0.Add(time.Hour))
	decide("dispute N1", "N1", dispute("", true), t0.Add(time.Hour))

	// Notes on N1 past the small layout, each on the version before.
	for i := range 10 {
		decide(fmt.Sprintf("note %d on N1", i), "N1", with(dec(ipn.DecisionNote, "admin", fmt.Sprintf("note %d", i)), version("N1"), ""),
			t0.Add(time.Duration(i)*time.Minute))
	}
	decide("cancel N1", "N1", with(cancel, version("N1"), "k5"), t0.Add(2*time.Hour))
	decide("cancel N1, stale", "N1", with(cancel, version("N1")-1, ""), t0.Add(2*time.Hour))
	// A day later the keys are forgotten: each is a new request.
	decide("note R1 a day later, the key of the approval", "R1", with(dec(ipn.DecisionNote, "admin", "late"), 0, "k1"), t0.Add(26*time.Hour))
	decide("note R1 a day later, the same key", "R1", with(dec(ipn.DecisionNote, "admin", "late"), 0, "k1"), t0.Add(27*time.Hour))
	decide("note BIG a day later, a forgotten key", "BIG", with(dec(ipn.DecisionNote, "admin", "called the customer"), 0, "k3"), t0.Add(27*time.Hour))

	// Deletion: real orders stay; test orders go with their facts and
	// references, and the same test payment again makes a new order.
	for _, id := range []string{"R1", "NONE", "TEST1", "TEST1", "TEST2"} {
		w("delete %s: %v", id, b.dec.DeleteOrder(id))
	}
	b.apply(t, "t1-again", test, t0.Add(3*time.Hour))

	// What the store holds.
	for _, id := range []string{"R1", "BIG", "D1", "D2", "N1", "TEST1", "TEST2", "NONE"} {
		o, err := b.reads.GetOrder(id)
		if err != nil {
			w("order %s: %v", id, errKind(err))
			continue
		}
		w("order %s: %s paid=%s refunded=%s flags=%v approved=%v test=%v canceled=%v changes=%d facts=%d txns=%v updated=%s",
			id, o.Status, o.Paid, o.Refunded, o.Flags, o.ApprovedFlags, o.Test, o.Canceled, o.Changes, len(o.Facts), o.TxnIDs, o.UpdatedAt)
		for _, h := range o.History {
			w("  %s %s>%s by %q n%d: %s", h.At, h.From, h.To, h.By, h.Notification, h.Reason)
		}
		paged, err := b.reads.OrderHistory(id, 0, 1000)
		js, _ := json.Marshal(paged)
		shown, _ := json.Marshal(o.History)
		w("  history paged the same: %v %v", string(js) == string(shown), err)
	}
	for _, st := range []ipn.OrderStatus{"", ipn.OrderPaid, ipn.OrderCanceled, ipn.OrderReview, ipn.OrderReversed} {
		w("orders %q: %v", st, listOrders(t, b.name, b.reads, st, 2))
	}
	oc, err := b.reads.OrderCounts()
	w("order counts: %v %v", nonZero(oc), err)
	tc, err := b.reads.TestOrderCounts()
	w("test order counts: %v %v", nonZero(tc), err)
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		e, _ := json.Marshal(it.Effect)
		w("outbox %d: %s n%d created=%s next=%s %s", it.ID, it.State, it.Notification, it.CreatedAt, it.NextAttempt, e)
	}
	for _, id := range []string{"R1", "BIG", "D1", "D2", "N1", "TEST1"} {
		w("outbox of %s: %s", id, outboxLine(b.reads.OutboxOfOrder(id)))
	}
	return out.String()
}

// TestPGDecisions runs the admin API's decisions on the bbolt store and
// on PostgreSQL and compares what each answered and holds after: the
// results and errors (ErrStale, ErrKeyReused, ErrNotInReview, ErrFinal,
// ErrNoOpenDispute, ErrBadDecision, ErrNotFound, ErrExists, ErrNotTest),
// the orders with their history (small, outgrowing the small layout,
// kept apart), the order counts, the outbox items and each order's
// queue.
func TestPGDecisions(t *testing.T) {
	c := pgtest.Start(t)
	want := decisionScenario(t, boltDecisions(t))
	got := decisionScenario(t, pgDecisions(t, open(t, c.DSN())))
	if got != want {
		wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
		for i := range max(len(wl), len(gl)) {
			var w, g string
			if i < len(wl) {
				w = wl[i]
			}
			if i < len(gl) {
				g = gl[i]
			}
			if w != g {
				t.Errorf("postgres differs from bbolt:\n  bbolt:    %s\n  postgres: %s", w, g)
			}
		}
	}
	for _, must := range []string{
		"create R1 again: order \"R1\": already exists",
		"approve R1: err=<nil> repeated=false order=R1/paid",
		"approve R1, the same key: err=<nil> repeated=true order=R1/paid",
		"cancel R1, the key of the approval: err=idempotency key reused",
		"approve R1, the key with other words: err=idempotency key reused",
		"approve R1 again: err=order is not in review",
		"approve NONE: err=order \"NONE\": not found",
		"approve NONE, the key of R1: err=idempotency key reused",
		"approve BIG, stale: err=stale version",
		"approve BIG: err=<nil> repeated=false order=BIG/paid",
		"note BIG without text: err=bad decision",
		"cancel BIG again: err=order is final",
		"dispute D1 won: err=<nil> repeated=false order=D1/paid",
		"dispute D1 won, the same key: err=<nil> repeated=true",
		"dispute D1 again: err=no open dispute",
		"dispute D2 lost: err=<nil> repeated=false order=D2/reversed",
		"note 9 on N1: err=<nil> repeated=false order=N1/paid changes=11 history=11",
		"cancel N1, stale: err=stale version",
		"note R1 a day later, the key of the approval: err=<nil> repeated=false",
		"note R1 a day later, the same key: err=<nil> repeated=true",
		"note BIG a day later, a forgotten key: err=<nil> repeated=false",
		"delete R1: order \"R1\": not a test order",
		"delete NONE: order \"NONE\": not found",
		"delete TEST1: <nil>",
		"delete TEST1: order \"TEST1\": not found",
		"delete TEST2: <nil>",
		"order TEST1: paid paid=2.00 refunded=0.00 flags=[] approved=[] test=true canceled=false changes=1 facts=1",
		"order TEST2: not found",
		"order counts: map[canceled:2 paid:3 reversed:1]",
		`orders "paid": [D1:paid R1:paid TEST1:paid]`,
		`orders "review": []`,
		"test order counts: map[paid:1]",
	} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q", must)
		}
	}
	t.Logf("both backends:\n%s", want)
}

// twoProcesses opens two stores on one database (two pools, as two ipnd
// processes) and makes each order of ids, registered for 10.00 USD and
// paid 12.00 (in review), through the first one's pipeline (its
// journal).
func twoProcesses(t *testing.T, ids ...string) (*DB, *Journal, *Dashboard, *Dashboard) {
	c := pgtest.Start(t)
	a, other := open(t, c.DSN()), open(t, c.DSN())
	b := decideOn{pgBackend(t, a), a.Dashboard()}
	now := time.Now().UTC()
	for _, id := range ids {
		o, _ := ipn.NewRegisteredOrder(id, "10.00", "USD", "c@example.com", "", nil, now)
		if err := b.dec.CreateOrder(o); err != nil {
			t.Fatal(err)
		}
		b.apply(t, "pay-"+id, usd(ipn.TypePayment, ipn.StatusCompleted, "T-"+id, "", id, "12.00"), now)
	}
	return a, b.journal.(*Journal), a.Dashboard(), other.Dashboard()
}

// together runs f(0) and f(1) at once (both started before either
// runs) and returns their errors.
func together(f func(i int) error) [2]error {
	var errs [2]error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// TestPGDecisionsConcurrent: two processes decide on one order at once.
// Named with the same version, exactly one decision is applied and the
// other answers ErrStale (round after round, across the order's move to
// the layout that keeps its history apart); without a version, every
// note is kept (no update lost); with the same Idempotency-Key, the
// decision is applied once and the other request answers it repeated.
func TestPGDecisionsConcurrent(t *testing.T) {
	_, _, a, b := twoProcesses(t, "C", "K")
	procs := [2]*Dashboard{a, b}
	now := time.Now().UTC()
	note := func(why string, version int, key string) store.Decision {
		return store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionNote, By: "admin", Why: why}, Version: version, Key: key}
	}
	current := func(id string) *ipn.Order {
		o, err := a.GetOrder(id)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}

	// Approve and cancel at the same version: one wins.
	v := current("C").Changes
	errs := together(func(i int) error {
		kind := []string{ipn.DecisionApprove, ipn.DecisionCancel}[i]
		_, err := procs[i].DecideOrder("C", store.Decision{OrderDecision: ipn.OrderDecision{Kind: kind}, Version: v}, now)
		return err
	})
	if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errs[0], store.ErrStale) && !errors.Is(errs[1], store.ErrStale) {
		t.Fatalf("approve and cancel at version %d: %v, %v: want one applied, the other stale", v, errs[0], errs[1])
	}
	if o := current("C"); o.Changes != v+1 {
		t.Fatalf("after approve and cancel at once: changes %d, want %d", o.Changes, v+1)
	}

	// Notes at the same version, twenty rounds.
	for round := range 20 {
		v := current("C").Changes
		errs := together(func(i int) error {
			_, err := procs[i].DecideOrder("C", note(fmt.Sprintf("round %d by %d", round, i), v, ""), now)
			return err
		})
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			} else if !errors.Is(err, store.ErrStale) {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d at version %d: %d applied (%v, %v), want exactly one", round, v, won, errs[0], errs[1])
		}
		if o := current("C"); o.Changes != v+1 || len(o.History) != v+1 {
			t.Fatalf("round %d: changes %d, history %d, want %d", round, o.Changes, len(o.History), v+1)
		}
	}

	// Notes without a version: none lost.
	v = current("C").Changes
	errs = together(func(i int) error {
		for n := range 10 {
			if _, err := procs[i].DecideOrder("C", note(fmt.Sprintf("free %d by %d", n, i), 0, ""), now); err != nil {
				return err
			}
		}
		return nil
	})
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	o := current("C")
	hist, err := a.OrderHistory("C", 0, 1000)
	if err != nil || o.Changes != v+20 || len(hist) != v+20 {
		t.Fatalf("after 20 notes at once: changes %d, history %d (%v), want %d", o.Changes, len(hist), err, v+20)
	}
	seen := map[string]bool{}
	for _, h := range hist {
		seen[h.Reason] = true
	}
	for i := range 2 {
		for n := range 10 {
			if !seen[fmt.Sprintf("note by admin: free %d by %d", n, i)] {
				t.Errorf("note %d of process %d is lost", n, i)
			}
		}
	}

	// One Idempotency-Key sent to both at once: applied once.
	for round := range 10 {
		v := current("K").Changes
		var results [2]store.DecisionResult
		errs := together(func(i int) error {
			var err error
			results[i], err = procs[i].DecideOrder("K", note("once", 0, fmt.Sprintf("key-%d", round)), now)
			return err
		})
		if errs[0] != nil || errs[1] != nil || results[0].Repeated == results[1].Repeated {
			t.Fatalf("round %d: %v %v, repeated %v %v: want one applied, one repeated", round, errs[0], errs[1],
				results[0].Repeated, results[1].Repeated)
		}
		if o := current("K"); o.Changes != v+1 {
			t.Fatalf("round %d: changes %d, want %d", round, o.Changes, v+1)
		}
	}
}

// TestPGDecisionWakesOutbox: a decision with effects, taken by a process
// that does not lead, sends the NOTIFY that wakes the leader's outbox
// worker, and its items are in the order's queue after the payment's.
func TestPGDecisionWakesOutbox(t *testing.T) {
	db, _, _, other := twoProcesses(t, "W")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, db.pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+outboxChannel); err != nil {
		t.Fatal(err)
	}
	before, _ := other.OutboxOfOrder("W")
	if _, err := other.DecideOrder("W", store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionApprove}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WaitForNotification(ctx); err != nil {
		t.Fatalf("no NOTIFY on %s after the decision: %v", outboxChannel, err)
	}
	after, _ := other.OutboxOfOrder("W")
	var kinds []string
	for _, it := range after[len(before):] {
		kinds = append(kinds, it.Effect.Kind+"/"+it.Effect.Template)
		if it.ID <= before[len(before)-1].ID || it.State != ipn.OutboxPending {
			t.Errorf("item %+v queued before the payment's", it)
		}
	}
	if fmt.Sprint(kinds) != "[email_customer/payment_received shop_script/ shop_callback/]" {
		t.Errorf("queued %v", kinds)
	}
	// A note queues nothing, and notifies nobody.
	if _, err := other.DecideOrder("W", store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionNote, Why: "x"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if n, err := conn.WaitForNotification(short); err == nil {
		t.Errorf("a note sent a NOTIFY: %+v", n)
	}
}

// TestPGDecisionDeadlockRetried: the pipeline holds the outbox counter
// (it queued an effect) and then wants the order a decision holds while
// the decision waits for the counter: PostgreSQL breaks the deadlock by
// aborting one of them, and the decision, run again, is applied.
func TestPGDecisionDeadlockRetried(t *testing.T) {
	db, j, d, _ := twoProcesses(t, "A", "B")
	done := make(chan error, 1)
	started := false
	err := j.update(func(tx record.Tx) error {
		// The pipeline queues an effect of A: the counter's row is its.
		if err := tx.Enqueue([]ipn.Effect{{Kind: ipn.EffectShopCallback, OrderID: "A", Cause: "deadlock-test"}}, 0, time.Now()); err != nil {
			return err
		}
		if _, _, err := tx.StoredOrder("A"); err != nil { // sends the queued writes
			return err
		}
		if !started {
			started = true
			go func() {
				_, err := d.DecideOrder("B", store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionApprove}}, time.Now())
				done <- err
			}()
		}
		// The decision holds B and waits for the counter.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var waiting bool
			if err := db.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE ipnd_counters%')`).Scan(&waiting); err != nil {
				return err
			}
			if waiting {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("the decision does not wait for the counter")
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
		_, _, err := tx.OrderState("B", nil, ipn.ApplyContext{})
		return err
	})
	t.Logf("the pipeline's transaction: %v", err)
	if err := <-done; err != nil {
		t.Fatalf("the decision: %v", err)
	}
	if o, err := d.GetOrder("B"); err != nil || o.Status != ipn.OrderPaid {
		t.Fatalf("order B after the decision: %+v %v", o, err)
	}
}

// TestPGMigrateDecisionKeys: ipnd migrate carries the Idempotency-Keys
// of the admin API's decisions both ways: a request repeated after the
// copy, on PostgreSQL or back on bbolt, answers the decision made
// before it, and a key sent with another request is refused.
func TestPGMigrateDecisionKeys(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ipnd.db")
	bdb, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := decideOn{boltOn(bdb), bdb}
	now := time.Now().UTC()
	o, _ := ipn.NewRegisteredOrder("M1", "10.00", "USD", "m@example.com", "", nil, now)
	if err := b.dec.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	b.apply(t, "pay-m1", usd(ipn.TypePayment, ipn.StatusCompleted, "TM1", "", "M1", "12.00"), now)
	approve := store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionApprove, By: "admin"}, Key: "mk1"}
	note := func(why, key string) store.Decision {
		return store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionNote, By: "admin", Why: why}, Key: key}
	}
	cancel := store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionCancel}, Key: "mk1"}
	for _, d := range []store.Decision{approve, note("x", "mk2")} {
		if _, err := bdb.DecideOrder("M1", d, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}

	pdb := open(t, c.DSN())
	var copied Copied
	err = store.Export(path, func(s *store.Snapshot) error {
		if left := s.NotCopied(); len(left) > 0 {
			t.Errorf("not copied: %v", left)
		}
		var err error
		copied, err = pdb.Import(ctx, s)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(copied.Tables, TableCount{"idempotency", 2}) {
		t.Errorf("copied %v, want 2 idempotency keys", copied.Tables)
	}
	check := func(where string, dec decider, at time.Time) {
		t.Helper()
		before := ""
		for _, d := range []store.Decision{approve, note("x", "mk2"), note("y", "mk3")} {
			res, err := dec.DecideOrder("M1", d, at)
			if err != nil || !res.Repeated {
				t.Errorf("%s: %s with key %s again: %+v %v, want it repeated", where, d.Kind, d.Key, res, err)
				continue
			}
			if got := fmt.Sprintf("%s/%d", res.Order.Status, res.Order.Changes); before != "" && got != before {
				t.Errorf("%s: a repeat answers %s, another %s", where, got, before)
			} else {
				before = got
			}
		}
		if _, err := dec.DecideOrder("M1", cancel, at); !errors.Is(err, store.ErrKeyReused) {
			t.Errorf("%s: cancel with the approval's key: %v, want ErrKeyReused", where, err)
		}
	}
	pd := pdb.Dashboard()
	if _, err := pd.DecideOrder("M1", note("y", "mk3"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("on PostgreSQL", pd, now.Add(2*time.Minute))

	back := filepath.Join(t.TempDir(), "back.db")
	err = store.Import(back, func(w *store.Importer) error {
		var err error
		copied, err = pdb.Export(ctx, w)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(copied.Tables, TableCount{"idempotency", 3}) {
		t.Errorf("copied back %v, want 3 idempotency keys", copied.Tables)
	}
	bdb, err = store.Open(back, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	check("back on bbolt", bdb, now.Add(3*time.Minute))
}

// TestPGCreateOrderRacesPipeline: the admin API registers an order after
// the pipeline's batch read that there was none and before it writes the
// order it made of a payment: the batch fails rather than write over the
// registered order (as on bbolt, one of them comes first), and, decided
// again, applies the payment to the registered order; the counts hold
// one order.
func TestPGCreateOrderRacesPipeline(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	b := pgDecisions(t, db)
	now := time.Now().UTC()
	id, err := b.append(webhook("x1", "payment.completed", `"txn_id":"TX"`))
	if err != nil {
		t.Fatal(err)
	}
	registered, _ := ipn.NewRegisteredOrder("X", "10.00", "USD", "x@example.com", "", nil, now)
	j := b.journal.(*Journal)
	err = j.update(func(tx record.Tx) error {
		if o, _, err := tx.OrderState("X", nil, ipn.ApplyContext{}); o != nil || err != nil {
			return fmt.Errorf("order X before: %+v %v", o, err)
		}
		if err := b.dec.CreateOrder(registered); err != nil {
			return err
		}
		next := ipn.Order{ID: "X", Status: ipn.OrderPaid, Paid: "10.00", Currency: "USD", UpdatedAt: now}
		return tx.PutOrder(nil, &next, nil, nil)
	})
	if err == nil {
		t.Error("the batch wrote its new order over the one registered meanwhile")
	}
	if o, err := b.reads.GetOrder("X"); err != nil || o.Status != ipn.OrderAwaitingPayment || !o.Registered {
		t.Fatalf("order X after the race: %+v %v, want the registered order", o, err)
	}
	pay := payment(id, "TX", "X")
	if _, err := j.Finish([]ipn.Outcome{pay}, id, now); err != nil {
		t.Fatal(err)
	}
	if o, err := b.reads.GetOrder("X"); err != nil || o.Status != ipn.OrderPaid || !o.Registered {
		t.Errorf("order X after the batch decided again: %+v %v, want the registered order paid", o, err)
	}
	if counts, err := b.reads.OrderCounts(); err != nil || fmt.Sprint(counts) != "map[paid:1]" {
		t.Errorf("order counts %v %v, want one paid order", counts, err)
	}
}
