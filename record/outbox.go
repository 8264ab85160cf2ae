package record

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"ipnd/ipn"
)

// The operator's decisions on outbox items and notifications (the admin
// API's, the CLI's, the dashboard's), decided here for both backends:
// each backend reads the item, asks what changes, and writes it.

// ErrNotDiscardable: only a pending or dead outbox item can be
// discarded (store.ErrNotDiscardable is this error).
var ErrNotDiscardable = errors.New("not pending or dead")

// ErrNotResendable: only a sent email can be sent again
// (store.ErrNotResendable is this error).
var ErrNotResendable = errors.New("not a sent email")

// Retry is item it made due at now with its attempts reset: a dead,
// skipped or discarded item goes back in the queue, a pending one is
// tried now instead of at its next attempt. false for a sent item: it is
// not sent again.
func Retry(it ipn.OutboxItem, now time.Time) (ipn.OutboxItem, bool) {
	if it.State == ipn.OutboxSent {
		return it, false
	}
	it.State, it.Attempts, it.NextAttempt = ipn.OutboxPending, 0, now.UTC()
	return it, true
}

// Discard is item it discarded: it is not sent. repeated: it was
// discarded already (nothing changes). ErrNotDiscardable (wrapped) for
// an item neither pending nor dead.
func Discard(it ipn.OutboxItem) (next ipn.OutboxItem, repeated bool, err error) {
	switch it.State {
	case ipn.OutboxDiscarded:
		return it, true, nil
	case ipn.OutboxPending, ipn.OutboxDead:
	default:
		return it, false, fmt.Errorf("outbox item %d is %s: %w", it.ID, it.State, ErrNotDiscardable)
	}
	it.State, it.NextAttempt = ipn.OutboxDiscarded, time.Time{}
	return it, false, nil
}

// Version is the version of order o a request names (its changes).
func Version(o *ipn.Order) int { return max(o.Changes, len(o.History)) }

// Discarded is the line of the history of order o that says who
// discarded item was (as it was before) and why.
func Discarded(was ipn.OutboxItem, o *ipn.Order, by, why string, now time.Time) ipn.OrderChange {
	what := was.Effect.Kind
	if was.Effect.Template != "" {
		what += " " + was.Effect.Template
	}
	reason := fmt.Sprintf("outbox %d (%s, %s) discarded by %s", was.ID, what, was.State, by)
	if why != "" {
		reason += " (" + why + ")"
	}
	return ipn.OrderChange{At: now.UTC(), Notification: was.Notification, From: o.Status, To: o.Status, Reason: reason, By: by}
}

// Resend is the effect that sends the sent email it again: the same
// template and order snapshot, its cause the original's with
// "/resend/N", the first N for which queued reports false.
// ErrNotResendable (wrapped) for an item that is not a sent email.
func Resend(it ipn.OutboxItem, queued func(cause string) (bool, error)) (ipn.Effect, error) {
	email := it.Effect.Kind == ipn.EffectEmailCustomer || it.Effect.Kind == ipn.EffectEmailMerchant
	if !email || it.State != ipn.OutboxSent {
		return ipn.Effect{}, fmt.Errorf("outbox item %d is a %s %s: %w", it.ID, it.State, it.Effect.Kind, ErrNotResendable)
	}
	e := it.Effect
	for n := 1; ; n++ {
		c := it.Effect.Cause + "/resend/" + strconv.Itoa(n)
		taken, err := queued(c)
		if err != nil {
			return ipn.Effect{}, err
		}
		if !taken {
			e.Cause = c
			return e, nil
		}
	}
}

// NotEnabled is the error of a resend whose kind of email is not
// enabled (nothing was queued).
func NotEnabled(id uint64, kind string) error {
	return fmt.Errorf("outbox item %d: %s emails are not enabled: %w", id, kind, ErrNotResendable)
}

// Resent is the line of the history of order o that says who sent item
// id (of template) again as item queued.
func Resent(id uint64, template string, o *ipn.Order, by string, queued uint64, now time.Time) ipn.OrderChange {
	return ipn.OrderChange{At: now.UTC(), From: o.Status, To: o.Status, By: by,
		Reason: fmt.Sprintf("outbox %d (%s) resent by %s as outbox %d", id, template, by, queued)}
}

// ResendTarget is what an Idempotency-Key of a resend of item id is
// remembered for.
func ResendTarget(id uint64) string { return "outbox/" + strconv.FormatUint(id, 10) }

// ResendKey reads, in tx, what Idempotency-Key key was used for, as a
// resend of item id asked at now sees it: the item queued then and true
// when it was used for a resend of the same item (the resend is
// repeated: nothing is queued); ErrKeyReused (wrapped) when it was used
// for another request (a decision on an order, a resend of another
// item); false when it was not, or is forgotten. The keys of resends and
// of decisions are one set (KeyUse, under ResendTarget): a backend with
// concurrent writers holds the key from then to the end of the
// transaction, as for a decision.
func ResendKey(tx Tx, key string, id uint64, now time.Time) (queued uint64, repeated bool, err error) {
	use, err := tx.KeyUse(key)
	if err != nil || use == nil || use.Order == "" || now.Sub(use.At) >= IdempotencyTTL {
		return 0, false, err
	}
	if use.Order != ResendTarget(id) || use.Kind != "resend" {
		return 0, false, fmt.Errorf("%w: it was used for %s of %q", ErrKeyReused, use.Kind, use.Order)
	}
	return use.Item, true, nil
}

// RememberResend records in tx that Idempotency-Key key was used at now
// for the resend of item id that queued item queued.
func RememberResend(tx Tx, key string, id, queued uint64, now time.Time) error {
	return tx.RememberKey(key, KeyUse{At: now.UTC(), Order: ResendTarget(id), Kind: "resend", Item: queued})
}

// Replay makes p, the processing record of a notification, received
// again, to be processed at now ("replay requested" in its history).
// The caller removes its retry at p.NextAttempt before, and schedules
// the one at now.
func Replay(p *ipn.Processing, now time.Time) {
	p.State, p.DuplicateOf, p.Attempts, p.NextAttempt = ipn.StateReceived, 0, 0, now
	p.History = append(p.History, ipn.HistoryEntry{At: now.UTC(), State: ipn.StateReceived, Detail: "replay requested"})
}
