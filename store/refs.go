package store

import (
	"bytes"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

// Payment references: the identifiers a gateway uses for a payment that
// was applied to an order (a Stripe payment intent, charge, Checkout
// Session or subscription, a PayPal txn_id or subscr_id), so that a later
// refund, dispute or payment naming only one of them reaches the order.
// An event that names none the store knows (a refund before its payment)
// is parked as an orphan under each of its identifiers and applied to
// the order, in the same transaction, when a payment brings one of them.
//
// A parked event waits at most orders.park_for (SetParkFor): the parked_due
// index orders them by the time they were parked, ExpireParked fails
// those past it, and meta key parked_count counts them, so that
// ipnd_parked_events is read without a scan.
var (
	bucketRefs      = []byte("order_refs") // gateway NUL ref -> order id
	bucketOrphans   = []byte("orphans")    // gateway NUL ref NUL notification id (8) -> JSON orphan
	bucketParkedDue = []byte("parked_due") // parked at unix-nano (8) + notification id (8) -> gateway NUL first ref
	keyParked       = []byte("parked_count")
)

func parkedDueKey(at time.Time, id uint64) []byte {
	return retryKey(at, id) // the same layout: time then id
}

// addParked moves the parked count by delta.
func addParked(tx *bolt.Tx, delta int64) error {
	meta := tx.Bucket(bucketMeta)
	n := int64(getU64(meta.Get(keyParked))) + delta
	return meta.Put(keyParked, u64(uint64(max(n, 0))))
}

// migrateParked creates the parked_due index and the parked count for a
// database whose orphans an older build parked (without them): each is
// taken as parked now.
func migrateParked(tx *bolt.Tx, now time.Time) error {
	due, err := tx.CreateBucketIfNotExists(bucketParkedDue)
	if err != nil {
		return err
	}
	if tx.Bucket(bucketMeta).Get(keyParked) != nil {
		return nil
	}
	orphans := tx.Bucket(bucketOrphans)
	type entry struct{ k, v []byte }
	var rewrite []entry
	seen := map[uint64]bool{}
	err = orphans.ForEach(func(k, v []byte) error {
		if len(k) < 10 {
			return nil
		}
		id := binary.BigEndian.Uint64(k[len(k)-8:])
		var w ipn.Parked
		if err := decodeValue(v, &w); err != nil || w.Event == nil {
			return nil // left alone: attach reports it if it is ever reached
		}
		if w.At.IsZero() {
			w.At = now
			nv, err := encodeValue(w)
			if err != nil {
				return err
			}
			rewrite = append(rewrite, entry{bytes.Clone(k), nv})
		}
		if !seen[id] {
			seen[id] = true
			gw, rest, _ := bytes.Cut(k[:len(k)-9], []byte{0})
			if err := due.Put(parkedDueKey(w.At, id), append(append(bytes.Clone(gw), 0), rest...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range rewrite {
		if err := orphans.Put(e.k, e.v); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(keyParked, u64(uint64(len(seen))))
}

// SetParkFor sets orders.park_for: how long an event may wait for its
// payment before ExpireParked fails it (0: forever).
func (db *DB) SetParkFor(d time.Duration) { db.parkFor.Store(int64(d)) }

// ParkFor returns orders.park_for as SetParkFor set it.
func (db *DB) ParkFor() time.Duration { return time.Duration(db.parkFor.Load()) }

// nextParkedDue returns when the oldest parked event is due to expire.
func (db *DB) nextParkedDue(tx *bolt.Tx) (time.Time, bool) {
	parkFor := db.ParkFor()
	if parkFor <= 0 {
		return time.Time{}, false
	}
	k, _ := tx.Bucket(bucketParkedDue).Cursor().First()
	if len(k) != 16 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).Add(parkFor), true
}

// ExpireParked fails the parked events that have waited longer than
// orders.park_for at now (see ipn.ExpireParked): each leaves the orphans,
// its fact key is released (a later copy naming its order is applied),
// its notification is failed with the reason and the merchant's alert is
// queued, in one transaction per batch. A completed payment parked
// with Own (waiting for the event that names its order, which never
// came) becomes an order of its own instead. It is record.ExpireParked
// in one Update, of at most 256 events. It returns
// how many it failed or made orders of.
// The pipeline calls it at each step; NextDue includes the next expiry.
func (db *DB) ExpireParked(now time.Time) (int, error) {
	var due bool
	db.bolt.View(func(tx *bolt.Tx) error {
		at, ok := db.nextParkedDue(tx)
		due = ok && !at.After(now)
		return nil
	})
	if !due {
		return 0, nil
	}
	n := 0
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = record.ExpireParked(&boltTx{db, tx}, db.ParkFor(), 256, now)
		return err
	})
	if err == nil && n > 0 {
		db.pokeOutbox()
	}
	return n, mapClosed(err)
}

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
// its references, parked at w.At.
func park(tx *bolt.Tx, gateway string, id uint64, w ipn.Parked) error {
	b := tx.Bucket(bucketOrphans)
	refs := w.Event.PaymentRefs()
	if len(refs) == 0 {
		return nil
	}
	if old := b.Get(orphanKey(gateway, refs[0], id)); old != nil {
		// Parked already (a replay of a parked event): it keeps its time.
		var prev ipn.Parked
		if decodeValue(old, &prev) == nil && !prev.At.IsZero() {
			w.At = prev.At
		}
	} else {
		if err := tx.Bucket(bucketParkedDue).Put(parkedDueKey(w.At, id), append(append([]byte(gateway), 0), refs[0]...)); err != nil {
			return err
		}
		if err := addParked(tx, 1); err != nil {
			return err
		}
	}
	v, err := encodeValue(w)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if err := b.Put(orphanKey(gateway, r, id), v); err != nil {
			return err
		}
	}
	return nil
}

// Parked counts the events waiting for their order: notifications
// parked under references no payment has brought yet (see park). It
// reads a count the store keeps, not the orphans.
func (db *DB) Parked() (int, error) {
	n := 0
	err := db.bolt.View(func(tx *bolt.Tx) error {
		n = int(getU64(tx.Bucket(bucketMeta).Get(keyParked)))
		return nil
	})
	return n, mapClosed(err)
}
