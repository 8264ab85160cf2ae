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
	"ipnd/record"
)

var (
	bucketOutboxDue    = []byte("outbox_due")    // lane (effect kind) + 0x00 + due unix-nano (8) + outbox id (8) -> nothing, pending items only
	bucketOutboxCounts = []byte("outbox_counts") // state + 0x00 + kind -> uint64 count
	// bucketOutboxOrder queues the pending items of the ordered lanes
	// (shop callbacks and script runs) per order: lane + 0x00 +
	// uvarint(len(order id)) + order id + outbox id (8) -> nothing. Ids
	// grow as items are queued, so an order's first key is its head: the
	// only one of its items in the due index (see orderedLane).
	bucketOutboxOrder = []byte("outbox_order")
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
// The item itself is written only when it is new: a change writes its
// state record (outboxstate.go).
func putOutbox(tx *bolt.Tx, old, it *ipn.OutboxItem) error {
	if old == nil {
		if err := putOutboxBody(tx, it); err != nil {
			return err
		}
	}
	if err := putOutboxState(tx, it); err != nil {
		return err
	}
	if err := indexOutbox(tx, old, it); err != nil { // index.go
		return err
	}
	due, counts := tx.Bucket(bucketOutboxDue), tx.Bucket(bucketOutboxCounts)
	queue := tx.Bucket(bucketOutboxOrder)
	wasPending := old != nil && old.State == ipn.OutboxPending
	if old != nil {
		if wasPending {
			if err := due.Delete(dueKey(old.Effect.Kind, old.NextAttempt, old.ID)); err != nil {
				return err
			}
			if orderedLane(old.Effect) {
				if err := queue.Delete(orderQueueKey(old.Effect.Kind, old.Effect.OrderID, old.ID)); err != nil {
					return err
				}
			}
		}
		if err := addCount(counts, old.State, old.Effect.Kind, -1); err != nil {
			return err
		}
	}
	switch {
	case it.State == ipn.OutboxPending && orderedLane(it.Effect):
		if err := queue.Put(orderQueueKey(it.Effect.Kind, it.Effect.OrderID, it.ID), nil); err != nil {
			return err
		}
		if err := dueOrderHead(tx, it.Effect.Kind, it.Effect.OrderID, it, !wasPending); err != nil {
			return err
		}
	case it.State == ipn.OutboxPending:
		if err := due.Put(dueKey(it.Effect.Kind, it.NextAttempt, it.ID), nil); err != nil {
			return err
		}
	case wasPending && orderedLane(old.Effect):
		// It leaves its order's queue: the next one, if any, is due.
		if err := dueOrderHead(tx, old.Effect.Kind, old.Effect.OrderID, nil, false); err != nil {
			return err
		}
	}
	return addCount(counts, it.State, it.Effect.Kind, 1)
}

// orderedLane reports whether e waits for the earlier pending items of
// its order in its lane: shop callbacks and script runs of an order are
// delivered in the order they were queued, the next only once the one
// before is sent, dead or skipped (SPEC §6). Other items, and items of no
// order, are due on their own.
func orderedLane(e ipn.Effect) bool {
	return e.OrderID != "" && (e.Kind == ipn.EffectShopCallback || e.Kind == ipn.EffectShopScript)
}

// orderQueuePrefix is the part of the order queue keys of one lane and
// order before the outbox id. The order id's length comes first, so that
// no order's prefix is the start of another order's keys.
func orderQueuePrefix(kind, order string) []byte {
	k := make([]byte, 0, len(kind)+len(order)+binary.MaxVarintLen64+9)
	k = append(k, kind...)
	k = append(k, 0)
	k = binary.AppendUvarint(k, uint64(len(order)))
	return append(k, order...)
}

func orderQueueKey(kind, order string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(orderQueuePrefix(kind, order), id)
}

// dueOrderHead puts the head of an order's queue in a lane (its oldest
// pending item) in the due index, so that it is delivered next. cur is
// the item being written, when it is in the queue (it is read from the
// transaction otherwise). With demote (cur just joined the queue) an
// item that was the head until then and no longer is leaves the due
// index: only a manual retry of an older item does that. Keys whose item
// is gone or no longer pending are dropped on the way: they must not
// hold the order's later items forever. An item that does not decode is
// made due at once, so that DueLane makes it dead (and counts it) and
// releases the order's next one. It costs a seek and a
// read or two, whatever the size of the outbox.
func dueOrderHead(tx *bolt.Tx, kind, order string, cur *ipn.OutboxItem, demote bool) error {
	queue, due := tx.Bucket(bucketOutboxOrder), tx.Bucket(bucketOutboxDue)
	prefix := orderQueuePrefix(kind, order)
	read := func(k []byte) (*ipn.OutboxItem, error) {
		id := binary.BigEndian.Uint64(k[len(prefix):])
		if cur != nil && cur.ID == id {
			return cur, nil
		}
		it, err := getOutboxState(tx, id)
		if errors.Is(err, ErrCorrupt) {
			// Damaged while it waited: due at once (at the epoch), so that
			// DueLane makes it dead, saying so, and lets the next go.
			return &ipn.OutboxItem{ID: id, State: ipn.OutboxPending, NextAttempt: time.Unix(0, 0)}, nil
		}
		if errors.Is(err, ErrNotFound) || (err == nil && it.State != ipn.OutboxPending) {
			return nil, nil // stale
		}
		return it, err
	}
	for {
		c := queue.Cursor()
		k, _ := c.Seek(prefix)
		if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
			return nil
		}
		head, err := read(k)
		if err != nil {
			return err
		}
		if head == nil {
			if err := queue.Delete(bytes.Clone(k)); err != nil {
				return err
			}
			continue
		}
		if err := due.Put(dueKey(kind, head.NextAttempt, head.ID), nil); err != nil {
			return err
		}
		if !demote || cur == nil || head.ID != cur.ID {
			return nil
		}
		if k, _ = c.Next(); k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
			return nil
		}
		was, err := read(k)
		if err != nil || was == nil {
			return err
		}
		return due.Delete(dueKey(kind, was.NextAttempt, was.ID))
	}
}

// waitingInOrderQueues returns up to max pending items that wait behind
// an earlier item of their order (every key of an order's queue but its
// first), in key order.
func waitingInOrderQueues(tx *bolt.Tx, max int) ([]ipn.OutboxItem, error) {
	var out []ipn.OutboxItem
	var group []byte
	c := tx.Bucket(bucketOutboxOrder).Cursor()
	for k, _ := c.First(); k != nil && len(out) < max; k, _ = c.Next() {
		if len(k) < 9 {
			continue
		}
		if prefix := k[:len(k)-8]; !bytes.Equal(prefix, group) {
			group = bytes.Clone(prefix) // an order's head: in the due index
			continue
		}
		it, err := getOutbox(tx, binary.BigEndian.Uint64(k[len(k)-8:]))
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if it.State == ipn.OutboxPending {
			out = append(out, *it)
		}
	}
	return out, nil
}

// migrateOutboxOrder builds the order queues of a database written before
// they existed (run once, when the bucket is new): every pending callback
// and script item joins its order's queue, and only each order's oldest
// stays in the due index.
func migrateOutboxOrder(tx *bolt.Tx) error {
	type entry struct {
		key []byte
		it  *ipn.OutboxItem
	}
	var found []entry
	for _, kind := range []string{ipn.EffectShopCallback, ipn.EffectShopScript} {
		prefix := append([]byte(kind), 0)
		c := tx.Bucket(bucketOutboxDue).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			_, _, id, ok := splitDueKey(k)
			if !ok {
				continue
			}
			it, err := getOutbox(tx, id)
			if err != nil || it.State != ipn.OutboxPending || !orderedLane(it.Effect) {
				continue // damaged items are DueLane's; stale keys are not due
			}
			found = append(found, entry{bytes.Clone(k), it})
		}
	}
	queue, due := tx.Bucket(bucketOutboxOrder), tx.Bucket(bucketOutboxDue)
	for _, e := range found {
		if err := queue.Put(orderQueueKey(e.it.Effect.Kind, e.it.Effect.OrderID, e.it.ID), nil); err != nil {
			return err
		}
	}
	for _, e := range found {
		head, _ := queue.Cursor().Seek(orderQueuePrefix(e.it.Effect.Kind, e.it.Effect.OrderID))
		if binary.BigEndian.Uint64(head[len(head)-8:]) != e.it.ID {
			if err := due.Delete(e.key); err != nil {
				return err
			}
		}
	}
	return nil
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
	return decodeOutbox(tx, id, v)
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
func dueInLane(tx *bolt.Tx, kind string, now time.Time, max int, skip func(uint64) bool) (out []ipn.OutboxItem, next time.Time, damaged []ipn.OutboxItem, err error) {
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
		if skip != nil && skip(id) {
			continue // (not read: the caller has it)
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
	return db.DueLaneSkipping(kind, now, max, nil)
}

// DueLaneSkipping is DueLane passing over the items for which skip
// returns true (the worker's items in flight, still pending here),
// without reading them.
func (db *DB) DueLaneSkipping(kind string, now time.Time, max int, skip func(id uint64) bool) ([]ipn.OutboxItem, time.Time, error) {
	var out, damaged []ipn.OutboxItem
	var next time.Time
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		out, next, damaged, err = dueInLane(tx, kind, now, max, skip)
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
			if err := putOutboxBody(tx, it); err != nil {
				return dead, err
			}
			if err := putOutbox(tx, &old, it); err != nil {
				return dead, err
			}
			dead++
		default:
			continue // readable again: nothing to do
		}
		if err := releaseOrderQueue(tx, old.Effect.Kind, old.ID); err != nil {
			return dead, err
		}
	}
	return dead, nil
}

// releaseOrderQueue drops the order queue key of item id, which can no
// longer be read, and makes the next item of its order due. Its order id
// is unknown: the lane's queue is searched (a rare path, over the pending
// items of one lane).
func releaseOrderQueue(tx *bolt.Tx, kind string, id uint64) error {
	if kind != ipn.EffectShopCallback && kind != ipn.EffectShopScript {
		return nil
	}
	prefix := append([]byte(kind), 0)
	var order string
	found := false
	c := tx.Bucket(bucketOutboxOrder).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) < len(prefix)+9 || binary.BigEndian.Uint64(k[len(k)-8:]) != id {
			continue
		}
		n, w := binary.Uvarint(k[len(prefix):])
		if w <= 0 || uint64(len(k)-len(prefix)-w-8) != n {
			continue
		}
		order, found = string(k[len(prefix)+w:len(k)-8]), true
		break
	}
	if !found {
		return nil
	}
	if err := tx.Bucket(bucketOutboxOrder).Delete(orderQueueKey(kind, order, id)); err != nil {
		return err
	}
	return dueOrderHead(tx, kind, order, nil, false)
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
			items, _, _, err := dueInLane(tx, kind, now, max, nil)
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
// longer pending, or reset by a manual retry) is skipped. A result that
// says the item was not attempted keeps its attempt count and records
// its retry time and why. A result for an item that is gone or whose
// record does not decode is passed over. A skipped item of an order leaves a line with
// the reason in the order's history. An item of an order's callback or
// script queue that is sent, dead or skipped makes the next one due.
func (db *DB) FinishOutbox(results []ipn.OutboxResult, now time.Time) error {
	released := false
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		released = false
		for _, r := range results {
			old, err := getOutboxState(tx, r.ID)
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
				// Gone, or its record no longer reads: nothing to record
				// (a damaged item goes dead with its reason at the next
				// scan of its lane). The other results of the batch —
				// every lane's — are recorded all the same.
				continue
			}
			if err != nil {
				return err
			}
			want := old.Attempts + 1
			if r.NotAttempted {
				want = old.Attempts
			}
			if old.State != ipn.OutboxPending || r.Attempts != want || (r.NotAttempted && r.State != ipn.OutboxPending) {
				continue // changed meanwhile (a manual retry reset it): that wins
			}
			if !r.NotAttempted && !quietSuccess(r) {
				if err := db.recordAttempt(tx, old, r, now); err != nil {
					return err
				}
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
				full, err := getOutbox(tx, r.ID) // (rare: a skip names the template)
				if errors.Is(err, ErrCorrupt) {
					// Damaged since it was taken: its history line says
					// what the state record knows, and the batch (every
					// lane's results) is recorded all the same.
					full, err = &it, nil
				}
				if err != nil {
					return err
				}
				full.LastError = it.LastError
				if err := db.noteSkipped(tx, full, now); err != nil {
					return err
				}
			}
			if err := putOutbox(tx, old, &it); err != nil {
				return err
			}
			if r.State != ipn.OutboxPending && orderedLane(old.Effect) && !released {
				// The next item of the order, if any, is due now: wake
				// the worker (not for every result: a wake-up makes the
				// lanes gather for a moment).
				prefix := orderQueuePrefix(old.Effect.Kind, old.Effect.OrderID)
				k, _ := tx.Bucket(bucketOutboxOrder).Cursor().Seek(prefix)
				released = k != nil && bytes.HasPrefix(k, prefix)
			}
		}
		return nil
	})
	if err == nil && released {
		db.pokeOutbox()
	}
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
		it, ok := record.Retry(*old, now)
		if !ok {
			return fmt.Errorf("outbox item %d was sent: %w", id, ErrExists)
		}
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
