package ipn

import "time"

// EffectShopScript is the notification-script half of a shop callback
// (the store queues it as its own item, so that the HTTP callback and the
// script are retried independently).
const EffectShopScript = "shop_script"

// Outbox item states.
const (
	OutboxPending = "pending"
	OutboxSent    = "sent"
	OutboxDead    = "dead"
)

// OutboxItem is one piece of outgoing work (an email, a shop callback, a
// script run), queued in the same transaction as the state change that
// caused it and delivered by the outbox worker.
type OutboxItem struct {
	ID           uint64    `json:"id"`
	Effect       Effect    `json:"effect"`
	State        string    `json:"state"`
	Attempts     int       `json:"attempts"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	Notification uint64    `json:"notification"`
	CreatedAt    time.Time `json:"created_at"`
	SentAt       time.Time `json:"sent_at,omitzero"`
}

// OutboxResult is what one delivery attempt decided.
type OutboxResult struct {
	ID       uint64
	State    string    // sent, dead, or pending (retry at RetryAt)
	Attempts int       // attempts made so far, this one included
	RetryAt  time.Time // when State is pending
	Error    string    // the last error, for the operator (no secrets)
}
