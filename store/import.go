package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

// Importer writes a copy of another store into a new database (ipnd
// migrate from PostgreSQL), through the same writers the pipeline and
// the outbox use, so that the indexes and counts are kept as they would
// have been. It commits every importChunk records (one bbolt transaction
// of millions would insert into nodes that split only at its commit:
// quadratic); the file is new, and Import removes it unless everything
// was written, so nothing half-copied is left.
type Importer struct {
	db *DB
	tx *bolt.Tx
	n  int // records written in tx
}

// importChunk is how many records an Importer writes per transaction.
var importChunk = 20000

// step counts a record written and commits the transaction past
// importChunk.
func (w *Importer) step(err error) error {
	if err != nil {
		return err
	}
	if w.n++; w.n < importChunk {
		return nil
	}
	if err := w.tx.Commit(); err != nil {
		return err
	}
	tx, err := w.db.bolt.Begin(true)
	if err != nil {
		return err
	}
	w.tx, w.n = tx, 0
	return nil
}

// Import makes a new database at path (refused when a file is there),
// calls fill with an Importer and commits what it wrote; on any error it
// removes the new database, so that nothing half-copied is left.
func Import(path string, fill func(w *Importer) error) (err error) {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		if err == nil {
			return fmt.Errorf("store: %s exists: migrate writes a new database file only (move it away or name another)", path)
		}
		return fmt.Errorf("store: %w", err)
	}
	if segs, _ := filepath.Glob(path + ".wal-*"); len(segs) > 0 {
		return fmt.Errorf("store: journal segments %s.wal-* are there: move them away or name another file", path)
	}
	db, err := Open(path, Options{noApply: true})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			os.Remove(pidPath(path))
		}
	}()
	tx, err := db.bolt.Begin(true)
	if err != nil {
		return err
	}
	w := &Importer{db: db, tx: tx}
	if err := fill(w); err != nil {
		w.tx.Rollback()
		return err
	}
	return w.tx.Commit()
}

// Notification writes n with its id, and its processing record p (nil:
// received, none recorded).
func (w *Importer) Notification(n *ipn.Notification, p *ipn.Processing) error {
	return w.step(w.notification(n, p))
}

func (w *Importer) notification(n *ipn.Notification, p *ipn.Processing) error {
	rec := encodeRecord(n)
	if !n.Purged.IsZero() {
		rec = encodePurged(n)
	}
	log := w.tx.Bucket(bucketLog)
	if err := log.Put(u64(n.ID), rec); err != nil {
		return err
	}
	if n.ID > log.Sequence() {
		if err := log.SetSequence(n.ID); err != nil {
			return err
		}
	}
	if key := dedupKey(n.Gateway, n.DedupKey); key != nil {
		if err := w.tx.Bucket(bucketDedup).Put(key, u64(n.ID)); err != nil {
			return err
		}
	}
	if p == nil {
		return nil
	}
	return putProcessing(w.tx, n.ID, p)
}

// Retry schedules notification id's next attempt at due. PostgreSQL
// keeps times to the microsecond: the key takes the time to the
// nanosecond from the processing record (written before), which is what
// the pipeline unschedules it by.
func (w *Importer) Retry(due time.Time, id uint64, gateway string) error {
	return w.step(w.retry(due, id, gateway))
}

func (w *Importer) retry(due time.Time, id uint64, gateway string) error {
	if p, err := stateOf(w.tx, id); err == nil && p != nil && p.NextAttempt.Truncate(time.Microsecond).Equal(due) {
		due = p.NextAttempt
	}
	return putRetry(w.tx, retryKey(due, id), []byte(gateway))
}

// Fact records that notification id holds payment fact key.
func (w *Importer) Fact(key string, id uint64) error { return w.step(w.fact(key, id)) }

func (w *Importer) fact(key string, id uint64) error {
	return w.tx.Bucket(bucketEvents).Put([]byte(key), u64(id))
}

// Ref links a payment reference to its order.
func (w *Importer) Ref(gateway, ref, order string) error { return w.step(w.ref(gateway, ref, order)) }

func (w *Importer) ref(gateway, ref, order string) error {
	return w.tx.Bucket(bucketRefs).Put(refKey(gateway, ref), []byte(order))
}

// Orphan keeps parked event p of notification id under ref.
func (w *Importer) Orphan(gateway, ref string, id uint64, p ipn.Parked) error {
	return w.step(w.orphan(gateway, ref, id, p))
}

func (w *Importer) orphan(gateway, ref string, id uint64, p ipn.Parked) error {
	v, err := encodeValue(p)
	if err != nil {
		return err
	}
	return w.tx.Bucket(bucketOrphans).Put(orphanKey(gateway, ref, id), v)
}

// ParkedDue records when notification id's event was parked, and the
// first reference it waits under. The key takes the time to the
// nanosecond from the parked event (written before), which is what the
// pipeline unparks it by.
func (w *Importer) ParkedDue(at time.Time, id uint64, gateway, ref string) error {
	return w.step(w.parkedDue(at, id, gateway, ref))
}

func (w *Importer) parkedDue(at time.Time, id uint64, gateway, ref string) error {
	var p ipn.Parked
	if v := w.tx.Bucket(bucketOrphans).Get(orphanKey(gateway, ref, id)); v != nil && decodeValue(v, &p) == nil && p.At.Truncate(time.Microsecond).Equal(at) {
		at = p.At
	}
	if err := w.tx.Bucket(bucketParkedDue).Put(parkedDueKey(at, id), append(append([]byte(gateway), 0), ref...)); err != nil {
		return err
	}
	return addParked(w.tx, 1)
}

// Order writes order o as it is kept: small, or with its records apart.
func (w *Importer) Order(o *ExportedOrder) error { return w.step(w.order(o)) }

func (w *Importer) order(o *ExportedOrder) error {
	if err := w.db.putOrder(w.tx, nil, &o.Order, o.Tally); err != nil {
		return err
	}
	if o.Tally == nil {
		return nil
	}
	id := o.Order.ID
	recs := w.tx.Bucket(bucketOrderRecords)
	put := func(k []byte, v any) error {
		b, err := encodeValue(v)
		if err != nil {
			return err
		}
		return recs.Put(k, b)
	}
	for seq, f := range o.Facts {
		if err := put(seqKey(id, recFact, seq), f); err != nil {
			return err
		}
	}
	for k, seq := range o.FactKeys {
		if err := recs.Put(subKey(id, recFactKey, k), u64(seq)); err != nil {
			return err
		}
	}
	for seq, h := range o.History {
		if err := put(seqKey(id, recHistory, seq), h); err != nil {
			return err
		}
	}
	for k, g := range o.Groups {
		if err := put(subKey(id, recGroup, k), g); err != nil {
			return err
		}
	}
	for _, e := range o.OneOffs {
		if err := recs.Put(append(recPrefix(id, recOneOff), e.Key...), append(append([]byte(e.Amount), 0), e.Group...)); err != nil {
			return err
		}
	}
	return nil
}

// Subscription writes s.
func (w *Importer) Subscription(s *ipn.Subscription) error { return w.step(w.subscription(s)) }

func (w *Importer) subscription(s *ipn.Subscription) error {
	v, err := encodeValue(s)
	if err != nil {
		return err
	}
	return w.tx.Bucket(bucketSubs).Put([]byte(s.ID), v)
}

// Outbox writes item it with its id and state; items come in id order
// (a shop's callbacks of one order wait in their queue in that order).
func (w *Importer) Outbox(it *ipn.OutboxItem) error { return w.step(w.outbox(it)) }

func (w *Importer) outbox(it *ipn.OutboxItem) error {
	if err := putOutbox(w.tx, nil, it); err != nil {
		return err
	}
	return w.tx.Bucket(bucketOutboxCause).Put([]byte(it.Effect.Cause), u64(it.ID))
}

// Attempt keeps delivery attempt a of outbox item outbox under seq.
func (w *Importer) Attempt(outbox, seq uint64, a ipn.OutboxAttempt) error {
	v, err := encodeValue(a)
	if err == nil {
		err = w.tx.Bucket(bucketAttempts).Put(binary.BigEndian.AppendUint64(u64(outbox), seq), v)
	}
	return w.step(err)
}

// Key remembers Idempotency-Key key as used for use (and indexes it by
// its time, for expiry), as a decision does.
func (w *Importer) Key(key string, use record.KeyUse) error {
	v, err := encodeValue(use)
	if err == nil {
		err = w.tx.Bucket(bucketIdempotency).Put([]byte(key), v)
	}
	if err == nil {
		err = w.tx.Bucket(bucketIdempotencyAge).Put(append(u64(uint64(use.At.UnixNano())), key...), nil)
	}
	return w.step(err)
}

// Counters sets the highest notification id given, the pipeline cursor
// and the highest outbox id given.
func (w *Importer) Counters(seq, cursor, outboxSeq uint64) error {
	if log := w.tx.Bucket(bucketLog); seq > log.Sequence() {
		if err := log.SetSequence(seq); err != nil {
			return err
		}
	}
	if err := w.tx.Bucket(bucketMeta).Put(keyCursor, u64(cursor)); err != nil {
		return err
	}
	return w.tx.Bucket(bucketOutbox).SetSequence(outboxSeq)
}

// Count is the number of records of kind (a table of the PostgreSQL
// store) written so far; -1 for a kind it does not know.
func (w *Importer) Count(kind string) int {
	names := map[string][]byte{"notifications": bucketLog, "processing": bucketState, "retries": bucketRetry, "facts": bucketEvents,
		"payment_refs": bucketRefs, "orphans": bucketOrphans, "parked_due": bucketParkedDue, "orders": bucketOrders,
		"subscriptions": bucketSubs, "outbox": bucketOutbox, "outbox_attempts": bucketAttempts, "idempotency": bucketIdempotency}
	var bucket *bolt.Bucket
	if b, ok := names[kind]; ok {
		bucket = w.tx.Bucket(b)
	} else if bucket, ok = fulfilBucketOf(w.tx, kind); !ok { // export_fulfil.go
		return -1
	}
	if bucket == nil {
		return 0
	}
	n := 0
	c := bucket.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}
