package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

var (
	bucketOutboxDue    = []byte("outbox_due")    // due unix-nano (8) + outbox id (8) -> nothing, pending items only
	bucketOutboxCounts = []byte("outbox_counts") // state + 0x00 + kind -> uint64 count
)

// OutboxWake returns a channel that receives a value after outbox items
// are queued or put back for retry (for the single outbox worker).
func (db *DB) OutboxWake() <-chan struct{} { return db.outboxWake }

func (db *DB) pokeOutbox() {
	select {
	case db.outboxWake <- struct{}{}:
	default:
	}
}

// enqueue puts effects in the outbox unless their cause was queued before
// or their kind is not enabled. A shop callback becomes two items when
// both the HTTP callback and the script are enabled.
func (db *DB) enqueue(tx *bolt.Tx, effects []ipn.Effect, notification uint64, now time.Time) error {
	for _, e := range effects {
		if e.Kind == ipn.EffectShopCallback {
			s := e
			s.Kind, s.Cause = ipn.EffectShopScript, "script/"+e.Cause
			if err := db.enqueueOne(tx, s, notification, now); err != nil {
				return err
			}
		}
		if err := db.enqueueOne(tx, e, notification, now); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) enqueueOne(tx *bolt.Tx, e ipn.Effect, notification uint64, now time.Time) error {
	if db.opts.EffectKinds != nil && !db.opts.EffectKinds[e.Kind] {
		return nil
	}
	causes := tx.Bucket(bucketOutboxCause)
	if causes.Get([]byte(e.Cause)) != nil {
		return nil
	}
	outbox := tx.Bucket(bucketOutbox)
	id, err := outbox.NextSequence()
	if err != nil {
		return err
	}
	it := ipn.OutboxItem{ID: id, Effect: e, State: ipn.OutboxPending, Notification: notification,
		CreatedAt: now.UTC(), NextAttempt: now.UTC()}
	if err := putOutbox(tx, nil, &it); err != nil {
		return err
	}
	return causes.Put([]byte(e.Cause), u64(id))
}

// putOutbox writes it, keeps the due index and the counts (old: the item
// before, nil when new).
func putOutbox(tx *bolt.Tx, old, it *ipn.OutboxItem) error {
	b, err := json.Marshal(it)
	if err != nil {
		return err
	}
	outbox := tx.Bucket(bucketOutbox)
	// Ids are sequential and an item grows a little when it is sent:
	// fuller pages than bbolt's default half-full split (measured: 2 KB
	// of pages per item at 0.5, the item itself ~700 bytes).
	outbox.FillPercent = 0.9
	if err := outbox.Put(u64(it.ID), b); err != nil {
		return err
	}
	due, counts := tx.Bucket(bucketOutboxDue), tx.Bucket(bucketOutboxCounts)
	if old != nil {
		if old.State == ipn.OutboxPending {
			if err := due.Delete(retryKey(old.NextAttempt, old.ID)); err != nil {
				return err
			}
		}
		if err := addCount(counts, old.State, old.Effect.Kind, -1); err != nil {
			return err
		}
	}
	if it.State == ipn.OutboxPending {
		if err := due.Put(retryKey(it.NextAttempt, it.ID), nil); err != nil {
			return err
		}
	}
	return addCount(counts, it.State, it.Effect.Kind, 1)
}

func addCount(b *bolt.Bucket, state, kind string, d int) error {
	k := []byte(state + "\x00" + kind)
	n := int(getU64(b.Get(k))) + d
	return b.Put(k, u64(uint64(max(n, 0))))
}

func getOutbox(tx *bolt.Tx, id uint64) (*ipn.OutboxItem, error) {
	v := tx.Bucket(bucketOutbox).Get(u64(id))
	if v == nil {
		return nil, fmt.Errorf("outbox item %d: %w", id, ErrNotFound)
	}
	var it ipn.OutboxItem
	if err := json.Unmarshal(v, &it); err != nil {
		return nil, fmt.Errorf("%w: outbox %d: %v", ErrCorrupt, id, err)
	}
	return &it, nil
}

// DueOutbox returns up to max pending items due at now, earliest first.
func (db *DB) DueOutbox(now time.Time, max int) ([]ipn.OutboxItem, error) {
	var out []ipn.OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutboxDue).Cursor()
		for k, _ := c.First(); k != nil && len(out) < max; k, _ = c.Next() {
			if len(k) != 16 || int64(binary.BigEndian.Uint64(k[:8])) > now.UnixNano() {
				break
			}
			it, err := getOutbox(tx, binary.BigEndian.Uint64(k[8:]))
			if err != nil {
				return err
			}
			out = append(out, *it)
		}
		return nil
	})
	return out, mapClosed(err)
}

// NextOutboxDue returns when the earliest pending item is due.
func (db *DB) NextOutboxDue() (time.Time, bool) {
	var at time.Time
	var ok bool
	db.bolt.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketOutboxDue).Cursor().First(); len(k) == 16 {
			at, ok = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))), true
		}
		return nil
	})
	return at, ok
}

// FinishOutbox records the results of delivery attempts in one
// transaction. A result for an item that changed since it was taken (no
// longer pending, or reset by a manual retry) is skipped.
func (db *DB) FinishOutbox(results []ipn.OutboxResult, now time.Time) error {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, r := range results {
			old, err := getOutbox(tx, r.ID)
			if err != nil {
				return err
			}
			if old.State != ipn.OutboxPending || r.Attempts != old.Attempts+1 {
				continue // changed meanwhile (a manual retry reset it): that wins
			}
			it := *old
			it.State, it.Attempts, it.LastError = r.State, r.Attempts, r.Error
			it.NextAttempt = time.Time{}
			switch r.State {
			case ipn.OutboxPending:
				it.NextAttempt = r.RetryAt.UTC()
			case ipn.OutboxSent:
				it.SentAt = now.UTC()
			}
			if err := putOutbox(tx, old, &it); err != nil {
				return err
			}
		}
		return nil
	})
	return mapClosed(err)
}

// RetryOutbox puts a dead (or pending) item back in the queue, due now,
// with its attempts reset. A sent item is not sent again (ErrExists).
func (db *DB) RetryOutbox(id uint64, now time.Time) error {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		old, err := getOutbox(tx, id)
		if err != nil {
			return err
		}
		if old.State == ipn.OutboxSent {
			return fmt.Errorf("outbox item %d was sent: %w", id, ErrExists)
		}
		it := *old
		it.State, it.Attempts, it.NextAttempt = ipn.OutboxPending, 0, now.UTC()
		return putOutbox(tx, old, &it)
	})
	if err == nil {
		db.pokeOutbox()
	}
	return mapClosed(err)
}

// OutboxCounts returns the number of items per state and kind.
func (db *DB) OutboxCounts() (map[string]map[string]int, error) {
	out := map[string]map[string]int{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutboxCounts).ForEach(func(k, v []byte) error {
			for i, c := range k {
				if c == 0 {
					state, kind := string(k[:i]), string(k[i+1:])
					if out[state] == nil {
						out[state] = map[string]int{}
					}
					out[state][kind] = int(getU64(v))
				}
			}
			return nil
		})
	})
	return out, mapClosed(err)
}
