package fulfil

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"ipnd/ipn"
)

// Tx is what Apply reads and writes in the store's transaction that
// changes the order: each store (bbolt, PostgreSQL) implements it on its
// own transaction, so that both record the same deliveries.
type Tx interface {
	// Record reads what order id was delivered (nil: nothing); a store
	// whose writers run concurrently locks it to the transaction's end.
	Record(orderID string) (*Record, error)
	// License reads the license whose key hashes to hash (nil: none).
	License(hash string) (*License, error)
	// PutRecord writes rec under its order id.
	PutRecord(rec *Record) error
	// PutTokens maps the token hash of each of rec's deliveries to it.
	PutTokens(rec *Record) error
	// PutLicense writes l under its hash.
	PutLicense(l *License) error
	// TakePoolKey hands out a key of pool product p to order orderID,
	// recorded as handed out in the same transaction (ErrPoolEmpty: none
	// is left).
	TakePoolKey(p *Product, orderID string) (string, error)
	// SignedWith records that a signed key was issued with public key
	// pub (the first such key is kept: a later start refuses a signing
	// key that differs).
	SignedWith(pub ed25519.PublicKey) error
}

// Apply records, in tx, what order next's change from old (nil: new)
// delivers, before next is written: links and keys issued when it
// becomes paid (the effects of the change, its payment email and shop
// callback, carry them), revoked when it is refunded in full, reversed
// or disputed, restored when it is paid again; a subscription's event
// moves the expiry of its licenses. A paid order whose items cannot be
// delivered goes to review instead (next and the effects are changed).
// It returns the effects to queue. cat is the catalog (nil: no
// products), rnd the source of tokens and keys.
//
// w is what the change writes besides the order (its history entry),
// nil when the order is written whole.
func Apply(tx Tx, cat *Catalog, rnd io.Reader, old, next *ipn.Order, w *ipn.OrderWrite, ev *ipn.Event, effects []ipn.Effect, now time.Time) ([]ipn.Effect, error) {
	if next == nil {
		return effects, nil
	}
	var from ipn.OrderStatus
	if old != nil {
		from = old.Status
	}
	// A new order has nothing delivered (its deliveries would have been
	// deleted with it): its record is not read, a round trip saved on
	// PostgreSQL for each new order.
	var rec *Record
	if old != nil {
		var err error
		if rec, err = tx.Record(next.ID); err != nil {
			return nil, err
		}
	}
	if rec != nil && ev != nil && ev.SubscriptionID != "" {
		// A renewal (or the subscription's end) moves its licenses' expiry.
		if err := renewLicenses(tx, cat, rec, ev, now); err != nil {
			return nil, err
		}
	}
	if from == next.Status {
		return effects, nil
	}
	if rec == nil && !cat.Enabled() {
		return effects, nil // nothing issued, nothing to issue
	}
	switch Decide(from, next.Status, rec) {
	case Issue:
		if !cat.Enabled() {
			return effects, nil
		}
		return issue(tx, cat, rnd, next, w, ev, effects, now)
	case Revoke:
		return effects, setRevoked(tx, rec, true, "order "+string(next.Status))
	case Restore:
		return effects, setRevoked(tx, rec, false, "")
	}
	return effects, nil
}

func issue(tx Tx, cat *Catalog, rnd io.Reader, next *ipn.Order, w *ipn.OrderWrite, ev *ipn.Event, effects []ipn.Effect, now time.Time) ([]ipn.Effect, error) {
	// The history entry of this change: the write's, or the order's last.
	var change *ipn.OrderChange
	if w != nil {
		change = &w.Change
	} else if n := len(next.History); n > 0 {
		next.History = slices.Clone(next.History)
		change = &next.History[n-1]
	}
	review := func(flag, detail string) ([]ipn.Effect, error) {
		if slices.Contains(next.ApprovedFlags, flag) {
			return effects, nil // the merchant approved it as it is: nothing to deliver
		}
		return ToReview(next, change, effects, flag, detail, now), nil
	}
	items, err := Items(next, ev)
	if err != nil {
		return review(ipn.FlagUnknownProduct, "the payment's items cannot be read: "+err.Error())
	}
	if len(items) == 0 {
		return effects, nil // nothing bought that ipnd delivers
	}
	if unknown := cat.Unknown(items); len(unknown) > 0 {
		return review(ipn.FlagUnknownProduct, fmt.Sprintf("unknown product %q", unknown[0]))
	}
	next.Items = items
	sub, end := subscriptionPeriod(ev)
	pool := func(p *Product) (string, error) { return tx.TakePoolKey(p, next.ID) }
	is, err := cat.Issue(next, items, rnd, now, pool, sub, end)
	if errors.Is(err, ErrPoolEmpty) {
		return review("license_pool_empty", err.Error())
	}
	if err != nil {
		return nil, err
	}
	if err := tx.PutRecord(&is.Record); err != nil {
		return nil, err
	}
	if err := tx.PutTokens(&is.Record); err != nil {
		return nil, err
	}
	for i := range is.Licenses {
		if err := tx.PutLicense(&is.Licenses[i]); err != nil {
			return nil, err
		}
	}
	if cat.Signer != nil && slices.ContainsFunc(is.Licenses, func(l License) bool { return strings.HasPrefix(l.Key, SignedPrefix) }) {
		if err := tx.SignedWith(cat.Signer.Public().(ed25519.PublicKey)); err != nil {
			return nil, err
		}
	}
	return withDeliveries(effects, is.Delivered), nil
}

// ReissueEmail is the customer's email of a reissue of order id's links
// (Catalog.Reissue): shown is what it carries, reissues the record's
// count after it. ok is false when nobody is to be told (no order, or
// no customer address).
func ReissueEmail(id string, o *ipn.Order, reissues int, shown []ipn.Delivered) (e ipn.Effect, ok bool) {
	if o == nil || o.CustomerEmail == "" {
		return ipn.Effect{}, false
	}
	snap := o.Snapshot(o.Status, "deliveries reissued")
	snap.Deliveries = shown
	return ipn.Effect{Kind: ipn.EffectEmailCustomer, Template: ipn.TemplatePaymentReceived, OrderID: id, To: o.CustomerEmail,
		Cause: id + "/deliveries/reissue/" + strconv.Itoa(reissues), Amount: o.Paid, Order: snap}, true
}

// withDeliveries returns effects with their order snapshots carrying d.
func withDeliveries(effects []ipn.Effect, d []ipn.Delivered) []ipn.Effect {
	out := make([]ipn.Effect, len(effects))
	done := map[*ipn.OrderSnapshot]*ipn.OrderSnapshot{}
	for i, e := range effects {
		if e.Order != nil {
			s, ok := done[e.Order]
			if !ok {
				c := *e.Order
				c.Deliveries = d
				s, done[e.Order] = &c, &c
			}
			e.Order = s
		}
		out[i] = e
	}
	return out
}

// setRevoked revokes (or restores) rec's links and disables (or enables)
// its licenses, except those the merchant disabled.
func setRevoked(tx Tx, rec *Record, revoked bool, reason string) error {
	rec.Revoked, rec.Reason = revoked, reason
	if err := tx.PutRecord(rec); err != nil {
		return err
	}
	for _, d := range rec.Deliveries {
		if d.LicenseHash == "" {
			continue
		}
		l, err := tx.License(d.LicenseHash)
		if err != nil {
			return err
		}
		if l == nil || l.Manual {
			continue
		}
		l.Disabled, l.DisabledReason = revoked, reason
		if err := tx.PutLicense(l); err != nil {
			return err
		}
	}
	return nil
}

// subscriptionPeriod returns the subscription the paying event is part
// of and the end of the period it pays ("" when none; a zero time when
// the gateway does not say: the licenses then run until the
// subscription's end is reported).
func subscriptionPeriod(ev *ipn.Event) (string, time.Time) {
	if ev == nil || ev.SubscriptionID == "" {
		return "", time.Time{}
	}
	end, _ := time.Parse(time.RFC3339, ev.PeriodEnd)
	return ev.SubscriptionID, end
}

// renewLicenses applies a subscription event to the licenses rec issued
// for that subscription (Renew).
func renewLicenses(tx Tx, cat *Catalog, rec *Record, ev *ipn.Event, now time.Time) error {
	grace := Catalog{}
	if cat != nil {
		grace.Grace = cat.Grace
	}
	for _, d := range rec.Deliveries {
		if d.LicenseHash == "" {
			continue
		}
		l, err := tx.License(d.LicenseHash)
		if err != nil {
			return err
		}
		if l == nil || l.SubscriptionID != ev.SubscriptionID {
			continue
		}
		if next, changed := grace.Renew(*l, ev, now); changed {
			if err := tx.PutLicense(&next); err != nil {
				return err
			}
		}
	}
	return nil
}
