package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// How an order is kept (schema 6). A small order (at most inlineEntries
// facts and history entries) is one value in bucketOrders, facts and
// history inside, as schema 4 kept every order: applying an event reads
// and rewrites those few. Once it outgrows that, its value holds the
// order without its facts, history and txn ids, and its running tally
// (ipn.Tally); the rest is in bucketOrderRecords, under keys that start
// with the order's prefix (orderPrefix: the id's length and the id, so
// that no order's keys run into another's) and a kind, all of one order
// side by side:
//
//	prefix f seq (8)            -> JSON ipn.OrderFact, in the order applied
//	prefix k fact key           -> seq (8): a fact applied again is found at once
//	prefix h index (8)          -> JSON ipn.OrderChange, the history
//	prefix g tally record key   -> JSON ipn.Group (see ipn.TallyKeys)
//	prefix i ipn.OneOffKey      -> amount NUL tally record key: a registered
//	                               order's counted one-off payments by amount
//
// Applying an event to such an order reads and writes its value and the
// few records ipn.TallyKeys names, whatever the number of facts before
// it. An order stored by schema 4 with more than inlineEntries facts or
// history entries is moved to this layout at Open (migrateOrders).
//
// Deleting an order removes its value (and its count in
// bucketOrderCounts) and every key under its prefix in
// bucketOrderRecords: deleteOrder.
var bucketOrderRecords = []byte("order_records")

// Kinds of an order's records.
const (
	recFact    = 'f'
	recFactKey = 'k'
	recHistory = 'h'
	recGroup   = 'g'
	recOneOff  = 'i'
)

// inlineEntries is the most facts, and the most history entries, an
// order keeps inside its value.
const inlineEntries = 8

// shownEntries bounds the facts and history entries GetOrder returns
// (the newest ones); OrderHistory and OrderFacts page through all.
const shownEntries = 1000

// storedOrder is an order's value: the order without its facts, history
// and txn ids, and its tally; or, Tally nil, a small order with its
// facts, history and txn ids inside.
type storedOrder struct {
	ipn.Order
	Tally *ipn.Tally `json:"tally,omitempty"`
}

func orderPrefix(id string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(id))), id...)
}

// recPrefix is the prefix of order id's records of one kind.
func recPrefix(id string, kind byte) []byte { return append(orderPrefix(id), kind) }

func seqKey(id string, kind byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(recPrefix(id, kind), seq)
}

func subKey(id string, kind byte, k string) []byte { return append(recPrefix(id, kind), k...) }

func getStoredOrder(tx *bolt.Tx, id string) (*storedOrder, error) {
	v := tx.Bucket(bucketOrders).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var so storedOrder
	if err := decodeValue(v, &so); err != nil {
		return nil, fmt.Errorf("%w: order %q: %v", ErrCorrupt, id, err)
	}
	return &so, nil
}

// orderState reads order id as applying ev to it needs (see
// ipn.ApplyState): the order, nil when none is stored, and its state. A
// small order comes with its facts and history inside and no state
// (nil), and so does a new one (nil, nil): it is applied as it is (by
// ipn.Apply), and recordOrder writes it.
func orderState(tx *bolt.Tx, id string, ev *ipn.Event, ac ipn.ApplyContext) (*ipn.Order, *ipn.OrderState, error) {
	so, err := getStoredOrder(tx, id)
	if err != nil || so == nil {
		return nil, nil, err
	}
	if so.Tally == nil {
		return &so.Order, nil, nil
	}
	o := &so.Order
	st := &ipn.OrderState{Tally: *so.Tally}
	recs := tx.Bucket(bucketOrderRecords)
	if v := recs.Get(subKey(id, recFactKey, ipn.FactKey(id, ev, ac))); len(v) == 8 {
		st.FactSeq = binary.BigEndian.Uint64(v)
		var f ipn.OrderFact
		if err := getJSON(tx, bucketOrderRecords, seqKey(id, recFact, st.FactSeq), &f); err != nil {
			return nil, nil, err
		}
		st.Fact = &f
	}
	have := map[string]ipn.Group{}
	for {
		keys, full := ipn.TallyKeys(o, ev, ac, st.Fact, have)
		if full {
			st.Full = true
			if st.All, err = orderFacts(tx, id, 0, -1); err != nil {
				return nil, nil, err
			}
			break
		}
		if len(keys) == 0 {
			st.Groups = have
			break
		}
		for _, k := range keys {
			var g ipn.Group
			if err := getJSON(tx, bucketOrderRecords, subKey(id, recGroup, k), &g); err != nil {
				return nil, nil, err
			}
			have[k] = g
		}
	}
	if !o.Registered {
		return o, st, nil // the double payment check needs the smallest only against an expected amount
	}
	prefix := recPrefix(id, recOneOff)
	c := recs.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(st.Smallest) < 2; k, v = c.Next() {
		amount, group, _ := bytes.Cut(v, []byte{0})
		st.Smallest = append(st.Smallest, ipn.OneOff{Group: string(group), Amount: string(amount)})
	}
	return o, st, nil
}

// getJSON decodes the value under k in bucket name into v; a missing one
// leaves v as it is.
func getJSON(tx *bolt.Tx, name, k []byte, v any) error {
	b := tx.Bucket(name).Get(k)
	if b == nil {
		return nil
	}
	if err := decodeValue(b, v); err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrCorrupt, name, k, err)
	}
	return nil
}

func (db *DB) putJSON(tx *bolt.Tx, name, k []byte, v any) error {
	b, err := encodeValue(v)
	if err != nil {
		return err
	}
	return db.putRaw(tx, name, k, b)
}

func (db *DB) putRaw(tx *bolt.Tx, name, k, b []byte) error {
	bucket := tx.Bucket(name)
	fresh := bucket.Get(k) == nil
	if err := bucket.Put(k, b); err != nil {
		return err
	}
	if fresh {
		db.inserted(tx, name, bucket, k)
	}
	return nil
}

// recordOrder writes what applying one event to order old decided: o
// and w (see writeOrder). st nil: old is a small order, kept inside its
// value, and o holds its facts and history; past inlineEntries they move
// to records of their own.
func (db *DB) recordOrder(tx *bolt.Tx, old, o *ipn.Order, st *ipn.OrderState, w *ipn.OrderWrite) error {
	switch {
	case st != nil:
		return db.writeOrder(tx, old, o, st, w)
	case len(o.Facts) > inlineEntries || len(o.History) > inlineEntries:
		return db.migrateOrder(tx, old, o)
	}
	return db.putOrder(tx, old, o, nil)
}

// writeOrder writes what applying one event decided: order o (old: as it
// was, nil when new) and w, given st, the state it was decided on. w nil:
// nothing was applied, nothing changes.
func (db *DB) writeOrder(tx *bolt.Tx, old, o *ipn.Order, st *ipn.OrderState, w *ipn.OrderWrite) error {
	if w == nil {
		return nil
	}
	id := o.ID
	if err := db.putOrder(tx, old, o, &w.Tally); err != nil {
		return err
	}
	recs := tx.Bucket(bucketOrderRecords)
	if w.Replaces {
		if err := recs.Delete(seqKey(id, recFact, st.FactSeq)); err != nil {
			return err
		}
	}
	if err := db.putJSON(tx, bucketOrderRecords, seqKey(id, recFact, w.FactSeq), w.Fact); err != nil {
		return err
	}
	if err := db.putRaw(tx, bucketOrderRecords, subKey(id, recFactKey, w.Fact.Key), u64(w.FactSeq)); err != nil {
		return err
	}
	if err := db.putJSON(tx, bucketOrderRecords, seqKey(id, recHistory, uint64(o.Changes-1)), w.Change); err != nil {
		return err
	}
	var before map[string]ipn.Group
	if w.Full {
		for _, kind := range []byte{recGroup, recOneOff} {
			if err := deletePrefix(recs, recPrefix(id, kind)); err != nil {
				return err
			}
		}
	} else {
		before = st.Groups
	}
	return db.putGroups(tx, o, before, w.Groups)
}

// putGroups writes order o's changed tally records (was: as they were;
// nil when none is stored) and, for a registered order, moves their
// entries in the one-off index.
func (db *DB) putGroups(tx *bolt.Tx, o *ipn.Order, was, groups map[string]ipn.Group) error {
	id := o.ID
	recs := tx.Bucket(bucketOrderRecords)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range groups {
			if !yield(k) {
				return
			}
		}
	}) {
		g := groups[k]
		if a, ok := ipn.OneOffAmount(k, was[k]); ok && o.Registered {
			if err := recs.Delete(subKey(id, recOneOff, string(ipn.OneOffKey(a, k)))); err != nil {
				return err
			}
		}
		if a, ok := ipn.OneOffAmount(k, g); ok && o.Registered {
			if err := db.putRaw(tx, bucketOrderRecords, subKey(id, recOneOff, string(ipn.OneOffKey(a, k))), []byte(a+"\x00"+k)); err != nil {
				return err
			}
		}
		if g == (ipn.Group{}) {
			if err := recs.Delete(subKey(id, recGroup, k)); err != nil {
				return err
			}
			continue
		}
		if err := db.putJSON(tx, bucketOrderRecords, subKey(id, recGroup, k), g); err != nil {
			return err
		}
	}
	return nil
}

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// deleteOrder removes order id and every record of it (see the layout
// above), and its count. It does nothing when there is no such order.
func deleteOrder(tx *bolt.Tx, id string) error {
	so, err := getStoredOrder(tx, id)
	if err != nil || so == nil {
		return err
	}
	if err := deletePrefix(tx.Bucket(bucketOrderRecords), orderPrefix(id)); err != nil {
		return err
	}
	counts := tx.Bucket(bucketOrderCounts)
	if n := getU64(counts.Get([]byte(so.Status))); n > 0 {
		if err := counts.Put([]byte(so.Status), u64(n-1)); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketOrders).Delete([]byte(id))
}

// appendOrderChange appends the history entry change makes of order id
// as it stands (nothing when there is no such order); the order's status
// and totals stay.
func (db *DB) appendOrderChange(tx *bolt.Tx, id string, change func(o *ipn.Order) ipn.OrderChange) error {
	so, err := getStoredOrder(tx, id)
	if err != nil || so == nil {
		return err
	}
	h := change(&so.Order)
	if so.Tally == nil {
		old := so.Order
		so.History = append(slices.Clip(so.History), h)
		so.Changes = max(so.Changes, len(old.History)) + 1
		return db.recordOrder(tx, &old, &so.Order, nil, nil)
	}
	so.Changes++
	so.Tally.Reach(h.To)
	if err := db.putJSON(tx, bucketOrderRecords, seqKey(id, recHistory, uint64(so.Changes-1)), h); err != nil {
		return err
	}
	return db.putOrder(tx, &so.Order, &so.Order, so.Tally)
}

// migrateOrder writes order o, which holds its facts and history (as
// schema 4 stored them), in the new layout, and moves the status counts
// from old (nil: a new order).
func (db *DB) migrateOrder(tx *bolt.Tx, old, o *ipn.Order) error {
	t, groups := ipn.RebuildTally(o)
	id := o.ID
	if err := deletePrefix(tx.Bucket(bucketOrderRecords), orderPrefix(id)); err != nil {
		return err
	}
	for i, f := range o.Facts {
		if err := db.putJSON(tx, bucketOrderRecords, seqKey(id, recFact, uint64(i)), f); err != nil {
			return err
		}
		if err := db.putRaw(tx, bucketOrderRecords, subKey(id, recFactKey, f.Key), u64(uint64(i))); err != nil {
			return err
		}
	}
	for i, h := range o.History {
		if err := db.putJSON(tx, bucketOrderRecords, seqKey(id, recHistory, uint64(i)), h); err != nil {
			return err
		}
	}
	if err := db.putGroups(tx, o, nil, groups); err != nil {
		return err
	}
	next := *o
	next.Changes = max(o.Changes, len(o.History))
	return db.putOrder(tx, old, &next, &t)
}

// migrateOrders moves every order stored by schema 4 with more than
// inlineEntries facts or history entries to the new layout.
func (db *DB) migrateOrders(tx *bolt.Tx) (int, error) {
	var old []ipn.Order
	err := tx.Bucket(bucketOrders).ForEach(func(k, v []byte) error {
		var so storedOrder
		if err := decodeValue(v, &so); err != nil {
			return nil // left as it is: reading it reports the damage
		}
		if so.Tally == nil && (len(so.Facts) > inlineEntries || len(so.History) > inlineEntries) {
			old = append(old, so.Order)
		}
		return nil
	})
	for i := range old {
		if err == nil {
			err = db.migrateOrder(tx, &old[i], &old[i])
		}
	}
	return len(old), err
}

// orderFacts returns order id's facts from the from-th on, at most limit
// (all: limit < 0), in the order they were applied.
func orderFacts(tx *bolt.Tx, id string, from, limit int) ([]ipn.OrderFact, error) {
	return readSeq[ipn.OrderFact](tx, id, recFact, from, limit)
}

// readSeq reads order id's records of one kind, skipping from, at most
// limit (all: limit < 0).
func readSeq[T any](tx *bolt.Tx, id string, kind byte, from, limit int) ([]T, error) {
	prefix := recPrefix(id, kind)
	c := tx.Bucket(bucketOrderRecords).Cursor()
	k, v := c.Seek(prefix)
	for i := 0; i < from && k != nil && bytes.HasPrefix(k, prefix); i++ {
		k, v = c.Next()
	}
	var out []T
	for ; k != nil && bytes.HasPrefix(k, prefix) && (limit < 0 || len(out) < limit); k, v = c.Next() {
		var x T
		if err := decodeValue(v, &x); err != nil {
			return nil, fmt.Errorf("%w: record %q of order %q: %v", ErrCorrupt, k, id, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// fullOrder returns order id with its facts and history (the newest
// shownEntries of each) and the txn ids of those facts, nil when there
// is none: a bounded read, however long the order (the notify worker
// reads it for every delivery).
func fullOrder(tx *bolt.Tx, id string) (*ipn.Order, error) {
	so, err := getStoredOrder(tx, id)
	if err != nil || so == nil || so.Tally == nil {
		return orderOrNil(so), err // schema 4: facts and history inside
	}
	o := &so.Order
	if o.Facts, err = readLast[ipn.OrderFact](tx, id, recFact, shownEntries); err != nil {
		return nil, err
	}
	o.TxnIDs = ipn.TxnIDs(o.Facts)
	if o.History, err = readLast[ipn.OrderChange](tx, id, recHistory, shownEntries); err != nil {
		return nil, err
	}
	return o, nil
}

// readLast reads the last n of order id's records of one kind, oldest
// first.
func readLast[T any](tx *bolt.Tx, id string, kind byte, n int) ([]T, error) {
	prefix := recPrefix(id, kind)
	c := tx.Bucket(bucketOrderRecords).Cursor()
	// No sequence reaches the largest: the key after the order's last.
	var k, v []byte
	if after, _ := c.Seek(seqKey(id, kind, math.MaxUint64)); after == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	var out []T
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, v = c.Prev() {
		var x T
		if err := decodeValue(v, &x); err != nil {
			return nil, fmt.Errorf("%w: record %q of order %q: %v", ErrCorrupt, k, id, err)
		}
		out = append(out, x)
	}
	slices.Reverse(out)
	return out, nil
}

func orderOrNil(so *storedOrder) *ipn.Order {
	if so == nil {
		return nil
	}
	return &so.Order
}

// OrderHistory returns order id's history entries from the from-th
// (oldest first), at most limit (default 100): Order.Changes counts them.
func (db *DB) OrderHistory(id string, from, limit int) ([]ipn.OrderChange, error) {
	return pageOrder(db, id, recHistory, from, limit, func(so *storedOrder) []ipn.OrderChange { return so.History })
}

// OrderFacts returns order id's facts from the from-th (in the order
// applied), at most limit (default 100).
func (db *DB) OrderFacts(id string, from, limit int) ([]ipn.OrderFact, error) {
	return pageOrder(db, id, recFact, from, limit, func(so *storedOrder) []ipn.OrderFact { return so.Facts })
}

// pageOrder reads a page of order id's records of one kind: from its
// value (inline) for a small order, else from order_records.
func pageOrder[T any](db *DB, id string, kind byte, from, limit int, inline func(*storedOrder) []T) ([]T, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []T
	err := db.bolt.View(func(tx *bolt.Tx) error {
		so, err := getStoredOrder(tx, id)
		switch {
		case err != nil:
			return err
		case so == nil:
			return fmt.Errorf("order %q: %w", id, ErrNotFound)
		case so.Tally == nil:
			all := inline(so)
			out = all[min(from, len(all)):min(from+limit, len(all))]
			return nil
		}
		out, err = readSeq[T](tx, id, kind, from, limit)
		return err
	})
	return out, mapClosed(err)
}

// orderInFull returns order id with every fact and history entry (nil
// when there is none): for a decision that reads the whole order.
func orderInFull(tx *bolt.Tx, id string) (*ipn.Order, error) {
	so, err := getStoredOrder(tx, id)
	if err != nil || so == nil || so.Tally == nil {
		return orderOrNil(so), err
	}
	o := &so.Order
	if o.Facts, err = orderFacts(tx, id, 0, -1); err != nil {
		return nil, err
	}
	o.TxnIDs = ipn.TxnIDs(o.Facts)
	if o.History, err = readSeq[ipn.OrderChange](tx, id, recHistory, 0, -1); err != nil {
		return nil, err
	}
	return o, nil
}

// CloseDispute applies the merchant's decision d to order id
// (ipn.CloseDispute: a dispute the gateway never closes) and queues its
// effects, in one transaction, and returns the order (ErrNotFound when
// there is none; ipn.ErrNoOpenDispute when it has no such open
// dispute). It reads and rewrites the order in full: a merchant's
// decision is rare.
func (db *DB) CloseDispute(id string, d ipn.DisputeDecision, now time.Time) (*ipn.Order, error) {
	var out *ipn.Order
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		o, err := orderInFull(tx, id)
		if err != nil {
			return err
		}
		if o == nil {
			return fmt.Errorf("order %q: %w", id, ErrNotFound)
		}
		next, effects, err := ipn.CloseDispute(o, d, now)
		if err != nil {
			return err
		}
		if err := db.recordOrder(tx, o, &next, nil, nil); err != nil {
			return err
		}
		out = &next
		return db.enqueue(tx, effects, 0, now)
	})
	if err == nil {
		db.pokeOutbox()
	}
	return out, mapClosed(err)
}
