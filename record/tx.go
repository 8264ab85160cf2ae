// Package record is the seam between the decision and the stores: it
// drives one transaction that looks up what ipn.Decide reads about each
// outcome, lets ipn decide, and writes what it decided (Finish), applies
// to an order the events parked for it (Attach, through ipn.AdoptState),
// fails those parked too long (ExpireParked), and applies the merchant's
// decisions on orders (Decide). It decides nothing itself, and knows no storage: each
// backend (the bbolt store, PostgreSQL) implements Tx, the typed reads
// and writes of one of its transactions, and runs the transactions.
//
// record imports the domain (ipnd/ipn) only. A Tx reports the store's
// sentinel errors: ipn.ErrNotFound for a notification that is not
// stored, ipn.ErrCorrupt (wrapped, with what did not decode) for a record
// that cannot be decoded; Finish records the outcomes that read such a
// record as failed (ipn.Unreadable), so that one damaged record stalls
// nothing.
package record

import (
	"time"

	"ipnd/ipn"
)

// Tx is one read-write transaction of a store, as Finish, Attach,
// ExpireParked and Decide see it: everything it reads and writes commits together
// or not at all. A Tx is used by one goroutine. Every method may fail
// with the store's error (a closed store, a full disk, a lost
// connection), which aborts the transaction.
type Tx interface {
	Reader
	Writer
}

// Reader is what a Tx reads.
type Reader interface {
	// Notification reads notification id: ipn.ErrNotFound when it is
	// not stored, ipn.ErrCorrupt when its record does not decode.
	Notification(id uint64) (*ipn.Notification, error)
	// State reads the processing record of notification id: nil when
	// the pipeline has recorded none, ipn.ErrCorrupt when it does not
	// decode.
	State(id uint64) (*ipn.Processing, error)
	// FindRef returns the order one of the payment references refs of
	// gateway was applied to, "" when none was.
	FindRef(gateway string, refs []string) (string, error)
	// FactHolder returns the notification that holds the payment fact
	// key (ipn.Outcome.EventKey), 0 when none does.
	FactHolder(key string) (uint64, error)
	// OrderState reads order id as applying ev to it needs (see
	// ipn.ApplyState): the order, nil when it is not stored, and the
	// state kept apart from it, nil when the order holds its facts and
	// history itself (then it is applied by ipn.Apply).
	OrderState(id string, ev *ipn.Event, ac ipn.ApplyContext) (*ipn.Order, *ipn.OrderState, error)
	// Orphans returns the events parked under payment reference ref of
	// gateway (see Park), ipn.ErrCorrupt when one does not decode.
	Orphans(gateway, ref string) ([]Orphan, error)
	// ParkedDue returns the first max events of the parked events'
	// expiry schedule, in the order they were parked, parked at or before
	// cutoff.
	ParkedDue(cutoff time.Time, max int) ([]Due, error)
	// StoredOrder reads order id as it is stored, for a change of it
	// (Decide): the order, nil when none is stored, and its tally, nil
	// when the order holds its facts and history itself; with a tally,
	// the order comes without them. A backend with concurrent writers
	// holds the order from then to the end of the transaction.
	StoredOrder(id string) (*ipn.Order, *ipn.Tally, error)
	// OrderInFull reads order id with every fact and history entry (nil
	// when none is stored).
	OrderInFull(id string) (*ipn.Order, error)
	// ShownOrder reads order id as the dashboard shows it: the newest
	// 1,000 facts and history entries, and the txn ids of those facts
	// (nil when none is stored).
	ShownOrder(id string) (*ipn.Order, error)
	// KeyUse reads what Idempotency-Key key was used for, nil when it was
	// not (or is forgotten). A backend with concurrent writers holds the
	// key from then to the end of the transaction.
	KeyUse(key string) (*KeyUse, error)
}

// Writer is what a Tx writes.
type Writer interface {
	// PutState writes the processing record of notification id.
	PutState(id uint64, p *ipn.Processing) error
	// Schedule schedules notification id of gateway ("" when unknown)
	// to be processed again at due.
	Schedule(id uint64, due time.Time, gateway string) error
	// Unschedule removes the retry of notification id due at due (none
	// there: nothing happens).
	Unschedule(id uint64, due time.Time) error
	// DropRetries removes every retry scheduled for notification id.
	DropRetries(id uint64) error
	// ClaimFact makes notification id the holder of the payment fact
	// key, which prev held (0: none did).
	ClaimFact(key string, id, prev uint64) error
	// ReleaseFact forgets the payment fact key.
	ReleaseFact(key string) error
	// Fulfil records what the change of order next from old (nil: new)
	// delivers (SPEC §11), before next is written: links and keys issued,
	// revoked or restored. A paid order whose items cannot be delivered
	// goes to review instead: next and the effects change. It returns the
	// effects to queue. w is what the change writes besides the order.
	Fulfil(old, next *ipn.Order, w *ipn.OrderWrite, ev *ipn.Event, effects []ipn.Effect, now time.Time) ([]ipn.Effect, error)
	// PutOrder writes what applying one event to order old (nil: new)
	// decided: next, and w given st, the state it was decided on (see
	// OrderState; st nil: next holds its facts and history).
	PutOrder(old, next *ipn.Order, st *ipn.OrderState, w *ipn.OrderWrite) error
	// Enqueue puts effects, caused by notification id, in the outbox,
	// but those whose cause was queued before or whose kind is not
	// enabled.
	Enqueue(effects []ipn.Effect, id uint64, now time.Time) error
	// PutSubscription applies a subscription event to its record.
	PutSubscription(ev *ipn.Event, ac ipn.ApplyContext) error
	// Park keeps the applied event w of notification id, which names no
	// known order, under each of its payment references, parked at w.At
	// (one parked already keeps its time).
	Park(gateway string, id uint64, w ipn.Parked) error
	// Unpark removes the event w parked by notification id from under
	// every reference it was parked under.
	Unpark(gateway string, id uint64, w ipn.Parked) error
	// TakeDue removes d from the expiry schedule and returns the gateway
	// and the event it names, nil when that is parked no more (adopted
	// meanwhile); ipn.ErrCorrupt when it does not decode.
	TakeDue(d Due) (gateway string, o *Orphan, err error)
	// LinkRef maps payment reference ref of gateway to order orderID,
	// unless it is mapped already (then it keeps its order).
	LinkRef(gateway, ref, orderID string) error
	// MoveCursor moves the pipeline's cursor to cursor, when that is
	// further: every id up to it has been processed or scheduled.
	MoveCursor(cursor uint64) error
	// PutOrderChange writes a change of order old, which keeps its facts
	// and history apart (a tally): next, without its facts and history,
	// with tally t, and its history entry change, at next.Changes-1.
	PutOrderChange(old, next *ipn.Order, t ipn.Tally, change ipn.OrderChange) error
	// RememberKey records what Idempotency-Key key was used for, and
	// forgets keys used IdempotencyTTL before use.At (a few at a time).
	RememberKey(key string, use KeyUse) error
}

// Orphan is an event parked by notification ID, waiting for its order.
type Orphan struct {
	ID     uint64
	Parked ipn.Parked
}

// Received is the processing record of notification n when the pipeline
// has recorded none.
func Received(n *ipn.Notification) *ipn.Processing {
	return &ipn.Processing{State: ipn.StateReceived,
		History: []ipn.HistoryEntry{{At: n.ReceivedAt, State: ipn.StateReceived}}}
}

// processing is the processing record of n: its own, or Received.
func processing(tx Reader, n *ipn.Notification) (*ipn.Processing, error) {
	p, err := tx.State(n.ID)
	if p == nil && err == nil {
		p = Received(n)
	}
	return p, err
}
