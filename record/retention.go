package record

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"ipnd/ipn"
)

// Retention (store.raw_retention), decided here for both backends: what
// may be purged, and what purging leaves. Each backend walks its records
// in id order from where its last call stopped, and stops at the first
// record that waits (so does everything after it, until a later call).

// NoteWaits reports whether notification n, whose processing record is
// p (nil: none), keeps its raw data at cutoff, and holds up the ones
// after it: received at or after the cutoff, or still to be processed
// (a retry or a replay is pending: it needs its exact bytes).
func NoteWaits(n *ipn.Notification, p *ipn.Processing, cutoff time.Time) bool {
	return !n.ReceivedAt.Before(cutoff) || p != nil && !p.State.Final()
}

// PurgeNote marks n purged at now, with the SHA-256 of its body; the
// backend drops its body, headers and remote address.
func PurgeNote(n *ipn.Notification, now time.Time) {
	sum := sha256.Sum256(n.Body)
	n.BodySHA256, n.Purged = hex.EncodeToString(sum[:]), now.UTC()
	n.RemoteAddr, n.Headers, n.Body = "", nil, nil
}

// ScrubEvent removes the customer's name and email from ev; it reports
// whether there was any.
func ScrubEvent(ev *ipn.Event) bool {
	if ev == nil || ev.CustomerEmail == "" && ev.CustomerName == "" {
		return false
	}
	ev.CustomerEmail, ev.CustomerName = "", ""
	return true
}

// ItemWaits reports whether outbox item it keeps the customer's data at
// cutoff, and holds up the items after it: created at or after the
// cutoff, or still to be delivered.
func ItemWaits(it *ipn.OutboxItem, cutoff time.Time) bool {
	return !it.CreatedAt.Before(cutoff) || it.State == ipn.OutboxPending
}

// ScrubEffect removes the customer's data from an effect; it reports
// whether there was any.
func ScrubEffect(e *ipn.Effect) bool {
	had := e.To != ""
	e.To = ""
	if e.Event != nil {
		had = had || e.Event.CustomerEmail != "" || e.Event.CustomerName != ""
		e.Event.CustomerEmail, e.Event.CustomerName = "", ""
	}
	if e.Order != nil {
		had = had || e.Order.Customer != (ipn.Customer{})
		e.Order.Customer = ipn.Customer{}
	}
	return had
}

// ScrubAttempt removes what the other side said from a delivery
// attempt (a shop's response or a script's stderr may name the
// customer); time, result, status and the error stay. It reports
// whether there was any.
func ScrubAttempt(a *ipn.OutboxAttempt) bool {
	if a.Response == "" && a.Stderr == "" {
		return false
	}
	a.Response, a.Stderr = "", ""
	return true
}

// ScrubOrder removes the customer's name and email from order o when it
// has not changed since cutoff (its status, and so the counts, stay);
// it reports whether it did.
func ScrubOrder(o *ipn.Order, cutoff time.Time) bool {
	if !o.UpdatedAt.Before(cutoff) || o.CustomerEmail == "" && o.CustomerName == "" {
		return false
	}
	o.CustomerEmail, o.CustomerName = "", ""
	return true
}

// ScrubSubscription removes the customer's email from subscription s
// when it has not changed since cutoff; it reports whether it did.
func ScrubSubscription(s *ipn.Subscription, cutoff time.Time) bool {
	if !s.UpdatedAt.Before(cutoff) || s.CustomerEmail == "" {
		return false
	}
	s.CustomerEmail = ""
	return true
}
