package pg

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/ipn"
	"ipnd/record"
	"ipnd/store"
)

// Retention (store.raw_retention) on PostgreSQL, with the bbolt store's
// rules (store/retention.go, decided by package record): notifications
// older than the cutoff lose their raw body, headers and remote address
// (their body's SHA-256 stays), and the customer's name and email leave
// their event (and its identifiers: notification_terms), their
// delivered outbox items (and what the other side said in their
// attempts) and, once they have not changed since the cutoff, their
// orders and subscriptions. Statuses do not change: the hourly and order
// counts stay. Each table is purged in a transaction of its own, of at
// most max records, from where the last call stopped (ipnd_purge).
//
// With the leader's transactions: a notification or an outbox item
// another transaction holds (the pipeline's batch, a replay, a delivery
// result being recorded) is in use, and waits for a later call with
// everything after it, as one still to be processed; an order or
// subscription in use is changing (it is not old) and is passed over.
// Purge waits for no lock of theirs, so that it never holds them up.

// purgePage bounds the records one statement of Purge reads.
const purgePage = 256

// Purge purges up to max notifications, max outbox items and max orders
// and subscriptions older than cutoff, as the bbolt store's. More: a
// batch was full; call again for the rest.
func (d *Dashboard) Purge(cutoff time.Time, max int) (store.Purged, error) {
	var p store.Purged
	if max <= 0 {
		return p, nil
	}
	var full [4]bool
	steps := []func(t *pgTx) error{
		func(t *pgTx) (err error) { p.Notifications, full[0], err = t.purgeNotes(cutoff, max); return err },
		func(t *pgTx) (err error) { p.OutboxItems, full[1], err = t.purgeOutbox(cutoff, max); return err },
		func(t *pgTx) (err error) {
			p.Orders, full[2], err = t.purgeKeyed("orders", max, func(id, b []byte) ([]byte, error) {
				var o ipn.Order
				if err := json.Unmarshal(b, &o); err != nil {
					return nil, corrupt(fmt.Sprintf("order %q", id), err)
				}
				if !record.ScrubOrder(&o, cutoff) {
					return nil, nil
				}
				return json.Marshal(&o)
			})
			return err
		},
		func(t *pgTx) error {
			n, more, err := t.purgeKeyed("subscriptions", max, func(id, b []byte) ([]byte, error) {
				var s ipn.Subscription
				if err := json.Unmarshal(b, &s); err != nil {
					return nil, corrupt(fmt.Sprintf("subscription %q", id), err)
				}
				if !record.ScrubSubscription(&s, cutoff) {
					return nil, nil
				}
				return json.Marshal(&s)
			})
			p.Orders, full[3] = p.Orders+n, more
			return err
		},
	}
	for _, step := range steps {
		if err := d.update(step); err != nil { // the counts are those of the run that committed
			return p, err
		}
	}
	p.More = full[0] || full[1] || full[2] || full[3]
	return p, nil
}

// purgeFrom locks retention's row of table name and returns where the
// last pass stopped: concurrent purges (two processes) take turns.
func (t *pgTx) purgeFrom(name string) (id uint64, key []byte, err error) {
	var n int64
	found, err := t.row(`SELECT id, key FROM ipnd_purge WHERE name = $1 FOR UPDATE`, []any{name}, &n, &key)
	if err == nil && !found {
		err = fmt.Errorf("ipnd_purge has no row %q", name)
	}
	return uint64(n), key, err
}

// lockFree locks the rows of table with the ids ids, in id order,
// passing over those another transaction holds; it returns those it
// locked.
func (t *pgTx) lockFree(table, mode string, ids any) (map[string]bool, error) {
	locked := map[string]bool{}
	err := t.rows(`SELECT id::text FROM `+table+` WHERE id = ANY($1) ORDER BY id FOR `+mode+` SKIP LOCKED`, []any{ids},
		func(r pgx.Rows) error {
			var id string
			err := r.Scan(&id)
			locked[id] = true
			return err
		})
	return locked, err
}

// purgeNotes purges up to max notifications up to the pipeline's cursor,
// in id order from where the last pass stopped, until the first one
// that waits (record.NoteWaits) or is in use.
func (t *pgTx) purgeNotes(cutoff time.Time, max int) (int, bool, error) {
	from, _, err := t.purgeFrom("notifications")
	if err != nil {
		return 0, false, err
	}
	var cursor int64
	if _, err := t.row(`SELECT value FROM ipnd_counters WHERE name = 'cursor'`, nil, &cursor); err != nil {
		return 0, false, err
	}
	done, seen := 0, from
	now := time.Now()
walk:
	for done < max {
		var ids []int64
		err := t.rows(`SELECT id FROM notifications WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3`,
			[]any{int64(seen), cursor, purgePage}, func(r pgx.Rows) error {
				var id int64
				err := r.Scan(&id)
				ids = append(ids, id)
				return err
			})
		if err != nil {
			return 0, false, err
		}
		if len(ids) == 0 {
			break
		}
		locked, err := t.lockFree("notifications", "NO KEY UPDATE", ids)
		if err != nil {
			return 0, false, err
		}
		if t.locked == nil {
			t.locked = map[uint64]bool{}
		}
		var mine []int64
		for _, id := range ids {
			if locked[fmt.Sprint(id)] {
				t.locked[uint64(id)] = true
				mine = append(mine, id)
			}
		}
		// Read after the locks (a statement of its own): a replay
		// committed meanwhile is seen.
		type row struct {
			n      ipn.Notification
			purged bool
			rec    []byte
		}
		rows := map[int64]*row{}
		err = t.rows(`SELECT n.id, n.received_at, n.body, n.purged_at IS NOT NULL, p.record
			FROM notifications n LEFT JOIN processing p ON p.id = n.id WHERE n.id = ANY($1)`, []any{mine}, func(r pgx.Rows) error {
			var id int64
			x := &row{}
			if err := r.Scan(&id, &x.n.ReceivedAt, &x.n.Body, &x.purged, &x.rec); err != nil {
				return err
			}
			x.n.ID = uint64(id)
			rows[id] = x
			return nil
		})
		if err != nil {
			return 0, false, err
		}
		for _, id := range ids {
			x := rows[id]
			if x == nil {
				break walk // in use (or gone): later
			}
			p, err := decodeState(x.rec, uint64(id))
			if err != nil {
				return 0, false, err
			}
			if record.NoteWaits(&x.n, p, cutoff) {
				break walk
			}
			if !x.purged {
				record.PurgeNote(&x.n, now)
				if err := t.exec(`UPDATE notifications SET body = NULL, headers = 'null', remote_addr = '', body_sha256 = $2, purged_at = $3
					WHERE id = $1`, id, x.n.BodySHA256, x.n.Purged); err != nil {
					return 0, false, err
				}
				if p != nil && record.ScrubEvent(p.Event) {
					if err := t.PutState(uint64(id), p); err != nil { // its identifiers follow (dashboard.go)
						return 0, false, err
					}
				}
				done++
			}
			seen = uint64(id)
			if done == max {
				break walk
			}
		}
		if len(ids) < purgePage {
			break
		}
	}
	return done, done == max, t.exec(`UPDATE ipnd_purge SET id = $2 WHERE name = $1`, "notifications", int64(seen))
}

// purgeOutbox purges up to max outbox items, in id order from where the
// last pass stopped, until the first one that waits (record.ItemWaits)
// or is in use. An item whose effect does not decode is passed over
// (what its attempts kept is scrubbed), so that it holds up nothing.
func (t *pgTx) purgeOutbox(cutoff time.Time, max int) (int, bool, error) {
	from, _, err := t.purgeFrom("outbox")
	if err != nil {
		return 0, false, err
	}
	done, seen := 0, from
	var looked []int64 // their attempts are scrubbed
walk:
	for done < max {
		var ids []int64
		err := t.rows(`SELECT id FROM outbox WHERE id > $1 ORDER BY id LIMIT $2`, []any{int64(seen), purgePage}, func(r pgx.Rows) error {
			var id int64
			err := r.Scan(&id)
			ids = append(ids, id)
			return err
		})
		if err != nil {
			return 0, false, err
		}
		if len(ids) == 0 {
			break
		}
		items := map[int64]*ipn.OutboxItem{}
		damaged := map[int64]bool{}
		err = t.rows(`SELECT `+outboxCols+` FROM outbox WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED`, []any{ids},
			func(r pgx.Rows) error {
				it, err := scanOutboxItem(r)
				if errors.Is(err, ipn.ErrCorrupt) {
					var id int64
					if err := r.Scan(&id, nil, nil, nil, nil, nil, nil, nil, nil, nil); err != nil {
						return err
					}
					damaged[id] = true
					return nil
				}
				if err != nil {
					return err
				}
				items[int64(it.ID)] = &it
				return nil
			})
		if err != nil {
			return 0, false, err
		}
		for _, id := range ids {
			if damaged[id] {
				looked, seen = append(looked, id), uint64(id)
				continue
			}
			it := items[id]
			if it == nil || record.ItemWaits(it, cutoff) {
				break walk // in use (or gone), or waits: later
			}
			if record.ScrubEffect(&it.Effect) {
				b, err := json.Marshal(&it.Effect)
				if err != nil {
					return 0, false, err
				}
				if err := t.exec(`UPDATE outbox SET effect = $2 WHERE id = $1`, id, b); err != nil {
					return 0, false, err
				}
				done++
			}
			looked, seen = append(looked, id), uint64(id)
			if done == max {
				break walk
			}
		}
		if len(ids) < purgePage {
			break
		}
	}
	if err := t.scrubAttempts(looked); err != nil {
		return 0, false, err
	}
	return done, done == max, t.exec(`UPDATE ipnd_purge SET id = $2 WHERE name = $1`, "outbox", int64(seen))
}

// scrubAttempts removes what the other side said from the attempts kept
// of the outbox items ids (record.ScrubAttempt); one that does not
// decode is dropped.
func (t *pgTx) scrubAttempts(ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	type change struct {
		id, seq int64
		b       []byte // nil: dropped
	}
	var changes []change
	err := t.rows(`SELECT outbox_id, seq, attempt FROM outbox_attempts WHERE outbox_id = ANY($1) ORDER BY outbox_id, seq`, []any{ids},
		func(r pgx.Rows) error {
			var c change
			var b []byte
			if err := r.Scan(&c.id, &c.seq, &b); err != nil {
				return err
			}
			var a ipn.OutboxAttempt
			if json.Unmarshal(b, &a) != nil {
				changes = append(changes, c)
				return nil
			}
			if !record.ScrubAttempt(&a) {
				return nil
			}
			nb, err := json.Marshal(a)
			c.b = nb
			changes = append(changes, c)
			return err
		})
	if err != nil {
		return err
	}
	for _, c := range changes {
		if c.b == nil {
			err = t.exec(`DELETE FROM outbox_attempts WHERE outbox_id = $1 AND seq = $2`, c.id, c.seq)
		} else {
			err = t.exec(`UPDATE outbox_attempts SET attempt = $3 WHERE outbox_id = $1 AND seq = $2`, c.id, c.seq, c.b)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// purgeKeyed walks table (orders or subscriptions: id bytea, record
// json) in id order from where the last pass stopped, as the bbolt
// store's purgeKeyed: up to 4 × max records, rewriting each whose record
// purge returns changed (nil: unchanged), at most max of them; at the
// end of the table the next pass starts again from the first (a record
// may have grown old meanwhile). A record in use is passed over.
func (t *pgTx) purgeKeyed(table string, max int, purge func(id, b []byte) ([]byte, error)) (int, bool, error) {
	_, from, err := t.purgeFrom(table)
	if err != nil {
		return 0, false, err
	}
	type rec struct{ id, b []byte }
	var recs []rec
	err = t.rows(`SELECT id, record FROM `+table+` WHERE $1::bytea IS NULL OR id > $1 ORDER BY id LIMIT $2`,
		[]any{from, 4*max + 1}, func(r pgx.Rows) error {
			var x rec
			err := r.Scan(&x.id, &x.b)
			recs = append(recs, x)
			return err
		})
	if err != nil {
		return 0, false, err
	}
	var last []byte
	var change [][]byte
	i := 0
	for ; i < len(recs) && i < 4*max && len(change) < max; i++ {
		last = recs[i].id
		nb, err := purge(recs[i].id, recs[i].b)
		if err != nil {
			return 0, false, err
		}
		if nb != nil {
			change = append(change, recs[i].id)
		}
	}
	done := 0
	if len(change) > 0 {
		// Under the lock, again: it may have changed since.
		var now [][2][]byte
		err := t.rows(`SELECT id, record FROM `+table+` WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED`, []any{change},
			func(r pgx.Rows) error {
				var id, b []byte
				if err := r.Scan(&id, &b); err != nil {
					return err
				}
				now = append(now, [2][]byte{id, b})
				return nil
			})
		if err != nil {
			return 0, false, err
		}
		for _, x := range now {
			nb, err := purge(x[0], x[1])
			if err != nil || nb == nil {
				if err != nil {
					return 0, false, err
				}
				continue
			}
			if err := t.exec(`UPDATE `+table+` SET record = $2 WHERE id = $1`, x[0], nb); err != nil {
				return 0, false, err
			}
			done++
		}
	}
	if i == len(recs) {
		return done, false, t.exec(`UPDATE ipnd_purge SET key = NULL WHERE name = $1`, table)
	}
	return done, true, t.exec(`UPDATE ipnd_purge SET key = $2 WHERE name = $1`, table, slices.Clone(last))
}
