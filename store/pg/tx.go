package pg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/record"
)

// pgTx is a PostgreSQL transaction as record.Tx: the typed reads and
// writes with which record.Finish, record.Attach and record.ExpireParked
// drive the decision, with the bbolt store's semantics (store/tx.go).
//
// The notifications whose processing record it reads or writes are
// locked (their notifications row, FOR NO KEY UPDATE) until it ends, so
// that a replay asked of another process meanwhile (Replay) is applied
// before or after it, never lost between its read and its write.
//
// Its writes return no rows: they are queued, and sent with the next
// read (one round trip for a read and the writes before it) or at the
// commit (flush). A write that fails fails that read, or the commit, and
// with it the transaction.
type pgTx struct {
	db     *DB
	ctx    context.Context
	tx     pgx.Tx
	locked map[uint64]bool
	queued *pgx.Batch
	// outboxNotified: the transaction sends the NOTIFY that wakes the
	// outbox worker when it commits (Enqueue).
	outboxNotified bool

	// What prefetch read ahead for a batch, kept up to date by the
	// writes: notifications (and the error of one that does not
	// decode), processing records (nil: none), fact holders (0: none),
	// payment references ("": none) by gateway and reference.
	notes    map[uint64]*ipn.Notification
	noteErrs map[uint64]error
	states   map[uint64][]byte
	facts    map[string]uint64
	refs     map[[2]string]string

	// The dashboard's counts the transaction moved, written at its
	// commit (dashboard.go).
	counts txCounts
}

var _ record.Tx = (*pgTx)(nil)

// newRunID draws the random part of the delivery ids of the items queued
// while the database is open (ipn.OutboxItem.DeliveryID).
func newRunID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// SetEffectKinds sets the kinds of effects queued in the outbox (nil:
// all), as the bbolt store's.
func (db *DB) SetEffectKinds(kinds map[string]bool) { db.kinds.Store(&kinds) }

// SetParkFor sets orders.park_for: how long an event may wait for its
// payment before ExpireParked fails it (0: forever).
func (db *DB) SetParkFor(d time.Duration) { db.parkFor.Store(int64(d)) }

// ParkFor returns orders.park_for as SetParkFor set it.
func (db *DB) ParkFor() time.Duration { return time.Duration(db.parkFor.Load()) }

// corrupt is the error of a record that does not decode.
func corrupt(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", ipn.ErrCorrupt, what, err)
}

// decode decodes the json record b of what into v.
func decode(b []byte, v any, what string) error {
	if err := json.Unmarshal(b, v); err != nil {
		return corrupt(what, err)
	}
	return nil
}

// exec queues a write.
func (t *pgTx) exec(sql string, args ...any) error {
	if t.queued == nil {
		t.queued = &pgx.Batch{}
	}
	t.queued.Queue(sql, args...)
	return nil
}

// flush sends the queued writes.
func (t *pgTx) flush() error {
	if t.queued == nil || t.queued.Len() == 0 {
		return nil
	}
	b := t.queued
	t.queued = nil
	return t.tx.SendBatch(t.ctx, b).Close()
}

// row reads the row of query sql into dest, after the queued writes and
// in the same round trip; false when there is none.
func (t *pgTx) row(sql string, args []any, dest ...any) (bool, error) {
	found := true
	if t.queued == nil {
		t.queued = &pgx.Batch{}
	}
	t.queued.Queue(sql, args...).QueryRow(func(r pgx.Row) error {
		err := r.Scan(dest...)
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		return err
	})
	return found, t.flush()
}

// rows reads the rows of query sql, each with each, after the queued
// writes and in the same round trip.
func (t *pgTx) rows(sql string, args []any, each func(pgx.Rows) error) error {
	t.queue(sql, args, each)
	return t.flush()
}

// queue queues query sql, whose rows each reads when it is sent.
func (t *pgTx) queue(sql string, args []any, each func(pgx.Rows) error) {
	if t.queued == nil {
		t.queued = &pgx.Batch{}
	}
	t.queued.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if err := each(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// prefetch reads, in one round trip, what deciding outs reads first:
// their notifications (locked, in id order), their processing records,
// the holders of their fact keys and the orders of their payment
// references. The reads of them are then answered from memory.
func (t *pgTx) prefetch(outs []ipn.Outcome) error {
	ids := make([]int64, 0, len(outs))
	var keys [][]byte
	var gws []string
	var refs [][]byte
	t.notes, t.noteErrs = map[uint64]*ipn.Notification{}, map[uint64]error{}
	t.states, t.facts, t.refs = map[uint64][]byte{}, map[string]uint64{}, map[[2]string]string{}
	for _, o := range outs {
		ids = append(ids, int64(o.ID))
		t.states[o.ID] = nil
		if o.EventKey != "" {
			keys = append(keys, []byte(o.EventKey))
			t.facts[o.EventKey] = 0
		}
		if o.Event != nil {
			for _, r := range o.Event.PaymentRefs() {
				gws, refs = append(gws, o.Context.Gateway), append(refs, []byte(r))
				t.refs[[2]string{o.Context.Gateway, r}] = ""
			}
		}
	}
	slices.Sort(ids)
	t.queue(`SELECT id, gateway, dedup_key, received_at, remote_addr, content_type, headers, body, body_sha256, purged_at
		FROM notifications WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, []any{ids}, func(r pgx.Rows) error {
		var id int64
		n := &ipn.Notification{}
		var headers []byte
		var purged *time.Time
		if err := r.Scan(&id, &n.Gateway, textOf{&n.DedupKey}, &n.ReceivedAt, &n.RemoteAddr, textOf{&n.ContentType}, &headers, &n.Body, &n.BodySHA256, &purged); err != nil {
			return err
		}
		n.ID = uint64(id)
		if purged != nil {
			n.Purged = *purged
		}
		if err := decode(headers, &n.Headers, fmt.Sprintf("notification %d: headers", id)); err != nil {
			t.noteErrs[n.ID] = err
		}
		t.notes[n.ID] = n
		if t.locked == nil {
			t.locked = map[uint64]bool{}
		}
		t.locked[n.ID] = true
		return nil
	})
	// After the locks (a statement of its own): a replay committed
	// meanwhile is seen.
	t.queue(`SELECT id, record FROM processing WHERE id = ANY($1)`, []any{ids}, func(r pgx.Rows) error {
		var id int64
		var b []byte
		if err := r.Scan(&id, &b); err != nil {
			return err
		}
		t.states[uint64(id)] = b
		return nil
	})
	if len(keys) > 0 {
		t.queue(`SELECT key, id FROM facts WHERE key = ANY($1::bytea[])`, []any{keys}, func(r pgx.Rows) error {
			var k []byte
			var id int64
			if err := r.Scan(&k, &id); err != nil {
				return err
			}
			t.facts[string(k)] = uint64(id)
			return nil
		})
	}
	if len(refs) > 0 {
		t.queue(`SELECT r.gateway, r.ref, r.order_id FROM payment_refs r
			JOIN unnest($1::text[], $2::bytea[]) AS u(gateway, ref) ON r.gateway = u.gateway AND r.ref = u.ref`,
			[]any{gws, refs}, func(r pgx.Rows) error {
				var gw string
				var ref, order []byte
				if err := r.Scan(&gw, &ref, &order); err != nil {
					return err
				}
				t.refs[[2]string{gw, string(ref)}] = string(order)
				return nil
			})
	}
	return t.flush()
}

// lock locks notification id's row to the end of the transaction (once;
// queued: sent with what follows).
func (t *pgTx) lock(id uint64) error {
	if t.locked[id] {
		return nil
	}
	if err := t.exec(`SELECT 1 FROM notifications WHERE id = $1 FOR NO KEY UPDATE`, int64(id)); err != nil {
		return err
	}
	if t.locked == nil {
		t.locked = map[uint64]bool{}
	}
	t.locked[id] = true
	return nil
}

func (t *pgTx) Notification(id uint64) (*ipn.Notification, error) {
	if n, ok := t.notes[id]; ok {
		if err := t.noteErrs[id]; err != nil {
			return nil, err
		}
		c := *n
		return &c, nil
	}
	if err := t.lock(id); err != nil {
		return nil, err
	}
	return readNotification(t.row, id)
}

// querier is a pool, a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// rowReader reads the row of query sql into dest: false when there is
// none (pgTx.row, queried).
type rowReader func(sql string, args []any, dest ...any) (bool, error)

// rowsReader reads the rows of query sql, each with each (pgTx.rows,
// queriedRows).
type rowsReader func(sql string, args []any, each func(pgx.Rows) error) error

// queried is a rowReader on q.
func queried(ctx context.Context, q querier) rowReader {
	return func(sql string, args []any, dest ...any) (bool, error) {
		err := q.QueryRow(ctx, sql, args...).Scan(dest...)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	}
}

// queriedRows is a rowsReader on q.
func queriedRows(ctx context.Context, q querier) rowsReader {
	return func(sql string, args []any, each func(pgx.Rows) error) error {
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := each(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	}
}

// readNotification reads notification id: ipn.ErrNotFound when it is not
// stored, ipn.ErrCorrupt when its headers do not decode.
func readNotification(row rowReader, id uint64) (*ipn.Notification, error) {
	n := &ipn.Notification{ID: id}
	var headers []byte
	var purged *time.Time
	found, err := row(`SELECT gateway, dedup_key, received_at, remote_addr, content_type, headers, body, body_sha256, purged_at
		FROM notifications WHERE id = $1`, []any{int64(id)}, &n.Gateway, textOf{&n.DedupKey}, &n.ReceivedAt, &n.RemoteAddr, textOf{&n.ContentType}, &headers, &n.Body, &n.BodySHA256, &purged)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("notification %d: %w", id, ipn.ErrNotFound)
	}
	if purged != nil {
		n.Purged = *purged
	}
	if err := decode(headers, &n.Headers, fmt.Sprintf("notification %d: headers", id)); err != nil {
		return nil, err
	}
	return n, nil
}

func (t *pgTx) State(id uint64) (*ipn.Processing, error) {
	if b, ok := t.states[id]; ok {
		return decodeState(b, id)
	}
	if err := t.lock(id); err != nil {
		return nil, err
	}
	return readState(t.row, id)
}

// decodeState decodes the processing record b of notification id (nil:
// none).
func decodeState(b []byte, id uint64) (*ipn.Processing, error) {
	if b == nil {
		return nil, nil
	}
	p := new(ipn.Processing)
	if err := decode(b, p, fmt.Sprintf("state of notification %d", id)); err != nil {
		return nil, err
	}
	return p, nil
}

// readState reads the processing record of notification id, nil when
// there is none.
func readState(row rowReader, id uint64) (*ipn.Processing, error) {
	var b []byte
	found, err := row(`SELECT record FROM processing WHERE id = $1`, []any{int64(id)}, &b)
	if err != nil || !found {
		return nil, err
	}
	return decodeState(b, id)
}

func (t *pgTx) FindRef(gateway string, refs []string) (string, error) {
	if len(refs) == 0 {
		return "", nil
	}
	known := true
	for _, r := range refs {
		if order, ok := t.refs[[2]string{gateway, r}]; !ok {
			known = false
			break
		} else if order != "" {
			return order, nil
		}
	}
	if known {
		return "", nil
	}
	keys := make([][]byte, len(refs))
	for i, r := range refs {
		keys[i] = []byte(r)
	}
	var order []byte
	_, err := t.row(`SELECT r.order_id FROM payment_refs r
		JOIN unnest($2::bytea[]) WITH ORDINALITY AS u(ref, n) ON r.ref = u.ref
		WHERE r.gateway = $1 ORDER BY u.n LIMIT 1`, []any{gateway, keys}, &order)
	return string(order), err
}

func (t *pgTx) FactHolder(key string) (uint64, error) {
	if id, ok := t.facts[key]; ok {
		return id, nil
	}
	var id int64
	_, err := t.row(`SELECT id FROM facts WHERE key = $1`, []any{[]byte(key)}, &id)
	return uint64(id), err
}

// storedOrder reads order id's row: the order (without its facts,
// history and txn ids when it has a tally) and its tally (nil: a small
// order, holding them); nil when there is no such order.
func storedOrder(row rowReader, id string) (*ipn.Order, *ipn.Tally, error) {
	return readOrder(row, id, "")
}

// lockedOrder is storedOrder in a transaction that writes the order: the
// row stays locked to its end. The pipeline and the recording of
// delivery results (a skipped item's line in the order's history) both
// write orders: each reads the order as the other committed it, and
// neither write is lost.
func lockedOrder(row rowReader, id string) (*ipn.Order, *ipn.Tally, error) {
	return readOrder(row, id, " FOR NO KEY UPDATE")
}

func readOrder(row rowReader, id, lock string) (*ipn.Order, *ipn.Tally, error) {
	var rec, tally []byte
	found, err := row(`SELECT record, tally FROM orders WHERE id = $1`+lock, []any{[]byte(id)}, &rec, &tally)
	if err != nil || !found {
		return nil, nil, err
	}
	o := new(ipn.Order)
	if err := decode(rec, o, fmt.Sprintf("order %q", id)); err != nil {
		return nil, nil, err
	}
	if tally == nil {
		return o, nil, nil
	}
	t := new(ipn.Tally)
	if err := decode(tally, t, fmt.Sprintf("tally of order %q", id)); err != nil {
		return nil, nil, err
	}
	return o, t, nil
}

// OrderState reads order id as the bbolt store's orderState does: a
// small order comes whole and without state; a large one comes without
// its facts and history, with the tally records ipn.TallyKeys names.
func (t *pgTx) OrderState(id string, ev *ipn.Event, ac ipn.ApplyContext) (*ipn.Order, *ipn.OrderState, error) {
	o, tally, err := lockedOrder(t.row, id)
	if err != nil || o == nil || tally == nil {
		return o, nil, err
	}
	oid := []byte(id)
	st := &ipn.OrderState{Tally: *tally}
	var seq *int64
	var fact []byte
	found, err := t.row(`SELECT k.seq, f.fact FROM order_fact_keys k
		LEFT JOIN order_facts f ON f.order_id = k.order_id AND f.seq = k.seq
		WHERE k.order_id = $1 AND k.key = $2`, []any{oid, []byte(ipn.FactKey(id, ev, ac))}, &seq, &fact)
	if err != nil {
		return nil, nil, err
	}
	if found && seq != nil {
		st.FactSeq = uint64(*seq)
		var f ipn.OrderFact
		if fact != nil {
			if err := decode(fact, &f, fmt.Sprintf("fact %d of order %q", *seq, id)); err != nil {
				return nil, nil, err
			}
		}
		st.Fact = &f
	}
	have := map[string]ipn.Group{}
	for {
		keys, full := ipn.TallyKeys(o, ev, ac, st.Fact, have)
		if full {
			st.Full = true
			if st.All, err = readSeq[ipn.OrderFact](t.rows, "order_facts", "fact", id); err != nil {
				return nil, nil, err
			}
			break
		}
		if len(keys) == 0 {
			st.Groups = have
			break
		}
		bk := make([][]byte, len(keys))
		for i, k := range keys {
			bk[i] = []byte(k)
			have[k] = ipn.Group{} // a missing record is the zero Group
		}
		err := t.rows(`SELECT key, grp FROM order_groups WHERE order_id = $1 AND key = ANY($2::bytea[])`, []any{oid, bk},
			func(rows pgx.Rows) error {
				var k, v []byte
				if err := rows.Scan(&k, &v); err != nil {
					return err
				}
				var g ipn.Group
				if err := decode(v, &g, fmt.Sprintf("tally record %q of order %q", k, id)); err != nil {
					return err
				}
				have[string(k)] = g
				return nil
			})
		if err != nil {
			return nil, nil, err
		}
	}
	if !o.Registered {
		return o, st, nil
	}
	err = t.rows(`SELECT amount, grp FROM order_oneoffs WHERE order_id = $1 ORDER BY key LIMIT 2`, []any{oid},
		func(rows pgx.Rows) error {
			var amount string
			var grp []byte
			if err := rows.Scan(&amount, &grp); err != nil {
				return err
			}
			st.Smallest = append(st.Smallest, ipn.OneOff{Group: string(grp), Amount: amount})
			return nil
		})
	return o, st, err
}

// readSeq reads every record of order id in table (facts, history), in
// sequence order, from column col.
func readSeq[T any](rows rowsReader, table, col, id string) ([]T, error) {
	return readSeqWhere[T](rows, table, col, id, `ORDER BY seq`)
}

// readSeqWhere reads the records of order id in table from column col
// that the rest of the query, tail, selects, in its order.
func readSeqWhere[T any](rows rowsReader, table, col, id, tail string) ([]T, error) {
	var out []T
	err := rows(`SELECT seq, `+col+` FROM `+table+` WHERE order_id = $1 `+tail, []any{[]byte(id)}, func(r pgx.Rows) error {
		var seq int64
		var b []byte
		if err := r.Scan(&seq, &b); err != nil {
			return err
		}
		var x T
		if err := decode(b, &x, fmt.Sprintf("%s %d of order %q", table, seq, id)); err != nil {
			return err
		}
		out = append(out, x)
		return nil
	})
	return out, err
}

func (t *pgTx) Orphans(gateway, ref string) ([]record.Orphan, error) {
	var found []record.Orphan
	err := t.rows(`SELECT id, parked FROM orphans WHERE gateway = $1 AND ref = $2 ORDER BY id`, []any{gateway, []byte(ref)},
		func(rows pgx.Rows) error {
			var id int64
			var b []byte
			if err := rows.Scan(&id, &b); err != nil {
				return err
			}
			p := record.Orphan{ID: uint64(id)}
			if err := json.Unmarshal(b, &p.Parked); err != nil || p.Parked.Event == nil {
				return fmt.Errorf("%w: orphan %d: %v", ipn.ErrCorrupt, id, err)
			}
			found = append(found, p)
			return nil
		})
	return found, err
}

func (t *pgTx) ParkedDue(cutoff time.Time, max int) ([]record.Due, error) {
	var due []record.Due
	err := t.rows(`SELECT at, id FROM parked_due WHERE at <= $1 ORDER BY at, id LIMIT $2`, []any{cutoff, max},
		func(rows pgx.Rows) error {
			var d record.Due
			var id int64
			if err := rows.Scan(&d.At, &id); err != nil {
				return err
			}
			d.ID = uint64(id)
			due = append(due, d)
			return nil
		})
	return due, err
}

func (t *pgTx) PutState(id uint64, p *ipn.Processing) error {
	if err := t.lock(id); err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	var was []byte
	known := false
	if t.states != nil {
		was, known = t.states[id]
		t.states[id] = b
	}
	if err := t.indexState(id, was, known, p); err != nil { // dashboard.go
		return err
	}
	if err := t.exec(`INSERT INTO processing (id, state, record) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record`, int64(id), string(p.State), b); err != nil {
		return err
	}
	return t.exec(`UPDATE notifications SET state = $2 WHERE id = $1 AND state <> $2`, int64(id), string(p.State))
}

func (t *pgTx) Schedule(id uint64, due time.Time, gateway string) error {
	return t.exec(`INSERT INTO retries (due, id, gateway) VALUES ($1, $2, $3)
		ON CONFLICT (due, id) DO UPDATE SET gateway = excluded.gateway`, due, int64(id), gateway)
}

func (t *pgTx) Unschedule(id uint64, due time.Time) error {
	return t.exec(`DELETE FROM retries WHERE due = $1 AND id = $2`, due, int64(id))
}

func (t *pgTx) DropRetries(id uint64) error {
	return t.exec(`DELETE FROM retries WHERE id = $1`, int64(id))
}

func (t *pgTx) ClaimFact(key string, id, prev uint64) error {
	if t.facts != nil {
		t.facts[key] = id
	}
	return t.exec(`INSERT INTO facts (key, id) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET id = excluded.id`, []byte(key), int64(id))
}

func (t *pgTx) ReleaseFact(key string) error {
	if t.facts != nil {
		t.facts[key] = 0
	}
	return t.exec(`DELETE FROM facts WHERE key = $1`, []byte(key))
}

// Fulfil records what a change of an order delivers (SPEC §11), as the
// bbolt store's: fulfil.Apply on the transaction (fulfil.go).
func (t *pgTx) Fulfil(old, next *ipn.Order, w *ipn.OrderWrite, ev *ipn.Event, effects []ipn.Effect, now time.Time) ([]ipn.Effect, error) {
	return fulfil.Apply(pgFulfil{t}, t.db.catalog.Load(), rand.Reader, old, next, w, ev, effects, now)
}

// smallOrder is the most facts, and the most history entries, an order
// keeps inside its record (as the bbolt store's inlineEntries).
const smallOrder = 8

// PutOrder writes what applying one event decided, as the bbolt store's
// recordOrder: a small order whole in its row; past smallOrder facts or
// history entries, its facts, history and tally records in rows of
// their own, of which applying an event writes the few it changed.
func (t *pgTx) PutOrder(old, next *ipn.Order, st *ipn.OrderState, w *ipn.OrderWrite) error {
	t.counts.order(old, next) // dashboard.go
	small := len(next.Facts) <= smallOrder && len(next.History) <= smallOrder
	if old == nil && st == nil {
		// A new order is inserted, never written over one another
		// transaction committed after this one read none (the admin
		// API's CreateOrder, decisions.go): that fails the transaction
		// (a unique violation), and its batch is decided again on the
		// order as it stands.
		if small {
			b, err := json.Marshal(next)
			if err != nil {
				return err
			}
			return t.exec(`INSERT INTO orders (id, status, test, updated_at, record) VALUES ($1, $2, $3, $4, $5)`,
				[]byte(next.ID), string(next.Status), next.Test, next.UpdatedAt, b)
		}
		// (Written whole by splitOrder after.)
		if err := t.exec(`INSERT INTO orders (id, status, updated_at, record) VALUES ($1, '', '-infinity', '{}')`, []byte(next.ID)); err != nil {
			return err
		}
	}
	switch {
	case st != nil:
		return t.writeOrder(next, st, w)
	case !small:
		return t.splitOrder(next)
	}
	return t.putOrder(next, nil)
}

// putOrder writes order o's row: with its tally tl, without its facts,
// history and txn ids (kept apart); tl nil: a small order, with them.
func (t *pgTx) putOrder(o *ipn.Order, tl *ipn.Tally) error {
	rec := *o
	var tally []byte
	if tl != nil {
		rec.Facts, rec.History, rec.TxnIDs = nil, nil, nil
		var err error
		if tally, err = json.Marshal(tl); err != nil {
			return err
		}
	}
	b, err := json.Marshal(&rec)
	if err != nil {
		return err
	}
	return t.exec(`INSERT INTO orders (id, status, test, updated_at, record, tally) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, test = excluded.test, updated_at = excluded.updated_at,
			record = excluded.record, tally = excluded.tally`,
		[]byte(o.ID), string(o.Status), o.Test, o.UpdatedAt, b, tally)
}

func (t *pgTx) putJSON(sql string, args ...any) error {
	last := len(args) - 1
	b, err := json.Marshal(args[last])
	if err != nil {
		return err
	}
	args[last] = b
	return t.exec(sql, args...)
}

const (
	upsertFact = `INSERT INTO order_facts (order_id, seq, fact) VALUES ($1, $2, $3)
		ON CONFLICT (order_id, seq) DO UPDATE SET fact = excluded.fact`
	upsertFactKey = `INSERT INTO order_fact_keys (order_id, key, seq) VALUES ($1, $2, $3)
		ON CONFLICT (order_id, key) DO UPDATE SET seq = excluded.seq`
	upsertChange = `INSERT INTO order_history (order_id, seq, change) VALUES ($1, $2, $3)
		ON CONFLICT (order_id, seq) DO UPDATE SET change = excluded.change`
)

// writeOrder writes order o and w, decided on st (w nil: nothing was
// applied).
func (t *pgTx) writeOrder(o *ipn.Order, st *ipn.OrderState, w *ipn.OrderWrite) error {
	if w == nil {
		return nil
	}
	oid := []byte(o.ID)
	if err := t.putOrder(o, &w.Tally); err != nil {
		return err
	}
	if w.Replaces {
		if err := t.exec(`DELETE FROM order_facts WHERE order_id = $1 AND seq = $2`, oid, int64(st.FactSeq)); err != nil {
			return err
		}
	}
	if err := t.putJSON(upsertFact, oid, int64(w.FactSeq), w.Fact); err != nil {
		return err
	}
	if err := t.exec(upsertFactKey, oid, []byte(w.Fact.Key), int64(w.FactSeq)); err != nil {
		return err
	}
	if err := t.putJSON(upsertChange, oid, int64(o.Changes-1), w.Change); err != nil {
		return err
	}
	var before map[string]ipn.Group
	if w.Full {
		if err := t.exec(`DELETE FROM order_groups WHERE order_id = $1`, oid); err != nil {
			return err
		}
		if err := t.exec(`DELETE FROM order_oneoffs WHERE order_id = $1`, oid); err != nil {
			return err
		}
	} else {
		before = st.Groups
	}
	return t.putGroups(o, before, w.Groups)
}

// putGroups writes order o's changed tally records (was: as they were)
// and, for a registered order, moves their entries in the one-off index.
func (t *pgTx) putGroups(o *ipn.Order, was, groups map[string]ipn.Group) error {
	oid := []byte(o.ID)
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		g := groups[k]
		if a, ok := ipn.OneOffAmount(k, was[k]); ok && o.Registered {
			if err := t.exec(`DELETE FROM order_oneoffs WHERE order_id = $1 AND key = $2`, oid, ipn.OneOffKey(a, k)); err != nil {
				return err
			}
		}
		if a, ok := ipn.OneOffAmount(k, g); ok && o.Registered {
			if err := t.exec(`INSERT INTO order_oneoffs (order_id, key, amount, grp) VALUES ($1, $2, $3, $4)
				ON CONFLICT (order_id, key) DO UPDATE SET amount = excluded.amount, grp = excluded.grp`,
				oid, ipn.OneOffKey(a, k), a, []byte(k)); err != nil {
				return err
			}
		}
		if g == (ipn.Group{}) {
			if err := t.exec(`DELETE FROM order_groups WHERE order_id = $1 AND key = $2`, oid, []byte(k)); err != nil {
				return err
			}
			continue
		}
		if err := t.putJSON(`INSERT INTO order_groups (order_id, key, grp) VALUES ($1, $2, $3)
			ON CONFLICT (order_id, key) DO UPDATE SET grp = excluded.grp`, oid, []byte(k), g); err != nil {
			return err
		}
	}
	return nil
}

// splitOrder writes order o, which holds its facts and history and has
// outgrown smallOrder, with them in rows of their own and its tally.
func (t *pgTx) splitOrder(o *ipn.Order) error {
	tl, groups := ipn.RebuildTally(o)
	oid := []byte(o.ID)
	for _, table := range []string{"order_facts", "order_fact_keys", "order_history", "order_groups", "order_oneoffs"} {
		if err := t.exec(`DELETE FROM `+table+` WHERE order_id = $1`, oid); err != nil {
			return err
		}
	}
	for i, f := range o.Facts {
		if err := t.putJSON(upsertFact, oid, int64(i), f); err != nil {
			return err
		}
		if err := t.exec(upsertFactKey, oid, []byte(f.Key), int64(i)); err != nil {
			return err
		}
	}
	for i, h := range o.History {
		if err := t.putJSON(upsertChange, oid, int64(i), h); err != nil {
			return err
		}
	}
	if err := t.putGroups(o, nil, groups); err != nil {
		return err
	}
	next := *o
	next.Changes = max(o.Changes, len(o.History))
	return t.putOrder(&next, &tl)
}

// Enqueue puts effects in the outbox, as the bbolt store's enqueue: a
// shop callback is two items when the script is enabled too; an effect
// whose cause was queued before, or whose kind is not enabled, is left
// out. Ids come from a counter whose row stays locked to the commit, so
// that they grow in commit order.
func (t *pgTx) Enqueue(effects []ipn.Effect, id uint64, now time.Time) error {
	for _, e := range effects {
		if e.Kind == ipn.EffectShopCallback {
			s := e
			s.Kind, s.Cause = ipn.EffectShopScript, "script/"+e.Cause
			if err := t.enqueueOne(s, id, now); err != nil {
				return err
			}
		}
		if err := t.enqueueOne(e, id, now); err != nil {
			return err
		}
	}
	if len(effects) > 0 && !t.outboxNotified {
		// The leader's outbox worker (Deliveries.OutboxWake) is woken
		// when this commits.
		t.outboxNotified = true
		return t.exec(`SELECT pg_notify($1, '')`, outboxChannel)
	}
	return nil
}

// enqueueOne queues effect e in one statement (no round trip of its
// own): the counter moves and the item is inserted unless an item of the
// same cause is queued already.
func (t *pgTx) enqueueOne(e ipn.Effect, notification uint64, now time.Time) error {
	if k := t.db.kinds.Load(); k != nil && *k != nil && !(*k)[e.Kind] {
		return nil
	}
	b, err := json.Marshal(&e)
	if err != nil {
		return err
	}
	t.counts.outboxQueued = true
	t.queue(`WITH n AS (
			UPDATE ipnd_counters SET value = value + 1
			WHERE name = 'outbox' AND NOT EXISTS (SELECT 1 FROM outbox WHERE cause = $3)
			RETURNING value)
		INSERT INTO outbox (id, kind, order_id, cause, notification, effect, delivery_id, created_at, state, next_attempt)
		SELECT value, $1, $2, $3, $4, $5, 'ipnd_' || $6::text || '_' || value, $7, 'pending', $7 FROM n RETURNING kind`,
		[]any{e.Kind, []byte(e.OrderID), []byte(e.Cause), int64(notification), b, t.db.runID, now.UTC()}, func(r pgx.Rows) error {
			var kind string
			if err := r.Scan(&kind); err != nil {
				return err
			}
			t.counts.outboxItem(kind, "", ipn.OutboxPending) // dashboard.go
			return nil
		})
	return nil
}

func (t *pgTx) PutSubscription(ev *ipn.Event, ac ipn.ApplyContext) error {
	var old *ipn.Subscription
	var b []byte
	found, err := t.row(`SELECT record FROM subscriptions WHERE id = $1`, []any{[]byte(ev.SubscriptionID)}, &b)
	if err != nil {
		return err
	}
	if found {
		old = new(ipn.Subscription)
		if err := decode(b, old, fmt.Sprintf("subscription %q", ev.SubscriptionID)); err != nil {
			return err
		}
	}
	next, changed := ipn.ApplySubscription(old, ev, ac)
	if !changed {
		return nil
	}
	if b, err = json.Marshal(next); err != nil {
		return err
	}
	return t.exec(`INSERT INTO subscriptions (id, status, record) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record`, []byte(next.ID), string(next.Status), b)
}

func (t *pgTx) Park(gateway string, id uint64, w ipn.Parked) error {
	refs := w.Event.PaymentRefs()
	if len(refs) == 0 {
		return nil
	}
	var old []byte
	found, err := t.row(`SELECT parked FROM orphans WHERE gateway = $1 AND ref = $2 AND id = $3`,
		[]any{gateway, []byte(refs[0]), int64(id)}, &old)
	if err != nil {
		return err
	}
	if found {
		// Parked already (a replay of a parked event): it keeps its time.
		var prev ipn.Parked
		if json.Unmarshal(old, &prev) == nil && !prev.At.IsZero() {
			w.At = prev.At
		}
	} else if err := t.exec(`INSERT INTO parked_due (at, id, gateway, ref) VALUES ($1, $2, $3, $4)
		ON CONFLICT (at, id) DO UPDATE SET gateway = excluded.gateway, ref = excluded.ref`,
		w.At, int64(id), gateway, []byte(refs[0])); err != nil {
		return err
	}
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if err := t.exec(`INSERT INTO orphans (gateway, ref, id, parked) VALUES ($1, $2, $3, $4)
			ON CONFLICT (gateway, ref, id) DO UPDATE SET parked = excluded.parked`, gateway, []byte(r), int64(id), b); err != nil {
			return err
		}
	}
	return nil
}

func (t *pgTx) Unpark(gateway string, id uint64, w ipn.Parked) error {
	refs := w.Event.PaymentRefs()
	keys := make([][]byte, len(refs))
	for i, r := range refs {
		keys[i] = []byte(r)
	}
	if err := t.exec(`DELETE FROM orphans WHERE gateway = $1 AND id = $2 AND ref = ANY($3::bytea[])`, gateway, int64(id), keys); err != nil {
		return err
	}
	return t.exec(`DELETE FROM parked_due WHERE at = $1 AND id = $2`, w.At, int64(id))
}

func (t *pgTx) TakeDue(d record.Due) (string, *record.Orphan, error) {
	var gateway string
	var ref []byte
	found, err := t.row(`DELETE FROM parked_due WHERE at = $1 AND id = $2 RETURNING gateway, ref`, []any{d.At, int64(d.ID)}, &gateway, &ref)
	if err != nil || !found {
		return "", nil, err
	}
	var b []byte
	found, err = t.row(`SELECT parked FROM orphans WHERE gateway = $1 AND ref = $2 AND id = $3`, []any{gateway, ref, int64(d.ID)}, &b)
	if err != nil {
		return "", nil, err
	}
	if !found {
		return gateway, nil, nil // adopted meanwhile
	}
	o := &record.Orphan{ID: d.ID}
	if err := json.Unmarshal(b, &o.Parked); err != nil || o.Parked.Event == nil {
		return "", nil, fmt.Errorf("%w: orphan %d: %v", ipn.ErrCorrupt, d.ID, err)
	}
	return gateway, o, nil
}

func (t *pgTx) LinkRef(gateway, ref, orderID string) error {
	k := [2]string{gateway, ref}
	if order, ok := t.refs[k]; ok && order == "" {
		t.refs[k] = orderID
	}
	return t.exec(`INSERT INTO payment_refs (gateway, ref, order_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		gateway, []byte(ref), []byte(orderID))
}

func (t *pgTx) MoveCursor(cursor uint64) error {
	return t.exec(`UPDATE ipnd_counters SET value = $1 WHERE name = 'cursor' AND value < $1`, int64(cursor))
}
