package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

// ErrNotDiscardable: only a pending or dead outbox item can be
// discarded.
var ErrNotDiscardable = record.ErrNotDiscardable

// ErrNotResendable: only a sent email can be sent again.
var ErrNotResendable = record.ErrNotResendable

// DiscardOutbox makes a pending or dead item discarded: it is not sent
// (counted apart, so that the dead-item alert clears), and a callback or
// script run of an order leaves its order's queue, so that the next one
// is due. The order's history says who discarded what and why. It
// returns the item as it was; one already discarded is returned as it is
// (repeated true, nothing changes). version, when not 0, is the version
// of the item's order the merchant saw: another is ErrStale.
// ErrNotDiscardable for a sent or skipped item, ErrNotFound for no item.
func (db *DB) DiscardOutbox(id uint64, by, why string, version int, now time.Time) (was ipn.OutboxItem, repeated bool, err error) {
	var change *ipn.OrderChange
	var order *ipn.Order
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		change, order, repeated = nil, nil, false
		old, err := getOutbox(tx, id)
		if err != nil {
			return err
		}
		was = *old
		it, rep, err := record.Discard(*old)
		if err != nil || rep {
			repeated = rep
			return err
		}
		if version != 0 && old.Effect.OrderID != "" {
			so, err := getStoredOrder(tx, old.Effect.OrderID)
			if err != nil {
				return err
			}
			if so != nil && record.Version(&so.Order) != version {
				return fmt.Errorf("%w: order %q is at version %d, the request saw %d", ErrStale, so.ID,
					record.Version(&so.Order), version)
			}
		}
		if err := putOutbox(tx, old, &it); err != nil {
			return err
		}
		if it.Effect.OrderID == "" {
			return nil
		}
		if err := db.appendOrderChange(tx, it.Effect.OrderID, func(o *ipn.Order) ipn.OrderChange {
			c := record.Discarded(was, o, by, why, now)
			change, order = &c, &ipn.Order{ID: o.ID}
			return c
		}); err != nil {
			return err
		}
		return nil
	})
	if err == nil && !repeated {
		db.pokeOutbox() // the order's next callback may be due now
		if change != nil {
			db.announceOrder(order, *change)
		}
	}
	return was, repeated, mapClosed(err)
}

// RetryDead puts every dead item of lane kind ("": every lane) back in
// the queue, due now with its attempts reset (as RetryOutbox), in one
// transaction, and returns their ids. It reads every item (dead items
// have no index of their own): an operator's action, not a hot path.
func (db *DB) RetryDead(kind string, now time.Time) ([]uint64, error) {
	var ids []uint64
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		ids = nil
		var dead []ipn.OutboxItem
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			it, err := decodeOutbox(tx, binary.BigEndian.Uint64(k), v)
			if err != nil {
				continue // a damaged item stays as it is (DueLane made it dead and counted it)
			}
			if it.State == ipn.OutboxDead && (kind == "" || it.Effect.Kind == kind) {
				dead = append(dead, *it)
			}
		}
		for i := range dead {
			old := &dead[i]
			it, _ := record.Retry(*old, now)
			if err := putOutbox(tx, old, &it); err != nil {
				return err
			}
			ids = append(ids, it.ID)
		}
		return nil
	})
	if err == nil && len(ids) > 0 {
		db.pokeOutbox()
	}
	return ids, mapClosed(err)
}

// ResendOutbox queues a sent email again as a new item (its cause the
// original's with "/resend/N"), as it was (the same template and order
// snapshot), and returns the new item. ErrNotResendable for an item that
// is not a sent email. With an Idempotency-Key key seen before for the
// same item, it returns the item queued then and queues nothing; used
// for another request (a decision, a resend of another item),
// ErrKeyReused (record.ResendKey).
func (db *DB) ResendOutbox(id uint64, by, key string, now time.Time) (ipn.OutboxItem, error) {
	var out ipn.OutboxItem
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		rt := &boltTx{db, tx}
		if key != "" {
			queued, repeated, err := record.ResendKey(rt, key, id, now)
			if err != nil {
				return err
			}
			if repeated {
				it, err := getOutbox(tx, queued)
				if err == nil {
					out = *it
				}
				return err
			}
		}
		old, err := getOutbox(tx, id)
		if err != nil {
			return err
		}
		causes := tx.Bucket(bucketOutboxCause)
		e, err := record.Resend(*old, func(c string) (bool, error) { return causes.Get([]byte(c)) != nil, nil })
		if err != nil {
			return err
		}
		if err := db.enqueueOne(tx, e, old.Notification, now); err != nil {
			return err
		}
		nid := getU64(causes.Get([]byte(e.Cause)))
		if nid == 0 {
			return record.NotEnabled(id, e.Kind)
		}
		it, err := getOutbox(tx, nid)
		if err != nil {
			return err
		}
		out = *it
		if key != "" {
			if err := record.RememberResend(rt, key, id, nid, now); err != nil {
				return err
			}
		}
		if e.OrderID == "" {
			return nil
		}
		return db.appendOrderChange(tx, e.OrderID, func(o *ipn.Order) ipn.OrderChange {
			return record.Resent(id, e.Template, o, by, nid, now)
		})
	})
	if err == nil {
		db.pokeOutbox()
	}
	return out, mapClosed(err)
}

// GetOutbox returns outbox item id (ErrNotFound when there is none).
func (db *DB) GetOutbox(id uint64) (ipn.OutboxItem, error) {
	var out ipn.OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		it, err := getOutbox(tx, id)
		if err == nil {
			out = *it
		}
		return err
	})
	return out, mapClosed(err)
}
