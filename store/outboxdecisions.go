package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// ErrNotDiscardable: only a pending or dead outbox item can be
// discarded.
var ErrNotDiscardable = errors.New("not pending or dead")

// ErrNotResendable: only a sent email can be sent again.
var ErrNotResendable = errors.New("not a sent email")

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
		switch old.State {
		case ipn.OutboxDiscarded:
			repeated = true
			return nil
		case ipn.OutboxPending, ipn.OutboxDead:
		default:
			return fmt.Errorf("outbox item %d is %s: %w", id, old.State, ErrNotDiscardable)
		}
		if version != 0 && old.Effect.OrderID != "" {
			so, err := getStoredOrder(tx, old.Effect.OrderID)
			if err != nil {
				return err
			}
			if so != nil && max(so.Changes, len(so.History)) != version {
				return fmt.Errorf("%w: order %q is at version %d, the request saw %d", ErrStale, so.ID,
					max(so.Changes, len(so.History)), version)
			}
		}
		it := *old
		it.State, it.NextAttempt = ipn.OutboxDiscarded, time.Time{}
		if err := putOutbox(tx, old, &it); err != nil {
			return err
		}
		if it.Effect.OrderID == "" {
			return nil
		}
		what := it.Effect.Kind
		if it.Effect.Template != "" {
			what += " " + it.Effect.Template
		}
		reason := fmt.Sprintf("outbox %d (%s, %s) discarded by %s", it.ID, what, old.State, by)
		if why != "" {
			reason += " (" + why + ")"
		}
		if err := db.appendOrderChange(tx, it.Effect.OrderID, func(o *ipn.Order) ipn.OrderChange {
			c := ipn.OrderChange{At: now.UTC(), Notification: it.Notification, From: o.Status, To: o.Status, Reason: reason, By: by}
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
			it := *old
			it.State, it.Attempts, it.NextAttempt = ipn.OutboxPending, 0, now.UTC()
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
// is not a sent email. With an Idempotency-Key key seen before, it
// returns the item queued then and queues nothing.
func (db *DB) ResendOutbox(id uint64, by, key string, now time.Time) (ipn.OutboxItem, error) {
	var out ipn.OutboxItem
	target := "outbox/" + strconv.FormatUint(id, 10)
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if key != "" {
			var rec idemRecord
			if err := getJSON(tx, bucketIdempotency, []byte(key), &rec); err != nil {
				return err
			}
			if rec.Order != "" && now.Sub(rec.At) < IdempotencyTTL {
				if rec.Order != target || rec.Kind != "resend" {
					return fmt.Errorf("%w: it was used for %s of %q", ErrKeyReused, rec.Kind, rec.Order)
				}
				it, err := getOutbox(tx, rec.Item)
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
		email := old.Effect.Kind == ipn.EffectEmailCustomer || old.Effect.Kind == ipn.EffectEmailMerchant
		if !email || old.State != ipn.OutboxSent {
			return fmt.Errorf("outbox item %d is a %s %s: %w", id, old.State, old.Effect.Kind, ErrNotResendable)
		}
		causes := tx.Bucket(bucketOutboxCause)
		e := old.Effect
		for n := 1; ; n++ {
			c := old.Effect.Cause + "/resend/" + strconv.Itoa(n)
			if causes.Get([]byte(c)) == nil {
				e.Cause = c
				break
			}
		}
		if err := db.enqueueOne(tx, e, old.Notification, now); err != nil {
			return err
		}
		nid := getU64(causes.Get([]byte(e.Cause)))
		if nid == 0 {
			return fmt.Errorf("outbox item %d: %s emails are not enabled: %w", id, e.Kind, ErrNotResendable)
		}
		it, err := getOutbox(tx, nid)
		if err != nil {
			return err
		}
		out = *it
		if key != "" {
			if err := db.rememberKey(tx, key, idemRecord{At: now.UTC(), Order: target, Kind: "resend", Item: nid}); err != nil {
				return err
			}
		}
		if e.OrderID == "" {
			return nil
		}
		return db.appendOrderChange(tx, e.OrderID, func(o *ipn.Order) ipn.OrderChange {
			return ipn.OrderChange{At: now.UTC(), From: o.Status, To: o.Status, By: by,
				Reason: fmt.Sprintf("outbox %d (%s) resent by %s as outbox %d", id, e.Template, by, nid)}
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
