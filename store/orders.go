package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

var (
	bucketOrders      = []byte("orders")        // order id -> JSON ipn.Order
	bucketOrderCounts = []byte("order_counts")  // order status -> uint64 count
	bucketSubs        = []byte("subscriptions") // subscription id -> JSON ipn.Subscription
	bucketOutbox      = []byte("outbox")        // outbox id (uint64) -> JSON OutboxItem
	bucketOutboxCause = []byte("outbox_cause")  // effect cause -> outbox id: a cause is queued once
)

// ErrExists: an order with that id already exists.
var ErrExists = errors.New("already exists")

// OutboxItem is the outbox item type (kept in ipn: the worker in notify
// uses it too).
type OutboxItem = ipn.OutboxItem

// Outbox item states.
const (
	OutboxPending = ipn.OutboxPending
	OutboxSent    = ipn.OutboxSent
	OutboxDead    = ipn.OutboxDead
	OutboxSkipped = ipn.OutboxSkipped
)

// CreateOrder registers an expected order. It fails with ErrExists when
// the id is taken.
func (db *DB) CreateOrder(o ipn.Order) error {
	return mapClosed(db.bolt.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketOrders).Get([]byte(o.ID)) != nil {
			return fmt.Errorf("order %q: %w", o.ID, ErrExists)
		}
		return db.putOrder(tx, nil, &o, nil)
	}))
}

// GetOrder returns the order with the given id, or ErrNotFound, with
// the newest 1,000 of its facts and history entries and the txn ids of
// those facts (Changes counts the entries; OrderHistory and OrderFacts
// page through all).
func (db *DB) GetOrder(id string) (*ipn.Order, error) {
	var o *ipn.Order
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		o, err = fullOrder(tx, id)
		if err == nil && o == nil {
			err = fmt.Errorf("order %q: %w", id, ErrNotFound)
		}
		return err
	})
	return o, mapClosed(err)
}

// ListOrders returns orders (without their facts, history and txn ids:
// GetOrder has them) by id, descending, below before (all when
// ""), with the given status (all when ""), at most limit (default 50).
func (db *DB) ListOrders(status ipn.OrderStatus, before string, limit int) ([]ipn.Order, error) {
	if limit <= 0 {
		limit = 50
	}
	var out []ipn.Order
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOrders).Cursor()
		k, v := c.Last()
		if before != "" {
			if sk, _ := c.Seek([]byte(before)); sk != nil {
				k, v = c.Prev() // the greatest id below before
			}
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			if before != "" && bytes.Compare(k, []byte(before)) >= 0 {
				continue
			}
			var so storedOrder
			if err := decodeValue(v, &so); err != nil {
				return fmt.Errorf("%w: order %q: %v", ErrCorrupt, k, err)
			}
			if status == "" || so.Status == status {
				out = append(out, so.Order)
			}
		}
		return nil
	})
	return out, mapClosed(err)
}

// OrderCounts returns the number of orders in each status (kept up to
// date in the transactions that change orders; cheap to read).
func (db *DB) OrderCounts() (map[ipn.OrderStatus]int, error) {
	out := map[ipn.OrderStatus]int{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOrderCounts).ForEach(func(k, v []byte) error {
			out[ipn.OrderStatus(k)] = int(getU64(v))
			return nil
		})
	})
	return out, mapClosed(err)
}

// GetSubscription returns a subscription, or ErrNotFound.
func (db *DB) GetSubscription(id string) (*ipn.Subscription, error) {
	var s *ipn.Subscription
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSubs).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("subscription %q: %w", id, ErrNotFound)
		}
		s = new(ipn.Subscription)
		if err := decodeValue(v, s); err != nil {
			return fmt.Errorf("%w: subscription %q: %v", ErrCorrupt, id, err)
		}
		return nil
	})
	return s, mapClosed(err)
}

// ListOutbox returns outbox items in the given state ("" = all), newest
// first (pending ones: the next due first, read from the due index), at
// most limit (default 100).
func (db *DB) ListOutbox(state string, limit int) ([]OutboxItem, error) {
	if limit <= 0 {
		limit = 100
	}
	if state == OutboxPending {
		// From the due index: no scan of the items already sent.
		return db.DueOutbox(time.Unix(0, math.MaxInt64), limit)
	}
	var out []OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var it OutboxItem
			if err := decodeValue(v, &it); err != nil {
				return fmt.Errorf("%w: outbox %d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
			}
			if state == "" || it.State == state {
				out = append(out, it)
			}
		}
		return nil
	})
	return out, mapClosed(err)
}

// OutboxOf returns the outbox items queued by notification id, oldest
// first. There is no index by notification: it reads every item, newest
// first, decoding only those whose JSON names the id (unpacked first:
// tens of ms per 100k items), so it is for the operator's look-ups (ipnd
// simulate), not for the hot path.
func (db *DB) OutboxOf(notification uint64) ([]OutboxItem, error) {
	needle := []byte(`"notification":` + strconv.FormatUint(notification, 10))
	var out []OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			plain, err := plainValue(v)
			if err != nil {
				return fmt.Errorf("%w: outbox %d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
			}
			if !bytes.Contains(plain, needle) {
				continue
			}
			var it OutboxItem
			if err := json.Unmarshal(plain, &it); err != nil {
				return fmt.Errorf("%w: outbox %d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
			}
			if it.Notification == notification {
				out = append(out, it)
			}
		}
		return nil
	})
	slices.Reverse(out)
	return out, mapClosed(err)
}

// putOrder writes o and moves the status counts from old (nil: new
// order): with its tally t, without its facts, history and txn ids (kept
// apart: see orderlog.go); t nil: a small order, with them.
func (db *DB) putOrder(tx *bolt.Tx, old, o *ipn.Order, t *ipn.Tally) error {
	so := storedOrder{Order: *o, Tally: t}
	if t != nil {
		so.Facts, so.History, so.TxnIDs = nil, nil, nil
	}
	b, err := encodeValue(&so)
	if err != nil {
		return err
	}
	orders := tx.Bucket(bucketOrders)
	if err := orders.Put([]byte(o.ID), b); err != nil {
		return err
	}
	if old == nil {
		db.inserted(tx, bucketOrders, orders, []byte(o.ID))
	}
	counts := tx.Bucket(bucketOrderCounts)
	if old != nil {
		if old.Status == o.Status {
			return nil
		}
		if n := getU64(counts.Get([]byte(old.Status))); n > 0 {
			if err := counts.Put([]byte(old.Status), u64(n-1)); err != nil {
				return err
			}
		}
	}
	return counts.Put([]byte(o.Status), u64(getU64(counts.Get([]byte(o.Status)))+1))
}

// putSubscription applies a subscription event to its record.
func putSubscription(tx *bolt.Tx, ev *ipn.Event, ac ipn.ApplyContext) error {
	subs := tx.Bucket(bucketSubs)
	var old *ipn.Subscription
	if v := subs.Get([]byte(ev.SubscriptionID)); v != nil {
		old = new(ipn.Subscription)
		if err := decodeValue(v, old); err != nil {
			return fmt.Errorf("%w: subscription %q: %v", ErrCorrupt, ev.SubscriptionID, err)
		}
	}
	next, changed := ipn.ApplySubscription(old, ev, ac)
	if !changed {
		return nil
	}
	b, err := encodeValue(next)
	if err != nil {
		return err
	}
	return subs.Put([]byte(next.ID), b)
}
