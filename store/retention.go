package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

// Retention (store.raw_retention): notifications older than the cutoff
// lose their raw body, headers and remote address, and the customer's
// name and email leave their event, their outbox items and, once the
// order itself has not changed since the cutoff, their order. What
// accounting needs stays: ids, gateway, times, amounts, currencies,
// statuses, txn ids, order links and the body's SHA-256. Purge works in
// small transactions and remembers where it stopped (meta keys below), so
// it never holds up ingest for long and resumes after a crash.
var (
	keyPurgeLog    = []byte("purge_log")    // every log id <= this has been looked at
	keyPurgeOutbox = []byte("purge_outbox") // every outbox id <= this has been looked at
	keyPurgeOrders = []byte("purge_orders") // the last order id looked at in the current pass ("" = start)
	keyPurgeSubs   = []byte("purge_subs")   // likewise for subscriptions
)

// ErrPurged: the notification's raw data was purged (store.raw_retention),
// so it cannot be processed again.
var ErrPurged = errors.New("raw data purged by store.raw_retention")

// Purged counts what one Purge call changed.
type Purged struct {
	Notifications, OutboxItems int
	Orders                     int // orders and subscriptions
	// More: the batch was full; call again for the rest.
	More bool
}

// Purge purges up to max notifications, max outbox items and max orders
// older than cutoff (see above). A notification still being processed (a
// postback needs its exact bytes) and an item still to be delivered wait
// for a later call, and so does everything after them.
func (db *DB) Purge(cutoff time.Time, max int) (Purged, error) {
	var p Purged
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var full [3]bool
		var err error
		if p.Notifications, full[0], err = purgeLog(tx, meta, cutoff, max); err != nil {
			return err
		}
		if p.OutboxItems, full[1], err = purgeOutbox(tx, meta, cutoff, max); err != nil {
			return err
		}
		if p.Orders, full[2], err = purgeOrders(tx, meta, cutoff, max); err != nil {
			return err
		}
		subs, more, err := purgeSubscriptions(tx, meta, cutoff, max)
		if err != nil {
			return err
		}
		p.Orders += subs
		p.More = full[0] || full[1] || full[2] || more
		return nil
	})
	return p, mapClosed(err)
}

func purgeLog(tx *bolt.Tx, meta *bolt.Bucket, cutoff time.Time, max int) (int, bool, error) {
	from, cursor := getU64(meta.Get(keyPurgeLog)), getU64(meta.Get(keyCursor))
	log := tx.Bucket(bucketLog)
	c := log.Cursor()
	done, seen := 0, from
	type change struct {
		id  uint64
		rec []byte
	}
	var changes []change
	for k, v := c.Seek(u64(from + 1)); k != nil && done < max; k, v = c.Next() {
		id := binary.BigEndian.Uint64(k)
		if id > cursor {
			break // not processed yet
		}
		n, err := decodeRecord(id, v)
		if err != nil {
			return 0, false, err
		}
		if !n.ReceivedAt.Before(cutoff) {
			break
		}
		st, err := stateOf(tx, id)
		if err != nil {
			return 0, false, err
		}
		if record.NoteWaits(n, st, cutoff) {
			break // a retry or replay is pending: it needs the body
		}
		if n.Purged.IsZero() {
			record.PurgeNote(n, time.Now())
			changes = append(changes, change{id, encodePurged(n)})
			if st != nil && record.ScrubEvent(st.Event) {
				if err := putProcessing(tx, id, st); err != nil {
					return 0, false, err
				}
			}
			done++
		}
		seen = id
	}
	for _, ch := range changes { // not while the cursor walks the bucket
		if err := log.Put(u64(ch.id), ch.rec); err != nil {
			return 0, false, err
		}
	}
	return done, done == max, meta.Put(keyPurgeLog, u64(seen))
}

func purgeOutbox(tx *bolt.Tx, meta *bolt.Bucket, cutoff time.Time, max int) (int, bool, error) {
	from := getU64(meta.Get(keyPurgeOutbox))
	c := tx.Bucket(bucketOutbox).Cursor()
	done, seen := 0, from
	var changes []*ipn.OutboxItem
	for k, _ := c.Seek(u64(from + 1)); k != nil && done < max; k, _ = c.Next() {
		id := binary.BigEndian.Uint64(k)
		it, err := getOutbox(tx, id)
		if errors.Is(err, ErrCorrupt) {
			// Its record (or its state record) does not decode: passed
			// over, so that it holds up neither the later items nor the
			// notifications purged in the same transaction (a pending
			// one goes dead, without its data, at its lane's next scan).
			if err := scrubAttempts(tx, id); err != nil {
				return 0, false, err
			}
			seen = id
			continue
		}
		if err != nil {
			return 0, false, err
		}
		if record.ItemWaits(it, cutoff) {
			break
		}
		if record.ScrubEffect(&it.Effect) {
			changes = append(changes, it)
			done++
		}
		if err := scrubAttempts(tx, id); err != nil {
			return 0, false, err
		}
		seen = id
	}
	for _, it := range changes {
		if err := putOutboxBody(tx, it); err != nil {
			return 0, false, err
		}
	}
	return done, done == max, meta.Put(keyPurgeOutbox, u64(seen))
}

// purgeOrders and purgeSubscriptions remove the customer's data from
// orders and subscriptions that have not changed since the cutoff.
func purgeOrders(tx *bolt.Tx, meta *bolt.Bucket, cutoff time.Time, max int) (int, bool, error) {
	return purgeKeyed(tx.Bucket(bucketOrders), meta, keyPurgeOrders, max, func(k, v []byte) ([]byte, error) {
		var o storedOrder // its facts and history hold no customer data
		if err := decodeValue(v, &o); err != nil {
			return nil, fmt.Errorf("%w: order %q: %v", ErrCorrupt, k, err)
		}
		if !record.ScrubOrder(&o.Order, cutoff) { // same status: the counts do not move
			return nil, nil
		}
		return encodeValue(&o)
	})
}

func purgeSubscriptions(tx *bolt.Tx, meta *bolt.Bucket, cutoff time.Time, max int) (int, bool, error) {
	return purgeKeyed(tx.Bucket(bucketSubs), meta, keyPurgeSubs, max, func(k, v []byte) ([]byte, error) {
		var s ipn.Subscription
		if err := decodeValue(v, &s); err != nil {
			return nil, fmt.Errorf("%w: subscription %q: %v", ErrCorrupt, k, err)
		}
		if !record.ScrubSubscription(&s, cutoff) {
			return nil, nil
		}
		return encodeValue(&s)
	})
}

// purgeKeyed walks bucket b from the key saved under cursorKey, up to 4 ×
// max keys, rewriting each value purge returns (nil: unchanged), at most
// max of them. At the end of the bucket the next pass starts again from
// the first key (a record may have grown old meanwhile).
func purgeKeyed(b, meta *bolt.Bucket, cursorKey []byte, max int, purge func(k, v []byte) ([]byte, error)) (int, bool, error) {
	from := meta.Get(cursorKey)
	c := b.Cursor()
	k, v := c.First()
	if len(from) > 0 {
		if k, v = c.Seek(from); k != nil && bytes.Equal(k, from) {
			k, v = c.Next()
		}
	}
	looked := 0
	var last []byte
	type change struct{ k, v []byte }
	var changes []change
	for ; k != nil && looked < 4*max && len(changes) < max; k, v = c.Next() {
		looked++
		last = append(last[:0], k...)
		nv, err := purge(k, v)
		if err != nil {
			return 0, false, err
		}
		if nv != nil {
			changes = append(changes, change{append([]byte(nil), k...), nv})
		}
	}
	for _, ch := range changes { // not while the cursor walks the bucket
		if err := b.Put(ch.k, ch.v); err != nil {
			return 0, false, err
		}
	}
	if k == nil {
		return len(changes), false, meta.Delete(cursorKey)
	}
	return len(changes), true, meta.Put(cursorKey, last)
}
