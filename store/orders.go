package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

var (
	bucketOrders      = []byte("orders")        // order id -> JSON ipn.Order
	bucketOrderCounts = []byte("order_counts")  // order status -> uint64 count of all orders; "test" NUL status -> of test orders
	bucketSubs        = []byte("subscriptions") // subscription id -> JSON ipn.Subscription
	bucketOutbox      = []byte("outbox")        // outbox id (uint64) -> JSON OutboxItem
	bucketOutboxCause = []byte("outbox_cause")  // effect cause -> outbox id: a cause is queued once
	// orders_by_change: updated_at (unix nano, 8 bytes big-endian) + order id -> nothing,
	// so that orders list by last change, newest first.
	bucketOrdersByChange = []byte("orders_by_change")
)

// ErrBadCursor: a ListOrders before that is not a cursor OrderCursor made.
var ErrBadCursor = errors.New("not a paging cursor")

// ErrExists: an order with that id already exists.
var ErrExists = errors.New("already exists")

// ErrNotTest: the order is a real one, and only test orders may be
// deleted (DeleteOrder).
var ErrNotTest = errors.New("not a test order")

// OutboxItem is the outbox item type (kept in ipn: the worker in notify
// uses it too).
type OutboxItem = ipn.OutboxItem

// Outbox item states.
const (
	OutboxPending   = ipn.OutboxPending
	OutboxSent      = ipn.OutboxSent
	OutboxDead      = ipn.OutboxDead
	OutboxSkipped   = ipn.OutboxSkipped
	OutboxDiscarded = ipn.OutboxDiscarded
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

// OrderHeader returns the order with the given id, or ErrNotFound,
// without its facts, history and txn ids (Changes counts the history
// entries all the same): one read, however long the order (the outbox
// worker reads it for each email it renders, so the parts it does not
// use are passed over, not decoded).
func (db *DB) OrderHeader(id string) (*ipn.Order, error) {
	var o *ipn.Order
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketOrders).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("order %q: %w", id, ErrNotFound)
		}
		var h orderHeader
		if err := decodeValue(v, &h); err != nil {
			return fmt.Errorf("%w: order %q: %v", ErrCorrupt, id, err)
		}
		h.Changes = max(h.Changes, len(h.History))
		o = &h.Order
		return nil
	})
	return o, mapClosed(err)
}

// orderHeader is an order's value (storedOrder) read without what
// OrderHeader leaves out: its fields of these names hide the order's.
type orderHeader struct {
	ipn.Order
	History []struct{} `json:"history"` // counted, not read
	Facts   skipJSON   `json:"facts"`
	TxnIDs  skipJSON   `json:"txn_ids"`
	Tally   skipJSON   `json:"tally"`
}

// skipJSON passes over a JSON value.
type skipJSON struct{}

func (skipJSON) UnmarshalJSON([]byte) error { return nil }

// ListOrders returns orders (without their facts, history and txn ids:
// GetOrder has them) by last change, newest first, after the
// cursor before (OrderCursor of the last order of the previous page; ""
// for the first page), with the given status (all when ""), at most
// limit (default 50). A before that is not such a cursor is ErrBadCursor.
// An order that changes while a client pages moves to the front: the
// pages already read do not show it again.
func (db *DB) ListOrders(status ipn.OrderStatus, before string, limit int) ([]ipn.Order, error) {
	if limit <= 0 {
		limit = 50
	}
	var from []byte
	if before != "" {
		var ok bool
		if from, ok = parseOrderCursor(before); !ok {
			return nil, fmt.Errorf("orders: before %q: %w", before, ErrBadCursor)
		}
	}
	if status != "" {
		return db.listOrdersByStatus(status, from, limit) // index.go
	}
	var out []ipn.Order
	err := db.bolt.View(func(tx *bolt.Tx) error {
		orders := tx.Bucket(bucketOrders)
		c := tx.Bucket(bucketOrdersByChange).Cursor()
		k, _ := c.Last()
		if from != nil {
			if k, _ = c.Seek(from); k == nil {
				k, _ = c.Last()
			}
			for k != nil && bytes.Compare(k, from) >= 0 {
				k, _ = c.Prev()
			}
		}
		for ; k != nil && len(out) < limit; k, _ = c.Prev() {
			if len(k) < 8 {
				continue
			}
			id := k[8:]
			v := orders.Get(id)
			if v == nil {
				continue
			}
			var so storedOrder
			if err := decodeValue(v, &so); err != nil {
				return fmt.Errorf("%w: order %q: %v", ErrCorrupt, id, err)
			}
			if !bytes.Equal(changeKey(&so.Order), k) {
				continue // a stale entry: the order is listed under its current change
			}
			if status == "" || so.Status == status {
				out = append(out, so.Order)
			}
		}
		return nil
	})
	return out, mapClosed(err)
}

// OrderCursor is the ListOrders before that continues after o.
func OrderCursor(o ipn.Order) string {
	return o.UpdatedAt.UTC().Format(time.RFC3339Nano) + "/" + o.ID
}

// parseOrderCursor turns an OrderCursor into its index key.
func parseOrderCursor(s string) ([]byte, bool) {
	at, id, ok := strings.Cut(s, "/")
	if !ok || id == "" {
		return nil, false
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return nil, false
	}
	return changeKeyOf(t, id), true
}

// changeKey is o's key in orders_by_change.
func changeKey(o *ipn.Order) []byte { return changeKeyOf(o.UpdatedAt, o.ID) }

func changeKeyOf(at time.Time, id string) []byte {
	n := int64(0)
	if !at.IsZero() && at.Unix() > 0 {
		n = at.UnixNano()
	}
	return append(binary.BigEndian.AppendUint64(nil, uint64(n)), id...)
}

// indexOrdersByChange fills orders_by_change from the orders when it is
// empty and they are not (a database of a build before the index): once,
// at open.
func indexOrdersByChange(tx *bolt.Tx) error {
	idx := tx.Bucket(bucketOrdersByChange)
	if k, _ := idx.Cursor().First(); k != nil {
		return nil
	}
	return tx.Bucket(bucketOrders).ForEach(func(k, v []byte) error {
		var o ipn.Order
		if err := decodeValue(v, &o); err != nil {
			// A damaged order is not listed; the rest are.
			return nil
		}
		return idx.Put(changeKey(&o), nil)
	})
}

// OrderCounts returns the number of orders in each status (kept up to
// date in the transactions that change orders; cheap to read).
func (db *DB) OrderCounts() (map[ipn.OrderStatus]int, error) {
	out := map[ipn.OrderStatus]int{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOrderCounts).ForEach(func(k, v []byte) error {
			if !bytes.HasPrefix(k, testCountPrefix) {
				out[ipn.OrderStatus(k)] = int(getU64(v))
			}
			return nil
		})
	})
	return out, mapClosed(err)
}

// TestOrderCounts returns the number of test orders in each status
// (those OrderCounts includes that are test orders; kept up to date
// like OrderCounts). Test orders created by builds before this count
// are counted as real ones until they are deleted.
func (db *DB) TestOrderCounts() (map[ipn.OrderStatus]int, error) {
	out := map[ipn.OrderStatus]int{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOrderCounts).Cursor()
		for k, v := c.Seek(testCountPrefix); k != nil && bytes.HasPrefix(k, testCountPrefix); k, v = c.Next() {
			out[ipn.OrderStatus(k[len(testCountPrefix):])] = int(getU64(v))
		}
		return nil
	})
	return out, mapClosed(err)
}

// DeleteOrder removes a test order (ipn.Order.Test) with its facts and
// the references that lead to it: its payment references (order_refs),
// the payment facts it applied (events, so that the same test payment
// sent again makes a new order) and its status count. The notifications
// that built it stay in the log (append-only), and so do the outbox
// items they queued. It fails with ErrNotFound when there is no such
// order and with ErrNotTest when the order is a real one.
func (db *DB) DeleteOrder(id string) error {
	db.settle()
	return mapClosed(db.bolt.Update(func(tx *bolt.Tx) error {
		// Every fact, not the newest shown: each holds an event key.
		o, err := orderInFull(tx, id)
		if err != nil {
			return err
		}
		if o == nil {
			return fmt.Errorf("order %q: %w", id, ErrNotFound)
		}
		if !o.Test {
			return fmt.Errorf("order %q: %w", id, ErrNotTest)
		}
		events := tx.Bucket(bucketEvents)
		for _, f := range o.Facts {
			if f.Key == "" {
				continue
			}
			if err := events.Delete([]byte(f.Key)); err != nil {
				return err
			}
		}
		// References are few per order but not indexed by order: a
		// deletion is a rare operator action, so it reads them all.
		refs := tx.Bucket(bucketRefs)
		var gone [][]byte
		if err := refs.ForEach(func(k, v []byte) error {
			if string(v) == id {
				gone = append(gone, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range gone {
			if err := refs.Delete(k); err != nil {
				return err
			}
		}
		// The order's facts, history and tally records (orderlog.go).
		if err := deletePrefix(tx.Bucket(bucketOrderRecords), orderPrefix(id)); err != nil {
			return err
		}
		// Its links and keys (fulfil.go).
		if err := deleteDeliveries(tx, id); err != nil {
			return err
		}
		if err := tx.Bucket(bucketOrders).Delete([]byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketOrdersByChange).Delete(changeKey(o)); err != nil {
			return err
		}
		if err := indexOrderStatus(tx, o, nil); err != nil { // index.go
			return err
		}
		counts := tx.Bucket(bucketOrderCounts)
		for _, k := range [][]byte{[]byte(o.Status), testCountKey(o.Status)} {
			if n := getU64(counts.Get(k)); n > 0 {
				if err := counts.Put(k, u64(n-1)); err != nil {
					return err
				}
			}
		}
		return nil
	}))
}

// testCountPrefix starts the order_counts keys of test orders (no
// status holds a NUL).
var testCountPrefix = []byte("test\x00")

func testCountKey(status ipn.OrderStatus) []byte {
	return append(bytes.Clone(testCountPrefix), status...)
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
// first (pending ones: the next due first, read from the due index, then
// the callbacks and script runs waiting behind an earlier one of their
// order, in queue order), at most limit (default 100).
func (db *DB) ListOutbox(state string, limit int) ([]OutboxItem, error) {
	if limit <= 0 {
		limit = 100
	}
	if state == OutboxPending {
		// From the due index and the order queues: no scan of the items
		// already sent.
		out, err := db.DueOutbox(time.Unix(0, math.MaxInt64), limit)
		if err != nil || len(out) >= limit {
			return out, err
		}
		err = db.bolt.View(func(tx *bolt.Tx) error {
			waiting, err := waitingInOrderQueues(tx, limit-len(out))
			out = append(out, waiting...)
			return err
		})
		return out, mapClosed(err)
	}
	if indexedOutboxState(state) {
		return db.OutboxByState(state, 0, limit) // index.go: the few dead, skipped, discarded
	}
	var out []OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			it, err := decodeOutbox(tx, binary.BigEndian.Uint64(k), v)
			if errors.Is(err, ErrCorrupt) {
				continue // left out (GetOutbox reports it): it fails no list
			}
			if err != nil {
				return err
			}
			if state == "" || it.State == state {
				out = append(out, *it)
			}
		}
		return nil
	})
	return out, mapClosed(err)
}

// OutboxOf returns the outbox items queued by notification id, oldest
// first, through the index by notification (index.go).
func (db *DB) OutboxOf(notification uint64) ([]OutboxItem, error) {
	var out []OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return outboxByPrefix(tx, tx.Bucket(bucketIxOutNotif), u64(notification), func(it *OutboxItem) bool {
			return it.Notification == notification
		}, &out)
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
	if err := indexOrderStatus(tx, old, o); err != nil { // index.go
		return err
	}
	if err := reindexChange(tx, old, o); err != nil {
		return err
	}
	if old != nil && old.Status == o.Status && old.Test == o.Test {
		return nil
	}
	counts := tx.Bucket(bucketOrderCounts)
	move := func(key []byte, by int) error {
		n := getU64(counts.Get(key))
		if by < 0 && n == 0 {
			return nil
		}
		return counts.Put(key, u64(uint64(int64(n)+int64(by))))
	}
	if old != nil {
		if err := move([]byte(old.Status), -1); err != nil {
			return err
		}
		if old.Test {
			if err := move(testCountKey(old.Status), -1); err != nil {
				return err
			}
		}
	}
	if o.Test {
		if err := move(testCountKey(o.Status), 1); err != nil {
			return err
		}
	}
	return move([]byte(o.Status), 1)
}

// reindexChange moves o's orders_by_change entry from old's change to
// its own (old nil: a new order).
func reindexChange(tx *bolt.Tx, old, o *ipn.Order) error {
	idx := tx.Bucket(bucketOrdersByChange)
	k := changeKey(o)
	if old != nil {
		ok := changeKey(old)
		if bytes.Equal(ok, k) {
			return nil
		}
		if err := idx.Delete(ok); err != nil {
			return err
		}
	}
	return idx.Put(k, nil)
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
