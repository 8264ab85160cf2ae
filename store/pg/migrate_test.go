package pg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
)

// filledBolt runs the conformance scenario (payments, a duplicate,
// refunds parked then adopted or expired, a subscription, orders past
// the small layout) on a bbolt store at a new path through the real
// pipeline, then puts outbox items in several states through the
// outbox's own calls (sent, retrying, dead, discarded), and closes it.
func filledBolt(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := boltOn(db)
	conformance(t, b)
	// A refund whose payment has not come: parked (the scenario's
	// parked events are adopted or expired by its end).
	last, err := b.append(webhook("m9", "payment.refunded", `"txn_id":"R8","parent_txn_id":"P8","amount":"1.00","currency":"USD"`))
	if err != nil {
		t.Fatal(err)
	}
	runUntilIdle(t, b, verifier(t), last)
	if n, err := db.Parked(); n < 1 || err != nil {
		t.Fatalf("parked after the last refund: %d %v, want 1 or more", n, err)
	}
	items, err := db.ListOutbox("", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) < 6 {
		t.Fatalf("the scenario queued %d outbox items, want 6 or more", len(items))
	}
	slices.SortFunc(items, func(a, b ipn.OutboxItem) int { return int(a.ID) - int(b.ID) })
	now := time.Now()
	err = db.FinishOutbox([]ipn.OutboxResult{
		{ID: items[0].ID, State: ipn.OutboxSent, Attempts: 1},
		{ID: items[1].ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: now.Add(time.Hour), Error: "connection refused"},
		{ID: items[2].ID, State: ipn.OutboxDead, Attempts: 1, Error: "550 no such user"},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{ipn.OutboxSent, ipn.OutboxPending, ipn.OutboxDead} {
		it, err := db.GetOutbox(items[i].ID)
		if err != nil || it.State != want || it.Attempts != 1 {
			t.Fatalf("outbox item %d: %s after %d attempts (%v), want %s after 1", it.ID, it.State, it.Attempts, err, want)
		}
	}
	if _, _, err := db.DiscardOutbox(items[3].ID, "test", "not wanted", 0, now); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// norm is n with its times in UTC at PostgreSQL's precision
// (microseconds) and empty headers and body as nil.
func norm(n *ipn.Notification) *ipn.Notification {
	c := *n
	c.ReceivedAt = c.ReceivedAt.UTC().Truncate(time.Microsecond)
	if !c.Purged.IsZero() {
		c.Purged = c.Purged.UTC().Truncate(time.Microsecond)
	}
	if len(c.Headers) == 0 {
		c.Headers = nil
	}
	if len(c.Body) == 0 {
		c.Body = nil
	}
	return &c
}

func normItem(it ipn.OutboxItem) ipn.OutboxItem {
	for _, tp := range []*time.Time{&it.CreatedAt, &it.NextAttempt, &it.SentAt} {
		if !tp.IsZero() {
			*tp = tp.UTC().Truncate(time.Microsecond)
		}
	}
	return it
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// compareStores compares, field by field through each backend's reads,
// every notification and its processing state, order, subscription,
// payment fact holder, payment reference and outbox item of the bbolt
// store at path with the PostgreSQL store pdb, and the counters.
func compareStores(t *testing.T, path string, pdb *DB) {
	t.Helper()
	ctx := context.Background()
	var orders, subs []string
	facts := map[string]uint64{}
	refs := map[[2]string]string{}
	var seq, outSeq uint64
	err := store.Export(path, func(s *store.Snapshot) error {
		seq, outSeq = s.Sequence, s.OutboxSeq
		if err := s.Orders(func(o *store.ExportedOrder) error { orders = append(orders, o.Order.ID); return nil }); err != nil {
			return err
		}
		if err := s.Subscriptions(func(sub *ipn.Subscription) error { subs = append(subs, sub.ID); return nil }); err != nil {
			return err
		}
		if err := s.Facts(func(k string, id uint64) error { facts[k] = id; return nil }); err != nil {
			return err
		}
		return s.Refs(func(g, r, o string) error { refs[[2]string{g, r}] = o; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()

	for id := uint64(1); id <= seq; id++ {
		bn, bp, err := bdb.Get(id)
		if err != nil {
			t.Fatalf("bbolt: notification %d: %v", id, err)
		}
		pn, pstate, err := pdb.Get(ctx, id)
		if err != nil {
			t.Fatalf("postgres: notification %d: %v", id, err)
		}
		if a, b := jsonOf(t, norm(bn)), jsonOf(t, norm(pn)); a != b || !bytes.Equal(bn.Body, pn.Body) {
			t.Errorf("notification %d differs:\nbbolt    %s\npostgres %s", id, a, b)
		}
		pp, err := pdb.State(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if pp == nil {
			if bp.State != ipn.StateReceived || pstate != ipn.StateReceived {
				t.Errorf("notification %d: bbolt %s, postgres has no processing record (%s)", id, bp.State, pstate)
			}
		} else if a, b := jsonOf(t, bp), jsonOf(t, pp); a != b || pstate != bp.State {
			t.Errorf("state of notification %d differs:\nbbolt    %s\npostgres %s (%s)", id, a, b, pstate)
		}
	}
	if len(orders) < 5 {
		t.Fatalf("%d orders in the bbolt store", len(orders))
	}
	for _, id := range orders {
		bo, err := bdb.GetOrder(id)
		if err != nil {
			t.Fatal(err)
		}
		po, err := pdb.GetOrder(ctx, id)
		if err != nil {
			t.Fatalf("postgres: order %q: %v", id, err)
		}
		if a, b := jsonOf(t, bo), jsonOf(t, po); a != b {
			t.Errorf("order %q differs:\nbbolt    %s\npostgres %s", id, a, b)
		}
	}
	for _, id := range subs {
		bs, err := bdb.GetSubscription(id)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := pdb.GetSubscription(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := jsonOf(t, bs), jsonOf(t, ps); a != b {
			t.Errorf("subscription %q differs:\nbbolt    %s\npostgres %s", id, a, b)
		}
	}
	for k, id := range facts {
		var got int64
		if err := pdb.pool.QueryRow(ctx, `SELECT id FROM facts WHERE key = $1`, []byte(k)).Scan(&got); err != nil || uint64(got) != id {
			t.Errorf("fact %q: held by %d in postgres (%v), %d in bbolt", k, got, err, id)
		}
	}
	for k, o := range refs {
		var got []byte
		if err := pdb.pool.QueryRow(ctx, `SELECT order_id FROM payment_refs WHERE gateway = $1 AND ref = $2`, k[0], []byte(k[1])).Scan(&got); err != nil || string(got) != o {
			t.Errorf("reference %q: order %q in postgres (%v), %q in bbolt", k, got, err, o)
		}
	}
	bi, err := bdb.ListOutbox("", 1000)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(bi, func(a, b ipn.OutboxItem) int { return int(a.ID) - int(b.ID) })
	pi, err := pdb.Outbox(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(bi) != len(pi) {
		t.Fatalf("outbox: %d items in bbolt, %d in postgres", len(bi), len(pi))
	}
	for i := range bi {
		if a, b := jsonOf(t, normItem(bi[i])), jsonOf(t, normItem(pi[i])); a != b {
			t.Errorf("outbox item differs:\nbbolt    %s\npostgres %s", a, b)
		}
		ba, err := bdb.OutboxAttempts(bi[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		pa, err := pdb.OutboxAttempts(ctx, bi[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, as := range [][]ipn.OutboxAttempt{ba, pa} {
			for j := range as {
				as[j].At = as[j].At.UTC().Truncate(time.Microsecond)
			}
		}
		if a, b := jsonOf(t, ba), jsonOf(t, pa); a != b {
			t.Errorf("attempts of outbox item %d differ:\nbbolt    %s\npostgres %s", bi[i].ID, a, b)
		}
	}
	bp, _ := bdb.Parked()
	pp, err := pdb.Parked(ctx)
	if err != nil || bp != pp {
		t.Errorf("parked: bbolt %d, postgres %d (%v)", bp, pp, err)
	}
	pc, err := pdb.Cursor(ctx)
	if err != nil || pc != bdb.Cursor() {
		t.Errorf("cursor: bbolt %d, postgres %d (%v)", bdb.Cursor(), pc, err)
	}
	var pseq, pout int64
	if err := pdb.pool.QueryRow(ctx, `SELECT (SELECT value FROM ipnd_counters WHERE name = 'notification'), (SELECT value FROM ipnd_counters WHERE name = 'outbox')`).Scan(&pseq, &pout); err != nil {
		t.Fatal(err)
	}
	if uint64(pseq) != seq || uint64(pout) != outSeq {
		t.Errorf("counters: postgres notification %d outbox %d, bbolt %d and %d", pseq, pout, seq, outSeq)
	}
}

// TestPGMigrateFromBolt copies a bbolt store filled through the real
// pipeline into an empty PostgreSQL database and compares both field by
// field; the next notification ingested gets the next id, none reused.
func TestPGMigrateFromBolt(t *testing.T) {
	c := pgtest.Start(t)
	path := filledBolt(t)
	pdb := open(t, c.DSN())
	var got Copied
	err := store.Export(path, func(s *store.Snapshot) error {
		var err error
		got, err = pdb.Import(context.Background(), s)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int64{}
	for _, tc := range got.Tables {
		rows[tc.Table] = tc.Rows
	}
	for table, least := range map[string]int64{"notifications": 32, "processing": 32, "facts": 20, "payment_refs": 3,
		"orders": 5, "order_facts": 20, "order_history": 2, "order_groups": 1, "subscriptions": 1, "outbox": 6, "orphans": 1, "parked_due": 1, "outbox_attempts": 2} {
		if rows[table] < least {
			t.Errorf("%s: %d rows copied, want %d or more (%v)", table, rows[table], least, got.Tables)
		}
	}
	compareStores(t, path, pdb)

	// The next notification gets the id after the copied ones.
	id, dup, err := pdb.Append(context.Background(), note("test", "after-migrate"))
	if err != nil || dup || id != got.Notification+1 {
		t.Errorf("append after the copy: id %d dup %v %v, want id %d", id, dup, err, got.Notification+1)
	}
	// A copy of a copied notification is found as its duplicate.
	id, dup, err = pdb.Append(context.Background(), webhook("m1", "payment.completed", `"txn_id":"T1"`))
	if err != nil || !dup || id != 1 {
		t.Errorf("a copy of notification 1 after the copy: id %d dup %v %v, want 1, duplicate", id, dup, err)
	}
}

// TestPGMigrateRefusesNonEmpty: a database that holds data is refused,
// and left as it was.
func TestPGMigrateRefusesNonEmpty(t *testing.T) {
	c := pgtest.Start(t)
	path := filledBolt(t)
	pdb := open(t, c.DSN())
	if _, _, err := pdb.Append(context.Background(), note("test", "already-here")); err != nil {
		t.Fatal(err)
	}
	err := store.Export(path, func(s *store.Snapshot) error {
		_, err := pdb.Import(context.Background(), s)
		return err
	})
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "notifications has rows") {
		t.Fatalf("Import into a database with a notification = %v, want ErrNotEmpty naming it", err)
	}
	if n := count(t, pdb, "notifications"); n != 1 {
		t.Errorf("%d notifications after the refused copy, want the 1 that was there", n)
	}
}

// TestPGMigrateFailingHalfwayCopiesNothing: the copy fails on its last
// table (a trigger refuses outbox rows): every table stays empty and the
// counters at 0, and the same copy runs through once the cause is gone.
func TestPGMigrateFailingHalfwayCopiesNothing(t *testing.T) {
	c := pgtest.Start(t)
	path := filledBolt(t)
	pdb := open(t, c.DSN())
	ctx := context.Background()
	if _, err := pdb.pool.Exec(ctx, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();`); err != nil {
		t.Fatal(err)
	}
	imp := func() (Copied, error) {
		var got Copied
		err := store.Export(path, func(s *store.Snapshot) error {
			var err error
			got, err = pdb.Import(ctx, s)
			return err
		})
		return got, err
	}
	if _, err := imp(); err == nil || !strings.Contains(err.Error(), "refused by the test") {
		t.Fatalf("Import with outbox rows refused = %v", err)
	}
	for _, table := range dataTables {
		if n := count(t, pdb, table); n != 0 {
			t.Errorf("%s: %d rows after the failed copy, want 0", table, n)
		}
	}
	var sum int64
	if err := pdb.pool.QueryRow(ctx, `SELECT sum(value) FROM ipnd_counters`).Scan(&sum); err != nil || sum != 0 {
		t.Errorf("counters after the failed copy: sum %d (%v), want 0", sum, err)
	}
	if _, err := pdb.pool.Exec(ctx, `DROP TRIGGER refuse ON outbox`); err != nil {
		t.Fatal(err)
	}
	if _, err := imp(); err != nil {
		t.Fatalf("the copy again, the trigger gone: %v", err)
	}
	compareStores(t, path, pdb)
}

// TestPGMigrateRefusesStoreInUse: a bbolt store an ipnd has open is not
// copied.
func TestPGMigrateRefusesStoreInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = store.Export(path, func(*store.Snapshot) error { return errors.New("called") })
	if !errors.Is(err, store.ErrInUse) {
		t.Fatalf("Export of an open store = %v, want ErrInUse", err)
	}
}

// snapshotKeys lists the retry and parked entries of the bbolt store at
// path, as kept (times to the nanosecond).
func snapshotKeys(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	err := store.Export(path, func(s *store.Snapshot) error {
		if err := s.Retries(func(due time.Time, id uint64, gw string) error {
			out = append(out, fmt.Sprintf("retry %d %d %s", due.UnixNano(), id, gw))
			return nil
		}); err != nil {
			return err
		}
		return s.ParkedDue(func(at time.Time, id uint64, gw, ref string) error {
			out = append(out, fmt.Sprintf("parked %d %d %s %q", at.UnixNano(), id, gw, ref))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPGMigrateRoundTrip: bbolt -> PostgreSQL -> a new bbolt file keeps
// every id, state, order, reference, parked event and outbox item
// (compared field by field with PostgreSQL's reads, and the parked
// entries to the nanosecond with the first file); the new file works:
// its parked event expires past park_for, and it takes the next id. A
// file that exists is refused.
func TestPGMigrateRoundTrip(t *testing.T) {
	c := pgtest.Start(t)
	path := filledBolt(t)
	pdb := open(t, c.DSN())
	ctx := context.Background()
	err := store.Export(path, func(s *store.Snapshot) error {
		_, err := pdb.Import(ctx, s)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(t.TempDir(), "back.db")
	var got Copied
	err = store.Import(back, func(w *store.Importer) error {
		var err error
		got, err = pdb.Export(ctx, w)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Tables) != len(dataTables) {
		t.Errorf("export counted %v", got.Tables)
	}
	compareStores(t, back, pdb)
	checkOutboxCounts(t, pdb) // outboxcounts_test.go
	if a, b := snapshotKeys(t, path), snapshotKeys(t, back); !slices.Equal(a, b) || len(a) == 0 {
		t.Errorf("retry and parked entries differ:\nfirst %q\nback  %q", a, b)
	}

	err = store.Import(back, func(w *store.Importer) error { return errors.New("called") })
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("Import to an existing file = %v, want a refusal", err)
	}

	db, err := store.Open(back, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetParkFor(parkFor)
	before, _ := db.Parked()
	n, err := db.ExpireParked(time.Now().Add(parkFor + time.Hour))
	if err != nil || n != before || n == 0 {
		t.Errorf("expired %d (%v) of %d parked in the new file", n, err, before)
	}
	if left, _ := db.Parked(); left != 0 {
		t.Errorf("%d parked after expiry, want 0", left)
	}
	id, dup, err := db.Append(ctx, note("test", "after-round-trip"))
	if err != nil || dup || id != got.Notification+1 {
		t.Errorf("append to the new file: id %d dup %v %v, want %d", id, dup, err, got.Notification+1)
	}
}

// TestPGMigrateBackFailingLeavesNoFile: a copy back to bbolt that fails
// partway (an order whose record does not decode, after the
// notifications were written) leaves no file, and names the order.
func TestPGMigrateBackFailingLeavesNoFile(t *testing.T) {
	c := pgtest.Start(t)
	path := filledBolt(t)
	pdb := open(t, c.DSN())
	ctx := context.Background()
	if err := store.Export(path, func(s *store.Snapshot) error { _, err := pdb.Import(ctx, s); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := pdb.pool.Exec(ctx, `UPDATE orders SET record = '{"id": 5}' WHERE id = 'O2'`); err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(t.TempDir(), "back.db")
	err := store.Import(back, func(w *store.Importer) error { _, err := pdb.Export(ctx, w); return err })
	if !errors.Is(err, ipn.ErrCorrupt) || !strings.Contains(err.Error(), `order "O2"`) {
		t.Fatalf("Export with a damaged order = %v, want ErrCorrupt naming it", err)
	}
	if left, _ := filepath.Glob(back + "*"); len(left) > 0 {
		t.Errorf("files left by the failed copy: %v", left)
	}
}

// TestPGMigratedStoreRunsAlike: after the copy, the same new
// notifications (a payment of the large order, the payment a parked
// refund waits for) and replays (a duplicate, a fact of the large order)
// go through the real pipeline on the bbolt store and on its copy in
// PostgreSQL: both end holding the same (states, orders, parked events,
// outbox items with their ids).
func TestPGMigratedStoreRunsAlike(t *testing.T) {
	c := pgtest.Start(t)
	path := filledBolt(t)
	pdb := open(t, c.DSN())
	var got Copied
	err := store.Export(path, func(s *store.Snapshot) error {
		var err error
		got, err = pdb.Import(context.Background(), s)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	verify := verifier(t)
	run := func(b *backend) string {
		var last uint64
		for _, n := range []*ipn.Notification{
			webhook("m4_12", "payment.completed", `"txn_id":"T4_12","order_id":"O4","amount":"1.00","currency":"USD"`),
			webhook("m10", "payment.completed", `"txn_id":"P8","order_id":"O8","amount":"5.00","currency":"USD"`),
		} {
			if last, err = b.append(n); err != nil {
				t.Fatal(err)
			}
		}
		if last != got.Notification+2 {
			t.Errorf("%s: the new notifications end at id %d, want %d", b.name, last, got.Notification+2)
		}
		for _, id := range []uint64{2, 12} {
			if err := b.replay(id, time.Now()); err != nil {
				t.Fatalf("%s: replay %d: %v", b.name, id, err)
			}
		}
		runUntilIdle(t, b, verify, last)
		var out strings.Builder
		describe(t, b, &out, last)
		return out.String()
	}
	want := run(boltOn(bdb))
	if got := run(pgBackend(t, pdb)); got != want {
		t.Errorf("after the copy, postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	for _, must := range []string{"facts=13", "notification 35: applied", "notification 2: duplicate"} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q:\n%s", must, want)
		}
	}
}
