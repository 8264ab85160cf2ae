package pg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
)

// operator is what the admin API, the CLI and the dashboard decide on a
// store: *store.DB and *Dashboard both are one.
type operator interface {
	Replay(id uint64, now time.Time) error
	ReplayMatching(f store.Filter, max int, now time.Time) ([]uint64, int, bool, error)
	RetryOutbox(id uint64, now time.Time) (ipn.OutboxItem, error)
	RetryDead(kind string, now time.Time) ([]uint64, error)
	ResendOutbox(id uint64, by, key string, now time.Time) (ipn.OutboxItem, error)
	DiscardOutbox(id uint64, by, why string, version int, now time.Time) (ipn.OutboxItem, bool, error)
	Purge(cutoff time.Time, max int) (store.Purged, error)
}

var _ operator = (*store.DB)(nil)
var _ operator = (*Dashboard)(nil)

// opErr names err by the store's sentinels (the messages may differ).
func opErr(err error) string {
	for _, s := range []struct {
		err  error
		name string
	}{{store.ErrStale, "stale"}, {store.ErrExists, "exists"}, {store.ErrKeyReused, "key reused"},
		{store.ErrNotDiscardable, "not discardable"}, {store.ErrNotResendable, "not resendable"}, {store.ErrPurged, "purged"}} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return errKind(err)
}

// compare fails the test with the lines where got (postgres) differs
// from want (bbolt).
func compare(t *testing.T, want, got string) {
	t.Helper()
	if got == want {
		return
	}
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

// outboxState writes b's outbox items with their attempts, and the
// history of its orders, as text to compare.
func outboxState(t *testing.T, b *backend, out *strings.Builder, orders ...string) {
	t.Helper()
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		fmt.Fprintf(out, "outbox %d: %s %s attempts=%d order=%s cause=%q to=%q error=%q\n", it.ID, it.Effect.Kind, it.State, it.Attempts,
			it.Effect.OrderID, it.Effect.Cause, it.Effect.To, it.LastError)
		as, err := b.attempts(it.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			fmt.Fprintf(out, "  attempt %d (%d): %s %q http=%d response=%q\n", a.Seq, a.Attempt, a.Result, a.Error, a.HTTPStatus, a.Response)
		}
	}
	for _, id := range orders {
		o, err := b.order(id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(out, "order %s: %s changes=%d customer=%q/%q\n", id, o.Status, max(o.Changes, len(o.History)), o.CustomerEmail, o.CustomerName)
		for _, h := range o.History {
			fmt.Fprintf(out, "  %s>%s by %q: %s\n", h.From, h.To, h.By, h.Reason)
		}
	}
	counts, err := b.reads.OutboxCounts()
	for _, m := range counts {
		nonZero(m)
	}
	maps.DeleteFunc(counts, func(_ string, m map[string]int) bool { return len(m) == 0 })
	fmt.Fprintf(out, "outbox counts: %v %s\n", counts, errKind(err))
}

func evType(e ipn.Effect) ipn.EventType {
	if e.Event == nil {
		return ""
	}
	return e.Event.Type
}

// dueCallbacks lists the shop callbacks due at now: id/order.
func dueCallbacks(t *testing.T, b *backend, d interface {
	DueLaneSkipping(kind string, now time.Time, max int, skip func(id uint64) bool) ([]ipn.OutboxItem, time.Time, error)
}, now time.Time) string {
	t.Helper()
	items, _, err := d.DueLaneSkipping(ipn.EffectShopCallback, now, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, it := range items {
		s = append(s, fmt.Sprintf("%d/%s/%s", it.ID, it.Effect.OrderID, evType(it.Effect)))
	}
	return fmt.Sprint(s)
}

// decisionsScenario: payments of two orders and a refund of the first
// (its callback waits behind the payment's); the emails are sent, the
// first callback of O0 fails and waits an hour, O1's goes dead. Then
// the operator retries the dead item (and a sent one, and none), makes
// it dead again and retries the dead of a lane; discards the head of
// O0's callbacks with a stale version, then the current one (the refund
// callback is due), and again; resends a sent email with a key, again
// with that key, with that key for another item, without a key, and a
// callback. It returns what each step answered and the outbox and
// orders after it.
func decisionsScenario(t *testing.T, b *backend) string {
	t.Helper()
	op := b.reads.(operator)
	queue(t, b, 2)
	if _, err := b.append(webhook("r0", "payment.refunded", `"txn_id":"R0","parent_txn_id":"T0","amount":"0.50","currency":"USD"`)); err != nil {
		t.Fatal(err)
	}
	runUntilIdle(t, b, verifier(t), 3)
	d := b.deliveries()
	now := time.Now()
	var out strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&out, format+"\n", a...) }
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	var res []ipn.OutboxResult
	var emails, callbacks []uint64
	for _, it := range items {
		switch {
		case it.Effect.Kind == ipn.EffectShopCallback && it.Effect.OrderID == "O0" && evType(it.Effect) == ipn.TypePayment:
			callbacks = append(callbacks, it.ID)
			res = append(res, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: now.Add(time.Hour),
				Error: "HTTP 500", Detail: ipn.AttemptDetail{HTTPStatus: 500}})
		case it.Effect.Kind == ipn.EffectShopCallback && it.Effect.OrderID == "O1":
			callbacks = append(callbacks, it.ID)
			res = append(res, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxDead, Attempts: 1, Error: "HTTP 410",
				Detail: ipn.AttemptDetail{HTTPStatus: 410, Response: "gone"}})
		case it.Effect.Kind == ipn.EffectEmailCustomer && evType(it.Effect) == ipn.TypePayment:
			emails = append(emails, it.ID)
			res = append(res, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1})
		}
	}
	if len(callbacks) != 2 || len(emails) != 2 {
		t.Fatalf("%s: callbacks %v, emails %v in %+v", b.name, callbacks, emails, items)
	}
	if err := d.FinishOutbox(res, now); err != nil {
		t.Fatal(err)
	}
	head, dead := callbacks[0], callbacks[1]
	w("due callbacks: %s", dueCallbacks(t, b, d, now))

	was, err := op.RetryOutbox(dead, now)
	w("retry the dead callback: was %s attempts=%d %s", was.State, was.Attempts, opErr(err))
	it, err := b.reads.GetOutbox(dead)
	w("  now %s attempts=%d due=%v %s", it.State, it.Attempts, it.NextAttempt.Truncate(time.Microsecond).Equal(now.UTC().Truncate(time.Microsecond)), errKind(err))
	w("due callbacks: %s", dueCallbacks(t, b, d, now))
	was, err = op.RetryOutbox(emails[0], now)
	w("retry a sent email: was %s %s", was.State, opErr(err))
	_, err = op.RetryOutbox(999, now)
	w("retry no item: %s", opErr(err))
	if err := d.FinishOutbox([]ipn.OutboxResult{{ID: dead, State: ipn.OutboxDead, Attempts: 1, Error: "HTTP 410"}}, now); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{ipn.EffectEmailCustomer, ipn.EffectShopCallback, ""} {
		ids, err := op.RetryDead(kind, now)
		w("retry dead %q: %v %s", kind, ids, opErr(err))
	}
	w("due callbacks: %s", dueCallbacks(t, b, d, now))

	_, _, err = op.DiscardOutbox(head, "cli", "", 1, now)
	w("discard with a stale version: %s", opErr(err))
	o, err := b.order("O0")
	if err != nil {
		t.Fatal(err)
	}
	was, repeated, err := op.DiscardOutbox(head, "cli", "shop gone", max(o.Changes, len(o.History)), now)
	w("discard: was %s repeated=%v %s", was.State, repeated, opErr(err))
	w("due callbacks: %s", dueCallbacks(t, b, d, now))
	was, repeated, err = op.DiscardOutbox(head, "cli", "", 0, now)
	w("discard again: was %s repeated=%v %s", was.State, repeated, opErr(err))
	_, _, err = op.DiscardOutbox(emails[0], "admin", "", 0, now)
	w("discard a sent email: %s", opErr(err))

	it, err = op.ResendOutbox(emails[0], "admin", "click-1", now)
	w("resend: %d %s %s notification=%d %s", it.ID, it.State, it.Effect.Cause, it.Notification, opErr(err))
	again, err := op.ResendOutbox(emails[0], "admin", "click-1", now)
	w("resend with the same key: %d %s", again.ID, opErr(err))
	_, err = op.ResendOutbox(emails[1], "admin", "click-1", now)
	w("the key for another item: %s", opErr(err))
	again, err = op.ResendOutbox(emails[0], "admin", "", now)
	w("resend without a key: %d %s %s", again.ID, again.Effect.Cause, opErr(err))
	_, err = op.ResendOutbox(dead, "admin", "", now)
	w("resend a callback: %s", opErr(err))
	_, err = op.ResendOutbox(999, "admin", "", now)
	w("resend no item: %s", opErr(err))

	// One Idempotency-Key is one request, a decision or a resend.
	dec := b.reads.(decider)
	noteWith := func(key string) store.Decision {
		return store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionNote, By: "admin", Why: "called the customer"}, Key: key}
	}
	dres, err := dec.DecideOrder("O0", noteWith("cross-1"), now)
	w("a note with a key: repeated=%v %s", dres.Repeated, opErr(err))
	_, err = op.ResendOutbox(emails[0], "admin", "cross-1", now)
	w("the note's key for a resend: %s", opErr(err))
	dres, err = dec.DecideOrder("O0", noteWith("cross-1"), now)
	w("the note again: repeated=%v %s", dres.Repeated, opErr(err))
	it, err = op.ResendOutbox(emails[1], "admin", "cross-2", now)
	w("a resend with another key: %d %s %s", it.ID, it.Effect.Cause, opErr(err))
	_, err = dec.DecideOrder("O1", noteWith("cross-2"), now)
	w("the resend's key for a note: %s", opErr(err))
	again, err = op.ResendOutbox(emails[1], "admin", "cross-2", now)
	w("the resend again: %d same=%v %s", again.ID, again.ID == it.ID, opErr(err))
	outboxState(t, b, &out, "O0", "O1")
	return out.String()
}

// TestPGOutboxDecisions runs the operator's outbox decisions (retry of
// a dead item, retry of the dead of a lane, discard with a stale
// version, discard, repeated; resend with a key, repeated, the key
// reused, without a key; a key used for a decision then for a resend,
// and the reverse) on the bbolt store and on PostgreSQL, and compares
// what each answered and holds after.
func TestPGOutboxDecisions(t *testing.T) {
	c := pgtest.Start(t)
	want := decisionsScenario(t, boltBackend(t))
	db := open(t, c.DSN())
	got := decisionsScenario(t, pgBackend(t, db))
	compare(t, want, got)
	checkOutboxCounts(t, db) // outboxcounts_test.go
	for _, must := range []string{
		"retry the dead callback: was dead attempts=1 ok", "now pending attempts=0 due=true ok",
		"retry a sent email: was sent exists", "retry no item: not found",
		`retry dead "email_customer": [] ok`, `retry dead "shop_callback": [`, `retry dead "": [] ok`,
		"discard with a stale version: stale", "discard: was pending repeated=false ok", "due callbacks: [6/O0/refund 4/O1/payment]", "due callbacks: []",
		"discard again: was discarded repeated=true ok", "discard a sent email: not discardable",
		"/resend/1 notification=1 ok", "the key for another item: key reused", "/resend/2 ok",
		"resend a callback: not resendable", "resend no item: not found",
		`discarded by cli (shop gone)`, "resent by admin as outbox",
		"a note with a key: repeated=false ok", "the note's key for a resend: key reused", "the note again: repeated=true ok",
		"/resend/1 ok", "the resend's key for a note: key reused", "same=true ok",
	} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q:\n%s", must, want)
		}
	}
	t.Logf("both backends:\n%s", want)
}

// TestPGOutboxDecisionsWakeTheWorker: an item made due by a retry asked
// of another process is delivered by the leader's outbox worker, woken
// by the NOTIFY of the retry's transaction (its next attempt was an
// hour away).
func TestPGOutboxDecisionsWakeTheWorker(t *testing.T) {
	c := pgtest.Start(t)
	db, other := open(t, c.DSN()), open(t, c.DSN())
	b := pgBackend(t, db)
	queue(t, b, 1)
	d := b.deliveries()
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	var res []ipn.OutboxResult
	for _, it := range items {
		res = append(res, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: time.Now().Add(time.Hour), Error: "down"})
	}
	if err := d.FinishOutbox(res, time.Now()); err != nil {
		t.Fatal(err)
	}
	mb, shop := startMailbox(t), startShop(t, nil)
	runWorker(t, d, mb, shop, map[string]bool{ipn.TemplatePaymentReceived: true})
	for _, it := range items {
		if _, err := other.Dashboard().RetryOutbox(it.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the retried items delivered", noneQueued(t, b))
	if len(mb.messages()) != 1 || len(shop.calls()) != 1 {
		t.Errorf("after the retry: emails %v, callbacks %v", mb.messages(), shop.calls())
	}
}

// TestPGResendConcurrent: the same resend asked twice at once with one
// Idempotency-Key (a double click on two processes) queues one item, and
// both get it; without a key, each queues its own.
func TestPGResendConcurrent(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	b := pgBackend(t, db)
	queue(t, b, 1)
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	email := items[0]
	if email.Effect.Kind != ipn.EffectEmailCustomer {
		t.Fatalf("first item %+v", email)
	}
	if err := b.deliveries().FinishOutbox([]ipn.OutboxResult{{ID: email.ID, State: ipn.OutboxSent, Attempts: 1}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	procs := []*DB{db, open(t, c.DSN()), open(t, c.DSN()), open(t, c.DSN())}
	resend := func(key string) []uint64 {
		var mu sync.Mutex
		var got []uint64
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				it, err := p.Dashboard().ResendOutbox(email.ID, "admin", key, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, it.ID)
				mu.Unlock()
			}()
		}
		wg.Wait()
		slices.Sort(got)
		return got
	}
	if got := slices.Compact(resend("double-click")); len(got) != 1 {
		t.Errorf("4 resends with one key queued %v", got)
	}
	if got := slices.Compact(resend("")); len(got) != 4 {
		t.Errorf("4 resends without a key queued %v", got)
	}
	all, _ := b.outbox()
	causes := map[string]bool{}
	for _, it := range all {
		if causes[it.Effect.Cause] {
			t.Errorf("cause %q twice", it.Effect.Cause)
		}
		causes[it.Effect.Cause] = true
	}
	if len(all) != len(items)+5 {
		t.Errorf("%d items, want %d", len(all), len(items)+5)
	}
	checkOutboxCounts(t, db) // outboxcounts_test.go
}

// retentionScenario is the bbolt store's TestRetentionPurge on b, with a
// controlled clock, and a replay of one notification and of a filter
// (purged ones are skipped): it returns what each step answered and what
// the dashboard reads after each.
func retentionScenario(t *testing.T, b *backend) string {
	t.Helper()
	op := b.reads.(operator)
	old := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	young := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	cutoff := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var out strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&out, format+"\n", a...) }
	bodies := map[uint64]string{}
	add := func(at time.Time, i int) uint64 {
		n := webhook(fmt.Sprintf("m%d", i), "payment.completed", fmt.Sprintf(`"order_id":"O%d","amount":"5.00","currency":"EUR","customer_email":"c%d@example.com"`, i, i))
		n.ReceivedAt = at
		id, err := b.append(n)
		if err != nil {
			t.Fatal(err)
		}
		bodies[id] = string(n.Body)
		return id
	}
	d := b.deliveries()
	process := func(now time.Time) {
		work, err := b.journal.PendingExcept(now, 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		var outs []ipn.Outcome
		var cursor uint64
		for _, wk := range work {
			id := wk.Notification.ID
			cursor = max(cursor, id)
			ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("T%d", id),
				OrderID: fmt.Sprintf("O%d", id), Amount: "5.00", Currency: "EUR", CustomerEmail: fmt.Sprintf("c%d@example.com", id), CustomerName: "Ann Lee"}
			outs = append(outs, ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("test", ev),
				ApplyOrder: true, Context: ipn.ApplyContext{Gateway: "test"}})
		}
		if _, err := b.journal.Finish(outs, cursor, now); err != nil {
			t.Fatal(err)
		}
		items, err := b.outbox()
		if err != nil {
			t.Fatal(err)
		}
		var res []ipn.OutboxResult
		for _, it := range items {
			if it.State == ipn.OutboxPending {
				res = append(res, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1,
					Detail: ipn.AttemptDetail{HTTPStatus: 200, Response: "thanks, Ann Lee"}})
			}
		}
		if err := d.FinishOutbox(res, now); err != nil {
			t.Fatal(err)
		}
	}
	notes := func(last uint64) {
		for id := uint64(1); id <= last; id++ {
			n, p, err := b.reads.Get(id)
			if err != nil {
				w("notification %d: %s", id, errKind(err))
				continue
			}
			sum := sha256.Sum256([]byte(bodies[id]))
			ev := p.Event
			if ev == nil {
				ev = &ipn.Event{}
			}
			w("notification %d: %s purged=%v body=%d headers=%v remote=%q sha=%v dedup=%q event=%s/%s/%q/%q history=%d", id, p.State,
				!n.Purged.IsZero(), len(n.Body), n.Headers, n.RemoteAddr, n.BodySHA256 == hex.EncodeToString(sum[:]), n.DedupKey,
				ev.TxnID, ev.Amount, ev.CustomerEmail, ev.CustomerName, len(p.History))
		}
		for _, term := range []string{"c1@example.com", "c3@example.com", "t1", "o2"} {
			w("find %q: %s", term, pages(t, b.reads, store.Query{Term: term, Limit: 50}))
		}
		hc, err := b.reads.HourCounts(old.Add(-time.Hour))
		w("hour counts: %+v %s", hc, errKind(err))
		oc, err := b.reads.OrderCounts()
		w("order counts: %v %s", nonZero(oc), errKind(err))
	}
	purge := func(max int) {
		p, err := op.Purge(cutoff, max)
		w("purge %d: %+v %s", max, p, opErr(err))
	}

	add(old, 1)
	add(old, 2)
	process(old)
	add(young, 3)
	process(young)
	purge(1) // one of each at a time: More
	purge(200)
	notes(3)
	outboxState(t, b, &out, "O1", "O2", "O3")
	purge(200)

	// A notification still waiting for its postback keeps its body, and
	// so does everything after it, until it is final.
	waiting := add(old, 4)
	work, err := b.journal.PendingExcept(young, 100, nil)
	if err != nil || len(work) != 1 {
		t.Fatal(err, work)
	}
	if _, err := b.journal.Finish([]ipn.Outcome{{ID: waiting, State: ipn.StateReceived, RetryAt: young.Add(time.Hour), Attempts: 1}}, waiting, young); err != nil {
		t.Fatal(err)
	}
	purge(200)
	notes(4)

	// Replays: a purged one cannot be processed again; the young one
	// can; of a filter, the purged ones are skipped.
	w("replay 1: %s", opErr(op.Replay(1, young)))
	w("replay 3: %s", opErr(op.Replay(3, young)))
	w("replay 99: %s", opErr(op.Replay(99, young)))
	replayed, skipped, more, err := op.ReplayMatching(store.Filter{Gateway: "test", State: ipn.StateApplied}, 0, young)
	w("replay applied: %v skipped=%d more=%v %s", replayed, skipped, more, opErr(err))
	replayed, skipped, more, err = op.ReplayMatching(store.Filter{Gateway: "test"}, 2, young)
	w("replay 2 of test: %v skipped=%d more=%v %s", replayed, skipped, more, opErr(err))
	notes(4)
	return out.String()
}

// TestPGRetentionAndReplays runs the bbolt store's retention scenario
// (purged in batches of one, then of 200; again with nothing to do; a
// notification waiting for its postback holds up the rest) and replays
// (one purged, one young, of a filter) on the bbolt store and on
// PostgreSQL, and compares what each answered and what the dashboard
// reads after each step: the notifications, their identifiers, the
// hourly and order counts, the outbox, its attempts and counts, the
// orders.
func TestPGRetentionAndReplays(t *testing.T) {
	c := pgtest.Start(t)
	want := retentionScenario(t, boltBackend(t))
	db := open(t, c.DSN())
	got := retentionScenario(t, pgBackend(t, db))
	compare(t, want, got)
	checkOutboxCounts(t, db) // outboxcounts_test.go
	for _, must := range []string{
		"purge 1: {Notifications:1 OutboxItems:1 Orders:1 More:true} ok",
		"purge 200: {Notifications:0 OutboxItems:0 Orders:0 More:false} ok",
		`notification 1: applied purged=true body=0 headers=map[] remote="" sha=true dedup="m1" event=T1/5.00/""/""`,
		`notification 3: applied purged=false`, `find "c1@example.com": 1 pages []`, `find "c3@example.com": 1 pages [3:applied/O3]`,
		`find "t1": 1 pages [1:applied/O1]`, `response="thanks, Ann Lee"`, `response=""`,
		`order O1: paid changes=1 customer=""/""`, `order O3: paid changes=1 customer="c3@example.com"/"Ann Lee"`,
		`notification 4: received purged=false`,
		"replay 1: purged", "replay 3: ok", "replay 99: not found", "skipped=2",
	} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q:\n%s", must, want)
		}
	}
	t.Logf("both backends:\n%s", want)
}

// TestPGPurgeWaitsForNothing: retention never waits for the leader's
// transactions: with a notification held by the pipeline's batch, an
// outbox item by the recording of a delivery result and an order by
// another batch, Purge returns at once, purging the notifications and
// items before those held (the rest waits for a later call) and the
// orders but the one held; once they are released, the next call purges
// the rest.
func TestPGPurgeWaitsForNothing(t *testing.T) {
	c := pgtest.Start(t)
	ctx := t.Context()
	db, other := open(t, c.DSN()), open(t, c.DSN())
	b := pgBackend(t, db)
	old := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	var outs []ipn.Outcome
	for i := uint64(1); i <= 3; i++ {
		n := webhook(fmt.Sprintf("m%d", i), "payment.completed", "")
		n.ReceivedAt = old
		if _, err := b.append(n); err != nil {
			t.Fatal(err)
		}
		ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("T%d", i),
			OrderID: fmt.Sprintf("O%d", i), Amount: "5.00", Currency: "EUR", CustomerEmail: fmt.Sprintf("c%d@example.com", i)}
		outs = append(outs, ipn.Outcome{ID: i, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("test", ev),
			ApplyOrder: true, Context: ipn.ApplyContext{Gateway: "test"}})
	}
	b.setKinds(map[string]bool{ipn.EffectEmailCustomer: true})
	if _, err := b.journal.Finish(outs, 3, old); err != nil {
		t.Fatal(err)
	}
	var res []ipn.OutboxResult
	for id := uint64(1); id <= 3; id++ {
		res = append(res, ipn.OutboxResult{ID: id, State: ipn.OutboxSent, Attempts: 1})
	}
	if err := b.deliveries().FinishOutbox(res, old); err != nil {
		t.Fatal(err)
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, q := range []string{`SELECT 1 FROM notifications WHERE id = 2 FOR NO KEY UPDATE`, `SELECT 1 FROM outbox WHERE id = 2 FOR UPDATE`,
		`SELECT 1 FROM orders WHERE id = 'O1' FOR NO KEY UPDATE`} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	cutoff := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	p, err := other.Dashboard().Purge(cutoff, 200)
	if err != nil || p != (store.Purged{Notifications: 1, OutboxItems: 1, Orders: 2}) {
		t.Fatalf("purge with records held: %+v %v, want 1 notification, 1 item, 2 orders", p, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	p, err = other.Dashboard().Purge(cutoff, 200)
	if err != nil || p != (store.Purged{Notifications: 2, OutboxItems: 2, Orders: 1}) {
		t.Fatalf("purge after: %+v %v, want 2 notifications, 2 items, 1 order", p, err)
	}
	for id := uint64(1); id <= 3; id++ {
		n, st, err := db.Dashboard().Get(id)
		if err != nil || n.Purged.IsZero() || n.Body != nil || st.Event.CustomerEmail != "" {
			t.Errorf("notification %d: %+v %+v %v", id, n, st, err)
		}
		o, err := b.order(fmt.Sprintf("O%d", id))
		if err != nil || o.CustomerEmail != "" {
			t.Errorf("order O%d: %+v %v", id, o, err)
		}
	}
}

// TestPGResendYieldsToThePipeline: a resend asked while the pipeline's
// batch holds the outbox counter (it queued an item) and goes on to lock
// the resent email's order never deadlocks the batch: the resend waits
// for the counter holding nothing the batch wants, and is queued after
// the batch commits. (The batch here gives up on a deadlock at once.)
func TestPGResendYieldsToThePipeline(t *testing.T) {
	c := pgtest.Start(t)
	ctx := t.Context()
	db, other := open(t, c.DSN()), open(t, c.DSN())
	b := pgBackend(t, db)
	queue(t, b, 1)
	if err := b.deliveries().FinishOutbox([]ipn.OutboxResult{{ID: 1, State: ipn.OutboxSent, Attempts: 1}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL deadlock_timeout = '10ms'; UPDATE ipnd_counters SET value = value WHERE name = 'outbox'`); err != nil {
		t.Fatal(err)
	}
	resent := make(chan error, 1)
	go func() {
		_, err := other.Dashboard().ResendOutbox(1, "admin", "k", time.Now())
		resent <- err
	}()
	waitFor(t, "the resend waits for the counter", func() bool {
		var waiting bool
		if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	if _, err := tx.Exec(ctx, `SELECT 1 FROM orders WHERE id = 'O0' FOR NO KEY UPDATE`); err != nil {
		t.Fatalf("the batch locking the order: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-resent; err != nil {
		t.Fatalf("resend: %v", err)
	}
	items, err := b.outbox()
	if err != nil || len(items) == 0 || !strings.HasSuffix(items[len(items)-1].Effect.Cause, "/resend/1") {
		t.Errorf("after: %+v %v", items, err)
	}
}

// TestPGMigrateResendKeys: ipnd migrate carries the Idempotency-Keys of
// resends both ways, with those of decisions: a resend repeated after
// the copy, on PostgreSQL or back on bbolt, answers the item it queued
// before and queues nothing, and its key is refused for a resend of
// another item and for a decision.
func TestPGMigrateResendKeys(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ipnd.db")
	bdb, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := boltOn(bdb)
	queue(t, b, 2)
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	var emails []uint64
	var sent []ipn.OutboxResult
	for _, it := range items {
		if it.Effect.Kind == ipn.EffectEmailCustomer {
			emails = append(emails, it.ID)
			sent = append(sent, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1})
		}
	}
	if len(emails) != 2 {
		t.Fatalf("emails %v in %+v", emails, items)
	}
	if err := bdb.FinishOutbox(sent, time.Now()); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	type resent struct{ target, queued uint64 }
	keys := map[string]resent{}
	it, err := bdb.ResendOutbox(emails[0], "admin", "rk1", now)
	if err != nil {
		t.Fatal(err)
	}
	keys["rk1"] = resent{emails[0], it.ID}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}

	// check asks every resend of keys again, and with its key a resend of
	// the other email and a note on O0.
	check := func(where string, op operator, dec decider, count func() int, at time.Time) {
		t.Helper()
		before := count()
		for key, r := range keys {
			it, err := op.ResendOutbox(r.target, "admin", key, at)
			if err != nil || it.ID != r.queued {
				t.Errorf("%s: resend of %d with key %s again: item %d %v, want item %d repeated", where, r.target, key, it.ID, err, r.queued)
			}
			other := emails[0]
			if r.target == other {
				other = emails[1]
			}
			if _, err := op.ResendOutbox(other, "admin", key, at); !errors.Is(err, store.ErrKeyReused) {
				t.Errorf("%s: resend of %d with the key %s of a resend of %d: %v, want ErrKeyReused", where, other, key, r.target, err)
			}
			note := store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionNote, By: "admin", Why: "x"}, Key: key}
			if _, err := dec.DecideOrder("O0", note, at); !errors.Is(err, store.ErrKeyReused) {
				t.Errorf("%s: a note with the key %s of a resend: %v, want ErrKeyReused", where, key, err)
			}
		}
		if n := count(); n != before {
			t.Errorf("%s: %d outbox items after the repeats, %d before", where, n, before)
		}
	}

	pdb := open(t, c.DSN())
	var copied Copied
	err = store.Export(path, func(s *store.Snapshot) error {
		var err error
		copied, err = pdb.Import(ctx, s)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(copied.Tables, TableCount{"idempotency", 1}) {
		t.Errorf("copied %v, want 1 idempotency key", copied.Tables)
	}
	pd := pdb.Dashboard()
	pgCount := func() int {
		items, err := pdb.Outbox(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(items)
	}
	check("on PostgreSQL", pd, pd, pgCount, now.Add(time.Minute))
	if it, err = pd.ResendOutbox(emails[1], "admin", "rk2", now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	keys["rk2"] = resent{emails[1], it.ID}
	check("on PostgreSQL", pd, pd, pgCount, now.Add(3*time.Minute))

	back := filepath.Join(t.TempDir(), "back.db")
	err = store.Import(back, func(w *store.Importer) error {
		var err error
		copied, err = pdb.Export(ctx, w)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(copied.Tables, TableCount{"idempotency", 2}) {
		t.Errorf("copied back %v, want 2 idempotency keys", copied.Tables)
	}
	bdb, err = store.Open(back, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	boltCount := func() int {
		items, err := bdb.ListOutbox("", 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(items)
	}
	check("back on bbolt", bdb, bdb, boltCount, now.Add(4*time.Minute))
}

// TestPGResendAndDecisionOneKeyAtOnce: a resend and a note on its order
// sent at once by two processes with one Idempotency-Key: round after
// round, exactly one is done and the other answers ErrKeyReused (the
// key's lock is the same for both), and an item is queued for each
// resend done.
func TestPGResendAndDecisionOneKeyAtOnce(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	b := pgBackend(t, db)
	queue(t, b, 1)
	items, err := b.outbox()
	if err != nil || len(items) == 0 || items[0].Effect.Kind != ipn.EffectEmailCustomer {
		t.Fatalf("items %+v %v", items, err)
	}
	email := items[0].ID
	if err := b.deliveries().FinishOutbox([]ipn.OutboxResult{{ID: email, State: ipn.OutboxSent, Attempts: 1}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	procs := [2]*Dashboard{db.Dashboard(), open(t, c.DSN()).Dashboard()}
	resends := 0
	for round := range 20 {
		key := fmt.Sprintf("once-%d", round)
		errs := together(func(i int) error {
			p := procs[(i+round)%2]
			if i == 0 {
				_, err := p.ResendOutbox(email, "admin", key, time.Now())
				return err
			}
			note := store.Decision{OrderDecision: ipn.OrderDecision{Kind: ipn.DecisionNote, By: "admin", Why: key}, Key: key}
			_, err := p.DecideOrder("O0", note, time.Now())
			return err
		})
		switch {
		case errs[0] == nil && errors.Is(errs[1], store.ErrKeyReused):
			resends++
		case errs[1] == nil && errors.Is(errs[0], store.ErrKeyReused):
		default:
			t.Errorf("round %d: resend %v, note %v; want one done and the other ErrKeyReused", round, errs[0], errs[1])
		}
	}
	after, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(items)+resends {
		t.Errorf("%d items after %d resends, want %d", len(after), resends, len(items)+resends)
	}
	t.Logf("%d of 20 rounds: the resend first", resends)
}
