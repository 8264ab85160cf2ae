package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// bucketOutboxState keeps the changing part of each outbox item apart
// from the item itself (schema 8): outbox id (8) -> the compact binary
// record of outboxState. The item in bucket outbox (its effect: the
// message's data, the callback's payload) is written once when it is
// queued; recording a delivery result reads and writes only this small
// record, whatever the size of the item. An item without one (queued
// by a build before 8) is as its JSON says until its first change.
var bucketOutboxState = []byte("outbox_state")

// outboxState is what changes in an outbox item as it is delivered, with
// its lane and order (which do not change, but which the due index, the
// counts and the order queues are kept by): enough to record a result
// without reading the item.
type outboxState struct {
	State       string
	Attempts    int
	NextAttempt time.Time
	SentAt      time.Time
	LastError   string
	Kind        string
	OrderID     string
}

// stateFormat is the first byte of a state record: its format.
const stateFormat = 1

// stateCodes are the one-byte codes of the states; 0 means the state's
// name follows (a state this build does not know by code).
var stateCodes = map[string]byte{ipn.OutboxPending: 1, ipn.OutboxSent: 2, ipn.OutboxDead: 3,
	ipn.OutboxSkipped: 4, ipn.OutboxDiscarded: 5}

var stateNames = [...]string{1: ipn.OutboxPending, 2: ipn.OutboxSent, 3: ipn.OutboxDead,
	4: ipn.OutboxSkipped, 5: ipn.OutboxDiscarded}

// kindCodes are the one-byte codes of the lanes; 0 means the kind's
// name follows.
var kindCodes = map[string]byte{ipn.EffectEmailCustomer: 1, ipn.EffectEmailMerchant: 2,
	ipn.EffectShopCallback: 3, ipn.EffectShopScript: 4}

var kindNames = [...]string{1: ipn.EffectEmailCustomer, 2: ipn.EffectEmailMerchant,
	3: ipn.EffectShopCallback, 4: ipn.EffectShopScript}

func outboxStateOf(it *ipn.OutboxItem) outboxState {
	return outboxState{State: it.State, Attempts: it.Attempts, NextAttempt: it.NextAttempt, SentAt: it.SentAt,
		LastError: it.LastError, Kind: it.Effect.Kind, OrderID: it.Effect.OrderID}
}

// apply sets the changing fields of it from s.
func (s *outboxState) apply(it *ipn.OutboxItem) {
	it.State, it.Attempts, it.NextAttempt, it.SentAt, it.LastError = s.State, s.Attempts, s.NextAttempt, s.SentAt, s.LastError
}

// item is the item as far as s describes it (for recording results).
func (s *outboxState) item(id uint64) *ipn.OutboxItem {
	it := &ipn.OutboxItem{ID: id, Effect: ipn.Effect{Kind: s.Kind, OrderID: s.OrderID}}
	s.apply(it)
	return it
}

func appendNanos(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// encode is the record: format, state code (0: the name follows),
// attempts, next attempt and sent at (unix ns, 0: none), last error,
// kind (a code, or 0 and the name), order id (strings: uvarint length +
// bytes).
func (s *outboxState) encode() []byte {
	b := make([]byte, 0, 32+len(s.LastError)+len(s.Kind)+len(s.OrderID))
	code := stateCodes[s.State]
	b = append(b, stateFormat, code)
	if code == 0 {
		b = appendString(b, s.State)
	}
	b = binary.AppendUvarint(b, uint64(max(s.Attempts, 0)))
	b = appendNanos(b, s.NextAttempt)
	b = appendNanos(b, s.SentAt)
	b = appendString(b, s.LastError)
	if code := kindCodes[s.Kind]; code != 0 {
		b = append(b, code)
	} else {
		b = appendString(append(b, 0), s.Kind)
	}
	return appendString(b, s.OrderID)
}

var errStateRecord = errors.New("bad outbox state record")

// stateReader reads the fields of a record in turn; the first error
// sticks.
type stateReader struct {
	b   []byte
	err error
	// str, when not empty, holds the bytes b was at first, as a string:
	// string returns parts of it (no allocation per string).
	str string
}

func (r *stateReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || overlong(r.b, n) {
		r.err = errStateRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

// overlong says whether the n-byte varint at the start of b has more
// bytes than its value needs (a trailing 0 group): never written, so
// damage (binary.Uvarint takes it).
func overlong(b []byte, n int) bool { return n > 1 && b[n-1] == 0 }

func (r *stateReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errStateRecord
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *stateReader) nanos() time.Time {
	if r.err != nil {
		return time.Time{}
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errStateRecord
		return time.Time{}
	}
	r.b = r.b[n:]
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

func (r *stateReader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errStateRecord
		return ""
	}
	var s string
	if r.str != "" {
		at := len(r.str) - len(r.b)
		s = r.str[at : at+int(n)]
	} else {
		s = string(r.b[:n])
	}
	r.b = r.b[n:]
	return s
}

func decodeOutboxState(b []byte) (outboxState, error) {
	var s outboxState
	if len(b) < 2 || b[0] != stateFormat {
		return s, errStateRecord
	}
	r := &stateReader{b: b[2:]}
	switch code := b[1]; {
	case code == 0:
		s.State = r.string()
	case int(code) < len(stateNames):
		s.State = stateNames[code]
	default:
		return s, errStateRecord
	}
	if s.Attempts = int(r.uvarint()); s.Attempts > math.MaxInt32 || s.Attempts < 0 {
		r.err = errStateRecord
	}
	s.NextAttempt = r.nanos()
	s.SentAt = r.nanos()
	s.LastError = r.string()
	switch code := r.byte(); {
	case r.err != nil:
	case code == 0:
		s.Kind = r.string()
	case int(code) < len(kindNames):
		s.Kind = kindNames[code]
	default:
		r.err = errStateRecord
	}
	s.OrderID = r.string()
	if r.err == nil && len(r.b) != 0 {
		r.err = errStateRecord
	}
	return s, r.err
}

// putOutboxState writes the state record of it.
func putOutboxState(tx *bolt.Tx, it *ipn.OutboxItem) error {
	s := outboxStateOf(it)
	b := tx.Bucket(bucketOutboxState)
	b.FillPercent = 0.9 // ids are sequential
	return b.Put(u64(it.ID), s.encode())
}

// putOutboxBody writes the item itself (written when it is queued, and
// again only when its effect changes: retention scrubs it, a damaged one
// is replaced).
func putOutboxBody(tx *bolt.Tx, it *ipn.OutboxItem) error {
	b := outboxBody(it) // outboxbody.go
	if writePlain {
		var err error
		if b, err = encodeValue(it); err != nil {
			return err
		}
	}
	outbox := tx.Bucket(bucketOutbox)
	// Ids are sequential and items are not rewritten as they are sent:
	// full pages (measured: 2 KB of pages per item at bbolt's default
	// half-full split, the item itself ~700 bytes).
	outbox.FillPercent = 0.9
	return outbox.Put(u64(it.ID), b)
}

// decodeOutbox decodes the stored item v of id with its state record
// laid over it.
func decodeOutbox(tx *bolt.Tx, id uint64, v []byte) (*ipn.OutboxItem, error) {
	var it ipn.OutboxItem
	if err := decodeOutboxBody(v, &it); err != nil {
		return nil, fmt.Errorf("%w: outbox %d: %v", ErrCorrupt, id, err)
	}
	if sv := tx.Bucket(bucketOutboxState).Get(u64(id)); sv != nil {
		s, err := decodeOutboxState(sv)
		if err != nil {
			return nil, fmt.Errorf("%w: outbox %d state: %v", ErrCorrupt, id, err)
		}
		s.apply(&it)
	}
	return &it, nil
}

// getOutboxState returns what recording a result needs of item id (see
// outboxState.item): from its state record alone when it has one.
func getOutboxState(tx *bolt.Tx, id uint64) (*ipn.OutboxItem, error) {
	if tx.Bucket(bucketOutbox).Get(u64(id)) == nil {
		return nil, fmt.Errorf("outbox item %d: %w", id, ErrNotFound)
	}
	sv := tx.Bucket(bucketOutboxState).Get(u64(id))
	if sv == nil {
		return getOutbox(tx, id) // queued by a build before schema 8
	}
	s, err := decodeOutboxState(sv)
	if err != nil {
		return nil, fmt.Errorf("%w: outbox %d state: %v", ErrCorrupt, id, err)
	}
	return s.item(id), nil
}
