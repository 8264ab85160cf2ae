package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// Payment references: the identifiers a gateway uses for a payment that
// was applied to an order (a Stripe payment intent, charge, Checkout
// Session or subscription, a PayPal txn_id or subscr_id), so that a later
// refund, dispute or payment naming only one of them reaches the order.
// An event that names none the store knows (a refund before its payment)
// is parked as an orphan under each of its identifiers and applied to
// the order, in the same transaction, when a payment brings one of them.
var (
	bucketRefs    = []byte("order_refs") // gateway NUL ref -> order id
	bucketOrphans = []byte("orphans")    // gateway NUL ref NUL notification id (8) -> JSON orphan
)

func refKey(gateway, ref string) []byte {
	return append(append([]byte(gateway), 0), ref...)
}

// orphanKey is the key of notification id parked under ref.
func orphanKey(gateway, ref string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(refKey(gateway, ref), 0), id)
}

// findRef returns the order one of refs belongs to, "" when none does.
func findRef(tx *bolt.Tx, gateway string, refs []string) string {
	b := tx.Bucket(bucketRefs)
	for _, r := range refs {
		if v := b.Get(refKey(gateway, r)); v != nil {
			return string(v)
		}
	}
	return ""
}

// park keeps an applied event that names no known order under each of
// its references.
func park(tx *bolt.Tx, gateway string, id uint64, w ipn.Parked) error {
	v, err := encodeValue(w)
	if err != nil {
		return err
	}
	b := tx.Bucket(bucketOrphans)
	for _, r := range w.Event.PaymentRefs() {
		if err := b.Put(orphanKey(gateway, r, id), v); err != nil {
			return err
		}
	}
	return nil
}

// attach maps refs to order orderID (a reference already mapped keeps its
// order) and applies, to that order, the orphans parked under any of
// them, with theirs in turn. It returns the order as it stands after
// them (o itself when there were none).
func (db *DB) attach(tx *bolt.Tx, gateway string, o *ipn.Order, refs []string, now time.Time) (*ipn.Order, error) {
	refsB, orphans := tx.Bucket(bucketRefs), tx.Bucket(bucketOrphans)
	queue := refs
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		k := refKey(gateway, r)
		if refsB.Get(k) == nil {
			if err := refsB.Put(k, []byte(o.ID)); err != nil {
				return nil, err
			}
			db.inserted(tx, bucketRefs, refsB, k)
		}
		prefix := append(k, 0)
		type parked struct {
			id uint64
			w  ipn.Parked
		}
		var found []parked
		c := orphans.Cursor()
		for key, v := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, v = c.Next() {
			if len(key) != len(prefix)+8 {
				continue
			}
			var p parked
			p.id = binary.BigEndian.Uint64(key[len(prefix):])
			if err := decodeValue(v, &p.w); err != nil || p.w.Event == nil {
				return nil, fmt.Errorf("%w: orphan %d: %v", ErrCorrupt, p.id, err)
			}
			found = append(found, p)
		}
		for _, p := range found {
			// Every reference it was parked under is settled now.
			for _, pr := range p.w.Event.PaymentRefs() {
				if err := orphans.Delete(orphanKey(gateway, pr, p.id)); err != nil {
					return nil, err
				}
			}
			ev, ac := ipn.AdoptEvent(o.ID, p.id, gateway, p.w, now)
			cur, st, err := orderState(tx, o.ID, ev, ac)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				cur = o
			}
			a := ipn.AdoptState(cur, st, p.id, gateway, p.w, now)
			if err := db.recordOrder(tx, cur, &a.Order, st, a.Write); err != nil {
				return nil, err
			}
			if err := db.enqueue(tx, a.Effects, p.id, now); err != nil {
				return nil, err
			}
			if a.Subscription {
				if err := putSubscription(tx, a.Event, a.Context); err != nil {
					return nil, err
				}
			}
			if err := noteAdopted(tx, p.id, o.ID, a.Event, a.Detail, now); err != nil {
				return nil, err
			}
			o = &a.Order
			queue = append(queue, a.Event.PaymentRefs()...)
		}
	}
	return o, nil
}

// noteAdopted records in a parked notification's history that it reached
// its order.
func noteAdopted(tx *bolt.Tx, id uint64, orderID string, ev *ipn.Event, detail string, now time.Time) error {
	p, err := stateOf(tx, id)
	if err != nil || p == nil {
		return err
	}
	if p.Event != nil {
		p.Event.OrderID = orderID
		p.Event.Amount = ev.Amount // a refund's own amount, known now
	}
	p.History = append(p.History, ipn.HistoryEntry{At: now.UTC(), State: p.State, Detail: detail})
	return putProcessing(tx, id, p)
}

// Parked counts the events waiting for their order: notifications
// parked under references no payment has brought yet (see park).
func (db *DB) Parked() (int, error) {
	ids := map[uint64]bool{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOrphans).ForEach(func(k, _ []byte) error {
			if len(k) >= 8 {
				ids[binary.BigEndian.Uint64(k[len(k)-8:])] = true
			}
			return nil
		})
	})
	return len(ids), mapClosed(err)
}
