package pg

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/ipn"
	"ipnd/record"
	"ipnd/store"
)

// Dashboard is the read side of the dashboard's store (admin/ui.Store)
// on db, with the bbolt store's semantics (store/index.go, orders.go,
// subscriptions.go, outbox.go): the methods take no context (each runs
// under the DB's timeout) and answer the store's sentinels. Its other
// methods are in their own files: replays and the outbox's decisions
// (outboxadmin.go), decisions (decisions.go), Stats and the live event
// stream (live.go).
type Dashboard struct{ db *DB }

// Dashboard returns the dashboard's reads on db.
func (db *DB) Dashboard() *Dashboard { return &Dashboard{db: db} }

func (d *Dashboard) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.db.opts.Timeout)
}

func termHashes(ev *ipn.Event) [][]byte {
	var out [][]byte
	for _, t := range ev.SearchTerms() {
		out = append(out, store.TermHash(t))
	}
	return out
}

// indexState moves notification id's identifiers and hourly counts from
// its stored processing record to p, queued with the record. was is the
// stored record when known (known; nil: none), read ahead with the
// batch: then an unchanged set of identifiers writes nothing and the
// counts move in memory (txCounts); else the stored record is read by
// the statements.
func (t *pgTx) indexState(id uint64, was []byte, known bool, p *ipn.Processing) error {
	var old *ipn.Processing
	if known && was != nil {
		old = new(ipn.Processing)
		if json.Unmarshal(was, old) != nil {
			known = false // damaged: what it indexed is not known
		}
	}
	if n := t.notes[id]; known && n != nil {
		t.counts.hour(n, old, p.State)
	} else if err := t.exec(countHourSQL, int64(id), string(p.State)); err != nil {
		return err
	}
	now := termHashes(p.Event)
	if known {
		if old != nil && slices.Equal(old.Event.SearchTerms(), p.Event.SearchTerms()) || old == nil && len(now) == 0 {
			return nil
		}
		if old == nil {
			return t.exec(`INSERT INTO notification_terms (term, id) SELECT unnest($2::bytea[]), $1 ON CONFLICT DO NOTHING`, int64(id), now)
		}
	}
	if err := t.exec(`DELETE FROM notification_terms WHERE id = $1`, int64(id)); err != nil {
		return err
	}
	if len(now) == 0 {
		return nil
	}
	return t.exec(`INSERT INTO notification_terms (term, id) SELECT unnest($2::bytea[]), $1 ON CONFLICT DO NOTHING`, int64(id), now)
}

// countHourSQL moves notification $1's hourly counts to state $2 from
// its processing record's state, before the record is written. A first
// record counts the notification received; applied and invalid follow
// its state.
const countHourSQL = `WITH o AS (SELECT (SELECT state FROM processing WHERE id = $1) AS st)
	INSERT INTO notification_hours AS c (gateway, hour, received, applied, invalid)
	SELECT n.gateway, date_bin('1 hour', n.received_at, 'epoch'), CASE WHEN o.st IS NULL THEN 1 ELSE 0 END,
		greatest((CASE WHEN $2 = 'applied' THEN 1 ELSE 0 END) - (CASE WHEN o.st = 'applied' THEN 1 ELSE 0 END), 0),
		greatest((CASE WHEN $2 = 'invalid' THEN 1 ELSE 0 END) - (CASE WHEN o.st = 'invalid' THEN 1 ELSE 0 END), 0)
	FROM notifications n, o WHERE n.id = $1 AND o.st IS DISTINCT FROM $2
	ON CONFLICT (gateway, hour) DO UPDATE SET received = c.received + excluded.received,
		applied = greatest(c.applied + (CASE WHEN $2 = 'applied' THEN 1 ELSE 0 END)
			- (CASE WHEN (SELECT st FROM o) = 'applied' THEN 1 ELSE 0 END), 0),
		invalid = greatest(c.invalid + (CASE WHEN $2 = 'invalid' THEN 1 ELSE 0 END)
			- (CASE WHEN (SELECT st FROM o) = 'invalid' THEN 1 ELSE 0 END), 0)`

// txCounts are the moves of the hourly and order counts a transaction
// made and has not written yet: a batch writes each count it moved
// once, not once per notification (the rows of the current hour and of
// the common statuses are every batch's).
type txCounts struct {
	hours  map[hourKey]*[3]int64 // received, applied, invalid
	orders map[orderKey]int64
	outbox map[outboxKey]int64
	// outboxQueued: statements queued whose rows move the outbox counts
	// when they are sent (an item queued unless its cause is, an item
	// made dead): writeCounts sends them first.
	outboxQueued bool
}

type outboxKey struct {
	state, kind string
}

// outboxItem moves the outbox counts of an item of kind from state old
// ("": a new item) to next.
func (c *txCounts) outboxItem(kind, old, next string) {
	if old == next {
		return
	}
	if c.outbox == nil {
		c.outbox = map[outboxKey]int64{}
	}
	if old != "" {
		c.outbox[outboxKey{old, kind}]--
	}
	c.outbox[outboxKey{next, kind}]++
}

type hourKey struct {
	gateway string
	hour    int64 // unix time of the hour's start
}

// b2i orders false before true.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

type orderKey struct {
	test   bool
	status ipn.OrderStatus
}

// hour moves notification n's hourly counts from its state old (nil:
// none recorded) to st.
func (c *txCounts) hour(n *ipn.Notification, old *ipn.Processing, st ipn.State) {
	if old != nil && old.State == st {
		return
	}
	if c.hours == nil {
		c.hours = map[hourKey]*[3]int64{}
	}
	k := hourKey{n.Gateway, n.ReceivedAt.Truncate(time.Hour).Unix()}
	d := c.hours[k]
	if d == nil {
		d = new([3]int64)
		c.hours[k] = d
	}
	slot := map[ipn.State]int{ipn.StateApplied: 1, ipn.StateInvalid: 2}
	if old == nil {
		d[0]++
	} else if i := slot[old.State]; i > 0 {
		d[i]--
	}
	if i := slot[st]; i > 0 {
		d[i]++
	}
}

// order moves the order counts from old (nil: a new order) to next.
func (c *txCounts) order(old, next *ipn.Order) {
	if next == nil || old != nil && old.Status == next.Status && old.Test == next.Test {
		return
	}
	if c.orders == nil {
		c.orders = map[orderKey]int64{}
	}
	if old != nil {
		c.orders[orderKey{old.Test, old.Status}]--
	}
	c.orders[orderKey{next.Test, next.Status}]++
}

// writeCounts queues the writes of the counts the transaction moved:
// before its commit (Journal.run, DB.Replay).
func (t *pgTx) writeCounts() error {
	if t.counts.outboxQueued {
		t.counts.outboxQueued = false
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(t.counts.outbox) > 0 {
		keys := make([]outboxKey, 0, len(t.counts.outbox))
		for k, n := range t.counts.outbox {
			if n != 0 {
				keys = append(keys, k)
			}
		}
		// In key order: concurrent transactions (the pipeline's batch,
		// the outbox's results, the operator's) lock the rows they move
		// in the same order, last, so none waits for another in a cycle.
		slices.SortFunc(keys, func(a, b outboxKey) int {
			return cmp.Or(cmp.Compare(a.state, b.state), cmp.Compare(a.kind, b.kind))
		})
		states, kinds, ns := make([]string, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
		for i, k := range keys {
			states[i], kinds[i], ns[i] = k.state, k.kind, t.counts.outbox[k]
		}
		t.counts.outbox = nil
		if len(keys) > 0 {
			if err := t.exec(`INSERT INTO outbox_counts AS c (state, kind, n)
				SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
				ON CONFLICT (state, kind) DO UPDATE SET n = greatest(c.n + excluded.n, 0)`, states, kinds, ns); err != nil {
				return err
			}
		}
	}
	if len(t.counts.hours) > 0 {
		var gws []string
		var hours []time.Time
		var rec, app, inv []int64
		keys := make([]hourKey, 0, len(t.counts.hours))
		for k, d := range t.counts.hours {
			if *d != ([3]int64{}) {
				keys = append(keys, k)
			}
		}
		// In key order, as the outbox's counts above.
		slices.SortFunc(keys, func(a, b hourKey) int {
			return cmp.Or(cmp.Compare(a.gateway, b.gateway), cmp.Compare(a.hour, b.hour))
		})
		for _, k := range keys {
			d := t.counts.hours[k]
			gws, hours = append(gws, k.gateway), append(hours, time.Unix(k.hour, 0).UTC())
			rec, app, inv = append(rec, d[0]), append(app, d[1]), append(inv, d[2])
		}
		t.counts.hours = nil
		if len(gws) > 0 {
			if err := t.exec(`INSERT INTO notification_hours AS c (gateway, hour, received, applied, invalid)
				SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[])
				ON CONFLICT (gateway, hour) DO UPDATE SET received = greatest(c.received + excluded.received, 0),
					applied = greatest(c.applied + excluded.applied, 0), invalid = greatest(c.invalid + excluded.invalid, 0)`,
				gws, hours, rec, app, inv); err != nil {
				return err
			}
		}
	}
	if len(t.counts.orders) > 0 {
		var tests []bool
		var statuses []string
		var ns []int64
		keys := make([]orderKey, 0, len(t.counts.orders))
		for k, n := range t.counts.orders {
			if n != 0 {
				keys = append(keys, k)
			}
		}
		// In key order, as the outbox's counts above.
		slices.SortFunc(keys, func(a, b orderKey) int {
			return cmp.Or(cmp.Compare(b2i(a.test), b2i(b.test)), cmp.Compare(a.status, b.status))
		})
		for _, k := range keys {
			tests, statuses, ns = append(tests, k.test), append(statuses, string(k.status)), append(ns, t.counts.orders[k])
		}
		t.counts.orders = nil
		if len(ns) > 0 {
			// A count below 0 (a row inserted so) is read as none.
			return t.exec(`INSERT INTO order_counts AS c (test, status, n)
				SELECT * FROM unnest($1::boolean[], $2::text[], $3::bigint[])
				ON CONFLICT (test, status) DO UPDATE SET n = greatest(c.n + excluded.n, 0)`, tests, statuses, ns)
		}
	}
	return nil
}

// fillDashboard fills what the dashboard reads from the records in the
// database (the migration to schema 5 of one the pipeline wrote before,
// Import): the identifiers, the hourly and the order counts.
func fillDashboard(ctx context.Context, tx pgx.Tx) error {
	if err := fillTerms(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO notification_hours
		SELECT gateway, date_bin('1 hour', received_at, 'epoch'), count(*),
			count(*) FILTER (WHERE state = 'applied'), count(*) FILTER (WHERE state = 'invalid')
		FROM notifications n WHERE EXISTS (SELECT 1 FROM processing p WHERE p.id = n.id)
		GROUP BY 1, 2`); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO order_counts SELECT test, status, count(*) FROM orders GROUP BY 1, 2`)
	return err
}

// fillOutboxCounts fills outbox_counts from the outbox items (Import).
func fillOutboxCounts(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `INSERT INTO outbox_counts SELECT state, kind, count(*) FROM outbox GROUP BY 1, 2`)
	return err
}

// fillTerms fills notification_terms from the processing records
// (fillDashboard). A record that does not decode has no terms (the
// readers report it).
func fillTerms(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT id, record FROM processing`)
	if err != nil {
		return err
	}
	var fill [][]any
	for rows.Next() {
		var id int64
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			rows.Close()
			return err
		}
		var p ipn.Processing
		if json.Unmarshal(b, &p) != nil {
			continue
		}
		for _, h := range termHashes(p.Event) {
			fill = append(fill, []any{h, id})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"notification_terms"}, []string{"term", "id"}, pgx.CopyFromRows(fill))
	return err
}

// noteCols are the columns an Item is read from (n: notifications, p:
// processing, left-joined).
const noteCols = `n.id, n.gateway, n.dedup_key, n.received_at, n.remote_addr, n.content_type, n.headers, n.body, n.body_sha256, n.purged_at, p.record`

// scanNoteItem reads an Item from a row of noteCols; the error is
// ipn.ErrCorrupt for a record that does not decode (the item's
// Notification then has its id only).
func scanNoteItem(r pgx.Row) (store.Item, error) {
	n := &ipn.Notification{}
	var id int64
	var headers, rec []byte
	var purged *time.Time
	if err := r.Scan(&id, &n.Gateway, textOf{&n.DedupKey}, &n.ReceivedAt, &n.RemoteAddr, textOf{&n.ContentType}, &headers, &n.Body, &n.BodySHA256, &purged, &rec); err != nil {
		return store.Item{}, err
	}
	n.ID = uint64(id)
	bad := store.Item{Notification: &ipn.Notification{ID: n.ID}}
	if purged != nil {
		n.Purged = *purged
	}
	if err := decode(headers, &n.Headers, fmt.Sprintf("notification %d: headers", id)); err != nil {
		return bad, err
	}
	p, err := decodeState(rec, n.ID)
	if err != nil {
		return bad, err
	}
	if p == nil {
		p = record.Received(n)
	}
	return store.Item{Notification: n, Processing: p}, nil
}

// Get returns notification id and its processing state ("received" when
// the pipeline has not recorded one), or store.ErrNotFound.
func (d *Dashboard) Get(id uint64) (*ipn.Notification, *ipn.Processing, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	it, err := scanNoteItem(d.db.pool.QueryRow(ctx, `SELECT `+noteCols+` FROM notifications n LEFT JOIN processing p ON p.id = n.id WHERE n.id = $1`, int64(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("notification %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		if errors.Is(err, ipn.ErrCorrupt) {
			return nil, nil, err
		}
		return nil, nil, unavailable(err)
	}
	return it.Notification, it.Processing, nil
}

// tailScanMax bounds how many notifications above the pipeline's cursor
// a search by identifier reads through Query.Normalize, as the bbolt
// store's.
const tailScanMax = 20000

// unprocessed returns the ids of the notifications the pipeline has not
// reached (above its cursor, without a processing record), newest
// first, among the newest tailScanMax above the cursor: two index
// range reads, whatever the store holds.
func (d *Dashboard) unprocessed(ctx context.Context) ([]int64, error) {
	var ids []int64
	err := queriedRows(ctx, d.db.pool)(`SELECT id FROM notifications
		WHERE id > (SELECT value FROM ipnd_counters WHERE name = 'cursor') ORDER BY id DESC LIMIT `+fmt.Sprint(tailScanMax), nil,
		func(r pgx.Rows) error {
			var id int64
			err := r.Scan(&id)
			ids = append(ids, id)
			return err
		})
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	done := map[int64]bool{}
	err = queriedRows(ctx, d.db.pool)(`SELECT id FROM processing WHERE id = ANY($1)`, []any{ids}, func(r pgx.Rows) error {
		var id int64
		err := r.Scan(&id)
		done[id] = true
		return err
	})
	return slices.DeleteFunc(ids, func(id int64) bool { return done[id] }), err
}

// Find returns the notifications q selects, newest first, as the bbolt
// store's Find: by gateway and state (the notifications' indexes; those
// the pipeline has not reached are in state received), or by
// identifier (notification_terms; with q.Normalize, also the newest
// tailScanMax notifications above the cursor without a processing
// record, normalized). Records that do not decode are left out.
func (d *Dashboard) Find(q store.Query) ([]store.Item, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	q.Limit = min(q.Limit, 1000)
	ctx, cancel := d.ctx()
	defer cancel()
	term := strings.ToLower(strings.TrimSpace(q.Term))
	byTerm := q.Order != "" || q.Term != ""
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	// (toText: a name text refuses, from a request, matches nothing
	// rather than failing the query.)
	if q.Gateway != "" {
		where = append(where, "n.gateway = "+arg(toText(q.Gateway)))
	}
	if q.State != "" {
		where = append(where, "n.state = "+arg(toText(string(q.State))))
	}
	if q.After > 0 {
		where = append(where, "n.id > "+arg(int64(q.After)))
	}
	if byTerm {
		h := q.Term
		if h == "" {
			h = q.Order
		}
		ids := "SELECT id FROM notification_terms WHERE term = " + arg(store.TermHash(h))
		if q.Normalize != nil {
			tail, err := d.unprocessed(ctx)
			if err != nil {
				return nil, unavailable(err)
			}
			ids += " UNION ALL SELECT unnest(" + arg(tail) + "::bigint[])"
		}
		where = append(where, "n.id IN ("+ids+")")
	}
	before := q.Before
	var out []store.Item
	for {
		w := slices.Clone(where)
		a := len(args)
		if before > 0 {
			w = append(w, "n.id < "+arg(int64(before)))
		}
		sql := `SELECT ` + noteCols + ` FROM notifications n LEFT JOIN processing p ON p.id = n.id`
		if len(w) > 0 {
			sql += ` WHERE ` + strings.Join(w, " AND ")
		}
		page := q.Limit - len(out)
		sql += ` ORDER BY n.id DESC LIMIT ` + fmt.Sprint(page)
		rows, err := d.db.pool.Query(ctx, sql, args...)
		args = args[:a]
		if err != nil {
			return nil, unavailable(err)
		}
		read := 0
		for rows.Next() {
			read++
			it, err := scanNoteItem(rows)
			if errors.Is(err, ipn.ErrCorrupt) {
				before = it.Notification.ID
				continue // damaged: left out of the lists (Get reports it)
			}
			if err != nil {
				rows.Close()
				return nil, unavailable(err)
			}
			before = it.Notification.ID
			if byTerm {
				ev := it.Processing.Event
				if ev == nil && q.Normalize != nil && it.Processing.State == ipn.StateReceived {
					ev = q.Normalize(it.Notification)
				}
				if q.Order != "" && (ev == nil || ev.OrderID != q.Order) {
					continue
				}
				if q.Term != "" && !slices.Contains(ev.SearchTerms(), term) {
					continue
				}
			}
			out = append(out, it)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, unavailable(err)
		}
		if read < page || len(out) >= q.Limit {
			return out, nil
		}
		// Some were left out: the page goes on below the last read.
	}
}

// Matching returns the ids of the notifications f selects (gateway,
// state, before), newest first, at most max (at most
// store.MaxBulkReplay), and whether more matched: the bulk replay's
// selection, as the bbolt store's.
func (d *Dashboard) Matching(f store.Filter, max int) (ids []uint64, more bool, err error) {
	return store.MatchingVia(d.Find, f, max)
}

// FirstIDAt returns the first notification id received at t or later
// (the next id when none is): ids follow arrival.
func (d *Dashboard) FirstIDAt(t time.Time) (uint64, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	var id int64
	err := d.db.pool.QueryRow(ctx, `SELECT coalesce(
			(SELECT id FROM notifications WHERE received_at >= $1 ORDER BY received_at, id LIMIT 1),
			(SELECT value + 1 FROM ipnd_counters WHERE name = 'notification'))`, t).Scan(&id)
	return uint64(id), unavailable(err)
}

// Cursor returns the pipeline's cursor (0 when it cannot be read).
func (d *Dashboard) Cursor() uint64 {
	ctx, cancel := d.ctx()
	defer cancel()
	c, _ := d.db.Cursor(ctx)
	return c
}

// OldestPendingByGateway returns, per gateway, when its oldest
// notification still to process arrived: above the pipeline's cursor
// and not settled at now, or waiting for a retry.
func (d *Dashboard) OldestPendingByGateway(now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	ctx, cancel := d.ctx()
	defer cancel()
	oldest := map[string]uint64{}
	rows, err := d.db.pool.Query(ctx, `SELECT n.id, n.gateway, p.record FROM notifications n LEFT JOIN processing p ON p.id = n.id
		WHERE n.id > (SELECT value FROM ipnd_counters WHERE name = 'cursor') ORDER BY n.id LIMIT `+fmt.Sprint(skipScan))
	if err != nil {
		return out
	}
	for rows.Next() {
		var id int64
		var gw string
		var rec []byte
		if rows.Scan(&id, &gw, &rec) != nil {
			break
		}
		if p, err := decodeState(rec, uint64(id)); err == nil && p != nil && p.Settled(now) {
			continue
		}
		if _, seen := oldest[gw]; !seen {
			oldest[gw] = uint64(id)
		}
	}
	rows.Close()
	rows, err = d.db.pool.Query(ctx, `SELECT DISTINCT ON (gateway) gateway, id FROM retries WHERE gateway <> '' ORDER BY gateway, id`)
	if err != nil {
		return out
	}
	for rows.Next() {
		var id int64
		var gw string
		if rows.Scan(&gw, &id) != nil {
			break
		}
		if first, seen := oldest[gw]; !seen || uint64(id) < first {
			oldest[gw] = uint64(id)
		}
	}
	rows.Close()
	if len(oldest) == 0 {
		return out
	}
	ids := make([]int64, 0, len(oldest))
	for _, id := range oldest {
		ids = append(ids, int64(id))
	}
	rows, err = d.db.pool.Query(ctx, `SELECT gateway, received_at FROM notifications WHERE id = ANY($1)`, ids)
	if err != nil {
		return out
	}
	defer rows.Close()
	for rows.Next() {
		var gw string
		var at time.Time
		if rows.Scan(&gw, &at) == nil && oldest[gw] != 0 {
			out[gw] = at
		}
	}
	return out
}

// HourCounts returns, per gateway and hour since since (its hour
// included), the notifications received then and how many of them are
// applied and invalid, as the bbolt store's: from the hourly counts the
// pipeline keeps (notification_hours), by gateway then hour, plus the
// notifications it has not reached yet (the newest tailScanMax above its
// cursor).
func (d *Dashboard) HourCounts(since time.Time) ([]store.HourCount, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	from := time.Unix(since.Unix()/3600*3600, 0)
	var out []store.HourCount
	idx := map[[2]any]int{}
	err := queriedRows(ctx, d.db.pool)(`SELECT gateway, hour, received, applied, invalid FROM notification_hours
		WHERE hour >= $1 ORDER BY gateway COLLATE "C", hour`, []any{from}, func(r pgx.Rows) error {
		var c store.HourCount
		if err := r.Scan(&c.Gateway, &c.Hour, &c.Received, &c.Applied, &c.Invalid); err != nil {
			return err
		}
		c.Hour = c.Hour.UTC()
		idx[[2]any{c.Gateway, c.Hour}] = len(out)
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	tail, err := d.unprocessed(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	err = queriedRows(ctx, d.db.pool)(`SELECT gateway, received_at FROM notifications WHERE id = ANY($1) ORDER BY id DESC`, []any{tail}, func(r pgx.Rows) error {
		var gw string
		var at time.Time
		if err := r.Scan(&gw, &at); err != nil {
			return err
		}
		h := at.UTC().Truncate(time.Hour)
		if h.Before(since.Truncate(time.Hour)) {
			return nil
		}
		i, ok := idx[[2]any{gw, h}]
		if !ok {
			i = len(out)
			idx[[2]any{gw, h}] = i
			out = append(out, store.HourCount{Gateway: gw, Hour: h})
		}
		out[i].Received++
		return nil
	})
	return out, unavailable(err)
}

// shownEntries is how many of an order's newest facts and history
// entries GetOrder returns, as the bbolt store's.
const shownEntries = 1000

// GetOrder returns order id with its newest shownEntries facts and
// history entries and the txn ids of those facts (OrderFacts and
// OrderHistory page through all), or store.ErrNotFound.
func (d *Dashboard) GetOrder(id string) (*ipn.Order, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	o, tally, err := storedOrder(queried(ctx, d.db.pool), id)
	if err != nil {
		return nil, unavailable(err)
	}
	if o == nil {
		return nil, fmt.Errorf("order %q: %w", id, store.ErrNotFound)
	}
	if tally == nil {
		return o, nil
	}
	if o.Facts, err = lastSeq[ipn.OrderFact](ctx, d, "order_facts", "fact", id); err != nil {
		return nil, unavailable(err)
	}
	o.TxnIDs = ipn.TxnIDs(o.Facts)
	if o.History, err = lastSeq[ipn.OrderChange](ctx, d, "order_history", "change", id); err != nil {
		return nil, unavailable(err)
	}
	return o, nil
}

// lastSeq reads the newest shownEntries records of order id in table,
// oldest first.
func lastSeq[T any](ctx context.Context, d *Dashboard, table, col, id string) ([]T, error) {
	out, err := pageSeq[T](ctx, d, table, col, id, `ORDER BY seq DESC LIMIT `+fmt.Sprint(shownEntries))
	slices.Reverse(out)
	return out, err
}

func pageSeq[T any](ctx context.Context, d *Dashboard, table, col, id, tail string) ([]T, error) {
	return readSeqWhere[T](queriedRows(ctx, d.db.pool), table, col, id, tail)
}

// ListOrders returns orders without their facts, history and txn ids,
// by last change, newest first, after the cursor before
// (store.OrderCursor of the previous page's last; "" for the first
// page), of status ("" any), at most limit (default 50). A before that
// is not such a cursor is store.ErrBadCursor. PostgreSQL keeps
// microseconds: orders changed within the same microsecond are ordered
// by id.
func (d *Dashboard) ListOrders(status ipn.OrderStatus, before string, limit int) ([]ipn.Order, error) {
	if limit <= 0 {
		limit = 50
	}
	var where []string
	var args []any
	if before != "" {
		at, id, ok := strings.Cut(before, "/")
		t, err := time.Parse(time.RFC3339Nano, at)
		if !ok || id == "" || err != nil {
			return nil, fmt.Errorf("orders: before %q: %w", before, store.ErrBadCursor)
		}
		args = append(args, t, []byte(id))
		where = append(where, "(updated_at, id) < ($1, $2)")
	}
	if status != "" {
		args = append(args, string(status))
		where = append(where, fmt.Sprintf("status = $%d", len(args)))
	}
	sql := `SELECT id, record, tally IS NOT NULL FROM orders`
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	sql += ` ORDER BY updated_at DESC, id DESC LIMIT ` + fmt.Sprint(limit)
	ctx, cancel := d.ctx()
	defer cancel()
	var out []ipn.Order
	err := queriedRows(ctx, d.db.pool)(sql, args, func(r pgx.Rows) error {
		var id, b []byte
		var large bool
		if err := r.Scan(&id, &b, &large); err != nil {
			return err
		}
		var o ipn.Order
		if err := decode(b, &o, fmt.Sprintf("order %q", id)); err != nil {
			return err
		}
		o.Facts, o.History, o.TxnIDs = nil, nil, nil
		out = append(out, o)
		return nil
	})
	return out, unavailable(err)
}

// OrderFacts returns order id's facts from the from-th (in the order
// applied), at most limit (default 100).
func (d *Dashboard) OrderFacts(id string, from, limit int) ([]ipn.OrderFact, error) {
	return pageOrder(d, id, "order_facts", "fact", from, limit, func(o *ipn.Order) []ipn.OrderFact { return o.Facts })
}

// OrderHistory returns order id's history entries from the from-th
// (oldest first), at most limit (default 100).
func (d *Dashboard) OrderHistory(id string, from, limit int) ([]ipn.OrderChange, error) {
	return pageOrder(d, id, "order_history", "change", from, limit, func(o *ipn.Order) []ipn.OrderChange { return o.History })
}

func pageOrder[T any](d *Dashboard, id, table, col string, from, limit int, inline func(*ipn.Order) []T) ([]T, error) {
	if limit <= 0 {
		limit = 100
	}
	from = max(from, 0)
	ctx, cancel := d.ctx()
	defer cancel()
	o, tally, err := storedOrder(queried(ctx, d.db.pool), id)
	switch {
	case err != nil:
		return nil, unavailable(err)
	case o == nil:
		return nil, fmt.Errorf("order %q: %w", id, store.ErrNotFound)
	case tally == nil:
		all := inline(o)
		return all[min(from, len(all)):min(from+limit, len(all))], nil
	}
	out, err := pageSeq[T](ctx, d, table, col, id, fmt.Sprintf(`ORDER BY seq OFFSET %d LIMIT %d`, from, limit))
	return out, unavailable(err)
}

// OrderCounts returns the number of orders in each status (test orders
// included; kept with the orders, cheap to read). A status no order is
// in is left out (the bbolt store may list it with 0).
func (d *Dashboard) OrderCounts() (map[ipn.OrderStatus]int, error) {
	return d.orderCounts(`SELECT status, sum(n)::bigint FROM order_counts GROUP BY status HAVING sum(n) > 0`)
}

// TestOrderCounts returns the number of test orders in each status.
func (d *Dashboard) TestOrderCounts() (map[ipn.OrderStatus]int, error) {
	return d.orderCounts(`SELECT status, n FROM order_counts WHERE test AND n > 0`)
}

func (d *Dashboard) orderCounts(sql string) (map[ipn.OrderStatus]int, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	out := map[ipn.OrderStatus]int{}
	err := queriedRows(ctx, d.db.pool)(sql, nil, func(r pgx.Rows) error {
		var s string
		var n int
		if err := r.Scan(&s, &n); err != nil {
			return err
		}
		out[ipn.OrderStatus(s)] = n
		return nil
	})
	return out, unavailable(err)
}

// GetSubscription returns subscription id, or store.ErrNotFound.
func (d *Dashboard) GetSubscription(id string) (*ipn.Subscription, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	s, err := d.db.GetSubscription(ctx, id)
	if err != nil && !errors.Is(err, ipn.ErrNotFound) && !errors.Is(err, ipn.ErrCorrupt) {
		return nil, unavailable(err)
	}
	return s, err
}

// ListSubscriptions returns subscriptions in id order after the id after
// ("": from the first), of status ("": any), at most limit (default 50,
// at most 1000); next is the id to continue after when more may follow
// ("" at the end), as the bbolt store's. A record that does not decode
// is left out.
func (d *Dashboard) ListSubscriptions(status ipn.SubscriptionStatus, after string, limit int) (subs []ipn.Subscription, next string, err error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	ctx, cancel := d.ctx()
	defer cancel()
	last := []byte(after)
	for {
		page, read := limit-len(subs), 0
		err = queriedRows(ctx, d.db.pool)(`SELECT id, record FROM subscriptions WHERE id > $1 AND ($2 = '' OR status = $2) ORDER BY id LIMIT $3`,
			[]any{last, string(status), page}, func(r pgx.Rows) error {
				var id, b []byte
				if err := r.Scan(&id, &b); err != nil {
					return err
				}
				last, read = id, read+1
				var s ipn.Subscription
				if json.Unmarshal(b, &s) != nil {
					return nil // damaged: left out (GetSubscription reports it)
				}
				if status == "" || s.Status == status {
					subs = append(subs, s)
				}
				return nil
			})
		if err != nil {
			return nil, "", unavailable(err)
		}
		if read < page || len(subs) == limit {
			break
		}
	}
	if len(subs) < limit {
		return subs, "", nil
	}
	var more bool
	if err := d.db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM subscriptions WHERE id > $1)`, last).Scan(&more); err != nil {
		return nil, "", unavailable(err)
	}
	if more {
		next = string(last)
	}
	return subs, next, nil
}

// outboxCols are the columns an outbox item is read from.
const outboxCols = `id, effect, delivery_id, notification, created_at, state, attempts, next_attempt, sent_at, last_error`

func scanOutboxItem(r pgx.Row) (ipn.OutboxItem, error) {
	var id, notification int64
	var b []byte
	var it ipn.OutboxItem
	var next, sent *time.Time
	if err := r.Scan(&id, &b, &it.DeliveryID, &notification, &it.CreatedAt, &it.State, &it.Attempts, &next, &sent, &it.LastError); err != nil {
		return it, err
	}
	if err := json.Unmarshal(b, &it.Effect); err != nil {
		return it, corrupt(fmt.Sprintf("outbox item %d", id), err)
	}
	it.ID, it.Notification = uint64(id), uint64(notification)
	if next != nil {
		it.NextAttempt = *next
	}
	if sent != nil {
		it.SentAt = *sent
	}
	return it, nil
}

// GetOutbox returns outbox item id, or store.ErrNotFound.
func (d *Dashboard) GetOutbox(id uint64) (ipn.OutboxItem, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	it, err := scanOutboxItem(d.db.pool.QueryRow(ctx, `SELECT `+outboxCols+` FROM outbox WHERE id = $1`, int64(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return it, fmt.Errorf("outbox item %d: %w", id, store.ErrNotFound)
	}
	return it, unavailable(err)
}

// outboxList reads the items of query sql; those that do not decode are
// left out (GetOutbox reports them).
func (d *Dashboard) outboxList(sql string, args ...any) ([]ipn.OutboxItem, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	var out []ipn.OutboxItem
	err := queriedRows(ctx, d.db.pool)(sql, args, func(r pgx.Rows) error {
		it, err := scanOutboxItem(r)
		if errors.Is(err, ipn.ErrCorrupt) {
			return nil
		}
		if err == nil {
			out = append(out, it)
		}
		return err
	})
	return out, unavailable(err)
}

// ListOutbox returns outbox items in state ("" any), at most limit
// (default 100): pending ones the next due first, the others newest
// first.
func (d *Dashboard) ListOutbox(state string, limit int) ([]ipn.OutboxItem, error) {
	if limit <= 0 {
		limit = 100
	}
	switch state {
	case "":
		return d.outboxList(`SELECT `+outboxCols+` FROM outbox ORDER BY id DESC LIMIT $1`, limit)
	case ipn.OutboxPending:
		return d.outboxList(`SELECT `+outboxCols+` FROM outbox WHERE state = $1 ORDER BY next_attempt, id LIMIT $2`, state, limit)
	}
	return d.outboxList(`SELECT `+outboxCols+` FROM outbox WHERE state = $1 ORDER BY id DESC LIMIT $2`, state, limit)
}

// OutboxOf returns the outbox items notification queued, oldest first.
func (d *Dashboard) OutboxOf(notification uint64) ([]ipn.OutboxItem, error) {
	return d.outboxList(`SELECT `+outboxCols+` FROM outbox WHERE notification = $1 ORDER BY id`, int64(notification))
}

// OutboxOfOrder returns the outbox items of order id, oldest first.
func (d *Dashboard) OutboxOfOrder(id string) ([]ipn.OutboxItem, error) {
	return d.outboxList(`SELECT `+outboxCols+` FROM outbox WHERE order_id = $1 ORDER BY id`, []byte(id))
}

// OutboxCounts returns the number of items per state and kind.
func (d *Dashboard) OutboxCounts() (map[string]map[string]int, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	out := map[string]map[string]int{}
	err := queriedRows(ctx, d.db.pool)(`SELECT state, kind, n FROM outbox_counts WHERE n > 0`, nil, func(r pgx.Rows) error {
		var state, kind string
		var n int
		if err := r.Scan(&state, &kind, &n); err != nil {
			return err
		}
		if out[state] == nil {
			out[state] = map[string]int{}
		}
		out[state][kind] = n
		return nil
	})
	return out, unavailable(err)
}

// OutboxAttempts returns the kept attempts of outbox item id, oldest
// first (DB.OutboxAttempts).
func (d *Dashboard) OutboxAttempts(id uint64) ([]ipn.OutboxAttempt, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	return d.db.OutboxAttempts(ctx, id)
}
