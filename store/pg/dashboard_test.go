package pg

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"ipnd/fulfil"
	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
)

// dashReader is the part of admin/ui.Store that Dashboard implements:
// *store.DB and *Dashboard both are one.
type dashReader interface {
	Get(id uint64) (*ipn.Notification, *ipn.Processing, error)
	Find(q store.Query) ([]store.Item, error)
	FirstIDAt(t time.Time) (uint64, error)
	Matching(f store.Filter, max int) (ids []uint64, more bool, err error)
	Cursor() uint64
	OldestPendingByGateway(now time.Time) map[string]time.Time
	HourCounts(since time.Time) ([]store.HourCount, error)
	GetOrder(id string) (*ipn.Order, error)
	ListOrders(status ipn.OrderStatus, before string, limit int) ([]ipn.Order, error)
	Deliveries(id string) (*fulfil.Record, map[string]*fulfil.License, error)
	OrderFacts(id string, from, limit int) ([]ipn.OrderFact, error)
	OrderHistory(id string, from, limit int) ([]ipn.OrderChange, error)
	OrderCounts() (map[ipn.OrderStatus]int, error)
	TestOrderCounts() (map[ipn.OrderStatus]int, error)
	GetSubscription(id string) (*ipn.Subscription, error)
	ListSubscriptions(status ipn.SubscriptionStatus, after string, limit int) (subs []ipn.Subscription, next string, err error)
	GetOutbox(id uint64) (ipn.OutboxItem, error)
	ListOutbox(state string, limit int) ([]ipn.OutboxItem, error)
	OutboxOf(notification uint64) ([]ipn.OutboxItem, error)
	OutboxOfOrder(id string) ([]ipn.OutboxItem, error)
	OutboxCounts() (map[string]map[string]int, error)
	OutboxAttempts(id uint64) ([]ipn.OutboxAttempt, error)
}

var _ dashReader = (*store.DB)(nil)
var _ dashReader = (*Dashboard)(nil)

// errKind names err by the store's sentinels (the messages differ).
func errKind(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, store.ErrNotFound):
		return "not found"
	case errors.Is(err, store.ErrBadCursor):
		return "bad cursor"
	case errors.Is(err, ipn.ErrCorrupt):
		return "corrupt"
	}
	return "error: " + err.Error()
}

// pages reads every page of find (limit per page) and says how many
// pages it took; each page goes on below the last id of the one before.
func pages(t *testing.T, r dashReader, q store.Query) string {
	t.Helper()
	var out []string
	n := 0
	for {
		items, err := r.Find(q)
		if err != nil {
			t.Fatalf("Find(%+v): %v", q, err)
		}
		n++
		for _, it := range items {
			s := fmt.Sprintf("%d:%s", it.Notification.ID, it.Processing.State)
			if it.Processing.Event != nil {
				s += "/" + it.Processing.Event.OrderID
			}
			out = append(out, s)
		}
		if len(items) == 0 || len(items) < q.Limit || n > 50 {
			break
		}
		q.Before = items[len(items)-1].Notification.ID
	}
	return fmt.Sprintf("%d pages %v", n, out)
}

func outboxLine(items []ipn.OutboxItem, err error) string {
	var s []string
	for _, it := range items {
		s = append(s, fmt.Sprintf("%d:%s/%s/%s/%q/n%d/a%d", it.ID, it.Effect.Kind, it.State, it.Effect.OrderID, it.Effect.Cause, it.Notification, it.Attempts))
	}
	return fmt.Sprintf("%v %s", s, errKind(err))
}

// nonZero drops the counts that are 0 (the bbolt store keeps a status's
// count at 0 once it had one; PostgreSQL counts the rows).
func nonZero[K comparable](m map[K]int) map[K]int {
	maps.DeleteFunc(m, func(_ K, n int) bool { return n == 0 })
	return m
}

// dashboard writes what r's dashboard reads answer, as text to compare.
func dashboard(t *testing.T, r dashReader, late uint64) string {
	t.Helper()
	var out strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&out, format+"\n", a...) }

	// Notifications: one by one, and past the last.
	for id := uint64(1); id <= late+1; id++ {
		n, p, err := r.Get(id)
		if err != nil {
			w("get %d: %s", id, errKind(err))
			continue
		}
		w("get %d: %s %s %s state=%s attempts=%d dup=%d history=%d event=%v", id, n.Gateway, n.DedupKey, n.ReceivedAt.UTC(), p.State, p.Attempts,
			p.DuplicateOf, len(p.History), p.Event != nil)
	}
	normalize := func(n *ipn.Notification) *ipn.Event {
		return &ipn.Event{OrderID: "LATE", TxnID: "TL-" + n.DedupKey}
	}
	for _, q := range []store.Query{
		{Limit: 7}, // every notification, 5 pages
		{Gateway: "test", Limit: 6},
		{Gateway: "paypal", Limit: 1},
		{State: ipn.StateApplied, Limit: 4},
		{State: ipn.StateReceived, Limit: 4},
		{Gateway: "test", State: ipn.StateDuplicate, Limit: 50},
		{Gateway: "nowhere", Limit: 50},
		{Term: "t1", Limit: 1},                 // txn id, lower-cased
		{Term: "P2", Limit: 50},                // parent txn id of 3, txn id of 5
		{Order: "O4", Limit: 5},                // order id: 12 notifications, 3 pages
		{Order: "o4", Limit: 5},                // an order id is exact
		{Term: "o4", Limit: 5},                 // a term is not
		{Term: "  A@Example.COM ", Limit: 50},  // customer email, in another case
		{Term: "buyer@EXAMPLE.com", Limit: 50}, // PayPal's payer
		{Term: "M4_3", Limit: 50},              // event id (the webhook id)
		{Term: "s1", Limit: 50},                // subscription id
		{Term: "ord-p1", Gateway: "paypal", Limit: 50},
		{Term: "ord-p1", Gateway: "test", Limit: 50},
		{Term: "T4_5", State: ipn.StateApplied, Limit: 50},
		{Term: "nothing", Limit: 50},
		{Order: "LATE", Limit: 50},                       // not reached by the pipeline: found only through Normalize
		{Order: "LATE", Limit: 50, Normalize: normalize}, // ... so
		{Term: "tl-late", Limit: 50, Normalize: normalize},
		{After: 20, Limit: 5},
		{After: 20, Before: 30, Gateway: "test", Limit: 3},
		{Before: 3, Limit: 50},
	} {
		w("find gateway=%q state=%q order=%q term=%q before=%d after=%d limit=%d normalize=%v: %s",
			q.Gateway, q.State, q.Order, q.Term, q.Before, q.After, q.Limit, q.Normalize != nil, pages(t, r, q))
	}
	for _, m := range []struct {
		f   store.Filter
		max int
	}{{store.Filter{Gateway: "test"}, 5}, {store.Filter{Gateway: "test"}, 0}, {store.Filter{State: ipn.StateInvalid}, 0}, {store.Filter{Before: 10}, 3}} {
		ids, more, err := r.Matching(m.f, m.max)
		w("matching %+v %d: %v more=%v %s", m.f, m.max, ids, more, errKind(err))
	}
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, t := range []time.Time{at.Add(-time.Hour), at, at.Add(time.Second), at.Add(time.Hour)} {
		id, err := r.FirstIDAt(t)
		w("first id at %s: %d %s", t, id, errKind(err))
	}
	w("cursor: %d", r.Cursor())
	w("oldest pending: %v", r.OldestPendingByGateway(time.Now()))
	for _, since := range []time.Time{at.Add(-48 * time.Hour), at.Add(30 * time.Minute), at.Add(time.Hour)} {
		hc, err := r.HourCounts(since)
		w("hour counts since %s: %+v %s", since, hc, errKind(err))
	}

	// Orders.
	for _, id := range []string{"O1", "O2", "O3", "O4", "O5", "ORD-P1", "paypal:P9", "none"} {
		o, err := r.GetOrder(id)
		if err != nil {
			w("order %s: %s", id, errKind(err))
			continue
		}
		w("order %s: %s paid=%s refunded=%s facts=%d history=%d changes=%d txns=%v test=%v", id, o.Status, o.Paid, o.Refunded,
			len(o.Facts), len(o.History), o.Changes, o.TxnIDs, o.Test)
	}
	for _, p := range []struct {
		id          string
		from, limit int
	}{{"O4", 0, 0}, {"O4", 3, 4}, {"O4", 10, 5}, {"O4", 40, 5}, {"O1", 1, 1}, {"O5", 2, 3}, {"none", 0, 5}} {
		facts, err := r.OrderFacts(p.id, p.from, p.limit)
		var fs []string
		for _, f := range facts {
			fs = append(fs, f.TxnID+"/"+f.Amount)
		}
		w("facts %s %d %d: %v %s", p.id, p.from, p.limit, fs, errKind(err))
		hist, err := r.OrderHistory(p.id, p.from, p.limit)
		var hs []string
		for _, h := range hist {
			hs = append(hs, fmt.Sprintf("%s>%s@%d", h.From, h.To, h.Notification))
		}
		w("history %s %d %d: %v %s", p.id, p.from, p.limit, hs, errKind(err))
	}
	for _, id := range []string{"O1", "ORD-P1", "none"} {
		rec, lic, err := r.Deliveries(id)
		w("deliveries %s: %v %d %s", id, rec != nil, len(lic), errKind(err))
	}
	oc, err := r.OrderCounts()
	w("order counts: %v %s", nonZero(oc), errKind(err))
	tc, err := r.TestOrderCounts()
	w("test order counts: %v %s", nonZero(tc), errKind(err))
	_, err = r.ListOrders("", "not a cursor", 5)
	w("list orders, bad cursor: %s", errKind(err))

	// Subscriptions.
	s, err := r.GetSubscription("S1")
	if err == nil {
		w("subscription S1: %s order=%s", s.Status, s.OrderID)
	}
	_, err = r.GetSubscription("S2")
	w("subscription S2: %s", errKind(err))
	for _, l := range []struct {
		status ipn.SubscriptionStatus
		after  string
		limit  int
	}{{"", "", 0}, {"", "", 1}, {ipn.SubscriptionStatus("active"), "", 5}, {ipn.SubscriptionStatus("cancelled"), "", 5}, {"", "S1", 5}, {"", "A", 5}} {
		subs, next, err := r.ListSubscriptions(l.status, l.after, l.limit)
		var ids []string
		for _, s := range subs {
			ids = append(ids, s.ID+":"+string(s.Status))
		}
		w("subscriptions %q after %q limit %d: %v next=%q %s", l.status, l.after, l.limit, ids, next, errKind(err))
	}

	// The outbox.
	for _, id := range []uint64{1, 2, 999} {
		it, err := r.GetOutbox(id)
		w("outbox item %d: %s", id, outboxLine([]ipn.OutboxItem{it}, err))
	}
	for _, st := range []string{"", ipn.OutboxSent, ipn.OutboxDead} {
		w("outbox %q: %s", st, outboxLine(r.ListOutbox(st, 100)))
	}
	w("outbox \"\" limit 3: %s", outboxLine(r.ListOutbox("", 3)))
	pending, err := r.ListOutbox(ipn.OutboxPending, 1000)
	slices.SortFunc(pending, func(a, b ipn.OutboxItem) int { return int(a.ID) - int(b.ID) })
	w("outbox pending (by id): %s", outboxLine(pending, err))
	for _, id := range []uint64{1, 2, 3, 4, 999} {
		as, err := r.OutboxAttempts(id)
		var ls []string
		for _, a := range as {
			ls = append(ls, fmt.Sprintf("%d/%d:%s:%q", a.Seq, a.Attempt, a.Result, a.Error))
		}
		w("outbox attempts %d: %v %s", id, ls, errKind(err))
	}
	for _, id := range []uint64{1, 5, 6, 7, 999} {
		w("outbox of notification %d: %s", id, outboxLine(r.OutboxOf(id)))
	}
	for _, id := range []string{"O1", "O2", "O3", "O4", "none"} {
		w("outbox of order %s: %s", id, outboxLine(r.OutboxOfOrder(id)))
	}
	counts, err := r.OutboxCounts()
	for _, m := range counts {
		nonZero(m)
	}
	maps.DeleteFunc(counts, func(_ string, m map[string]int) bool { return len(m) == 0 })
	w("outbox counts: %v %s", counts, errKind(err))
	return out.String()
}

// listOrders reads every order by ListOrders in pages of limit, and
// checks the pages against the one page of all: each goes on after the
// last of the one before, the newest changed first.
func listOrders(t *testing.T, name string, r dashReader, status ipn.OrderStatus, limit int) []string {
	t.Helper()
	all, err := r.ListOrders(status, "", 1000)
	if err != nil {
		t.Fatalf("%s: ListOrders: %v", name, err)
	}
	var paged []ipn.Order
	before := ""
	for range 50 {
		page, err := r.ListOrders(status, before, limit)
		if err != nil {
			t.Fatalf("%s: ListOrders(%q): %v", name, before, err)
		}
		paged = append(paged, page...)
		if len(page) < limit {
			break
		}
		before = store.OrderCursor(page[len(page)-1])
	}
	var ids, pagedIDs []string
	for i, o := range all {
		ids = append(ids, o.ID+":"+string(o.Status))
		// (The bbolt store's small orders come with them.)
		if name == "postgres" && (o.Facts != nil || o.History != nil || o.TxnIDs != nil) {
			t.Errorf("%s: ListOrders gives order %s with its facts, history or txn ids", name, o.ID)
		}
		if status != "" && o.Status != status {
			t.Errorf("%s: ListOrders(%q) gives order %s %s", name, status, o.ID, o.Status)
		}
		if i > 0 && (o.UpdatedAt.After(all[i-1].UpdatedAt) || o.UpdatedAt.Equal(all[i-1].UpdatedAt) && o.ID > all[i-1].ID) {
			t.Errorf("%s: ListOrders: %s (%s) after %s (%s)", name, o.ID, o.UpdatedAt, all[i-1].ID, all[i-1].UpdatedAt)
		}
	}
	for _, o := range paged {
		pagedIDs = append(pagedIDs, o.ID+":"+string(o.Status))
	}
	if !slices.Equal(ids, pagedIDs) {
		t.Errorf("%s: ListOrders(%q) in pages of %d: %v, in one: %v", name, status, limit, pagedIDs, ids)
	}
	slices.Sort(ids)
	return ids
}

// TestPGDashboardReads fills the bbolt store and PostgreSQL through the
// same pipeline scenario as TestPGConformance (and one notification the
// pipeline has not reached), and compares every dashboard read built on
// PostgreSQL (Dashboard) with the bbolt store's: notifications by id, by
// gateway and state, by each kind of identifier (an email in another
// case), paged newest first; bulk replay's selection; the time index;
// the hourly counts; orders (paged by last change), their facts and
// history, their counts; subscriptions; the outbox and its counts.
func TestPGDashboardReads(t *testing.T) {
	c := pgtest.Start(t)
	read := func(b *backend) (string, map[ipn.OrderStatus][]string) {
		conformance(t, b)
		late := webhook("late", "payment.completed", `"txn_id":"TL","order_id":"OL","amount":"1.00","currency":"USD"`)
		late.ReceivedAt = time.Date(2026, 12, 6, 12, 30, 0, 0, time.UTC)
		id, err := b.append(late)
		if err != nil {
			t.Fatal(err)
		}
		orders := map[ipn.OrderStatus][]string{}
		for _, st := range []ipn.OrderStatus{"", ipn.OrderStatus("paid"), ipn.OrderStatus("review"), ipn.OrderStatus("partially_refunded")} {
			orders[st] = listOrders(t, b.name, b.reads, st, 2)
		}
		return dashboard(t, b.reads, id), orders
	}
	want, wantOrders := read(boltBackend(t))
	got, gotOrders := read(pgBackend(t, open(t, c.DSN())))
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
	for st, ids := range wantOrders {
		if !slices.Equal(ids, gotOrders[st]) {
			t.Errorf("ListOrders(%q): bbolt %v, postgres %v", st, ids, gotOrders[st])
		}
	}
	for _, must := range []string{
		`find gateway="" state="" order="" term="" before=0 after=0 limit=7 normalize=false: 5 pages`,
		`find gateway="" state="" order="O4" term="" before=0 after=0 limit=5 normalize=false: 3 pages`,
		`term="  A@Example.COM " before=0 after=0 limit=50 normalize=false: 1 pages [2:duplicate/O1 1:applied/O1]`,
		`order="LATE" term="" before=0 after=0 limit=50 normalize=false: 1 pages []`,
		`order="LATE" term="" before=0 after=0 limit=50 normalize=true: 1 pages [33:received]`,
		`term="tl-late" before=0 after=0 limit=50 normalize=true: 1 pages [33:received]`,
		`term="M4_3" before=0 after=0 limit=50 normalize=false: 1 pages [14:applied/O4]`,
		"get 33: test late 2026-12-06 12:30:00 +0000 UTC state=received",
		"get 34: not found",
		"oldest pending: map[test:2026-12-06 12:30:00 +0000 UTC]",
		"Received:1 Applied:0",
		"subscription S2: not found",
		"deliveries O1: false 0 not found",
		"list orders, bad cursor: bad cursor",
		`outbox item 999: [0:///""/n0/a0] not found`,
	} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q", must)
		}
	}
	t.Logf("both backends:\n%s", want)
}

// A database the pipeline wrote at schema 4 (no identifier index, no
// hourly or order counts) is migrated to 5 by Open with the identifiers
// and the counts of the records already there: a search by identifier
// finds what it found before, the counts are the same.
func TestPGMigrationFillsTerms(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	b := pgBackend(t, db)
	conformance(t, b)
	queries := []store.Query{{Term: "t1", Limit: 50}, {Term: "A@EXAMPLE.COM", Limit: 50}, {Order: "O4", Limit: 5}, {Term: "s1", Limit: 50},
		{Term: "m4_3", Limit: 50}, {Term: "buyer@example.com", Limit: 50}}
	var want []string
	for _, q := range queries {
		want = append(want, pages(t, b.reads, q))
	}
	if !strings.Contains(want[2], "3 pages") {
		t.Fatalf("order O4: %s", want[2])
	}
	// Back to schema 4, as an ipnd before the index left it.
	at := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	hours, err := b.reads.HourCounts(at)
	if err != nil || len(hours) != 2 {
		t.Fatalf("HourCounts = %+v %v", hours, err)
	}
	counts, err := b.reads.OrderCounts()
	if err != nil || counts[ipn.OrderPaid] == 0 {
		t.Fatalf("OrderCounts = %v %v", counts, err)
	}
	if _, err := db.pool.Exec(t.Context(), `DROP TABLE notification_terms, notification_hours, order_counts;
		DROP INDEX notifications_gateway, notifications_state, notifications_gateway_state, notifications_received_at, outbox_order_all, outbox_state;
		DROP TABLE fulfilments, dl_tokens, licenses, license_pool, license_pool_used, license_signing; -- the fulfilment's schema (later)
		DROP TABLE outbox_counts; -- the outbox counts' (later)
		UPDATE ipnd_schema SET version = 4`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	again := open(t, c.DSN())
	var v int
	if err := again.pool.QueryRow(t.Context(), `SELECT version FROM ipnd_schema`).Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("schema version %d %v, want %d", v, err, SchemaVersion)
	}
	if got, err := again.Dashboard().HourCounts(at); err != nil || fmt.Sprint(got) != fmt.Sprint(hours) {
		t.Errorf("HourCounts after the migration: %+v %v, before: %+v", got, err, hours)
	}
	checkOutboxCounts(t, again) // filled by the migration that made the table (outboxcounts_test.go)
	if got, err := again.Dashboard().OrderCounts(); err != nil || !maps.Equal(got, counts) {
		t.Errorf("OrderCounts after the migration: %v %v, before: %v", got, err, counts)
	}
	for i, q := range queries {
		if got := pages(t, again.Dashboard(), q); got != want[i] {
			t.Errorf("Find(%+v) after the migration: %s, before: %s", q, got, want[i])
		}
	}
}

// Damaged records are left out of the dashboard's lists, as on the bbolt
// store, and the pages stay full across them (here five of twelve
// notifications, three in a row at a page's end); reading one alone
// reports it.
func TestPGDashboardDamagedRecords(t *testing.T) {
	c := pgtest.Start(t)
	ctx := t.Context()
	db := open(t, c.DSN())
	for i := range 12 {
		if _, _, err := db.Append(ctx, webhook(fmt.Sprintf("m%d", i+1), "payment.completed", `"txn_id":"T1","amount":"1.00","currency":"USD"`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO processing (id, state, record) VALUES (5, 'received', '[1, 2]'), (9, 'received', '7'), (10, 'received', '"x"')`,
		`UPDATE notifications SET headers = '"not headers"' WHERE id IN (8, 11)`,
		`INSERT INTO outbox (id, kind, order_id, cause, notification, effect, delivery_id, created_at, state) VALUES
			(1, 'shop_callback', 'O1', 'c1', 1, '{"kind":"shop_callback","order_id":"O1"}', 'd1', now(), 'pending'),
			(2, 'shop_callback', 'O1', 'c2', 1, '"not an effect"', 'd2', now(), 'pending'),
			(3, 'shop_callback', 'O1', 'c3', 1, '{"kind":"shop_callback","order_id":"O1"}', 'd3', now(), 'sent')`,
		`INSERT INTO subscriptions (id, status, record) VALUES ('S1', 'active', '{"id":"S1","status":"active"}'), ('S2', 'active', '[]'),
			('S3', 'active', '{"id":"S3","status":"active"}')`,
	} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	d := db.Dashboard()
	if got, want := pages(t, d, store.Query{Gateway: "test", Limit: 3}), "3 pages [12:received 7:received 6:received 4:received 3:received 2:received 1:received]"; got != want {
		t.Errorf("Find by gateway: %s, want %s", got, want)
	}
	if got, want := pages(t, d, store.Query{Limit: 2}), "4 pages [12:received 7:received 6:received 4:received 3:received 2:received 1:received]"; got != want {
		t.Errorf("Find: %s, want %s", got, want)
	}
	for _, id := range []uint64{5, 8} {
		if _, _, err := d.Get(id); !errors.Is(err, ipn.ErrCorrupt) {
			t.Errorf("Get(%d) = %v, want corrupt", id, err)
		}
	}
	if _, _, err := d.Get(6); err != nil {
		t.Errorf("Get(6) = %v", err)
	}
	if got := outboxLine(d.ListOutbox("", 10)); !strings.HasPrefix(got, "[3:shop_callback/sent/O1/") || strings.Contains(got, " 2:") {
		t.Errorf("ListOutbox: %s", got)
	}
	if got := outboxLine(d.OutboxOfOrder("O1")); strings.Count(got, "shop_callback/") != 2 || strings.Contains(got, "[2:") || strings.Contains(got, " 2:") {
		t.Errorf("OutboxOfOrder: %s", got)
	}
	if _, err := d.GetOutbox(2); !errors.Is(err, ipn.ErrCorrupt) {
		t.Errorf("GetOutbox(2) = %v, want corrupt", err)
	}
	// A page of two passes over S2 (as bbolt's: the page is full, and
	// nothing follows); a page of one goes on after S1.
	subs, next, err := d.ListSubscriptions("", "", 2)
	if err != nil || len(subs) != 2 || subs[0].ID != "S1" || subs[1].ID != "S3" || next != "" {
		t.Errorf("ListSubscriptions(2) = %+v %q %v, want S1, S3 and no next", subs, next, err)
	}
	subs, next, err = d.ListSubscriptions("", "", 1)
	if err != nil || len(subs) != 1 || subs[0].ID != "S1" || next != "S1" {
		t.Errorf("ListSubscriptions(1) = %+v %q %v, want S1 and next S1", subs, next, err)
	}
	subs, next, err = d.ListSubscriptions("", "S1", 1)
	if err != nil || len(subs) != 1 || subs[0].ID != "S3" || next != "" {
		t.Errorf("ListSubscriptions(after S1, 1) = %+v %q %v, want S3 and no next", subs, next, err)
	}
	if _, err := d.GetSubscription("S2"); !errors.Is(err, ipn.ErrCorrupt) {
		t.Errorf("GetSubscription(S2) = %v, want corrupt", err)
	}
}

// A bbolt store copied by ipnd migrate (Import) answers the dashboard's
// reads on PostgreSQL as it did on bbolt: the identifiers and the counts
// are made from the rows copied.
func TestPGDashboardAfterImport(t *testing.T) {
	c := pgtest.Start(t)
	path := filledBolt(t)
	pdb := open(t, c.DSN())
	if err := store.Export(path, func(s *store.Snapshot) error { _, err := pdb.Import(t.Context(), s); return err }); err != nil {
		t.Fatal(err)
	}
	bdb, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	last := bdb.Cursor()
	want, got := dashboard(t, bdb, last), dashboard(t, pdb.Dashboard(), last)
	if got != want {
		wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
		for i := range max(len(wl), len(gl)) {
			if i >= len(wl) || i >= len(gl) || wl[i] != gl[i] {
				t.Errorf("postgres after the copy differs from bbolt:\n  bbolt:    %s\n  postgres: %s", wl[min(i, len(wl)-1)], gl[min(i, len(gl)-1)])
			}
		}
	}
	for _, must := range []string{`term="  A@Example.COM " before=0 after=0 limit=50 normalize=false: 1 pages [2:duplicate/O1 1:applied/O1]`,
		`outbox attempts 1: [1/1:sent:""] ok`, `outbox attempts 3: [1/1:dead:"550 no such user"] ok`} {
		if !strings.Contains(want, must) {
			t.Errorf("the copy does not answer %q:\n%s", must, want)
		}
	}
}
