package ipn

import "time"

// Notification is the raw record of one request a gateway sent, exactly as
// received. Once appended to the log it is immutable; processing state lives
// elsewhere.
type Notification struct {
	ID          uint64              // log id, assigned by the store: positive, strictly increasing
	Gateway     string              // configured gateway name
	ReceivedAt  time.Time           // when the receiver read the request
	RemoteAddr  string              // client address (after trusted-proxy resolution)
	ContentType string              // Content-Type header as sent
	Headers     map[string][]string // the selected headers the gateway's verification needs (an http.Header: canonical keys)
	Body        []byte              // raw body bytes, verbatim
	DedupKey    string              // the gateway's own id for this message ("" when it has none)
	// Purged is when store.raw_retention removed the body, the headers and
	// the remote address (zero while they are kept); BodySHA256 (hex) then
	// still identifies the body that was received.
	Purged     time.Time
	BodySHA256 string
}

// State is where a notification is in the processing pipeline.
type State string

// Pipeline states (SPEC §4).
const (
	StateReceived  State = "received"
	StateVerified  State = "verified"
	StateApplied   State = "applied"
	StateInvalid   State = "invalid"
	StateFailed    State = "failed"
	StateDuplicate State = "duplicate"
)

// Valid reports whether s is one of the pipeline states.
func (s State) Valid() bool {
	switch s {
	case StateReceived, StateVerified, StateApplied, StateInvalid, StateFailed, StateDuplicate:
		return true
	}
	return false
}

// HistoryEntry is one step in a notification's life.
type HistoryEntry struct {
	At     time.Time `json:"at"`
	State  State     `json:"state"`
	Detail string    `json:"detail,omitempty"`
}

// Final reports whether a notification in state s is done: the pipeline
// does not process it again unless it is replayed.
func (s State) Final() bool {
	return s == StateApplied || s == StateInvalid || s == StateFailed || s == StateDuplicate
}

// Processing is the mutable processing state kept beside a raw notification.
type Processing struct {
	State       State          `json:"state"`
	DuplicateOf uint64         `json:"duplicate_of,omitempty"`
	Event       *Event         `json:"event,omitempty"`
	History     []HistoryEntry `json:"history"`
	// Attempts counts failed verification attempts; NextAttempt is when
	// the next one is due (zero when none is scheduled).
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Verified: the gateway's postback confirmed the message once (PayPal
	// VERIFIED). A replay does not ask again: the answer cannot change,
	// and the gateway may be unreachable.
	Verified bool `json:"verified,omitempty"`
}

// WasVerified reports whether the message passed its gateway's postback
// before: Verified, or (records from before that field) a history that
// reached applied or duplicate, which only a verified message can.
func (p *Processing) WasVerified() bool {
	if p.Verified {
		return true
	}
	for _, h := range p.History {
		if h.State == StateApplied || h.State == StateDuplicate {
			return true
		}
	}
	return false
}

// Settled reports whether nothing is to be done about the notification
// at now: its state is final, or a verification retry is scheduled later
// (the retry queue takes it then).
func (p *Processing) Settled(now time.Time) bool {
	return p.State.Final() || (p.State == StateReceived && p.NextAttempt.After(now))
}

// Outcome is what processing one notification decided. The store records
// it in one transaction: state, history, event, retry schedule.
type Outcome struct {
	ID     uint64
	State  State  // applied, invalid, failed; StateReceived with RetryAt set: verify again later
	Detail string // a short human reason for the history
	Event  *Event
	// EventKey identifies the payment fact (gateway, txn, type, status,
	// amount): a second notification with the same key is a duplicate.
	EventKey string
	RetryAt  time.Time
	Attempts int
	// Verified: the gateway's postback confirmed the message (now or
	// before a replay).
	Verified bool
	// ApplyOrder: apply Event to its order (and subscription) in the same
	// transaction: for applied notifications, and for those refused in a
	// way the merchant must see on the order (a test payment on a live
	// gateway, a payment to another receiver: the order goes to review).
	ApplyOrder bool
	// Context is what the order state machine needs (see Apply).
	Context ApplyContext
	// RequireRegistered: an event for an order not registered through the
	// API is not applied (the notification becomes invalid).
	RequireRegistered bool
}

// Recorded is what the store recorded for one Outcome: the notification's
// state and, when the event moved its order, the order's transition.
type Recorded struct {
	State     State
	OrderID   string
	OrderFrom OrderStatus // "" for a new order
	OrderTo   OrderStatus // "" when no order changed
	// Detail is the notification history's words for this step; Reason
	// the order history's for its transition ("" when no order changed).
	Detail string
	Reason string
}

// Work is a notification the pipeline should process now.
type Work struct {
	Notification *Notification
	Processing   *Processing
	Fresh        bool // new in the log (not a retry or replay): the cursor moves past it
}
