package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

// boltTx is a bbolt write transaction as record.Tx: the typed reads and
// writes with which record.Finish and record.Attach drive the decision
// (each one of the store's functions on tx).
type boltTx struct {
	db *DB
	tx *bolt.Tx
}

var _ record.Tx = (*boltTx)(nil)

// update is record.Update on the bbolt database: one Update, one fsync.
func (db *DB) update(fn func(record.Tx) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		tx.Bucket(bucketState).FillPercent = 0.9 // ids arrive mostly in order
		return fn(&boltTx{db, tx})
	})
}

func (t *boltTx) Notification(id uint64) (*ipn.Notification, error) { return logged(t.tx, id) }

func (t *boltTx) State(id uint64) (*ipn.Processing, error) { return stateOf(t.tx, id) }

func (t *boltTx) FindRef(gateway string, refs []string) (string, error) {
	return findRef(t.tx, gateway, refs), nil
}

func (t *boltTx) FactHolder(key string) (uint64, error) {
	return getU64(t.tx.Bucket(bucketEvents).Get([]byte(key))), nil
}

func (t *boltTx) OrderState(id string, ev *ipn.Event, ac ipn.ApplyContext) (*ipn.Order, *ipn.OrderState, error) {
	return orderState(t.tx, id, ev, ac)
}

func (t *boltTx) Orphans(gateway, ref string) ([]record.Orphan, error) {
	prefix := append(refKey(gateway, ref), 0)
	var found []record.Orphan
	c := t.tx.Bucket(bucketOrphans).Cursor()
	for key, v := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, v = c.Next() {
		if len(key) != len(prefix)+8 {
			continue
		}
		var p record.Orphan
		p.ID = binary.BigEndian.Uint64(key[len(prefix):])
		if err := decodeValue(v, &p.Parked); err != nil || p.Parked.Event == nil {
			return nil, fmt.Errorf("%w: orphan %d: %v", ErrCorrupt, p.ID, err)
		}
		found = append(found, p)
	}
	return found, nil
}

func (t *boltTx) ParkedDue(cutoff time.Time, max int) ([]record.Due, error) {
	var due []record.Due
	c := t.tx.Bucket(bucketParkedDue).Cursor()
	for k, _ := c.First(); k != nil && len(due) < max; k, _ = c.Next() {
		if len(k) != 16 || int64(binary.BigEndian.Uint64(k[:8])) > cutoff.UnixNano() {
			break
		}
		due = append(due, record.Due{ID: binary.BigEndian.Uint64(k[8:]), At: time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))})
	}
	return due, nil
}

func (t *boltTx) PutState(id uint64, p *ipn.Processing) error { return putProcessing(t.tx, id, p) }

func (t *boltTx) Schedule(id uint64, due time.Time, gateway string) error {
	return putRetry(t.tx, retryKey(due, id), []byte(gateway))
}

func (t *boltTx) Unschedule(id uint64, due time.Time) error {
	return deleteRetry(t.tx, retryKey(due, id))
}

func (t *boltTx) DropRetries(id uint64) error { return dropRetries(t.tx, id) }

func (t *boltTx) ClaimFact(key string, id, prev uint64) error {
	events := t.tx.Bucket(bucketEvents)
	if err := events.Put([]byte(key), u64(id)); err != nil {
		return err
	}
	if prev == 0 {
		t.db.inserted(t.tx, bucketEvents, events, []byte(key))
	}
	return nil
}

func (t *boltTx) ReleaseFact(key string) error {
	return t.tx.Bucket(bucketEvents).Delete([]byte(key))
}

func (t *boltTx) Fulfil(old, next *ipn.Order, w *ipn.OrderWrite, ev *ipn.Event, effects []ipn.Effect, now time.Time) ([]ipn.Effect, error) {
	return t.db.fulfilOrder(t.tx, old, next, w, ev, effects, now)
}

func (t *boltTx) PutOrder(old, next *ipn.Order, st *ipn.OrderState, w *ipn.OrderWrite) error {
	return t.db.recordOrder(t.tx, old, next, st, w)
}

func (t *boltTx) Enqueue(effects []ipn.Effect, id uint64, now time.Time) error {
	return t.db.enqueue(t.tx, effects, id, now)
}

func (t *boltTx) PutSubscription(ev *ipn.Event, ac ipn.ApplyContext) error {
	return putSubscription(t.tx, ev, ac)
}

func (t *boltTx) Park(gateway string, id uint64, w ipn.Parked) error {
	return park(t.tx, gateway, id, w)
}

func (t *boltTx) Unpark(gateway string, id uint64, w ipn.Parked) error {
	orphans := t.tx.Bucket(bucketOrphans)
	for _, r := range w.Event.PaymentRefs() {
		if err := orphans.Delete(orphanKey(gateway, r, id)); err != nil {
			return err
		}
	}
	if err := t.tx.Bucket(bucketParkedDue).Delete(parkedDueKey(w.At, id)); err != nil {
		return err
	}
	return addParked(t.tx, -1)
}

func (t *boltTx) TakeDue(d record.Due) (string, *record.Orphan, error) {
	dueB := t.tx.Bucket(bucketParkedDue)
	k := parkedDueKey(d.At, d.ID)
	gw, first, _ := bytes.Cut(dueB.Get(k), []byte{0})
	gateway, ref := string(gw), string(first)
	if err := dueB.Delete(k); err != nil {
		return "", nil, err
	}
	v := t.tx.Bucket(bucketOrphans).Get(orphanKey(gateway, ref, d.ID))
	if v == nil {
		return gateway, nil, nil // adopted meanwhile
	}
	o := &record.Orphan{ID: d.ID}
	if err := decodeValue(v, &o.Parked); err != nil || o.Parked.Event == nil {
		return "", nil, fmt.Errorf("%w: orphan %d: %v", ErrCorrupt, d.ID, err)
	}
	return gateway, o, nil
}

func (t *boltTx) LinkRef(gateway, ref, orderID string) error {
	refs := t.tx.Bucket(bucketRefs)
	k := refKey(gateway, ref)
	if refs.Get(k) != nil {
		return nil
	}
	if err := refs.Put(k, []byte(orderID)); err != nil {
		return err
	}
	t.db.inserted(t.tx, bucketRefs, refs, k)
	return nil
}

func (t *boltTx) MoveCursor(cursor uint64) error {
	meta := t.tx.Bucket(bucketMeta)
	if cursor > getU64(meta.Get(keyCursor)) {
		return meta.Put(keyCursor, u64(cursor))
	}
	return nil
}
