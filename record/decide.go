package record

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"ipnd/ipn"
)

// The merchant's decisions on orders (approve, cancel, note, dispute),
// each applied with its effects in one transaction of either store, and
// the idempotency keys that make a repeated request change nothing.

// IdempotencyTTL is how long an Idempotency-Key is remembered.
const IdempotencyTTL = 24 * time.Hour

// ErrStale: the request named a version of the order that is not the
// current one (someone or something changed it since).
var ErrStale = errors.New("stale version")

// ErrKeyReused: an Idempotency-Key sent again with another request.
var ErrKeyReused = errors.New("idempotency key reused for another request")

// Decision is a merchant's decision on an order as the API, the CLI and
// the dashboard hand it to a store's DecideOrder.
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

// DecisionResult is what Decide did.
type DecisionResult struct {
	Order    *ipn.Order
	Change   ipn.OrderChange
	Repeated bool // the Idempotency-Key was seen: nothing changed
}

// KeyUse is what an Idempotency-Key was used for (the stores keep it as
// JSON under the key).
type KeyUse struct {
	At    time.Time `json:"at"`
	Order string    `json:"order"` // the order's id, or "outbox/<id>" for a resend
	Kind  string    `json:"kind"`
	Item  uint64    `json:"item,omitempty"` // a resend: the item it queued
	// Request is the SHA-256 of the decision's request (DecisionSum):
	// the key sent again with another request is refused. Empty in
	// records written before it was kept: not compared.
	Request string `json:"request,omitempty"`
}

// DecisionSum identifies what a decision asks (its kind, words,
// dispute and version), so that an Idempotency-Key sent again with
// another request is told apart from a repeat.
func DecisionSum(kind string, d Decision) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %d", kind, d.Why, d.Version)
	if d.Dispute != nil {
		fmt.Fprintf(h, " %q %t", d.Dispute.Dispute, d.Dispute.Won)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Decide applies decision d to order id in tx (ipn.DecideOrder, or
// ipn.CloseDispute for a dispute), writes the order, what the change
// delivers and the Idempotency-Key, and queues the effects. queued says
// whether it queued any (the store wakes its outbox worker after the
// commit). Errors: ipn.ErrNotFound, ErrStale, ErrKeyReused,
// ipn.ErrNotInReview, ipn.ErrFinal, ipn.ErrNoOpenDispute,
// ipn.ErrBadDecision, and the store's.
//
// The Idempotency-Key is read before the order (a backend with
// concurrent writers holds it from then on), then the order (held to
// the end: the version checked is the version changed).
func Decide(tx Tx, id string, d Decision, now time.Time) (res DecisionResult, queued bool, err error) {
	kind := d.Kind
	if d.Dispute != nil {
		kind = "dispute"
	}
	sum := DecisionSum(kind, d)
	if d.Key != "" {
		use, err := tx.KeyUse(d.Key)
		if err != nil {
			return res, false, err
		}
		if use != nil && use.Order != "" && now.Sub(use.At) < IdempotencyTTL {
			if use.Order != id || use.Kind != kind {
				return res, false, fmt.Errorf("%w: it was used for %s of order %q", ErrKeyReused, use.Kind, use.Order)
			}
			if use.Request != "" && use.Request != sum {
				return res, false, fmt.Errorf("%w: it was used for %s of order %q with another note, outcome or version", ErrKeyReused, use.Kind, use.Order)
			}
			o, err := tx.ShownOrder(id)
			if err != nil {
				return res, false, err
			}
			if o == nil {
				return res, false, fmt.Errorf("order %q: %w", id, ipn.ErrNotFound)
			}
			res.Order, res.Repeated = o, true
			return res, false, nil
		}
	}
	stored, tally, err := tx.StoredOrder(id)
	if err != nil {
		return res, false, err
	}
	if stored == nil {
		return res, false, fmt.Errorf("order %q: %w", id, ipn.ErrNotFound)
	}
	cur := max(stored.Changes, len(stored.History))
	if d.Version != 0 && d.Version != cur {
		return res, false, fmt.Errorf("%w: order %q is at version %d, the request saw %d", ErrStale, id, cur, d.Version)
	}
	var effects []ipn.Effect
	if d.Dispute != nil {
		o, err := tx.OrderInFull(id)
		if err != nil {
			return res, false, err
		}
		dd := *d.Dispute
		dd.By, dd.Why = d.By, d.Why
		next, eff, err := ipn.CloseDispute(o, dd, now)
		if err != nil {
			return res, false, err
		}
		if n := len(next.History); n > 0 {
			next.History[n-1].By = d.By // who decided, as for the other decisions
		}
		if eff, err = tx.Fulfil(o, &next, nil, nil, eff, now); err != nil { // SPEC §11: won restores
			return res, false, err
		}
		if err := tx.PutOrder(o, &next, nil, nil); err != nil {
			return res, false, err
		}
		effects = eff
		res.Change = next.History[len(next.History)-1]
		res.Order = &next
	} else {
		old := *stored
		t := tally
		if t == nil {
			rt, _ := ipn.RebuildTally(&old)
			t = &rt
		}
		next, change, eff, err := ipn.DecideOrder(&old, *t, d.OrderDecision, now.UTC())
		if err != nil {
			return res, false, err
		}
		fw := &ipn.OrderWrite{Change: change} // SPEC §11: an approved order is delivered
		if eff, err = tx.Fulfil(&old, &next, fw, nil, eff, now); err != nil {
			return res, false, err
		}
		change = fw.Change
		if n := len(next.History); tally == nil && n > 0 {
			next.History[n-1] = change
		}
		if tally == nil {
			err = tx.PutOrder(&old, &next, nil, nil)
		} else {
			nt := *tally
			nt.Reach(change.To)
			err = tx.PutOrderChange(&old, &next, nt, change)
		}
		if err != nil {
			return res, false, err
		}
		effects = eff
		res.Change = change
		if res.Order, err = tx.ShownOrder(id); err != nil {
			return res, false, err
		}
	}
	if d.Key != "" {
		if err := tx.RememberKey(d.Key, KeyUse{At: now.UTC(), Order: id, Kind: kind, Request: sum}); err != nil {
			return res, false, err
		}
	}
	if err := tx.Enqueue(effects, 0, now); err != nil {
		return res, false, err
	}
	return res, len(effects) > 0, nil
}
