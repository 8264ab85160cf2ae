package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"ipnd/ipn"
	"ipnd/store"
)

// The live event stream (GET /api/events, the dashboard's /events, ipnd
// tail) and Stats, with the bbolt store's semantics (store/events.go):
// an event per notification stored, per state the pipeline records and
// per order transition, handed to at most store.MaxFollowers followers
// without ever waiting for one (a follower whose buffer is full is
// dropped: its channel closes, LiveDropped counts it, it reconnects).
//
// Several ipnd processes share the database, and the dashboard may be
// connected to one that does not lead: the events come from the
// database, not from the process's own calls. The transactions that
// write what an event tells NOTIFY it on liveChannel, in the
// transaction, so that it is delivered when (and only if) they commit,
// in commit order: the ingest commit (DB.commit), the pipeline's Finish
// (Journal.Finish), and the decisions that announce an order's change
// on the bbolt store (DecideOrder, DiscardOutbox: they call notifyLive
// in their transactions). The payload is the events themselves,
// compact, in chunks under PostgreSQL's 8000 bytes (wireEvent), so
// that a listener reads nothing more. A NOTIFY is queued by the server
// for its listeners: a committing transaction never waits for one.
//
// Each process listens on a connection of its own (liveFeed), opened
// by the first Follow and kept until EndLive or Close; it hands each
// event to the process's followers. When that connection is lost, the
// events committed meanwhile are not delivered: every open stream is
// ended then (its channel closes, as for a follower dropped, not
// counted as one), so that a follower knows it may have missed some and
// reconnects; a Follow waits (up to the DB's timeout) for the listener
// to be connected again, and fails with ErrUnavailable if it is not.

// liveChannel is the channel of the NOTIFYs that carry live events.
const liveChannel = "ipnd_live"

// livePayloadMax bounds one NOTIFY's payload (PostgreSQL refuses 8000
// bytes and more).
const livePayloadMax = 7000

// liveRetry is the pause before the listener connects again.
const liveRetry = 500 * time.Millisecond

// livePing: the listener checks its connection after this long without
// a notification (a connection lost without a word is found so).
const livePing = 15 * time.Second

// wireEvent is a store.LiveEvent in a NOTIFY's payload, with short
// names.
type wireEvent struct {
	Type         string `json:"t"`
	At           *int64 `json:"a,omitempty"` // Unix nanoseconds (none: the zero time)
	Notification uint64 `json:"n,omitempty"`
	Gateway      string `json:"g,omitempty"`
	State        string `json:"s,omitempty"`
	Order        string `json:"o,omitempty"`
	From         string `json:"f,omitempty"`
	To           string `json:"to,omitempty"`
	Reason       string `json:"r,omitempty"`
	By           string `json:"b,omitempty"`
}

func toWire(e store.LiveEvent) wireEvent {
	w := wireEvent{Type: e.Type, Notification: e.Notification, Gateway: e.Gateway, State: e.State, Order: e.Order,
		From: string(e.From), To: string(e.To), Reason: e.Reason, By: e.By}
	if !e.At.IsZero() {
		ns := e.At.UnixNano()
		w.At = &ns
	}
	return w
}

func (w wireEvent) event() store.LiveEvent {
	e := store.LiveEvent{Type: w.Type, Notification: w.Notification, Gateway: w.Gateway, State: w.State, Order: w.Order,
		From: ipn.OrderStatus(w.From), To: ipn.OrderStatus(w.To), Reason: w.Reason, By: w.By}
	if w.At != nil {
		e.At = time.Unix(0, *w.At).UTC()
	}
	return e
}

// encodeWire is one event's payload text: its reason shortened (marked
// with "…") when the event would not fit in a payload on its own (the
// order's history keeps it whole), and at worst only its type, time and
// notification.
func encodeWire(e store.LiveEvent) []byte {
	w := toWire(e)
	for {
		b, _ := json.Marshal(w) // strings and numbers only: never fails
		if len(b) <= livePayloadMax-2 {
			return b
		}
		if w.Reason == "" {
			b, _ = json.Marshal(wireEvent{Type: w.Type, At: w.At, Notification: w.Notification})
			return b
		}
		cut := len(w.Reason) / 2
		for cut > 0 && !utf8.RuneStart(w.Reason[cut]) {
			cut--
		}
		w.Reason = strings.TrimSuffix(w.Reason[:cut], "…") + "…"
		if cut == 0 {
			w.Reason = ""
		}
	}
}

// livePayloads packs events into payloads (JSON arrays of wireEvent)
// under livePayloadMax, in order.
func livePayloads(evs []store.LiveEvent) []string {
	var out []string
	var b strings.Builder
	for _, e := range evs {
		one := encodeWire(e)
		if b.Len() > 0 && b.Len()+1+len(one)+1 > livePayloadMax {
			b.WriteByte(']')
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteByte('[')
		} else {
			b.WriteByte(',')
		}
		b.Write(one)
	}
	if b.Len() > 0 {
		b.WriteByte(']')
		out = append(out, b.String())
	}
	return out
}

// notifySQL sends NOTIFY $1[i], $2[i] for each i, in order.
const notifySQL = `SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)`

// notifyLive sends evs to every process's followers when tx commits:
// for a transaction that writes what they tell (an order's change
// decided by the merchant: store.OrderEvent).
func notifyLive(ctx context.Context, tx pgx.Tx, evs ...store.LiveEvent) error {
	if len(evs) == 0 {
		return nil
	}
	ps := livePayloads(evs)
	chans := make([]string, len(ps))
	for i := range chans {
		chans[i] = liveChannel
	}
	_, err := tx.Exec(ctx, notifySQL, chans, ps)
	return err
}

// ingestNotifies is what the group commit's notifySQL sends (queued
// with its statements, so sent when it commits): the NOTIFY that wakes
// the leader's pipeline (ingestChannel) and the live events of the
// notifications it stores.
func ingestNotifies(evs []store.LiveEvent) (chans, ps []string) {
	chans, ps = []string{ingestChannel}, []string{""}
	for _, p := range livePayloads(evs) {
		chans, ps = append(chans, liveChannel), append(ps, p)
	}
	return chans, ps
}

// notifyFinished queues in t the NOTIFY of the live events of what the
// pipeline recorded (store.FinishedEvents): record.FinishThen's then.
func (t *pgTx) notifyFinished(outs []ipn.Outcome, states []ipn.Recorded, now time.Time) error {
	return t.notifyLive(store.FinishedEvents(outs, states, now)...)
}

// notifyLive is notifyLive for a pgTx: queued with its statements.
func (t *pgTx) notifyLive(evs ...store.LiveEvent) error {
	ps := livePayloads(evs)
	if len(ps) == 0 {
		return nil
	}
	chans := make([]string, len(ps))
	for i := range chans {
		chans[i] = liveChannel
	}
	return t.exec(notifySQL, chans, ps)
}

// liveFeed is a process's side of the live stream: its followers and
// the connection that listens for the events (started by the first
// Follow, stopped by EndLive and Close).
type liveFeed struct {
	b store.Broadcaster

	mu        sync.Mutex
	running   bool // the listener runs
	closed    bool // Close: never started again
	connected bool // the listener listens: a follower misses nothing
	lastErr   error
	changed   chan struct{} // closed when connected changes
	cancel    context.CancelFunc
	done      chan struct{}

	ping  time.Duration // 0: livePing (tests shorten it)
	pings atomic.Int64  // the connection checked after a quiet ping
}

// changedLocked is the channel closed at the next change of connected.
func (l *liveFeed) changedLocked() chan struct{} {
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

// setConnected records whether the listener listens; a lost connection
// ends every stream open (they may have missed events).
func (l *liveFeed) setConnected(on bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.connected && !on {
		l.b.Interrupt()
	}
	l.connected, l.lastErr = on, err
	close(l.changedLocked())
	l.changed = nil
}

// follow subscribes once the listener listens (starting it), waiting up
// to the DB's timeout.
func (db *DB) follow(buffer int) (<-chan store.LiveEvent, func(), error) {
	l := &db.live
	timer := time.NewTimer(db.opts.Timeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: store closed", ErrUnavailable)
		}
		if l.b.Ended() {
			l.mu.Unlock()
			return l.b.Follow(buffer) // closed at once, as the bbolt store's after EndLive
		}
		if !l.running {
			ctx, cancel := context.WithCancel(context.Background())
			l.running, l.cancel, l.done = true, cancel, make(chan struct{})
			go l.run(ctx, db, l.done)
		}
		if l.connected {
			ch, stop, err := l.b.Follow(buffer)
			l.mu.Unlock()
			return ch, stop, err
		}
		wait, last := l.changedLocked(), l.lastErr
		l.mu.Unlock()
		select {
		case <-wait:
		case <-timer.C:
			if last == nil {
				last = errors.New("not connected yet")
			}
			return nil, nil, fmt.Errorf("%w: the live event stream cannot listen: %v", ErrUnavailable, last)
		}
	}
}

// stop stops the listener (when it runs) and waits for it; closing
// also refuses to start it again.
func (l *liveFeed) stop(closing bool) {
	l.mu.Lock()
	l.closed = l.closed || closing
	cancel, done := l.cancel, l.done
	l.running, l.cancel, l.done = false, nil, nil
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// close is DB.Close's: the listener stops, the streams end.
func (l *liveFeed) close() {
	l.stop(true)
	l.b.End()
}

// run listens until ctx ends, connecting again after a pause when the
// connection is lost.
func (l *liveFeed) run(ctx context.Context, db *DB, done chan struct{}) {
	defer close(done)
	for {
		err := l.listen(ctx, db)
		l.setConnected(false, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(liveRetry):
		}
	}
}

// listen connects, listens on liveChannel and hands each event to the
// followers until the connection fails or ctx ends.
func (l *liveFeed) listen(ctx context.Context, db *DB) error {
	cfg := db.pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "ipnd live events" // pg_stat_activity says what it is
	}
	cctx, cancel := context.WithTimeout(ctx, db.opts.Timeout)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(cctx)
		cancel()
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+liveChannel); err != nil {
		return err
	}
	l.setConnected(true, nil)
	quiet := livePing
	if l.ping > 0 {
		quiet = l.ping
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, quiet)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !pgconn.Timeout(err) || conn.IsClosed() {
				return err
			}
			pctx, cancel := context.WithTimeout(ctx, db.opts.Timeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
			l.pings.Add(1)
			continue
		}
		l.deliver(n.Payload)
	}
}

// deliver hands the events of one payload to the followers (none: it is
// not read).
func (l *liveFeed) deliver(payload string) {
	if l.b.Followers() == 0 {
		return
	}
	var ws []wireEvent
	if json.Unmarshal([]byte(payload), &ws) != nil {
		return // not ours: nothing to tell
	}
	for _, w := range ws {
		l.b.Announce(w.event())
	}
}

// Follow returns a channel of the live events committed by any process
// from now on (buffer events buffered; closed when the follower falls
// that far behind, or when the connection that listens for them is
// lost) and the function that ends the subscription: the bbolt store's
// Follow. Past store.MaxFollowers it fails with
// store.ErrTooManyFollowers; when the database cannot be listened to,
// with ErrUnavailable.
func (d *Dashboard) Follow(buffer int) (<-chan store.LiveEvent, func(), error) {
	return d.db.follow(buffer)
}

// LiveDropped counts the followers dropped for falling behind.
func (d *Dashboard) LiveDropped() uint64 { return d.db.live.b.Dropped() }

// LiveFollowers is how many followers this process has.
func (d *Dashboard) LiveFollowers() int { return d.db.live.b.Followers() }

// LiveRefused counts the followers refused past store.MaxFollowers.
func (d *Dashboard) LiveRefused() uint64 { return d.db.live.b.Refused() }

// EndLive ends every stream (their channels close) and refuses new ones
// (a Follow's channel is closed at once); the connection that listens
// is closed.
func (d *Dashboard) EndLive() {
	d.db.live.b.End()
	d.db.live.stop(false)
}

// Stats is the store's summary for health checks and metrics: the size
// of the tables in ipnd's schema (SizeBytes: with their indexes and
// TOAST; keep ipnd in a database or schema of its own for it to count
// ipnd alone), no journal (JournalBytes 0: PostgreSQL's WAL is its
// own), the newest notification id (LastID). As the bbolt store's, it
// fails only when the store is closed (/healthz and the dashboard take
// an error for "store is not open"): when the database cannot be read,
// it answers the figures last read (zero before any), and /healthz says
// why through the store's other checks (Writable).
func (d *Dashboard) Stats() (store.Stats, error) {
	d.db.mu.Lock()
	closed := d.db.closed
	d.db.mu.Unlock()
	if closed {
		return store.Stats{}, fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	ctx, cancel := d.ctx()
	defer cancel()
	var last, size int64
	err := d.db.pool.QueryRow(ctx, `SELECT (SELECT value FROM ipnd_counters WHERE name = 'notification'),
		(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
		 WHERE c.relkind = 'r' AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'ipnd_schema'::regclass))`).Scan(&last, &size)
	if err != nil {
		if s := d.db.stats.Load(); s != nil {
			return *s, nil
		}
		return store.Stats{}, nil
	}
	s := store.Stats{SizeBytes: size, LastID: uint64(last)}
	d.db.stats.Store(&s)
	return s, nil
}
