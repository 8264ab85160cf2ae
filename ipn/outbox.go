package ipn

import (
	"strconv"
	"time"
)

// EffectShopScript is the notification-script half of a shop callback
// (the store queues it as its own item, so that the HTTP callback and the
// script are retried independently).
const EffectShopScript = "shop_script"

// OutboxLanes are the effect kinds the outbox delivers, each on its own
// lane (own due scan, concurrency and backoff): a slow or dead
// destination delays only the items of its own lane.
var OutboxLanes = []string{EffectEmailCustomer, EffectEmailMerchant, EffectShopCallback, EffectShopScript}

// Outbox item states.
const (
	OutboxPending = "pending"
	OutboxSent    = "sent"
	OutboxDead    = "dead"
	// OutboxSkipped: there was nothing to send to (no email.merchant_to,
	// no customer address, the template not enabled). Final, like sent and
	// dead; a manual retry puts the item back in the queue.
	OutboxSkipped = "skipped"
	// OutboxDiscarded: the merchant decided not to send it (a pending or
	// dead item): final, counted apart from dead, so that the dead-item
	// alert clears; a manual retry puts it back in the queue.
	OutboxDiscarded = "discarded"
)

// OutboxStates lists every outbox item state.
var OutboxStates = []string{OutboxPending, OutboxSent, OutboxDead, OutboxSkipped, OutboxDiscarded}

// OutboxItem is one piece of outgoing work (an email, a shop callback, a
// script run), queued in the same transaction as the state change that
// caused it and delivered by the outbox worker.
type OutboxItem struct {
	ID     uint64 `json:"id"`
	Effect Effect `json:"effect"`
	// DeliveryID names the item to its receiver (the callback's
	// webhook-id, the script's IPND_OUTBOX_ID): the same on every attempt,
	// across restarts, and unique across databases (the store makes it
	// from a random id drawn each time it opens, so that neither a fresh
	// database nor a restored backup repeats one). Empty on items queued
	// before it existed: see Key.
	DeliveryID   string    `json:"delivery_id,omitempty"`
	State        string    `json:"state"`
	Attempts     int       `json:"attempts"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	Notification uint64    `json:"notification"`
	CreatedAt    time.Time `json:"created_at"`
	SentAt       time.Time `json:"sent_at,omitzero"`
}

// Key is the item's DeliveryID, or "ipnd_<id>" for an item queued before
// delivery ids existed (what its earlier attempts were sent with).
func (it *OutboxItem) Key() string {
	if it.DeliveryID != "" {
		return it.DeliveryID
	}
	return "ipnd_" + strconv.FormatUint(it.ID, 10)
}

// OutboxResult is what one delivery attempt decided.
type OutboxResult struct {
	ID       uint64
	State    string    // sent, dead, skipped, or pending (retry at RetryAt)
	Attempts int       // attempts made so far, this one included
	RetryAt  time.Time // when State is pending
	Error    string    // the last error or why it was skipped, for the operator (no secrets)
	// NotAttempted: nothing was sent (the connection broke on an earlier
	// message): State is pending, Attempts the item's count unchanged,
	// Error says why it was not attempted.
	NotAttempted bool
	// Detail is what the other side said (kept with the attempt), and
	// Duration how long the attempt took.
	Detail   AttemptDetail
	Duration time.Duration
}

// AttemptDetail is what the other side said to one delivery attempt,
// for the operator's forensics (clipped, email addresses removed).
type AttemptDetail struct {
	HTTPStatus int    `json:"http_status,omitempty"` // a callback's response status
	Response   string `json:"response,omitempty"`    // a callback's response body, its first KiB
	SMTPReply  string `json:"smtp_reply,omitempty"`  // an email's SMTP error or reply
	ExitStatus *int   `json:"exit_status,omitempty"` // the script's exit status (-1: killed)
	Stderr     string `json:"stderr,omitempty"`      // the script's stderr, its last KiB
}

// OutboxAttempt is one delivery attempt of an outbox item, as kept for
// forensics (the store keeps the last few of each item).
type OutboxAttempt struct {
	Seq      uint64        `json:"seq"`     // the item's attempts numbered from 1, across manual retries
	Attempt  int           `json:"attempt"` // the item's attempt count then (a manual retry resets it)
	At       time.Time     `json:"at"`
	Result   string        `json:"result"` // the item's state after it: sent, pending (to retry), dead, skipped
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`
	AttemptDetail
}
