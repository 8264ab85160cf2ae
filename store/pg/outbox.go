package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/ipn"
)

// outboxChannel is the channel of the NOTIFY that a transaction queuing
// outbox items sends (pgTx.Enqueue), on which the leader's outbox worker
// listens (Deliveries.OutboxWake). Whatever else makes items due from
// another process (a manual retry) sends it too.
const outboxChannel = "ipnd_outbox"

// attemptsKept bounds the attempts kept per outbox item, the newest (as
// the bbolt store's AttemptsKept).
const attemptsKept = 20

// Deliveries is the PostgreSQL outbox as the delivery worker sees it
// (notify.Outbox), for the process that leads (Leader), with the bbolt
// store's semantics (store/outbox.go): each lane takes its own due
// items, earliest first; the shop callbacks and script runs of one order
// come one at a time, in queue order (an order's item is due only when
// it is the oldest pending one of its order in its lane); the results of
// a call of FinishOutbox are recorded in one transaction fenced by the
// lease's epoch, so that a process whose lease has ended records nothing
// (ErrNotLeader) and the new leader delivers the items again: at most
// the items in flight are repeated.
type Deliveries struct {
	db     *DB
	ctx    context.Context
	leader *Leader // nil: not fenced (one process alone on the database)
	epoch  int64
	wake   chan struct{}
}

// Deliveries returns the outbox worker's view of the process that leads
// with epoch (l nil: a process alone on the database, unfenced), until
// ctx ends. It listens for the items other processes queue
// (LISTEN/NOTIFY on a connection of its own, connected again when it is
// lost); each time it (re)connects it wakes the worker, which then reads
// what came meanwhile.
func (db *DB) Deliveries(ctx context.Context, l *Leader, epoch int64) *Deliveries {
	d := &Deliveries{db: db, ctx: ctx, leader: l, epoch: epoch, wake: make(chan struct{}, 1)}
	go listen(ctx, db, outboxChannel, d.poke)
	return d
}

// OutboxWake returns a channel that receives a value after outbox items
// are queued (by any process) or the next item of an order becomes due.
func (d *Deliveries) OutboxWake() <-chan struct{} { return d.wake }

func (d *Deliveries) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// listen calls poke at each NOTIFY on channel, and each time it
// (re)connects, until ctx ends.
func listen(ctx context.Context, db *DB, channel string, poke func()) {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, db.opts.Timeout)
		conn, err := pgx.ConnectConfig(cctx, db.pool.Config().ConnConfig.Copy())
		cancel()
		if err == nil {
			if _, err = conn.Exec(ctx, `LISTEN `+channel); err == nil {
				poke() // what came while nobody listened
				for err == nil {
					if _, err = conn.WaitForNotification(ctx); err == nil {
						poke()
					}
				}
			}
			conn.Close(context.WithoutCancel(ctx))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second): // the connection is lost: again after a pause
		}
	}
}

// leading fails with ErrNotLeader when this process knows that its lease
// has ended: it takes no new item then (the fence of FinishOutbox is the
// guarantee; this spares deliveries whose results would be refused).
func (d *Deliveries) leading() error {
	if d.leader == nil {
		return nil
	}
	if e, ok := d.leader.Leading(); !ok || e != d.epoch {
		return ErrNotLeader
	}
	return nil
}

// orderedKind reports whether items of kind wait for the earlier pending
// items of their order (shop callbacks and script runs, SPEC §6).
func orderedKind(kind string) bool {
	return kind == ipn.EffectShopCallback || kind == ipn.EffectShopScript
}

// duePage bounds the due entries one query reads.
const duePage = 256

// dueSlack is what the first query of DueLaneSkipping reads beyond the
// max+1 entries it needs when skip passes over none: room for the items
// in flight (a few per lane); each further query reads twice as many, up
// to duePage.
const dueSlack = 16

// DueLaneSkipping returns up to max pending items of one lane due at
// now, earliest first, passing over those for which skip returns true
// (the worker's items in flight, still pending here), and when the next
// one after them is due (zero: none; at or before now when max cut the
// list short). In the ordered lanes only the oldest pending item of each
// order is due. An item whose effect does not decode is made dead, its
// error saying so, so that it stalls nothing.
func (d *Deliveries) DueLaneSkipping(kind string, now time.Time, max int, skip func(id uint64) bool) ([]ipn.OutboxItem, time.Time, error) {
	if err := d.leading(); err != nil {
		return nil, time.Time{}, err
	}
	q := `SELECT id, next_attempt FROM outbox o WHERE state = 'pending' AND kind = $1 AND (next_attempt, id) > ($2, $3)`
	if orderedKind(kind) {
		q += ` AND (order_id = ''::bytea OR NOT EXISTS (SELECT 1 FROM outbox p
			WHERE p.state = 'pending' AND p.kind = o.kind AND p.order_id = o.order_id AND p.id < o.id))`
	}
	q += ` ORDER BY next_attempt, id LIMIT $4`
	var out []ipn.OutboxItem
	var next time.Time
	var damaged []int64
	err := d.read(func(ctx context.Context, tx querier) error {
		out, next, damaged = nil, time.Time{}, nil
		var picked []int64
		afterAt, afterID := time.Time{}, int64(0)
		page := duePage
		if max >= 0 && max+1+dueSlack < duePage {
			page = max + 1 + dueSlack
		}
	pages:
		for ; ; page = min(2*page, duePage) {
			rows, err := tx.Query(ctx, q, kind, afterAt, afterID, page)
			if err != nil {
				return err
			}
			n := 0
			var ids []int64
			var ats []time.Time
			for rows.Next() {
				var id int64
				var at time.Time
				if err := rows.Scan(&id, &at); err != nil {
					rows.Close()
					return err
				}
				ids, ats = append(ids, id), append(ats, at)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for i, id := range ids {
				n++
				afterAt, afterID = ats[i], id
				if ats[i].After(now) || len(picked) >= max {
					next = ats[i].UTC()
					break pages
				}
				if skip != nil && skip(uint64(id)) {
					continue // (not read: the caller has it)
				}
				picked = append(picked, id)
			}
			if n < page {
				break
			}
		}
		if len(picked) == 0 {
			return nil
		}
		items := map[int64]ipn.OutboxItem{}
		// Still pending: it may have changed since the first read (no
		// transaction spans both: a manual retry meanwhile is no
		// different from one just after).
		rows, err := tx.Query(ctx, `SELECT id, effect, delivery_id, notification, created_at, state, attempts, next_attempt, sent_at, last_error
			FROM outbox WHERE id = ANY($1) AND state = 'pending'`, picked)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			it, err := scanItem(rows)
			if err != nil {
				if it.ID == 0 {
					return err
				}
				damaged = append(damaged, int64(it.ID))
				continue
			}
			items[int64(it.ID)] = it
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range picked {
			if it, ok := items[id]; ok {
				out = append(out, it)
			}
		}
		return nil
	})
	if err == nil && len(damaged) > 0 {
		err = d.deadDamaged(damaged, now)
	}
	if err != nil {
		return nil, time.Time{}, unavailable(err)
	}
	return out, next, nil
}

// scanItem reads an outbox row (id, effect, delivery_id, notification,
// created_at, state, attempts, next_attempt, sent_at, last_error). When
// its effect does not decode the error is ipn.ErrCorrupt and the item
// has its id.
func scanItem(rows pgx.Rows) (ipn.OutboxItem, error) {
	var id, notification int64
	var b []byte
	var it ipn.OutboxItem
	var next, sent *time.Time
	if err := rows.Scan(&id, &b, &it.DeliveryID, &notification, &it.CreatedAt, &it.State, &it.Attempts, &next, &sent, &it.LastError); err != nil {
		return ipn.OutboxItem{}, err
	}
	it.ID, it.Notification, it.CreatedAt = uint64(id), uint64(notification), it.CreatedAt.UTC()
	if next != nil {
		it.NextAttempt = next.UTC()
	}
	if sent != nil {
		it.SentAt = sent.UTC()
	}
	if err := json.Unmarshal(b, &it.Effect); err != nil {
		return ipn.OutboxItem{ID: it.ID}, corrupt(fmt.Sprintf("outbox item %d", id), err)
	}
	return it, nil
}

// deadDamaged makes the pending items ids, whose effect does not decode,
// dead saying why (their email or callback is lost unless a backup has
// it), in a fenced transaction; the next item of their order is then
// due.
func (d *Deliveries) deadDamaged(ids []int64, now time.Time) error {
	err := d.update(func(ctx context.Context, t *pgTx) error {
		t.counts.outboxQueued = true
		t.queue(`UPDATE outbox SET state = 'dead', next_attempt = NULL,
			last_error = 'the stored item does not decode; its email or callback is lost unless a backup has it'
			WHERE id = ANY($1) AND state = 'pending' RETURNING kind`, []any{ids}, func(r pgx.Rows) error {
			var kind string
			if err := r.Scan(&kind); err != nil {
				return err
			}
			t.counts.outboxItem(kind, ipn.OutboxPending, ipn.OutboxDead) // dashboard.go
			return nil
		})
		return nil
	})
	if err == nil {
		d.poke()
	}
	return err
}

// read runs fn on the pool (each statement on its own: two round trips
// for a scan, not four).
func (d *Deliveries) read(fn func(ctx context.Context, q querier) error) error {
	ctx, cancel := context.WithTimeout(d.ctx, 6*d.db.opts.Timeout)
	defer cancel()
	return fn(ctx, d.db.pool)
}

// update runs fn in one transaction fenced by the lease's epoch,
// committed when fn returns nil.
// It outlives the end of d's context (by its timeout): the worker's last
// try at shutdown records the results of the deliveries made (the lease
// is released only after the worker returns; the fence refuses a
// transaction of a lease that ended meanwhile).
func (d *Deliveries) update(fn func(ctx context.Context, t *pgTx) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), 6*d.db.opts.Timeout)
	defer cancel()
	tx, err := d.db.pool.Begin(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	t := &pgTx{db: d.db, ctx: ctx, tx: tx}
	fenced := d.leader == nil
	if d.leader != nil {
		// The fence goes first, with fn's first read (one round trip):
		// its lock holds from then on, and without its row nothing
		// commits.
		sql, args := d.leader.fence(d.epoch)
		t.queue(sql, args, func(pgx.Rows) error { fenced = true; return nil })
	}
	if err := fn(ctx, t); err != nil {
		return err
	}
	if err := t.writeCounts(); err != nil { // dashboard.go
		return err
	}
	if err := t.flush(); err != nil {
		return err
	}
	if !fenced {
		return ErrNotLeader
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
	}
	return nil
}

// outboxRow is what recording a result reads of an item.
type outboxRow struct {
	kind, order  string
	state        string
	attempts     int
	notification uint64
	effect       []byte // only for the items skipped
	lastSeq      uint64 // of its attempts kept
}

// FinishOutbox records the results of delivery attempts in one
// transaction, fenced by the lease's epoch (ErrNotLeader: nothing is
// recorded), as the bbolt store's: a result for an item that changed
// since it was taken (no longer pending, or reset by a manual retry) is
// passed over, as is one for an item that is gone; a result that says
// the item was not attempted keeps its attempt count and records its
// retry time and why; each attempt is kept in the item's attempts (the
// last attemptsKept), but a success with nothing to say; a skipped item
// of an order leaves a line with the reason in the order's history; an
// item of an order's callback or script queue that is sent, dead or
// skipped makes the next one due (and wakes the worker).
func (d *Deliveries) FinishOutbox(results []ipn.OutboxResult, now time.Time) error {
	if len(results) == 0 {
		return nil
	}
	released := false
	err := d.update(func(ctx context.Context, t *pgTx) error {
		released = false
		var ids, skipped []int64
		for _, r := range results {
			ids = append(ids, int64(r.ID))
			if r.State == ipn.OutboxSkipped {
				skipped = append(skipped, int64(r.ID))
			}
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		rows := map[uint64]*outboxRow{}
		// Locked in id order: a manual retry meanwhile is recorded
		// before or after, never lost under a result.
		err := t.rows(`SELECT id, kind, order_id, state, attempts, notification,
				CASE WHEN id = ANY($2) THEN effect END,
				(SELECT max(seq) FROM outbox_attempts a WHERE a.outbox_id = o.id)
			FROM outbox o WHERE id = ANY($1) ORDER BY id FOR UPDATE`, []any{ids, skipped},
			func(r pgx.Rows) error {
				var id, notification int64
				var order []byte
				var seq *int64
				row := &outboxRow{}
				if err := r.Scan(&id, &row.kind, &order, &row.state, &row.attempts, &notification, &row.effect, &seq); err != nil {
					return err
				}
				row.order, row.notification = string(order), uint64(notification)
				if seq != nil {
					row.lastSeq = uint64(*seq)
				}
				rows[uint64(id)] = row
				return nil
			})
		if err != nil {
			return err
		}
		var relKinds []string
		var relOrders [][]byte
		for _, r := range results {
			old := rows[r.ID]
			if old == nil {
				continue // gone: nothing to record
			}
			want := old.attempts + 1
			if r.NotAttempted {
				want = old.attempts
			}
			if old.state != ipn.OutboxPending || r.Attempts != want || (r.NotAttempted && r.State != ipn.OutboxPending) {
				continue // changed meanwhile (a manual retry reset it): that wins
			}
			if !r.NotAttempted && !quietSuccess(r) {
				old.lastSeq++
				a := ipn.OutboxAttempt{Seq: old.lastSeq, Attempt: r.Attempts, At: now.UTC(), Result: r.State, Error: r.Error,
					Duration: r.Duration, AttemptDetail: r.Detail}
				if err := t.putJSON(`INSERT INTO outbox_attempts (outbox_id, seq, attempt) VALUES ($1, $2, $3)`,
					int64(r.ID), int64(old.lastSeq), a); err != nil {
					return err
				}
				if old.lastSeq > attemptsKept {
					if err := t.exec(`DELETE FROM outbox_attempts WHERE outbox_id = $1 AND seq <= $2`,
						int64(r.ID), int64(old.lastSeq-attemptsKept)); err != nil {
						return err
					}
				}
			}
			var next, sent *time.Time
			switch r.State {
			case ipn.OutboxPending:
				at := r.RetryAt.UTC()
				next = &at
			case ipn.OutboxSent:
				at := now.UTC()
				sent = &at
			case ipn.OutboxSkipped:
				if err := t.noteSkipped(r.ID, old, r.Error, now); err != nil {
					return err
				}
			}
			if err := t.exec(`UPDATE outbox SET state = $2, attempts = $3, last_error = $4, next_attempt = $5,
				sent_at = COALESCE($6, sent_at) WHERE id = $1`, int64(r.ID), r.State, r.Attempts, validText(r.Error), next, sent); err != nil {
				return err
			}
			t.counts.outboxItem(old.kind, old.state, r.State) // dashboard.go
			old.state, old.attempts = r.State, r.Attempts
			if r.State != ipn.OutboxPending && orderedKind(old.kind) && old.order != "" {
				relKinds, relOrders = append(relKinds, old.kind), append(relOrders, []byte(old.order))
			}
		}
		if len(relKinds) == 0 {
			return nil
		}
		// The next item of an order, if any, is due now: the worker is
		// woken (not for every result: a wake-up makes the lanes gather
		// for a moment).
		_, err = t.row(`SELECT EXISTS (SELECT 1 FROM outbox o JOIN unnest($1::text[], $2::bytea[]) AS u(kind, order_id)
			ON o.kind = u.kind AND o.order_id = u.order_id WHERE o.state = 'pending')`, []any{relKinds, relOrders}, &released)
		return err
	})
	if err != nil {
		return unavailable(err)
	}
	if released {
		d.poke()
	}
	return nil
}

// quietSuccess reports whether r is a success with nothing to say (an
// email accepted, a 2xx callback with an empty body, a script that
// printed nothing on stderr): not kept in the attempts, the item's sent
// state, attempts and sent_at are that attempt (OutboxAttempts).
func quietSuccess(r ipn.OutboxResult) bool {
	d := r.Detail
	return r.State == ipn.OutboxSent && d.Response == "" && d.SMTPReply == "" && d.Stderr == ""
}

// noteSkipped adds a line to the history of the order of skipped item id
// (none when it names no order or the order does not exist), as the
// bbolt store's.
func (t *pgTx) noteSkipped(id uint64, it *outboxRow, reason string, now time.Time) error {
	if it.order == "" {
		return nil
	}
	e := ipn.Effect{Kind: it.kind, OrderID: it.order}
	if it.effect != nil {
		// One that no longer decodes says what the row knows.
		_ = json.Unmarshal(it.effect, &e)
	}
	what := e.Kind
	if e.Template != "" {
		what += " " + e.Template
	}
	return t.appendOrderChange(it.order, func(o *ipn.Order) ipn.OrderChange {
		return ipn.OrderChange{At: now.UTC(), Notification: it.notification, From: o.Status, To: o.Status,
			Reason: fmt.Sprintf("outbox %d (%s) skipped: %s", id, what, reason)}
	})
}

// appendOrderChange adds the entry change returns to the history of
// order id, when there is such an order, as the bbolt store's: a small
// order is written whole (and split when it outgrows smallOrder), a
// large one gets a history row and its counters.
func (t *pgTx) appendOrderChange(id string, change func(o *ipn.Order) ipn.OrderChange) error {
	o, tally, err := lockedOrder(t.row, id)
	if err != nil || o == nil {
		return err
	}
	h := change(o)
	if tally == nil {
		old := *o
		next := *o
		next.History = append(slices.Clip(o.History), h)
		next.Changes = max(o.Changes, len(old.History)) + 1
		return t.PutOrder(&old, &next, nil, nil)
	}
	o.Changes++
	tally.Reach(h.To)
	if err := t.putJSON(upsertChange, []byte(id), int64(o.Changes-1), h); err != nil {
		return err
	}
	return t.putOrder(o, tally)
}

// OrderHeader returns order id without its facts, history and txn ids
// (what rendering an email needs); ipn.ErrNotFound when there is none.
func (d *Deliveries) OrderHeader(id string) (*ipn.Order, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.db.opts.Timeout)
	defer cancel()
	return d.db.OrderHeader(ctx, id)
}

// OrderHeader returns order id without its facts, history and txn ids;
// ipn.ErrNotFound when there is none.
func (db *DB) OrderHeader(ctx context.Context, id string) (*ipn.Order, error) {
	o, _, err := storedOrder(queried(ctx, db.pool), id)
	if err != nil {
		return nil, unavailable(err)
	}
	if o == nil {
		return nil, fmt.Errorf("order %q: %w", id, ipn.ErrNotFound)
	}
	o.Changes = max(o.Changes, len(o.History))
	o.History, o.Facts, o.TxnIDs = nil, nil, nil
	return o, nil
}

// OutboxAttempts returns the kept attempts of outbox item id, oldest
// first, its quiet last success (not kept) made from the item, as the
// bbolt store's; ipn.ErrNotFound when there is no such item.
func (db *DB) OutboxAttempts(ctx context.Context, id uint64) ([]ipn.OutboxAttempt, error) {
	var state string
	var attempts int
	var sent *time.Time
	err := db.pool.QueryRow(ctx, `SELECT state, attempts, sent_at FROM outbox WHERE id = $1`, int64(id)).Scan(&state, &attempts, &sent)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("outbox item %d: %w", id, ipn.ErrNotFound)
	}
	if err != nil {
		return nil, unavailable(err)
	}
	var out []ipn.OutboxAttempt
	err = queriedRows(ctx, db.pool)(`SELECT attempt FROM outbox_attempts WHERE outbox_id = $1 ORDER BY seq`, []any{int64(id)},
		func(r pgx.Rows) error {
			var b []byte
			if err := r.Scan(&b); err != nil {
				return err
			}
			var a ipn.OutboxAttempt
			if json.Unmarshal(b, &a) == nil { // a damaged record is left out, the rest shown
				out = append(out, a)
			}
			return nil
		})
	if err != nil {
		return nil, unavailable(err)
	}
	if state == ipn.OutboxSent && (len(out) == 0 || out[len(out)-1].Result != ipn.OutboxSent) {
		var seq uint64
		if len(out) > 0 {
			seq = out[len(out)-1].Seq
		}
		a := ipn.OutboxAttempt{Seq: seq + 1, Attempt: attempts, Result: ipn.OutboxSent}
		if sent != nil {
			a.At = sent.UTC()
		}
		out = append(out, a)
	}
	return out, nil
}
