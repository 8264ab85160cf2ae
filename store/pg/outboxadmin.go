package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"ipnd/ipn"
	"ipnd/record"
	"ipnd/store"
)

// The operator's decisions (the admin API's, the CLI's, the
// dashboard's) on PostgreSQL, with the bbolt store's semantics
// (store/outboxdecisions.go, outbox.go, replaymatching.go), decided by
// package record for both: replays, retries, discards and resends of
// outbox items. Any process may ask them; what they make due wakes the
// leader's outbox worker (NOTIFY ipnd_outbox), a replay its pipeline
// (NOTIFY ipnd_ingest).
//
// Lock order, as the leader's transactions: an outbox item's row before
// its order's (FinishOutbox); a resend takes its Idempotency-Key first
// (an advisory lock, as a decision does: decisions.go), then the outbox
// counter, then its order's row without waiting (see ResendOutbox). A
// transaction PostgreSQL aborts for a deadlock or a serialization
// failure, whose new row met one another transaction just committed
// (two resends at once), or whose lock was not free (NOWAIT), runs
// again after a pause.

// Replay schedules notification id to be processed again now
// (DB.Replay, under the DB's timeout): store.ErrNotFound when it is not
// stored, store.ErrPurged when its body was purged.
func (d *Dashboard) Replay(id uint64, now time.Time) error {
	ctx, cancel := d.ctx()
	defer cancel()
	return d.db.Replay(ctx, id, now)
}

// ReplayMatching schedules for replay the notifications f selects,
// newest first, at most max (at most store.MaxBulkReplay), as the bbolt
// store's: it returns the ids scheduled, how many were skipped (their
// body purged, or gone meanwhile) and whether more matched beyond max.
func (d *Dashboard) ReplayMatching(f store.Filter, max int, now time.Time) ([]uint64, int, bool, error) {
	return store.ReplayMatchingVia(d.Matching, d.Replay, f, max, now)
}

// updateTries bounds the runs of one operator's transaction.
const updateTries = 8

// update runs fn in one transaction under the DB's timeout, committed
// when fn returns nil (with the dashboard's counts it moved); again when
// PostgreSQL aborts it for a deadlock, a serialization failure or a
// unique key taken meanwhile (at most updateTries runs).
func (d *Dashboard) update(fn func(t *pgTx) error) error {
	for try := 1; ; try++ {
		err := d.updateOnce(fn)
		if err == nil || try == updateTries || !conflict(err) {
			return adminErr(err)
		}
		time.Sleep(time.Duration(try) * 10 * time.Millisecond) // the other transaction ends meanwhile
	}
}

func (d *Dashboard) updateOnce(fn func(t *pgTx) error) error {
	ctx, cancel := d.ctx()
	defer cancel()
	tx, err := d.db.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	t := &pgTx{db: d.db, ctx: ctx, tx: tx}
	if err := fn(t); err != nil {
		return err
	}
	if err := t.writeCounts(); err != nil { // dashboard.go
		return err
	}
	if err := t.flush(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// conflict reports whether err is PostgreSQL aborting a transaction
// that another ran into: run again, it sees what the other committed.
func conflict(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "40001", "40P01", "23505", "55P03": // serialization failure, deadlock, unique violation, a lock not taken (NOWAIT)
		return true
	}
	return false
}

// adminErr passes the store's sentinels through and wraps the rest as
// ErrUnavailable.
func adminErr(err error) error {
	for _, s := range []error{store.ErrStale, store.ErrExists, store.ErrKeyReused, store.ErrNotDiscardable, store.ErrNotResendable, store.ErrPurged} {
		if errors.Is(err, s) {
			return err
		}
	}
	return unavailable(err)
}

// item reads outbox item id (lock: a locking clause); store.ErrNotFound
// when there is none, ipn.ErrCorrupt when its effect does not decode.
func (t *pgTx) item(id uint64, lock string) (ipn.OutboxItem, error) {
	var it ipn.OutboxItem
	found := false
	var scanErr error
	t.queue(`SELECT `+outboxCols+` FROM outbox WHERE id = $1`+lock, []any{int64(id)}, func(r pgx.Rows) error {
		found = true
		it, scanErr = scanOutboxItem(r)
		if errors.Is(scanErr, ipn.ErrCorrupt) {
			return nil
		}
		return scanErr
	})
	if err := t.flush(); err != nil {
		return it, err
	}
	if !found {
		return it, fmt.Errorf("outbox item %d: %w", id, store.ErrNotFound)
	}
	return it, scanErr
}

// notifyOutbox wakes the leader's outbox worker when the transaction
// commits (once).
func (t *pgTx) notifyOutbox() error {
	if t.outboxNotified {
		return nil
	}
	t.outboxNotified = true
	return t.exec(`SELECT pg_notify($1, '')`, outboxChannel)
}

// putItemState writes the state of item it, which was in state old (its
// effect stays).
func (t *pgTx) putItemState(it ipn.OutboxItem, old string) error {
	t.counts.outboxItem(it.Effect.Kind, old, it.State) // dashboard.go
	var next *time.Time
	if !it.NextAttempt.IsZero() {
		at := it.NextAttempt.UTC()
		next = &at
	}
	return t.exec(`UPDATE outbox SET state = $2, attempts = $3, next_attempt = $4 WHERE id = $1`,
		int64(it.ID), it.State, it.Attempts, next)
}

// RetryOutbox makes item id due now with its attempts reset, as the
// bbolt store's: a dead, skipped or discarded item goes back in the
// queue, a pending one is tried now (the result of an attempt in flight
// is then passed over). It returns the item as it was. A sent item is
// not sent again (store.ErrExists, with the item).
func (d *Dashboard) RetryOutbox(id uint64, now time.Time) (ipn.OutboxItem, error) {
	var was ipn.OutboxItem
	err := d.update(func(t *pgTx) error {
		old, err := t.item(id, ` FOR UPDATE`)
		if err != nil {
			return err
		}
		was = old
		it, ok := record.Retry(old, now)
		if !ok {
			return fmt.Errorf("outbox item %d was sent: %w", id, store.ErrExists)
		}
		if err := t.putItemState(it, old.State); err != nil {
			return err
		}
		return t.notifyOutbox()
	})
	return was, err
}

// RetryDead puts every dead item of lane kind ("": every lane) back in
// the queue, due now with its attempts reset, in one transaction, and
// returns their ids in id order. An item whose effect does not decode
// stays as it is.
func (d *Dashboard) RetryDead(kind string, now time.Time) ([]uint64, error) {
	var ids []uint64
	err := d.update(func(t *pgTx) error {
		ids = nil
		var dead []int64
		var kinds []string
		err := t.rows(`SELECT `+outboxCols+` FROM outbox WHERE state = 'dead' AND ($1 = '' OR kind = $1) ORDER BY id FOR UPDATE`,
			[]any{kind}, func(r pgx.Rows) error {
				it, err := scanOutboxItem(r)
				if errors.Is(err, ipn.ErrCorrupt) {
					return nil
				}
				if err != nil {
					return err
				}
				dead = append(dead, int64(it.ID))
				kinds = append(kinds, it.Effect.Kind)
				ids = append(ids, it.ID)
				return nil
			})
		if err != nil || len(dead) == 0 {
			return err
		}
		retried, _ := record.Retry(ipn.OutboxItem{State: ipn.OutboxDead}, now)
		for _, k := range kinds {
			t.counts.outboxItem(k, ipn.OutboxDead, retried.State) // dashboard.go
		}
		if err := t.exec(`UPDATE outbox SET state = $2, attempts = $3, next_attempt = $4 WHERE id = ANY($1)`,
			dead, retried.State, retried.Attempts, retried.NextAttempt); err != nil {
			return err
		}
		return t.notifyOutbox()
	})
	return ids, err
}

// DiscardOutbox makes a pending or dead item discarded, as the bbolt
// store's: it is not sent, and a callback or script run of an order
// leaves its order's queue (the next one is due). The order's history
// says who discarded what and why. It returns the item as it was; one
// already discarded is returned as it is (repeated, nothing changes).
// version, when not 0, is the version of the item's order the merchant
// saw: another is store.ErrStale. store.ErrNotDiscardable for a sent or
// skipped item, store.ErrNotFound for no item.
func (d *Dashboard) DiscardOutbox(id uint64, by, why string, version int, now time.Time) (was ipn.OutboxItem, repeated bool, err error) {
	err = d.update(func(t *pgTx) error {
		repeated = false
		old, err := t.item(id, ` FOR UPDATE`)
		if err != nil {
			return err
		}
		was = old
		it, rep, err := record.Discard(old)
		if err != nil || rep {
			repeated = rep
			return err
		}
		order := old.Effect.OrderID
		if version != 0 && order != "" {
			o, _, err := lockedOrder(t.row, order)
			if err != nil {
				return err
			}
			if o != nil && record.Version(o) != version {
				return fmt.Errorf("%w: order %q is at version %d, the request saw %d", store.ErrStale, o.ID, record.Version(o), version)
			}
		}
		if err := t.putItemState(it, old.State); err != nil {
			return err
		}
		if order != "" {
			var change *ipn.OrderChange
			if err := t.appendOrderChange(order, func(o *ipn.Order) ipn.OrderChange {
				c := record.Discarded(was, o, by, why, now)
				change = &c
				return c
			}); err != nil {
				return err
			}
			if change != nil {
				if err := t.notifyLive(store.OrderEvent(order, *change)); err != nil { // live.go
					return err
				}
			}
		}
		return t.notifyOutbox() // the order's next callback may be due now
	})
	return was, repeated, err
}

// ResendOutbox queues the sent email id again as a new item (its cause
// the original's with "/resend/N"), as it was, and returns the new item,
// as the bbolt store's. store.ErrNotResendable for an item that is not a
// sent email. With an Idempotency-Key key seen before (within
// store.IdempotencyTTL) for the same item, it returns the item queued
// then and queues nothing; used for another request (a decision on an
// order, a resend of another item), store.ErrKeyReused. The keys are
// the decisions' (table idempotency, record.ResendKey and
// RememberResend, as on bbolt), held by their advisory lock.
func (d *Dashboard) ResendOutbox(id uint64, by, key string, now time.Time) (ipn.OutboxItem, error) {
	var out ipn.OutboxItem
	err := d.update(func(t *pgTx) error {
		out = ipn.OutboxItem{}
		if key != "" {
			// The key's advisory lock (KeyUse), taken first, as a
			// decision takes it: the pipeline never asks for it.
			queued, repeated, err := record.ResendKey(t, key, id, now)
			if err != nil {
				return err
			}
			if repeated {
				out, err = t.item(queued, "")
				return err
			}
		}
		old, err := t.item(id, "") // a sent item stays sent
		if err != nil {
			return err
		}
		e, err := record.Resend(old, func(cause string) (bool, error) {
			var taken bool
			_, err := t.row(`SELECT EXISTS (SELECT 1 FROM outbox WHERE cause = $1)`, []any{[]byte(cause)}, &taken)
			return taken, err
		})
		if err != nil {
			return err
		}
		if k := t.db.kinds.Load(); k != nil && *k != nil && !(*k)[e.Kind] {
			return record.NotEnabled(id, e.Kind)
		}
		// The pipeline's batch locks orders and the outbox counter in
		// turn (an order, the counter, the next order): a resend holding
		// its order while it waits for the counter, or the other way
		// round, could close a cycle with it. It waits for the counter
		// holding nothing the pipeline wants, and takes its order only if
		// no one holds it; else it lets go of both and runs again.
		if _, err := t.row(`SELECT value FROM ipnd_counters WHERE name = 'outbox' FOR UPDATE`, nil, new(int64)); err != nil {
			return err
		}
		if e.OrderID != "" {
			if _, err := t.row(`SELECT 1 FROM orders WHERE id = $1 FOR NO KEY UPDATE NOWAIT`, []any{[]byte(e.OrderID)}, new(int)); err != nil {
				return err
			}
		}
		b, err := json.Marshal(&e)
		if err != nil {
			return err
		}
		// No guard on the cause: a resend committed meanwhile makes this
		// insert fail (unique), and the transaction runs again.
		var nid int64
		if _, err := t.row(`WITH n AS (UPDATE ipnd_counters SET value = value + 1 WHERE name = 'outbox' RETURNING value)
			INSERT INTO outbox (id, kind, order_id, cause, notification, effect, delivery_id, created_at, state, next_attempt)
			SELECT value, $1, $2, $3, $4, $5, 'ipnd_' || $6::text || '_' || value, $7, 'pending', $7 FROM n RETURNING id`,
			[]any{e.Kind, []byte(e.OrderID), []byte(e.Cause), int64(old.Notification), b, t.db.runID, now.UTC()}, &nid); err != nil {
			return err
		}
		t.counts.outboxItem(e.Kind, "", ipn.OutboxPending) // dashboard.go
		if out, err = t.item(uint64(nid), ""); err != nil {
			return err
		}
		if key != "" {
			if err := record.RememberResend(t, key, id, out.ID, now); err != nil {
				return err
			}
		}
		if e.OrderID != "" {
			if err := t.appendOrderChange(e.OrderID, func(o *ipn.Order) ipn.OrderChange {
				return record.Resent(id, e.Template, o, by, out.ID, now)
			}); err != nil {
				return err
			}
		}
		return t.notifyOutbox()
	})
	return out, err
}
