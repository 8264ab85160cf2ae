package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"ipnd/ipn"
)

// LiveEvent is one event of the live stream (GET /api/events, ipnd
// tail): a notification stored or an order transition. It carries ids,
// states and the history's reason, no customer data.
type LiveEvent struct {
	Type         string          `json:"type"` // "notification" or "order"
	At           time.Time       `json:"at"`
	Notification uint64          `json:"notification,omitempty"`
	Gateway      string          `json:"gateway,omitempty"`
	State        string          `json:"state,omitempty"` // a notification's state
	Order        string          `json:"order,omitempty"`
	From         ipn.OrderStatus `json:"from,omitempty"`
	To           ipn.OrderStatus `json:"to,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	By           string          `json:"by,omitempty"`
}

// Live event types.
const (
	LiveNotification = "notification"
	LiveOrder        = "order"
)

// Broadcaster hands live events to its subscribers without ever
// blocking the sender: a subscriber whose buffer is full is dropped (its
// channel closed), and reconnects. Both stores' live streams are one
// (the bbolt store's DB.events; the PostgreSQL store's, fed by what the
// database tells it). The zero value is ready.
type Broadcaster struct {
	mu      sync.Mutex
	ended   bool // End: no more subscribers
	subs    map[chan LiveEvent]struct{}
	n       atomic.Int32 // len(subs), read without the lock
	dropped atomic.Uint64
	refused atomic.Uint64 // Follow past MaxFollowers
}

// MaxFollowers bounds the followers of the live stream at once (GET
// /api/events and the dashboard's /events: ipnd tail, browser tabs):
// each holds a connection, a goroutine and its buffer, so idle ones
// must not pile up. Past it Follow answers ErrTooManyFollowers.
const MaxFollowers = 64

// ErrTooManyFollowers: MaxFollowers follow the live stream already.
var ErrTooManyFollowers = errors.New("too many followers of the live event stream")

// Follow is Subscribe for a client of the admin listener: refused with
// ErrTooManyFollowers (and counted, LiveRefused) when MaxFollowers
// subscriptions are open.
func (db *DB) Follow(buffer int) (<-chan LiveEvent, func(), error) { return db.events.Follow(buffer) }

// LiveFollowers is how many subscriptions of the live stream are open.
func (db *DB) LiveFollowers() int { return db.events.Followers() }

// LiveRefused counts the followers refused past MaxFollowers.
func (db *DB) LiveRefused() uint64 { return db.events.Refused() }

// Subscribe returns a channel of live events (buffer events buffered;
// closed when the subscriber falls that far behind) and the function
// that ends the subscription.
func (db *DB) Subscribe(buffer int) (<-chan LiveEvent, func()) { return db.events.Subscribe(buffer) }

// EndLive ends every subscription (their channels close) and refuses
// new ones: the admin listener's shutdown calls it, so that a follower
// (ipnd tail, the dashboard) does not hold the shutdown up.
func (db *DB) EndLive() { db.events.End() }

// LiveDropped counts the subscribers dropped for falling behind.
func (db *DB) LiveDropped() uint64 { return db.events.Dropped() }

// Announce sends e to every subscriber, never waiting.
func (db *DB) Announce(e LiveEvent) { db.events.Announce(e) }

// Follow is Subscribe, refused with ErrTooManyFollowers (and counted,
// Refused) when MaxFollowers subscriptions are open.
func (b *Broadcaster) Follow(buffer int) (<-chan LiveEvent, func(), error) {
	ch, stop := b.subscribe(buffer, MaxFollowers)
	if ch == nil {
		b.refused.Add(1)
		return nil, nil, ErrTooManyFollowers
	}
	return ch, stop, nil
}

// Subscribe returns a channel of live events (buffer events buffered;
// closed when the subscriber falls that far behind) and the function
// that ends the subscription. After End the channel is closed.
func (b *Broadcaster) Subscribe(buffer int) (<-chan LiveEvent, func()) { return b.subscribe(buffer, 0) }

// subscribe is Subscribe, or nil when limit (0: none) subscriptions are
// open.
func (b *Broadcaster) subscribe(buffer, limit int) (chan LiveEvent, func()) {
	b.mu.Lock()
	if limit > 0 && len(b.subs) >= limit {
		b.mu.Unlock()
		return nil, nil
	}
	ch := make(chan LiveEvent, max(buffer, 1))
	if b.ended {
		b.mu.Unlock()
		close(ch)
		return ch, func() {}
	}
	if b.subs == nil {
		b.subs = map[chan LiveEvent]struct{}{}
	}
	b.subs[ch] = struct{}{}
	b.n.Store(int32(len(b.subs)))
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
			b.n.Store(int32(len(b.subs)))
		}
	}
}

// Followers is how many subscriptions are open.
func (b *Broadcaster) Followers() int { return int(b.n.Load()) }

// Refused counts the followers refused past MaxFollowers.
func (b *Broadcaster) Refused() uint64 { return b.refused.Load() }

// Dropped counts the subscribers dropped for falling behind.
func (b *Broadcaster) Dropped() uint64 { return b.dropped.Load() }

// Ended reports whether End was called.
func (b *Broadcaster) Ended() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ended
}

// End ends every subscription (their channels close) and refuses new
// ones (their channels are closed at once).
func (b *Broadcaster) End() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = true
	b.closeAll()
}

// Interrupt ends every subscription open now (their channels close: the
// followers reconnect) without refusing new ones, and without counting
// them as dropped: for a source of events that may have lost some (the
// PostgreSQL store's connection that listens for them).
func (b *Broadcaster) Interrupt() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeAll()
}

func (b *Broadcaster) closeAll() {
	for ch := range b.subs {
		delete(b.subs, ch)
		close(ch)
	}
	b.n.Store(0)
}

// Announce sends e to every subscriber, never waiting: one whose buffer
// is full is dropped (its channel closed) and counted.
func (b *Broadcaster) Announce(e LiveEvent) {
	if b.n.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
			delete(b.subs, ch)
			close(ch)
			b.dropped.Add(1)
		}
	}
	b.n.Store(int32(len(b.subs)))
}

// announceOrder announces an order's transition (nil order: none).
func (db *DB) announceOrder(o *ipn.Order, c ipn.OrderChange) {
	if o == nil || db.events.n.Load() == 0 {
		return
	}
	db.Announce(OrderEvent(o.ID, c))
}

// announceStored announces notification id, just stored.
func (db *DB) announceStored(id uint64, n *ipn.Notification) {
	if db.events.n.Load() == 0 {
		return
	}
	db.Announce(StoredEvent(id, n))
}

// announceFinished announces what the pipeline recorded: each
// notification's new state and each order transition.
func (db *DB) announceFinished(outs []ipn.Outcome, states []ipn.Recorded, now time.Time) {
	if db.events.n.Load() == 0 {
		return
	}
	for _, e := range FinishedEvents(outs, states, now) {
		db.Announce(e)
	}
}

// OrderEvent is the live event of order id's change c (a transition, or
// a line of its history that a decision wrote).
func OrderEvent(id string, c ipn.OrderChange) LiveEvent {
	return LiveEvent{Type: LiveOrder, At: c.At, Notification: c.Notification, Order: id, From: c.From,
		To: c.To, Reason: c.Reason, By: c.By}
}

// StoredEvent is the live event of notification id, just stored.
func StoredEvent(id uint64, n *ipn.Notification) LiveEvent {
	return LiveEvent{Type: LiveNotification, At: n.ReceivedAt.UTC(), Notification: id, Gateway: n.Gateway,
		State: string(ipn.StateReceived)}
}

// FinishedEvents are the live events of what the pipeline recorded at
// now (Finish's outcomes and the states it returned): for each
// notification its new state, then its order's transition if any.
func FinishedEvents(outs []ipn.Outcome, states []ipn.Recorded, now time.Time) []LiveEvent {
	var evs []LiveEvent
	for i, st := range states {
		if i >= len(outs) {
			break
		}
		id := outs[i].ID
		evs = append(evs, LiveEvent{Type: LiveNotification, At: now.UTC(), Notification: id, Gateway: outs[i].Context.Gateway,
			State: string(st.State), Reason: st.Detail})
		if st.OrderTo != "" {
			evs = append(evs, LiveEvent{Type: LiveOrder, At: now.UTC(), Notification: id, Order: st.OrderID,
				From: st.OrderFrom, To: st.OrderTo, Reason: st.Reason})
		}
	}
	return evs
}
