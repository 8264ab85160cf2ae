package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
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
const IdempotencyTTL = 24 * time.Hour

// ErrStale: the request named a version of the order that is not the
// current one (someone or something changed it since).
var ErrStale = errors.New("stale version")

// ErrKeyReused: an Idempotency-Key sent again with another request.
var ErrKeyReused = errors.New("idempotency key reused for another request")

// Decision is a merchant's decision on an order as the API, the CLI and
// the dashboard hand it to DecideOrder.
type Decision struct {
	ipn.OrderDecision
	// Dispute: for a dispute decision ("dispute" kind), the outcome and
	// the dispute's id ("": the order's only open one).
	Dispute *ipn.DisputeDecision
	// Version, when not 0, is the order's version the merchant saw
	// (ipn.OrderSnapshot.Version, Order.Changes): another answers
	// ErrStale.
	Version int
	// Key, when not "", is the request's Idempotency-Key: a key already
	// used for the same decision on the same order returns the order
	// with Repeated set, changing nothing.
	Key string
}

// DecisionResult is what DecideOrder did.
type DecisionResult struct {
	Order    *ipn.Order
	Change   ipn.OrderChange
	Repeated bool // the Idempotency-Key was seen: nothing changed
}

type idemRecord struct {
	At    time.Time `json:"at"`
	Order string    `json:"order"` // the order's id, or "outbox/<id>" for a resend
	Kind  string    `json:"kind"`
	Item  uint64    `json:"item,omitempty"` // a resend: the item it queued
	// Request is the SHA-256 of the decision's request (decisionSum):
	// the key sent again with another request is refused. Empty in
	// records written before it was kept: not compared.
	Request string `json:"request,omitempty"`
}

// decisionSum identifies what a decision asks (its kind, words,
// dispute and version), so that an Idempotency-Key sent again with
// another request is told apart from a repeat.
func decisionSum(kind string, d Decision) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %d", kind, d.Why, d.Version)
	if d.Dispute != nil {
		fmt.Fprintf(h, " %q %t", d.Dispute.Dispute, d.Dispute.Won)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// DecideOrder applies decision d to order id (ipn.DecideOrder, or
// ipn.CloseDispute for a dispute) and queues its effects, in one
// transaction. Errors: ErrNotFound, ErrStale, ErrKeyReused,
// ipn.ErrNotInReview, ipn.ErrFinal, ipn.ErrNoOpenDispute,
// ipn.ErrBadDecision.
func (db *DB) DecideOrder(id string, d Decision, now time.Time) (DecisionResult, error) {
	var res DecisionResult
	kind := d.Kind
	if d.Dispute != nil {
		kind = "dispute"
	}
	sum := decisionSum(kind, d)
	queued := false
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		res, queued = DecisionResult{}, false
		if d.Key != "" {
			var rec idemRecord
			if err := getJSON(tx, bucketIdempotency, []byte(d.Key), &rec); err != nil {
				return err
			}
			if rec.Order != "" && now.Sub(rec.At) < IdempotencyTTL {
				if rec.Order != id || rec.Kind != kind {
					return fmt.Errorf("%w: it was used for %s of order %q", ErrKeyReused, rec.Kind, rec.Order)
				}
				if rec.Request != "" && rec.Request != sum {
					return fmt.Errorf("%w: it was used for %s of order %q with another note, outcome or version", ErrKeyReused, rec.Kind, rec.Order)
				}
				o, err := fullOrder(tx, id)
				if err != nil {
					return err
				}
				if o == nil {
					return fmt.Errorf("order %q: %w", id, ErrNotFound)
				}
				res.Order, res.Repeated = o, true
				return nil
			}
		}
		so, err := getStoredOrder(tx, id)
		if err != nil {
			return err
		}
		if so == nil {
			return fmt.Errorf("order %q: %w", id, ErrNotFound)
		}
		cur := max(so.Changes, len(so.History))
		if d.Version != 0 && d.Version != cur {
			return fmt.Errorf("%w: order %q is at version %d, the request saw %d", ErrStale, id, cur, d.Version)
		}
		var effects []ipn.Effect
		if d.Dispute != nil {
			o, err := orderInFull(tx, id)
			if err != nil {
				return err
			}
			dd := *d.Dispute
			dd.By, dd.Why = d.By, d.Why
			next, eff, err := ipn.CloseDispute(o, dd, now)
			if err != nil {
				return err
			}
			if n := len(next.History); n > 0 {
				next.History[n-1].By = d.By // who decided, as for the other decisions
			}
			if eff, err = db.fulfilOrder(tx, o, &next, nil, nil, eff, now); err != nil { // SPEC §11: won restores
				return err
			}
			if err := db.recordOrder(tx, o, &next, nil, nil); err != nil {
				return err
			}
			effects = eff
			res.Change = next.History[len(next.History)-1]
			res.Order = &next
		} else {
			old := so.Order
			t := so.Tally
			if t == nil {
				rt, _ := ipn.RebuildTally(&old)
				t = &rt
			}
			next, change, eff, err := ipn.DecideOrder(&old, *t, d.OrderDecision, now.UTC())
			if err != nil {
				return err
			}
			fw := &ipn.OrderWrite{Change: change} // SPEC §11: an approved order is delivered
			if eff, err = db.fulfilOrder(tx, &old, &next, fw, nil, eff, now); err != nil {
				return err
			}
			change = fw.Change
			if n := len(next.History); so.Tally == nil && n > 0 {
				next.History[n-1] = change
			}
			if so.Tally == nil {
				if err := db.recordOrder(tx, &old, &next, nil, nil); err != nil {
					return err
				}
			} else {
				nt := *so.Tally
				nt.Reach(change.To)
				if err := db.putJSON(tx, bucketOrderRecords, seqKey(id, recHistory, uint64(next.Changes-1)), change); err != nil {
					return err
				}
				if err := db.putOrder(tx, &old, &next, &nt); err != nil {
					return err
				}
			}
			effects = eff
			res.Change = change
			if res.Order, err = fullOrder(tx, id); err != nil {
				return err
			}
		}
		if d.Key != "" {
			if err := db.rememberKey(tx, d.Key, idemRecord{At: now.UTC(), Order: id, Kind: kind, Request: sum}); err != nil {
				return err
			}
		}
		queued = len(effects) > 0
		return db.enqueue(tx, effects, 0, now)
	})
	if err == nil && queued {
		db.pokeOutbox()
	}
	if err == nil && !res.Repeated {
		db.announceOrder(res.Order, res.Change)
	}
	return res, mapClosed(err)
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
