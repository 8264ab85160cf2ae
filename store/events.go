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

// broadcaster hands live events to its subscribers without ever
// blocking the sender: a subscriber whose buffer is full is dropped (its
// channel closed), and reconnects.
type broadcaster struct {
	mu      sync.Mutex
	ended   bool // EndLive: no more subscribers
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
func (db *DB) Follow(buffer int) (<-chan LiveEvent, func(), error) {
	ch, stop := db.subscribe(buffer, MaxFollowers)
	if ch == nil {
		db.events.refused.Add(1)
		return nil, nil, ErrTooManyFollowers
	}
	return ch, stop, nil
}

// LiveFollowers is how many subscriptions of the live stream are open.
func (db *DB) LiveFollowers() int { return int(db.events.n.Load()) }

// LiveRefused counts the followers refused past MaxFollowers.
func (db *DB) LiveRefused() uint64 { return db.events.refused.Load() }

// Subscribe returns a channel of live events (buffer events buffered;
// closed when the subscriber falls that far behind) and the function
// that ends the subscription.
func (db *DB) Subscribe(buffer int) (<-chan LiveEvent, func()) {
	return db.subscribe(buffer, 0)
}

// subscribe is Subscribe, or nil when limit (0: none) subscriptions are
// open.
func (db *DB) subscribe(buffer, limit int) (chan LiveEvent, func()) {
	b := &db.events
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

// EndLive ends every subscription (their channels close) and refuses
// new ones: the admin listener's shutdown calls it, so that a follower
// (ipnd tail, the dashboard) does not hold the shutdown up.
func (db *DB) EndLive() {
	b := &db.events
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = true
	for ch := range b.subs {
		delete(b.subs, ch)
		close(ch)
	}
	b.n.Store(0)
}

// LiveDropped counts the subscribers dropped for falling behind.
func (db *DB) LiveDropped() uint64 { return db.events.dropped.Load() }

// Announce sends e to every subscriber, never waiting.
func (db *DB) Announce(e LiveEvent) {
	b := &db.events
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
	db.Announce(LiveEvent{Type: LiveOrder, At: c.At, Notification: c.Notification, Order: o.ID, From: c.From,
		To: c.To, Reason: c.Reason, By: c.By})
}

// announceStored announces notification id, just stored.
func (db *DB) announceStored(id uint64, n *ipn.Notification) {
	if db.events.n.Load() == 0 {
		return
	}
	db.Announce(LiveEvent{Type: LiveNotification, At: n.ReceivedAt.UTC(), Notification: id, Gateway: n.Gateway,
		State: string(ipn.StateReceived)})
}

// announceFinished announces what the pipeline recorded: each
// notification's new state and each order transition.
func (db *DB) announceFinished(outs []ipn.Outcome, states []ipn.Recorded, now time.Time) {
	if db.events.n.Load() == 0 {
		return
	}
	for i, st := range states {
		if i >= len(outs) {
			break
		}
		id := outs[i].ID
		db.Announce(LiveEvent{Type: LiveNotification, At: now.UTC(), Notification: id, Gateway: outs[i].Context.Gateway,
			State: string(st.State), Reason: st.Detail})
		if st.OrderTo != "" {
			db.Announce(LiveEvent{Type: LiveOrder, At: now.UTC(), Notification: id, Order: st.OrderID,
				From: st.OrderFrom, To: st.OrderTo, Reason: st.Reason})
		}
	}
}
