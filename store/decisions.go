package store

import (
	"bytes"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

// The merchant's decisions on orders (approve, cancel, note, dispute),
// each applied with its effects in one transaction, and the idempotency
// keys that make a repeated request change nothing.
var (
	// bucketIdempotency: Idempotency-Key -> JSON idemRecord.
	bucketIdempotency = []byte("idempotency")
	// bucketIdempotencyAge: recorded at unix-nano (8) + key -> nothing,
	// oldest first, for expiry.
	bucketIdempotencyAge = []byte("idempotency_age")
)

// IdempotencyTTL is how long an Idempotency-Key is remembered.
const IdempotencyTTL = record.IdempotencyTTL

// ErrStale: the request named a version of the order that is not the
// current one (someone or something changed it since).
var ErrStale = record.ErrStale

// ErrKeyReused: an Idempotency-Key sent again with another request.
var ErrKeyReused = record.ErrKeyReused

// Decision is a merchant's decision on an order as the API, the CLI and
// the dashboard hand it to DecideOrder (record.Decision: both stores
// apply it with record.Decide).
type Decision = record.Decision

// DecisionResult is what DecideOrder did.
type DecisionResult = record.DecisionResult

// idemRecord is what an Idempotency-Key was used for, kept as JSON
// under the key.
type idemRecord = record.KeyUse

// DecideOrder applies decision d to order id (ipn.DecideOrder, or
// ipn.CloseDispute for a dispute) and queues its effects, in one
// transaction (record.Decide). Errors: ErrNotFound, ErrStale,
// ErrKeyReused, ipn.ErrNotInReview, ipn.ErrFinal, ipn.ErrNoOpenDispute,
// ipn.ErrBadDecision.
func (db *DB) DecideOrder(id string, d Decision, now time.Time) (DecisionResult, error) {
	var res DecisionResult
	queued := false
	err := db.update(func(tx record.Tx) error {
		var err error
		res, queued, err = record.Decide(tx, id, d, now)
		return err
	})
	if err == nil && queued {
		db.pokeOutbox()
	}
	if err == nil && !res.Repeated {
		db.announceOrder(res.Order, res.Change)
	}
	return res, mapClosed(err)
}

// The reads and writes of record.Decide on bbolt.

func (t *boltTx) StoredOrder(id string) (*ipn.Order, *ipn.Tally, error) {
	so, err := getStoredOrder(t.tx, id)
	if err != nil || so == nil {
		return nil, nil, err
	}
	return &so.Order, so.Tally, nil
}

func (t *boltTx) OrderInFull(id string) (*ipn.Order, error) { return orderInFull(t.tx, id) }

func (t *boltTx) ShownOrder(id string) (*ipn.Order, error) { return fullOrder(t.tx, id) }

func (t *boltTx) KeyUse(key string) (*record.KeyUse, error) {
	var use record.KeyUse
	if err := getJSON(t.tx, bucketIdempotency, []byte(key), &use); err != nil {
		return nil, err
	}
	if use.Order == "" {
		return nil, nil
	}
	return &use, nil
}

func (t *boltTx) PutOrderChange(old, next *ipn.Order, tally ipn.Tally, change ipn.OrderChange) error {
	if err := t.db.putJSON(t.tx, bucketOrderRecords, seqKey(next.ID, recHistory, uint64(next.Changes-1)), change); err != nil {
		return err
	}
	return t.db.putOrder(t.tx, old, next, &tally)
}

func (t *boltTx) RememberKey(key string, use record.KeyUse) error {
	return t.db.rememberKey(t.tx, key, use)
}

// rememberKey records an Idempotency-Key and forgets those older than
// IdempotencyTTL (a few at a time: the oldest first).
func (db *DB) rememberKey(tx *bolt.Tx, key string, rec idemRecord) error {
	keys, ages := tx.Bucket(bucketIdempotency), tx.Bucket(bucketIdempotencyAge)
	c := ages.Cursor()
	var expired [][]byte
	for k, _ := c.First(); len(k) >= 8 && len(expired) < 100; k, _ = c.Next() {
		at := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
		if rec.At.Sub(at) < IdempotencyTTL {
			break
		}
		expired = append(expired, bytes.Clone(k))
	}
	for _, k := range expired {
		if err := ages.Delete(k); err != nil {
			return err
		}
		if err := keys.Delete(k[8:]); err != nil {
			return err
		}
	}
	var old idemRecord
	if err := getJSON(tx, bucketIdempotency, []byte(key), &old); err != nil {
		return err
	}
	if old.Order != "" {
		if err := ages.Delete(append(u64(uint64(old.At.UnixNano())), key...)); err != nil {
			return err
		}
	}
	if err := db.putJSON(tx, bucketIdempotency, []byte(key), rec); err != nil {
		return err
	}
	return ages.Put(append(u64(uint64(rec.At.UnixNano())), key...), nil)
}
