package pg

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/ipn"
	"ipnd/record"
	"ipnd/store"
)

// ingestChannel is the channel of the NOTIFY that a commit of new
// notifications (Append) and a replay send, on which the leader's
// Journal listens.
const ingestChannel = "ipnd_ingest"

// Journal is the PostgreSQL store as the pipeline sees it
// (pipeline.Journal), for the process that leads (Leader): every write
// transaction is fenced by the lease's epoch, so that the batch of a
// process whose lease has ended fails with ErrNotLeader and nothing of
// it is applied. Its transactions end with ctx (the lead's context).
type Journal struct {
	db     *DB
	ctx    context.Context
	leader *Leader // nil: not fenced (one process alone on the database)
	epoch  int64
	wake   chan struct{}

	damagedSeen atomic.Int64
}

// Journal returns the pipeline's journal of the process that leads with
// epoch (l nil: a process alone on the database, unfenced), until ctx
// ends. It listens for the notifications other processes ingest
// (LISTEN/NOTIFY, on a connection of its own, connected again when it
// is lost); each time it (re)connects it wakes the pipeline, which then
// reads what came meanwhile.
func (db *DB) Journal(ctx context.Context, l *Leader, epoch int64) *Journal {
	j := &Journal{db: db, ctx: ctx, leader: l, epoch: epoch, wake: make(chan struct{}, 1)}
	go j.listen()
	return j
}

// Wake returns the channel that receives a value after notifications
// are committed (by any process) or a replay is asked.
func (j *Journal) Wake() <-chan struct{} { return j.wake }

func (j *Journal) poke() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// listen pokes the pipeline for each NOTIFY on ingestChannel until ctx
// ends.
func (j *Journal) listen() { listen(j.ctx, j.db, ingestChannel, j.poke) }

// txTimeout bounds one transaction of the pipeline.
func (j *Journal) txTimeout() time.Duration { return 6 * j.db.opts.Timeout }

// update is record.Update on PostgreSQL: one transaction, fenced by the
// lease's epoch, committed when fn returns nil.
func (j *Journal) update(fn func(record.Tx) error) error { return j.updateFor(nil)(fn) }

// updateFor is update, reading ahead what deciding outs reads first
// (pgTx.prefetch).
func (j *Journal) updateFor(outs []ipn.Outcome) record.Update {
	return func(fn func(record.Tx) error) error { return j.run(outs, fn) }
}

func (j *Journal) run(outs []ipn.Outcome, fn func(record.Tx) error) error {
	ctx, cancel := context.WithTimeout(j.ctx, j.txTimeout())
	defer cancel()
	tx, err := j.db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if j.leader != nil {
		if err := j.leader.Fence(ctx, tx, j.epoch); err != nil {
			return err
		}
	}
	t := &pgTx{db: j.db, ctx: ctx, tx: tx}
	if len(outs) > 0 {
		if err := t.prefetch(outs); err != nil {
			return err
		}
	}
	if err := fn(t); err != nil {
		return err
	}
	if err := t.writeCounts(); err != nil { // dashboard.go
		return err
	}
	if err := t.flush(); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
	}
	return nil
}

// Finish records the outcomes of a batch and moves the cursor to cursor
// (when that is further): record.Finish in one fenced transaction,
// which tells every process's followers what it recorded (live.go).
func (j *Journal) Finish(outs []ipn.Outcome, cursor uint64, now time.Time) ([]ipn.Recorded, error) {
	states, damaged, err := record.FinishThen(j.updateFor(outs), outs, cursor, now, func(tx record.Tx, states []ipn.Recorded) error {
		return tx.(*pgTx).notifyFinished(outs, states, now)
	})
	if err == nil {
		j.damagedSeen.Add(int64(damaged))
	}
	return states, unavailable(err)
}

// DamagedSeen counts the outcomes recorded as failed because a record
// they read did not decode (see ipn.Unreadable).
func (j *Journal) DamagedSeen() int64 { return j.damagedSeen.Load() }

// ExpireParked fails the parked events that have waited longer than
// orders.park_for at now: record.ExpireParked in one fenced transaction,
// of at most 256 events. It returns how many it failed or made orders
// of.
func (j *Journal) ExpireParked(now time.Time) (int, error) {
	parkFor := j.db.ParkFor()
	if parkFor <= 0 {
		return 0, nil
	}
	var due bool
	ctx, cancel := context.WithTimeout(j.ctx, j.db.opts.Timeout)
	err := j.db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM parked_due WHERE at <= $1)`, now.Add(-parkFor)).Scan(&due)
	cancel()
	if err != nil || !due {
		return 0, unavailable(err)
	}
	n := 0
	err = j.update(func(tx record.Tx) error {
		var err error
		n, err = record.ExpireParked(tx, parkFor, 256, now)
		return err
	})
	return n, unavailable(err)
}

// unavailable wraps a failure to reach or use the database (nil: nil).
func unavailable(err error) error {
	if err == nil || errors.Is(err, ipn.ErrNotFound) || errors.Is(err, ipn.ErrCorrupt) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotLeader) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// skipScan bounds how many due retries one call asks skip about (as the
// bbolt store's): past them, the retries of a gateway skip named already
// in the call are passed over without asking.
const skipScan = 4096

// retrySkip asks skip about the due retries of one call, in due order.
type retrySkip struct {
	ctx     context.Context
	tx      pgx.Tx
	skip    func(gateway string, id uint64, state func() *ipn.Processing) bool
	skipped int
	held    map[string]bool
}

// leave reports whether the retry of notification id (of gateway) stays
// where it is. One whose gateway is unknown is never left: Finish
// records it.
func (r *retrySkip) leave(gateway string, id uint64) bool {
	if r.skip == nil || gateway == "" {
		return false
	}
	if r.skipped >= skipScan && r.held[gateway] {
		return true
	}
	if !r.skip(gateway, id, func() *ipn.Processing {
		p, err := readState(queried(r.ctx, r.tx), id)
		if err != nil {
			return nil
		}
		return p
	}) {
		return false
	}
	if r.held == nil {
		r.held = map[string]bool{}
	}
	r.skipped++
	r.held[gateway] = true
	return true
}

type retryRow struct {
	due     time.Time
	id      uint64
	gateway string
}

// retryPage reads up to n retry entries after (due, id), in due order,
// due at or before until.
func retryPage(ctx context.Context, tx pgx.Tx, after retryRow, until time.Time, n int) ([]retryRow, error) {
	rows, err := tx.Query(ctx, `SELECT due, id, gateway FROM retries WHERE (due, id) > ($1, $2) AND due <= $3
		ORDER BY due, id LIMIT $4`, after.due, int64(after.id), until, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []retryRow
	for rows.Next() {
		var r retryRow
		var id int64
		if err := rows.Scan(&r.due, &id, &r.gateway); err != nil {
			return nil, err
		}
		r.id = uint64(id)
		out = append(out, r)
	}
	return out, rows.Err()
}

// readOnly runs fn in a read-only transaction that sees one snapshot.
func (j *Journal) readOnly(fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(j.ctx, j.txTimeout())
	defer cancel()
	tx, err := j.db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return unavailable(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return unavailable(fn(ctx, tx))
}

func cursorOf(ctx context.Context, q querier) (uint64, error) {
	var c int64
	err := q.QueryRow(ctx, `SELECT value FROM ipnd_counters WHERE name = 'cursor'`).Scan(&c)
	return uint64(c), err
}

// PendingExcept returns the notifications to process now, as the bbolt
// store's: the first ones after the cursor (Fresh; settled ones only
// before the first unsettled one, not counting toward max), then the
// retries due at now, leaving out those skip names.
func (j *Journal) PendingExcept(now time.Time, max int, skip func(gateway string, id uint64, state func() *ipn.Processing) bool) ([]ipn.Work, error) {
	var out []ipn.Work
	err := j.readOnly(func(ctx context.Context, tx pgx.Tx) error {
		cursor, err := cursorOf(ctx, tx)
		if err != nil {
			return err
		}
		type pick struct {
			id    uint64
			p     *ipn.Processing
			fresh bool
		}
		var picks []pick
		rows, err := tx.Query(ctx, `SELECT n.id, p.record FROM notifications n LEFT JOIN processing p ON p.id = n.id
			WHERE n.id > $1 ORDER BY n.id LIMIT $2`, int64(cursor), 64*max)
		if err != nil {
			return err
		}
		todo, blocked := 0, false
		for rows.Next() && todo < max {
			var id int64
			var rec []byte
			if err := rows.Scan(&id, &rec); err != nil {
				rows.Close()
				return err
			}
			var p *ipn.Processing
			if rec != nil {
				p = new(ipn.Processing)
				if decode(rec, p, "") != nil {
					p = nil // taken as received: Finish records it as failed
				}
			}
			settled := p != nil && p.Settled(now)
			if settled && blocked {
				continue
			}
			if !settled {
				todo++
				blocked = true
			}
			picks = append(picks, pick{uint64(id), p, true})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rs := &retrySkip{ctx: ctx, tx: tx, skip: skip}
		var after retryRow
	retries:
		for todo < max {
			page, err := retryPage(ctx, tx, after, now, 1024)
			if err != nil {
				return err
			}
			for _, r := range page {
				after = r
				if todo >= max {
					break retries
				}
				if r.id > cursor || rs.leave(r.gateway, r.id) {
					continue // ahead of the cursor: taken as fresh
				}
				p, err := readState(queried(ctx, tx), r.id)
				if errors.Is(err, ipn.ErrCorrupt) {
					p = nil
				} else if err != nil {
					return err
				}
				picks = append(picks, pick{r.id, p, false})
				todo++
			}
			if len(page) < 1024 {
				break
			}
		}
		ids := make([]int64, len(picks))
		for i, pk := range picks {
			ids[i] = int64(pk.id)
		}
		notes, err := readNotifications(ctx, tx, ids)
		if err != nil {
			return err
		}
		for _, pk := range picks {
			n, ok := notes[pk.id]
			if !ok && !pk.fresh {
				continue
			}
			if n == nil {
				n = &ipn.Notification{ID: pk.id} // Finish records it as failed
			}
			p := pk.p
			if p == nil {
				p = record.Received(n)
			}
			out = append(out, ipn.Work{Notification: n, Processing: p, Fresh: pk.fresh})
		}
		return nil
	})
	return out, err
}

// readNotifications reads the notifications ids in one query: by id,
// nil for one whose headers do not decode, none for one not stored.
func readNotifications(ctx context.Context, q querier, ids []int64) (map[uint64]*ipn.Notification, error) {
	rows, err := q.Query(ctx, `SELECT id, gateway, dedup_key, received_at, remote_addr, content_type, headers, body, body_sha256, purged_at
		FROM notifications WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[uint64]*ipn.Notification, len(ids))
	for rows.Next() {
		var id int64
		n := &ipn.Notification{}
		var headers []byte
		var purged *time.Time
		if err := rows.Scan(&id, &n.Gateway, textOf{&n.DedupKey}, &n.ReceivedAt, &n.RemoteAddr, textOf{&n.ContentType}, &headers, &n.Body, &n.BodySHA256, &purged); err != nil {
			return nil, err
		}
		n.ID = uint64(id)
		if purged != nil {
			n.Purged = *purged
		}
		if decode(headers, &n.Headers, "") != nil {
			n = nil
		}
		out[uint64(id)] = n
	}
	return out, rows.Err()
}

// NextDueExcept is when the first retry skip does not leave out is due,
// or the oldest parked event expires, if sooner.
func (j *Journal) NextDueExcept(skip func(gateway string, id uint64, state func() *ipn.Processing) bool) (time.Time, bool) {
	var due time.Time
	var ok bool
	j.readOnly(func(ctx context.Context, tx pgx.Tx) error {
		rs := &retrySkip{ctx: ctx, tx: tx, skip: skip}
		after := retryRow{due: time.Unix(0, 0).Add(-1 << 62)}
	pages:
		for {
			page, err := retryPage(ctx, tx, after, time.Unix(0, 0).Add(1<<62), 1024)
			if err != nil {
				return err
			}
			for _, r := range page {
				after = r
				if !rs.leave(r.gateway, r.id) {
					due, ok = r.due, true
					break pages
				}
			}
			if len(page) < 1024 {
				break
			}
		}
		if parkFor := j.db.ParkFor(); parkFor > 0 {
			var at *time.Time
			if err := tx.QueryRow(ctx, `SELECT min(at) FROM parked_due`).Scan(&at); err != nil {
				return err
			}
			if at != nil && (!ok || at.Add(parkFor).Before(due)) {
				due, ok = at.Add(parkFor), true
			}
		}
		return nil
	})
	return due, ok
}

// Cursor returns the pipeline's cursor: every id up to it has been
// processed or scheduled.
func (db *DB) Cursor(ctx context.Context) (uint64, error) {
	c, err := cursorOf(ctx, db.pool)
	return c, unavailable(err)
}

// Replay schedules notification id to be processed again now, whatever
// its state (any process may ask; the leader's pipeline is woken).
// Effects that already happened are keyed by their cause and are not
// repeated.
func (db *DB) Replay(ctx context.Context, id uint64, now time.Time) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	t := &pgTx{db: db, ctx: ctx, tx: tx}
	n, err := t.Notification(id) // locks it against the leader's batch
	if err != nil {
		return unavailable(err)
	}
	if !n.Purged.IsZero() {
		return fmt.Errorf("notification %d: its body was purged, it cannot be processed again: %w", id, store.ErrPurged)
	}
	p, err := t.State(id)
	if err != nil {
		return unavailable(err)
	}
	if p == nil {
		p = record.Received(n)
	}
	if !p.NextAttempt.IsZero() {
		if err := t.Unschedule(id, p.NextAttempt); err != nil {
			return unavailable(err)
		}
	}
	record.Replay(p, now)
	if err := t.Schedule(id, now, n.Gateway); err != nil {
		return unavailable(err)
	}
	if err := t.PutState(id, p); err != nil {
		return unavailable(err)
	}
	if err := t.exec(`SELECT pg_notify($1, '')`, ingestChannel); err != nil {
		return unavailable(err)
	}
	if err := t.writeCounts(); err != nil { // dashboard.go
		return unavailable(err)
	}
	if err := t.flush(); err != nil {
		return unavailable(err)
	}
	return unavailable(tx.Commit(ctx))
}
