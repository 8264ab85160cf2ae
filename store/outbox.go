package store

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

var (
	bucketOutboxDue    = []byte("outbox_due")    // lane (effect kind) + 0x00 + due unix-nano (8) + outbox id (8) -> nothing, pending items only
	bucketOutboxCounts = []byte("outbox_counts") // state + 0x00 + kind -> uint64 count
)

// newRunID draws the random part of the delivery ids of the items queued
// while the database is open (see ipn.OutboxItem.DeliveryID): 64 bits, so
// that two databases, or a database and its restored backup, do not meet.
func newRunID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

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

// SetEffectKinds replaces Options.EffectKinds (a config reload that adds
// or removes the shop): the kinds of effects queued from now on.
func (db *DB) SetEffectKinds(kinds map[string]bool) { db.kinds.Store(&kinds) }

func (db *DB) enqueueOne(tx *bolt.Tx, e ipn.Effect, notification uint64, now time.Time) error {
	kinds := db.opts.EffectKinds
	if k := db.kinds.Load(); k != nil {
		kinds = *k
	}
	if kinds != nil && !kinds[e.Kind] {
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
	it := ipn.OutboxItem{ID: id, Effect: e, DeliveryID: "ipnd_" + db.runID + "_" + strconv.FormatUint(id, 10),
		State: ipn.OutboxPending, Notification: notification,
		CreatedAt: now.UTC(), NextAttempt: now.UTC()}
	if err := putOutbox(tx, nil, &it); err != nil {
		return err
	}
	if err := causes.Put([]byte(e.Cause), u64(id)); err != nil {
		return err
	}
	db.inserted(tx, bucketOutboxCause, causes, []byte(e.Cause))
	return nil
}

// putOutbox writes it, keeps the due index and the counts (old: the item
// before, nil when new).
func putOutbox(tx *bolt.Tx, old, it *ipn.OutboxItem) error {
	b, err := encodeValue(it)
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
			if err := due.Delete(dueKey(old.Effect.Kind, old.NextAttempt, old.ID)); err != nil {
				return err
			}
		}
		if err := addCount(counts, old.State, old.Effect.Kind, -1); err != nil {
			return err
		}
	}
	if it.State == ipn.OutboxPending {
		if err := due.Put(dueKey(it.Effect.Kind, it.NextAttempt, it.ID), nil); err != nil {
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
	if err := decodeValue(v, &it); err != nil {
		return nil, fmt.Errorf("%w: outbox %d: %v", ErrCorrupt, id, err)
	}
	return &it, nil
}

// dueKey is the due index key of a pending item: its lane (the effect
// kind), 0x00, when it is due (unix nanoseconds) and its id, so that each
// lane scans its own items earliest first.
func dueKey(kind string, due time.Time, id uint64) []byte {
	k := make([]byte, 0, len(kind)+17)
	k = append(k, kind...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, uint64(due.UnixNano()))
	return binary.BigEndian.AppendUint64(k, id)
}

// splitDueKey returns the lane, due time and id of a due index key.
func splitDueKey(k []byte) (kind string, due time.Time, id uint64, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 || len(k) != i+17 {
		return "", time.Time{}, 0, false
	}
	return string(k[:i]), time.Unix(0, int64(binary.BigEndian.Uint64(k[i+1:]))), binary.BigEndian.Uint64(k[i+9:]), true
}

// migrateOutboxDue rewrites due index keys of the layout before lanes
// (due + id, 16 bytes) with their lane in front. It runs on every open;
// without old keys it reads the index and writes nothing.
func migrateOutboxDue(tx *bolt.Tx) error {
	due := tx.Bucket(bucketOutboxDue)
	var old [][]byte
	if err := due.ForEach(func(k, _ []byte) error {
		if len(k) == 16 {
			old = append(old, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range old {
		if err := due.Delete(k); err != nil {
			return err
		}
		it, err := getOutbox(tx, binary.BigEndian.Uint64(k[8:]))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if it.State == ipn.OutboxPending {
			if err := due.Put(dueKey(it.Effect.Kind, it.NextAttempt, it.ID), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// dueInLane reads up to max pending items of one lane due at now,
// earliest first, and when the first item after them is due (zero when
// there is none). Items whose record is missing or does not decode are
// not returned but listed in damaged (as the due index describes them),
// so that one damaged item holds up nothing.
func dueInLane(tx *bolt.Tx, kind string, now time.Time, max int) (out []ipn.OutboxItem, next time.Time, damaged []ipn.OutboxItem, err error) {
	prefix := append([]byte(kind), 0)
	c := tx.Bucket(bucketOutboxDue).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		_, at, id, ok := splitDueKey(k)
		if !ok {
			continue
		}
		if at.After(now) || len(out) >= max {
			return out, at, damaged, nil
		}
		it, err := getOutbox(tx, id)
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) {
			damaged = append(damaged, ipn.OutboxItem{ID: id, State: ipn.OutboxPending, NextAttempt: at,
				Effect: ipn.Effect{Kind: kind}, LastError: err.Error()})
			continue
		}
		if err != nil {
			return nil, time.Time{}, nil, err
		}
		if it.State == ipn.OutboxPending { // (a stale key left by an older build: not due)
			out = append(out, *it)
		}
	}
	return out, time.Time{}, damaged, nil
}

// DueLane returns up to max pending items of one lane (an effect kind)
// due at now, earliest first, and when the first item after them is due
// (zero when there is none; at or before now when max cut the list
// short). It fails with ErrClosed after Close. An item whose record does
// not decode is made dead in its place, its error saying so (its effect
// is lost unless a backup has it), and a due entry without its item is
// dropped: neither stalls the lane.
func (db *DB) DueLane(kind string, now time.Time, max int) ([]ipn.OutboxItem, time.Time, error) {
	var out, damaged []ipn.OutboxItem
	var next time.Time
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		out, next, damaged, err = dueInLane(tx, kind, now, max)
		return err
	})
	if err == nil && len(damaged) > 0 {
		var dead int
		err = db.bolt.Update(func(tx *bolt.Tx) error {
			var err error
			dead, err = deadDamaged(tx, damaged, now)
			return err
		})
		if err == nil {
			db.damagedSeen.Add(int64(dead))
		}
	}
	return out, next, mapClosed(err)
}

// deadDamaged replaces each damaged item (as dueInLane lists them) that
// is still damaged by a dead one saying why, or drops its due entry when
// the item is gone. It returns how many it made dead.
func deadDamaged(tx *bolt.Tx, damaged []ipn.OutboxItem, now time.Time) (int, error) {
	dead := 0
	for _, old := range damaged {
		_, err := getOutbox(tx, old.ID)
		switch {
		case errors.Is(err, ErrNotFound):
			if err := tx.Bucket(bucketOutboxDue).Delete(dueKey(old.Effect.Kind, old.NextAttempt, old.ID)); err != nil {
				return dead, err
			}
			if err := addCount(tx.Bucket(bucketOutboxCounts), ipn.OutboxPending, old.Effect.Kind, -1); err != nil {
				return dead, err
			}
		case errors.Is(err, ErrCorrupt):
			it := &ipn.OutboxItem{ID: old.ID, State: ipn.OutboxDead, Effect: ipn.Effect{Kind: old.Effect.Kind,
				Cause: fmt.Sprintf("damaged/%d", old.ID)}, CreatedAt: now.UTC(),
				LastError: "the stored item does not decode (" + old.LastError + "); its email or callback is lost unless a backup has it"}
			if err := putOutbox(tx, &old, it); err != nil {
				return dead, err
			}
			dead++
		}
	}
	return dead, nil
}

// DueOutbox returns up to max pending items of every lane due at now,
// earliest first (for listings: the worker reads each lane with DueLane).
func (db *DB) DueOutbox(now time.Time, max int) ([]ipn.OutboxItem, error) {
	var out []ipn.OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutboxDue).Cursor()
		for k, _ := c.First(); k != nil; {
			kind, _, _, ok := splitDueKey(k)
			if !ok {
				k, _ = c.Next()
				continue
			}
			items, _, _, err := dueInLane(tx, kind, now, max)
			if err != nil {
				return err
			}
			out = append(out, items...)
			k, _ = c.Seek(append([]byte(kind), 1)) // the next lane
		}
		return nil
	})
	slices.SortFunc(out, func(a, b ipn.OutboxItem) int {
		if c := a.NextAttempt.Compare(b.NextAttempt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out[:min(len(out), max)], mapClosed(err)
}

// FinishOutbox records the results of delivery attempts in one
// transaction. A result for an item that changed since it was taken (no
// longer pending, or reset by a manual retry) is skipped. A skipped item
// of an order leaves a line with the reason in the order's history.
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
			case ipn.OutboxSkipped:
				if err := db.noteSkipped(tx, &it, now); err != nil {
					return err
				}
			}
			if err := putOutbox(tx, old, &it); err != nil {
				return err
			}
		}
		return nil
	})
	return mapClosed(err)
}

// noteSkipped adds a line to the history of the skipped item's order
// (none when the item names no order or the order does not exist).
func (db *DB) noteSkipped(tx *bolt.Tx, it *ipn.OutboxItem, now time.Time) error {
	if it.Effect.OrderID == "" {
		return nil
	}
	what := it.Effect.Kind
	if it.Effect.Template != "" {
		what += " " + it.Effect.Template
	}
	return db.appendOrderChange(tx, it.Effect.OrderID, func(o *ipn.Order) ipn.OrderChange {
		return ipn.OrderChange{At: now.UTC(), Notification: it.Notification, From: o.Status, To: o.Status,
			Reason: fmt.Sprintf("outbox %d (%s) skipped: %s", it.ID, what, it.LastError)}
	})
}

// RetryOutbox makes an item due now with its attempts reset: a dead or
// skipped item goes back in the queue, a pending one is tried now instead
// of at its next attempt (the result of an attempt in flight is then
// ignored). It returns the item as it was before. A sent item is not sent
// again (ErrExists, with the item).
func (db *DB) RetryOutbox(id uint64, now time.Time) (ipn.OutboxItem, error) {
	var was ipn.OutboxItem
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		old, err := getOutbox(tx, id)
		if err != nil {
			return err
		}
		was = *old
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
	return was, mapClosed(err)
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
