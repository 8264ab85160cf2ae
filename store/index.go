package store

import (
	"bytes"
	"crypto/sha256"
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

// The dashboard's indexes (schema 7), written in the transaction that
// writes what they index: the notification indexes by putProcessing
// (the pipeline's step that records a notification's state, never the
// ingest path: a notification the pipeline has not reached yet has no
// state record and is found by reading the log above the pipeline's
// cursor, see tail), the outbox indexes by putOutbox. Each key ends
// with the id it points to, so that the newest come last and a page
// goes on below the last id shown (keyset paging: a notification
// stored meanwhile does not shift the pages).
var (
	// gateway 0x00 state 0x00 id: notifications by gateway and state, in
	// id (arrival) order.
	bucketIxState = []byte("ix_state")
	// id>>termPartBits (4 bytes) sha256(term)[:8] id (schema 9):
	// notifications by every identifier their event names (txn id, parent
	// txn id, order id, customer email, event id, subscription id),
	// lower-cased; a hash keeps the keys short and the customer's email
	// out of the index. Readers check the event. The hashes land at
	// random, so each new key dirties its own leaf page: in one tree of
	// every notification's terms, a commit of k notifications wrote about
	// 4k pages once the tree had that many (issue 23: with Prefill's
	// batches of 5,000, 2.3 KB written per payment at 50,000 stored, 9.6
	// KB at 300,000, growing with the store; a flat 1.3 KB without it).
	// Cut into ranges of ids, the new keys land in the newest range only,
	// whose size does not grow with the store; a lookup walks the ranges
	// newest first (one seek each: 77 at 5,000,000 notifications).
	bucketIxTerms = []byte("ix_terms")
	// sha256(term)[:8] id: the same index as written by schema 7 and 8,
	// one tree. A file upgraded to 9 keeps it as it is (nothing is
	// rewritten on open) and adds no key to it; the readers walk it too,
	// and a change of a notification's terms deletes its key from both.
	bucketIxTerm = []byte("ix_term")
	// gateway 0x00 unix hour (8 bytes): received, applied, invalid (8
	// bytes each) of the notifications received in that hour that the
	// pipeline has recorded: the overview's charts.
	bucketIxHour = []byte("ix_hour")
	// state 0x00 id: outbox items by state, for the states few items are
	// in (dead, skipped, discarded: indexedOutboxState); the pending ones
	// are in the due index, and most items are sent.
	bucketIxOutState = []byte("ix_outbox_state")
	// uvarint(len(order id)) order id, id: outbox items by order.
	bucketIxOutOrder = []byte("ix_outbox_order")
	// notification id, item id: outbox items by the notification that
	// queued them.
	bucketIxOutNotif = []byte("ix_outbox_notif")

	// status 0x00 updated_at (unix nano, 8) order id: orders by status,
	// the most recently changed last (as orders_by_change).
	bucketIxOrderStatus = []byte("ix_order_status")

	indexBuckets = [][]byte{bucketIxState, bucketIxTerms, bucketIxTerm, bucketIxHour, bucketIxOutState, bucketIxOutOrder, bucketIxOutNotif,
		bucketIxOrderStatus}

	// keyIndexBuild (in meta): the indexes of a file from before schema 7
	// are being built (indexBuild); its value says how far.
	keyIndexBuild = []byte("ix_build")
)

// tailScanMax bounds how many records above the pipeline's cursor a
// query reads (those the pipeline has not reached: no index has them).
const tailScanMax = 20000

// TermHash is the index key of an identifier in every backend: 8 bytes
// of its SHA-256, lower-cased (a collision only costs a record read: the
// readers check the event).
func TermHash(s string) []byte {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(s))))
	return sum[:8]
}

// termPartBits: the identifier index's ranges are 2^16 ids wide, about
// 260,000 keys and 3,000 leaf pages each (four identifiers a payment):
// a range is as large as the whole index of a store of 65,536
// notifications, so a commit costs at most what it costs there (a
// variable for tests).
var termPartBits = 16

// termKey is the key of id's entry for the identifier whose hash is h in
// bucketIxTerms.
func termKey(h []byte, id uint64) []byte {
	k := binary.BigEndian.AppendUint32(make([]byte, 0, 20), uint32(id>>termPartBits))
	return binary.BigEndian.AppendUint64(append(k, h...), id)
}

// orderIxPrefix is the key prefix of order id in the outbox index by
// order: its length and itself, so that shops' sequential order numbers
// make sequential keys (fuller pages than a hash's).
func orderIxPrefix(id string) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(id))), id...)
}

func stateIxKey(gateway string, st ipn.State, id uint64) []byte {
	k := make([]byte, 0, len(gateway)+len(st)+10)
	k = append(append(k, gateway...), 0)
	k = append(append(k, st...), 0)
	return binary.BigEndian.AppendUint64(k, id)
}

func hourIxKey(gateway string, at time.Time) []byte {
	k := append([]byte(gateway), 0)
	return binary.BigEndian.AppendUint64(k, uint64(at.Unix()/3600))
}

// eventTerms are the lower-cased identifiers ev is found by.
func eventTerms(ev *ipn.Event) []string { return ev.SearchTerms() }

// indexProcessing moves notification id's index entries from its state
// before (oldRaw: the stored value, nil when the pipeline had recorded
// none) to p. It reads the notification's gateway and arrival time from
// the log.
func indexProcessing(tx *bolt.Tx, id uint64, oldRaw []byte, p *ipn.Processing) error {
	if tx.Bucket(bucketIxState) == nil {
		return nil // a file whose indexes are built later (tests of older layouts)
	}
	var old *ipn.Processing
	if oldRaw != nil {
		old = new(ipn.Processing)
		if decodeValue(oldRaw, old) != nil {
			old = nil // damaged: its entries cannot be found (the readers check what they read)
		}
	}
	var gateway string
	var at time.Time
	if n, err := logged(tx, id); err == nil {
		gateway, at = n.Gateway, n.ReceivedAt
	}
	states := tx.Bucket(bucketIxState)
	states.FillPercent = 0.9 // each gateway and state's ids arrive in order
	if old == nil || old.State != p.State {
		if old != nil {
			if err := states.Delete(stateIxKey(gateway, old.State, id)); err != nil {
				return err
			}
		}
		if err := states.Put(stateIxKey(gateway, p.State, id), nil); err != nil {
			return err
		}
		if !at.IsZero() {
			if err := countHour(tx, gateway, at, old, p); err != nil {
				return err
			}
		}
	}
	var was []string
	if old != nil {
		was = eventTerms(old.Event)
	}
	now := eventTerms(p.Event)
	terms, legacy := tx.Bucket(bucketIxTerms), tx.Bucket(bucketIxTerm)
	for _, t := range was {
		if !slices.Contains(now, t) {
			if err := terms.Delete(termKey(TermHash(t), id)); err != nil {
				return err
			}
			if legacy != nil {
				if err := legacy.Delete(binary.BigEndian.AppendUint64(TermHash(t), id)); err != nil {
					return err
				}
			}
		}
	}
	for _, t := range now {
		if !slices.Contains(was, t) {
			if err := terms.Put(termKey(TermHash(t), id), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// termIDs walks the ids of the notifications whose identifier hash is h
// in bucketIxTerms, newest first, below before (0: from the newest):
// range by range, each range's keys with h (an ids walk whose next
// range follows when one runs out).
func termIDs(b *bolt.Bucket, h []byte, before uint64) *ids {
	it := &ids{c: b.Cursor()}
	var part uint64
	if before > 0 && (before-1)>>termPartBits <= math.MaxUint32 {
		part = (before - 1) >> termPartBits
	} else {
		before = 0
		k, _ := it.c.Last()
		if len(k) < 4 {
			return it // empty
		}
		part = uint64(binary.BigEndian.Uint32(k))
	}
	rangePrefix := func(part uint64) []byte {
		return append(binary.BigEndian.AppendUint32(make([]byte, 0, 12), uint32(part)), h...)
	}
	it.prefix = rangePrefix(part)
	it.older = func(k []byte) bool {
		// k is the key before the range's first key with h (nil: none):
		// the next range to walk is the older of part-1 and k's range.
		if len(k) < 4 || part == 0 {
			return false
		}
		part = min(part-1, uint64(binary.BigEndian.Uint32(k)))
		it.prefix = rangePrefix(part)
		return true
	}
	var k []byte
	if before > 0 {
		// before may open the next range: its id after this range's prefix.
		k, _ = it.c.Seek(binary.BigEndian.AppendUint64(bytes.Clone(it.prefix), before))
	} else {
		k, _ = it.c.Seek(prefixEnd(it.prefix))
	}
	if k == nil {
		k, _ = it.c.Last()
	} else {
		k, _ = it.c.Prev()
	}
	it.set(k)
	return it
}

// countHour moves the hour's counts from old to p.
func countHour(tx *bolt.Tx, gateway string, at time.Time, old, p *ipn.Processing) error {
	b := tx.Bucket(bucketIxHour)
	k := hourIxKey(gateway, at)
	var c [3]int64
	if v := b.Get(k); len(v) == 24 {
		for i := range c {
			c[i] = int64(binary.BigEndian.Uint64(v[8*i:]))
		}
	}
	slot := func(s ipn.State) int {
		switch s {
		case ipn.StateApplied:
			return 1
		case ipn.StateInvalid:
			return 2
		}
		return -1
	}
	if old == nil {
		c[0]++
	} else if i := slot(old.State); i > 0 {
		c[i]--
	}
	if i := slot(p.State); i > 0 {
		c[i]++
	}
	v := make([]byte, 24)
	for i := range c {
		binary.BigEndian.PutUint64(v[8*i:], uint64(max(c[i], 0)))
	}
	return b.Put(k, v)
}

// indexedOutboxState: the index by state lists the outbox items in
// state (few are: OutboxByState reads them there).
func indexedOutboxState(state string) bool {
	return state == ipn.OutboxDead || state == ipn.OutboxSkipped || state == ipn.OutboxDiscarded
}

// indexOutbox moves outbox item it's index entries from old (nil: new).
func indexOutbox(tx *bolt.Tx, old, it *ipn.OutboxItem) error {
	states := tx.Bucket(bucketIxOutState)
	if states == nil {
		return nil
	}
	states.FillPercent = 0.9 // each state's ids arrive in order
	id := u64(it.ID)
	if old == nil || old.State != it.State {
		if old != nil && indexedOutboxState(old.State) {
			if err := states.Delete(append(append([]byte(old.State), 0), id...)); err != nil {
				return err
			}
		}
		if indexedOutboxState(it.State) {
			if err := states.Put(append(append([]byte(it.State), 0), id...), nil); err != nil {
				return err
			}
		}
	}
	if old != nil {
		return nil
	}
	if it.Effect.OrderID != "" {
		b := tx.Bucket(bucketIxOutOrder)
		b.FillPercent = 0.9
		if err := b.Put(append(orderIxPrefix(it.Effect.OrderID), id...), nil); err != nil {
			return err
		}
	}
	if it.Notification != 0 {
		b := tx.Bucket(bucketIxOutNotif)
		b.FillPercent = 1.0 // ids arrive in order
		return b.Put(append(u64(it.Notification), id...), nil)
	}
	return nil
}

// ids walks the keys of b that start with prefix and end with an 8-byte
// id, newest first, from the newest id below before (0: from the
// newest).
type ids struct {
	c      *bolt.Cursor
	prefix []byte
	id     uint64
	ok     bool
	rest   []uint64 // a walk of ids in memory (c nil)
	// older, when set, is called when the walk leaves prefix at key k
	// (nil: the bucket's start): it moves prefix to the next older range
	// of ids (termIDs) and says whether there is one.
	older func(k []byte) bool
}

func newIDs(b *bolt.Bucket, prefix []byte, before uint64) *ids {
	it := &ids{c: b.Cursor(), prefix: prefix}
	var k []byte
	if before > 0 {
		k, _ = it.c.Seek(binary.BigEndian.AppendUint64(bytes.Clone(prefix), before))
		if k == nil {
			k, _ = it.c.Last()
		} else {
			k, _ = it.c.Prev()
		}
	} else {
		// The last key of the prefix: seek past it, step back.
		if k, _ = it.c.Seek(prefixEnd(prefix)); k == nil {
			k, _ = it.c.Last()
		} else {
			k, _ = it.c.Prev()
		}
	}
	it.set(k)
	return it
}

func (it *ids) set(k []byte) {
	for {
		it.ok = k != nil && len(k) == len(it.prefix)+8 && bytes.HasPrefix(k, it.prefix)
		if it.ok {
			it.id = binary.BigEndian.Uint64(k[len(it.prefix):])
			return
		}
		if it.older == nil || !it.older(k) {
			return
		}
		// The last key of the older range's prefix: seek past it, step back.
		if k, _ = it.c.Seek(prefixEnd(it.prefix)); k == nil {
			k, _ = it.c.Last()
		} else {
			k, _ = it.c.Prev()
		}
	}
}

func (it *ids) next() {
	if it.c == nil {
		it.pop()
		return
	}
	k, _ := it.c.Prev()
	it.set(k)
}

// prefixEnd is the least key greater than every key starting with p
// (p never all 0xff here: it ends with a separator or a hash).
func prefixEnd(p []byte) []byte {
	e := bytes.Clone(p)
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] < 0xff {
			e[i]++
			return e[:i+1]
		}
	}
	return append(e, 0xff)
}

// merged yields the ids of several walks, newest first, each once.
func merged(walks []*ids, yield func(id uint64) bool) {
	last := uint64(0)
	for {
		var best *ids
		for _, w := range walks {
			if w.ok && (best == nil || w.id > best.id) {
				best = w
			}
		}
		if best == nil {
			return
		}
		id := best.id
		best.next()
		if id == last {
			continue
		}
		last = id
		if !yield(id) {
			return
		}
	}
}

// gateways lists the gateways in the state index.
func indexedGateways(tx *bolt.Tx) []string {
	var out []string
	c := tx.Bucket(bucketIxState).Cursor()
	for k, _ := c.First(); k != nil; {
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			break
		}
		out = append(out, string(k[:i]))
		k, _ = c.Seek(append(bytes.Clone(k[:i]), 1))
	}
	return out
}

var allStates = []ipn.State{ipn.StateReceived, ipn.StateVerified, ipn.StateApplied, ipn.StateInvalid, ipn.StateFailed, ipn.StateDuplicate}

// Query selects notifications for Find through the indexes. Zero fields
// match everything.
type Query struct {
	Gateway string
	State   ipn.State
	// Order: the event names this order id (exactly).
	Order string
	// Term: the event names it as its txn id, parent txn id, order id,
	// customer email, event id or subscription id (case-insensitively).
	Term   string
	Before uint64 // only ids below this; 0 = from the newest
	After  uint64 // only ids above this (see FirstIDAt for a time range)
	Limit  int    // default 50, at most 1000
	// Normalize, when set, gives the event of a notification the
	// pipeline has not reached yet (nil: none), so that an order or a
	// term finds it too; else only gateway and state filters do.
	Normalize func(*ipn.Notification) *ipn.Event
}

// ErrIndexing: the indexes of a file from before schema 7 are still
// being built.
var ErrIndexing = errors.New("the indexes are being built")

// Find returns the notifications q selects, newest first, read through
// the indexes: the cost is that of the page, whatever the store holds.
// Notifications the pipeline has not reached yet (state received, no
// event; at most tailScanMax read) match a gateway or state filter, and
// an order or a term through q.Normalize.
func (db *DB) Find(q Query) ([]Item, error) {
	db.settle()
	if q.Limit <= 0 {
		q.Limit = 50
	}
	q.Limit = min(q.Limit, 1000)
	if q.Gateway == "" && q.State == "" && q.Order == "" && q.Term == "" {
		items, err := db.List(Filter{Before: q.Before, Limit: q.Limit})
		for i, it := range items {
			if it.Notification.ID <= q.After {
				return items[:i], err
			}
		}
		return items, err
	}
	var out []Item
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var walks []*ids
		byTerm := q.Order != "" || q.Term != ""
		if byTerm {
			term := q.Term
			if term == "" {
				term = q.Order
			}
			walks = append(walks, termIDs(tx.Bucket(bucketIxTerms), TermHash(term), q.Before))
			if legacy := tx.Bucket(bucketIxTerm); legacy != nil {
				walks = append(walks, newIDs(legacy, TermHash(term), q.Before))
			}
			if q.Normalize != nil {
				tail, err := unprocessed(tx, "", q.Before)
				if err != nil {
					return err
				}
				walks = append(walks, sliceIDs(tail))
			}
		} else {
			gws := []string{q.Gateway}
			if q.Gateway == "" {
				gws = indexedGateways(tx)
			}
			sts := []ipn.State{q.State}
			if q.State == "" {
				sts = allStates
			}
			for _, g := range gws {
				for _, s := range sts {
					walks = append(walks, newIDs(tx.Bucket(bucketIxState), stateIxKey(g, s, 0)[:len(g)+len(s)+2], q.Before))
				}
			}
			if q.State == "" || q.State == ipn.StateReceived {
				tail, err := unprocessed(tx, q.Gateway, q.Before)
				if err != nil {
					return err
				}
				walks = append(walks, sliceIDs(tail))
			}
		}
		var err error
		merged(walks, func(id uint64) bool {
			if id <= q.After {
				return false
			}
			var n *ipn.Notification
			if n, err = logged(tx, id); err != nil {
				if errors.Is(err, ErrCorrupt) {
					err = nil // damaged: left out of the lists (Get reports it)
					return true
				}
				return false
			}
			var p *ipn.Processing
			if p, err = processing(tx, n); err != nil {
				if errors.Is(err, ErrCorrupt) {
					err = nil
					return true
				}
				return false
			}
			if q.Gateway != "" && n.Gateway != q.Gateway || q.State != "" && p.State != q.State {
				return true
			}
			ev := p.Event
			if ev == nil && byTerm && q.Normalize != nil && p.State == ipn.StateReceived {
				ev = q.Normalize(n)
			}
			if q.Order != "" && (ev == nil || ev.OrderID != q.Order) {
				return true
			}
			if q.Term != "" && !slices.Contains(eventTerms(ev), strings.ToLower(strings.TrimSpace(q.Term))) {
				return true
			}
			out = append(out, Item{n, p})
			return len(out) < q.Limit
		})
		return err
	})
	return out, mapClosed(err)
}

// unprocessed is a walk over the notifications above the pipeline's
// cursor without a state record (the pipeline has not reached them),
// of gateway ("" any), below before; at most tailScanMax are read.
func unprocessed(tx *bolt.Tx, gateway string, before uint64) ([]uint64, error) {
	cursor := getU64(tx.Bucket(bucketMeta).Get(keyCursor))
	var found []uint64
	c := tx.Bucket(bucketLog).Cursor()
	states := tx.Bucket(bucketState)
	k, v := c.Last()
	for read := 0; k != nil && read < tailScanMax; k, v = c.Prev() {
		id := binary.BigEndian.Uint64(k)
		if id <= cursor {
			break
		}
		read++
		if before > 0 && id >= before || states.Get(k) != nil {
			continue
		}
		if gateway != "" {
			n, err := decodeRecord(id, v)
			if err != nil {
				return nil, err
			}
			if n.Gateway != gateway {
				continue
			}
		}
		found = append(found, id)
	}
	return found, nil
}

// sliceIDs makes a walk of ids already in memory, newest first.
func sliceIDs(list []uint64) *ids {
	it := &ids{rest: list}
	it.pop()
	return it
}

func (it *ids) pop() {
	it.ok = len(it.rest) > 0
	if it.ok {
		it.id, it.rest = it.rest[0], it.rest[1:]
	}
}

// HourCount is what arrived from a gateway in one hour.
type HourCount struct {
	Gateway                    string
	Hour                       time.Time
	Received, Applied, Invalid int
}

// HourCounts returns, per gateway and hour since since, the
// notifications received then and how many of them are applied and
// invalid: from the hourly counts the pipeline keeps, plus those it has
// not reached yet (read from the log, at most tailScanMax).
func (db *DB) HourCounts(since time.Time) ([]HourCount, error) {
	db.settle()
	var out []HourCount
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIxHour)
		from := uint64(since.Unix() / 3600)
		idx := map[[2]any]int{}
		for _, g := range indexedGateways(tx) {
			prefix := append([]byte(g), 0)
			c := b.Cursor()
			for k, v := c.Seek(binary.BigEndian.AppendUint64(bytes.Clone(prefix), from)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				if len(k) != len(prefix)+8 || len(v) != 24 {
					continue
				}
				h := time.Unix(int64(binary.BigEndian.Uint64(k[len(prefix):]))*3600, 0).UTC()
				idx[[2]any{g, h}] = len(out)
				out = append(out, HourCount{Gateway: g, Hour: h, Received: int(binary.BigEndian.Uint64(v)),
					Applied: int(binary.BigEndian.Uint64(v[8:])), Invalid: int(binary.BigEndian.Uint64(v[16:]))})
			}
		}
		tail, err := unprocessed(tx, "", 0)
		if err != nil {
			return err
		}
		for _, id := range tail {
			n, err := logged(tx, id)
			if err != nil {
				return err
			}
			h := n.ReceivedAt.UTC().Truncate(time.Hour)
			if h.Before(since.Truncate(time.Hour)) {
				continue
			}
			i, ok := idx[[2]any{n.Gateway, h}]
			if !ok {
				i = len(out)
				idx[[2]any{n.Gateway, h}] = i
				out = append(out, HourCount{Gateway: n.Gateway, Hour: h})
			}
			out[i].Received++
		}
		return nil
	})
	return out, mapClosed(err)
}

// OutboxOfOrder returns the outbox items of order id, oldest first.
func (db *DB) OutboxOfOrder(id string) ([]OutboxItem, error) {
	var out []OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return outboxByPrefix(tx, tx.Bucket(bucketIxOutOrder), orderIxPrefix(id), func(it *OutboxItem) bool {
			return it.Effect.OrderID == id
		}, &out)
	})
	slices.Reverse(out)
	return out, mapClosed(err)
}

// outboxByPrefix appends the items the keys of b starting with prefix
// point to, newest first, when keep says so.
func outboxByPrefix(tx *bolt.Tx, b *bolt.Bucket, prefix []byte, keep func(*OutboxItem) bool, out *[]OutboxItem) error {
	if b == nil {
		return fmt.Errorf("%w (outbox)", ErrIndexing)
	}
	for w := newIDs(b, prefix, 0); w.ok; w.next() {
		it, err := getOutbox(tx, w.id)
		if errors.Is(err, ErrCorrupt) {
			continue // left out (GetOutbox reports it): it fails no list
		}
		if err != nil {
			return err
		}
		if keep(it) {
			*out = append(*out, *it)
		}
	}
	return nil
}

// OutboxByState returns the outbox items in state, one of those
// indexedOutboxState lists, newest first, below id before (0: from the
// newest), at most limit (default 100).
func (db *DB) OutboxByState(state string, before uint64, limit int) ([]OutboxItem, error) {
	if limit <= 0 {
		limit = 100
	}
	if !indexedOutboxState(state) {
		return nil, fmt.Errorf("store: outbox items %q are not indexed by state", state)
	}
	var out []OutboxItem
	err := db.bolt.View(func(tx *bolt.Tx) error {
		for w := newIDs(tx.Bucket(bucketIxOutState), append([]byte(state), 0), before); w.ok && len(out) < limit; w.next() {
			it, err := getOutbox(tx, w.id)
			if errors.Is(err, ErrCorrupt) {
				continue // left out (GetOutbox reports it): it fails no list
			}
			if err != nil {
				return err
			}
			if it.State == state {
				out = append(out, *it)
			}
		}
		return nil
	})
	return out, mapClosed(err)
}

func orderStatusKey(o *ipn.Order) []byte {
	return append(append([]byte(o.Status), 0), changeKey(o)...)
}

// indexOrderStatus moves order o's entry in the index by status from
// old's (old nil: a new order; o nil: deleted).
func indexOrderStatus(tx *bolt.Tx, old, o *ipn.Order) error {
	b := tx.Bucket(bucketIxOrderStatus)
	if b == nil {
		return nil
	}
	b.FillPercent = 0.9 // each status's changes arrive in time order
	var ok, k []byte
	if old != nil {
		ok = orderStatusKey(old)
	}
	if o != nil {
		k = orderStatusKey(o)
	}
	if bytes.Equal(ok, k) {
		return nil
	}
	if ok != nil {
		if err := b.Delete(ok); err != nil {
			return err
		}
	}
	if k == nil {
		return nil
	}
	return b.Put(k, nil)
}

// listOrdersByStatus is ListOrders of one status, through the index by
// status: most recently changed first, below the change key from (nil:
// from the newest).
func (db *DB) listOrdersByStatus(status ipn.OrderStatus, from []byte, limit int) ([]ipn.Order, error) {
	var out []ipn.Order
	prefix := append([]byte(status), 0)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		orders := tx.Bucket(bucketOrders)
		c := tx.Bucket(bucketIxOrderStatus).Cursor()
		start := prefixEnd(prefix)
		if from != nil {
			start = append(bytes.Clone(prefix), from...)
		}
		k, _ := c.Seek(start)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, _ = c.Prev() {
			ck := k[len(prefix):]
			if len(ck) < 8 {
				continue
			}
			v := orders.Get(ck[8:])
			if v == nil {
				continue
			}
			var so storedOrder
			if err := decodeValue(v, &so); err != nil {
				return fmt.Errorf("%w: order %q: %v", ErrCorrupt, ck[8:], err)
			}
			if so.Status != status || !bytes.Equal(changeKey(&so.Order), ck) {
				continue // a stale entry
			}
			out = append(out, so.Order)
		}
		return nil
	})
	return out, mapClosed(err)
}

// FirstIDAt returns the first notification id received at t or later
// (the log's next id when none is), by a binary search of the log: ids
// follow arrival, so a time range is an id range (Query.After, Before).
func (db *DB) FirstIDAt(t time.Time) (uint64, error) {
	db.settle()
	var first uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketLog)
		c := log.Cursor()
		lo, hi := uint64(1), log.Sequence()+1 // the answer is in [lo, hi]
		for lo < hi {
			mid := lo + (hi-lo)/2
			k, v := c.Seek(u64(mid))
			var n *ipn.Notification
			for ; k != nil; k, v = c.Next() {
				var err error
				if n, err = decodeRecord(binary.BigEndian.Uint64(k), v); err == nil {
					break
				} else if !errors.Is(err, ErrCorrupt) {
					return err
				}
				// damaged: its neighbour tells the time
			}
			if k == nil {
				hi = mid
				continue
			}
			id := binary.BigEndian.Uint64(k)
			if n.ReceivedAt.Before(t) {
				lo = id + 1
			} else {
				hi = mid
			}
		}
		first = lo
		return nil
	})
	return first, mapClosed(err)
}
