package pg

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/admin"
	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
)

// collector reads a live stream into a list until it closes.
type collector struct {
	mu     sync.Mutex
	evs    []store.LiveEvent
	closed bool
}

func collect(ch <-chan store.LiveEvent) *collector {
	c := &collector{}
	go func() {
		for e := range ch {
			c.mu.Lock()
			c.evs = append(c.evs, e)
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
	}()
	return c
}

func (c *collector) events() ([]store.LiveEvent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs), c.closed
}

// liveLines is a stream as text to compare between the backends: the
// events of each notification in the order they came, notifications in
// id order; the time only of the event of a notification stored (the
// others' is the pipeline's clock), and without the states "received"
// the pipeline records while a postback is retried (how many depends
// on timing).
func liveLines(evs []store.LiveEvent) []string {
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b store.LiveEvent) int { return int(a.Notification) - int(b.Notification) })
	var out []string
	stored := map[uint64]bool{}
	for _, e := range evs {
		at := ""
		if e.Type == store.LiveNotification && e.State == string(ipn.StateReceived) {
			if stored[e.Notification] {
				continue
			}
			stored[e.Notification] = true
			at = " at=" + e.At.Format(time.RFC3339Nano)
		}
		out = append(out, fmt.Sprintf("%s n=%d gw=%s state=%s order=%s %s>%s reason=%q by=%q%s",
			e.Type, e.Notification, e.Gateway, e.State, e.Order, e.From, e.To, e.Reason, e.By, at))
	}
	return out
}

// liveConformance runs scenario on the bbolt store (followed in
// process) and on PostgreSQL (the pipeline and the outbox worker on one
// DB, followed through another DB on the same database, as a process
// that does not lead), and compares the streams.
func liveConformance(t *testing.T, scenario func(t *testing.T, b *backend) string, must ...string) {
	bdb, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	ch, stop, err := bdb.Follow(100000)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	bc := collect(ch)
	scenario(t, boltOn(bdb))
	var want []string
	waitFor(t, "the bbolt follower's events", func() bool {
		evs, _ := bc.events()
		want = liveLines(evs)
		return len(want) > 0 && strings.Contains(strings.Join(want, "\n"), must[0])
	})

	c := pgtest.Start(t)
	lead, other := open(t, c.DSN()), open(t, c.DSN())
	pch, pstop, err := other.Dashboard().Follow(100000)
	if err != nil {
		t.Fatal(err)
	}
	defer pstop()
	pc := collect(pch)
	scenario(t, pgBackend(t, lead))
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, closed := pc.events()
		if closed {
			t.Fatal("the postgres stream ended")
		}
		if got = liveLines(evs); slices.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	if !slices.Equal(got, want) {
		for i := range max(len(want), len(got)) {
			var w, g string
			if i < len(want) {
				w = want[i]
			}
			if i < len(got) {
				g = got[i]
			}
			if w != g {
				t.Errorf("event %d:\n  bbolt:    %s\n  postgres: %s", i, w, g)
			}
		}
	}
	all := strings.Join(want, "\n")
	for _, m := range must {
		if !strings.Contains(all, m) {
			t.Errorf("the scenario's stream does not have %q", m)
		}
	}
	if d := other.Dashboard(); d.LiveDropped() != 0 || d.LiveFollowers() != 1 {
		t.Errorf("postgres: dropped %d, followers %d; want 0 and 1", d.LiveDropped(), d.LiveFollowers())
	}
	t.Logf("both backends:\n%s", all)
}

// The live stream of a process that does not lead, on PostgreSQL, is
// the bbolt store's for the same scenario (TestPGConformance's):
// notifications stored, the states the pipeline recorded (applied,
// duplicate, parked, invalid, failed...) and the orders' transitions,
// each with its reason, from the commits of another process.
func TestPGLiveConformance(t *testing.T) {
	liveConformance(t, func(t *testing.T, b *backend) string { return conformance(t, b) },
		`notification n=1 gw=test state=received order= > reason="" by="" at=2026-12-06T10:00:00Z`,
		`notification n=1 gw=test state=applied`,
		`order n=1 gw= state= order=O1 >paid`,
		`notification n=2 gw=test state=duplicate`,
		`notification n=10 gw= state=invalid order= > reason="gateway answered INVALID: PayPal postback"`,
		`order n=4 gw= state= order=O1 paid>partially_refunded`)
}

// Deliveries (emails sent, refused, skipped; callbacks answered 500,
// dead) tell the stream nothing on the bbolt store: nor on PostgreSQL;
// the payments and the refund of TestPGOutboxConformance's scenario
// stream as they do there.
func TestPGLiveDeliveries(t *testing.T) {
	liveConformance(t, func(t *testing.T, b *backend) string { return deliveryScenario(t, b) },
		`notification n=1 gw=test state=applied`,
		`order n=3 gw= state= order=O1 paid>partially_refunded`)
}

// follow follows d's stream, failing the test on an error.
func follow(t *testing.T, d *Dashboard, buffer int) (<-chan store.LiveEvent, func()) {
	t.Helper()
	ch, stop, err := d.Follow(buffer)
	if err != nil {
		t.Fatal(err)
	}
	return ch, stop
}

// next is the stream's next event (false: it ended), failing the test
// after 30 s.
func next(t *testing.T, ch <-chan store.LiveEvent) (store.LiveEvent, bool) {
	t.Helper()
	select {
	case e, ok := <-ch:
		return e, ok
	case <-time.After(30 * time.Second):
		t.Fatal("no event in 30 s")
		return store.LiveEvent{}, false
	}
}

// A follower that does not read is dropped once its buffer is full
// (its channel closed, counted), and another process's commits go on
// without waiting for it; a follower that reads gets every event, in
// commit order: as on the bbolt store (TestLiveEventsDropSlowFollowers,
// whose figures these are). Past store.MaxFollowers a Follow is refused
// and counted. EndLive ends every stream and a Follow after it is
// closed at once; Close ends the streams of a DB.
func TestPGLiveSlowFollowerAndLimits(t *testing.T) {
	c := pgtest.Start(t)
	writer, reader := open(t, c.DSN()), open(t, c.DSN())
	d := reader.Dashboard()
	slow, _ := follow(t, d, 2)
	fast, stopFast := follow(t, d, 100)
	for i := range 5 {
		if _, _, err := writer.Append(t.Context(), note("g", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		e, ok := next(t, fast)
		if !ok || e.Type != store.LiveNotification || e.Notification != uint64(i+1) || e.Gateway != "g" || e.State != "received" {
			t.Errorf("event %d: %+v %v", i, e, ok)
		}
	}
	n := 0
	for range slow {
		n++
	}
	if n != 2 || d.LiveDropped() != 1 {
		t.Errorf("slow follower got %d events before it was dropped (dropped %d), want 2 and 1", n, d.LiveDropped())
	}
	if d.LiveFollowers() != 1 {
		t.Errorf("followers %d, want 1", d.LiveFollowers())
	}
	stopFast()

	// The bound on followers.
	var stops []func()
	for range store.MaxFollowers {
		_, stop := follow(t, d, 1)
		stops = append(stops, stop)
	}
	if _, _, err := d.Follow(1); !errors.Is(err, store.ErrTooManyFollowers) || d.LiveRefused() != 1 || d.LiveFollowers() != store.MaxFollowers {
		t.Errorf("follow past the bound: %v, refused %d, followers %d", err, d.LiveRefused(), d.LiveFollowers())
	}
	for _, stop := range stops {
		stop()
	}
	if d.LiveFollowers() != 0 {
		t.Errorf("followers %d after every stop", d.LiveFollowers())
	}

	// EndLive.
	open1, _ := follow(t, d, 10)
	d.EndLive()
	if _, ok := next(t, open1); ok {
		t.Error("EndLive left a stream open")
	}
	late, _ := follow(t, d, 10)
	if _, ok := next(t, late); ok {
		t.Error("a stream after EndLive is open")
	}

	// Close.
	third := open(t, c.DSN())
	ch, _ := follow(t, third.Dashboard(), 10)
	third.Close()
	if _, ok := next(t, ch); ok {
		t.Error("Close left a stream open")
	}
	if _, _, err := third.Dashboard().Follow(10); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Follow after Close = %v, want ErrUnavailable", err)
	}
}

// An event larger than a NOTIFY's payload may be (a long reason) comes
// with its reason shortened; many events are split over payloads.
func TestPGLivePayloads(t *testing.T) {
	long := strings.Repeat("é", 6000)
	evs := []store.LiveEvent{{Type: store.LiveOrder, At: time.Unix(5, 6).UTC(), Order: "O1", From: "paid", To: "paid", Reason: long, By: "ann"}}
	for i := range 300 {
		evs = append(evs, store.LiveEvent{Type: store.LiveNotification, At: time.Unix(int64(i), 0).UTC(), Notification: uint64(i + 1), Gateway: "paypal", State: "received"})
	}
	ps := livePayloads(evs)
	if len(ps) < 3 {
		t.Errorf("%d payloads for 301 events", len(ps))
	}
	c := pgtest.Start(t)
	writer, reader := open(t, c.DSN()), open(t, c.DSN())
	ch, stop := follow(t, reader.Dashboard(), 1000)
	defer stop()
	tx, err := writer.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := notifyLive(t.Context(), tx, evs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, want := range evs {
		e, ok := next(t, ch)
		if !ok {
			t.Fatal("stream ended")
		}
		if i == 0 {
			if !strings.HasSuffix(e.Reason, "…") || !strings.HasPrefix(long, strings.TrimSuffix(e.Reason, "…")) || len(e.Reason) > livePayloadMax {
				t.Errorf("long reason came as %d bytes", len(e.Reason))
			}
			e.Reason = want.Reason
		}
		if e != want {
			t.Fatalf("event %d: %+v, want %+v", i, e, want)
		}
	}
}

// When the connection that listens for the events is killed
// (pg_terminate_backend), the events committed meanwhile are not
// delivered: every stream open then ends (as a dropped follower's: it
// reconnects), not counted as dropped for falling behind; the process
// listens again by itself, and a new Follow gets the events committed
// from then on.
func TestPGLiveListenerKilled(t *testing.T) {
	c := pgtest.Start(t)
	writer, reader := open(t, c.DSN()), open(t, c.DSN())
	d := reader.Dashboard()
	ch, _ := follow(t, d, 100)
	if _, _, err := writer.Append(t.Context(), note("g", "before")); err != nil {
		t.Fatal(err)
	}
	if e, ok := next(t, ch); !ok || e.Notification != 1 {
		t.Fatalf("first event %+v %v", e, ok)
	}
	var killed int
	if err := writer.pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'ipnd live events'`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("killed %d listeners, %v", killed, err)
	}
	if _, _, err := writer.Append(t.Context(), note("g", "while")); err != nil {
		t.Fatal(err)
	}
	// The stream ends (it may or may not have the event committed while
	// the listener died: it came before the kill was seen, or not).
	for {
		e, ok := next(t, ch)
		if !ok {
			break
		}
		if e.Notification != 2 {
			t.Fatalf("unexpected event %+v", e)
		}
	}
	if d.LiveDropped() != 0 || d.LiveFollowers() != 0 {
		t.Errorf("dropped %d, followers %d after the listener's loss; want 0 and 0", d.LiveDropped(), d.LiveFollowers())
	}
	// A new follower (Follow waits for the listener to be back).
	again, stop := follow(t, d, 100)
	defer stop()
	if _, _, err := writer.Append(t.Context(), note("g", "after")); err != nil {
		t.Fatal(err)
	}
	if e, ok := next(t, again); !ok || e.Notification != 3 || e.State != "received" {
		t.Fatalf("after the listener came back: %+v %v", e, ok)
	}
	var listeners int
	if err := writer.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ipnd live events'`).Scan(&listeners); err != nil || listeners != 1 {
		t.Errorf("%d listeners, %v", listeners, err)
	}
}

// A quiet stream's connection is checked (a ping after livePing without
// a notification) and stays: the stream goes on, nothing is missed.
func TestPGLiveQuietConnectionKept(t *testing.T) {
	c := pgtest.Start(t)
	writer, reader := open(t, c.DSN()), open(t, c.DSN())
	reader.live.ping = 10 * time.Millisecond
	ch, stop := follow(t, reader.Dashboard(), 10)
	defer stop()
	waitFor(t, "three pings", func() bool { return reader.live.pings.Load() >= 3 })
	if _, _, err := writer.Append(t.Context(), note("g", "quiet")); err != nil {
		t.Fatal(err)
	}
	if e, ok := next(t, ch); !ok || e.Notification != 1 {
		t.Fatalf("after the pings: %+v %v", e, ok)
	}
}

// With PostgreSQL stopped, Follow fails with ErrUnavailable after the
// DB's timeout (the admin API answers 503: ipnd tail retries); when it
// is back, a Follow works again without a restart.
func TestPGLiveDatabaseDown(t *testing.T) {
	c := pgtest.Start(t)
	writer := open(t, c.DSN())
	reader := open(t, c.DSN())
	d := reader.Dashboard()
	ch, _ := follow(t, d, 10)
	c.Stop()
	if _, ok := next(t, ch); ok {
		t.Fatal("an event with the database stopped")
	}
	if _, _, err := d.Follow(10); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Follow with the database stopped = %v, want ErrUnavailable", err)
	}
	if st, err := d.Stats(); err != nil || st != (store.Stats{}) {
		t.Errorf("Stats with the database stopped before any was read = %+v %v, want zero and no error", st, err)
	}
	c.Start()
	var again <-chan store.LiveEvent
	waitFor(t, "a Follow once the database is back", func() bool {
		ch, _, err := d.Follow(10)
		again = ch
		return err == nil
	})
	waitFor(t, "an append once the database is back", func() bool {
		_, _, err := writer.Append(context.Background(), note("g", "back"))
		return err == nil
	})
	if e, ok := next(t, again); !ok || e.Notification != 1 {
		t.Fatalf("after the database came back: %+v %v", e, ok)
	}
}

// Stats after the same scenario: the newest id as the bbolt store's
// (duplicates take none), a size that grows with what is stored, no
// journal; with the database stopped the figures last read; an error
// once closed, as the bbolt store's.
func TestPGStats(t *testing.T) {
	bdb, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := pgtest.Start(t)
	pdb := open(t, c.DSN())
	d := pdb.Dashboard()
	empty, err := d.Stats()
	if err != nil || empty.LastID != 0 || empty.SizeBytes <= 0 || empty.JournalBytes != 0 {
		t.Fatalf("empty postgres: %+v %v", empty, err)
	}
	if st, err := bdb.Stats(); err != nil || st.LastID != 0 {
		t.Fatalf("empty bbolt: %+v %v", st, err)
	}
	conformance(t, boltOn(bdb))
	conformance(t, pgBackend(t, pdb))
	dup := webhook("m1", "payment.completed", `"txn_id":"T1"`)
	if _, _, err := bdb.Append(t.Context(), dup); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pdb.Append(t.Context(), dup); err != nil {
		t.Fatal(err)
	}
	want, err := bdb.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got.LastID != want.LastID || want.LastID != 32 {
		t.Errorf("LastID: postgres %d, bbolt %d, want 32", got.LastID, want.LastID)
	}
	if got.SizeBytes <= empty.SizeBytes || got.JournalBytes != 0 {
		t.Errorf("postgres after the scenario: %+v (empty: %+v)", got, empty)
	}
	t.Logf("bbolt %+v, postgres %+v", want, got)
	// The database stopped: the figures last read, no error (only a
	// closed store's Stats fails: /healthz takes that for "not open").
	c.Stop()
	if again, err := d.Stats(); err != nil || again != got {
		t.Errorf("postgres stopped: Stats = %+v %v, want %+v", again, err, got)
	}
	bdb.Close()
	pdb.Close()
	if _, err := bdb.Stats(); err == nil {
		t.Error("bbolt: Stats after Close is nil")
	}
	if _, err := d.Stats(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("postgres: Stats after Close = %v, want ErrUnavailable", err)
	}
}

// sseEvents reads GET /api/events of srv: the events' data, decoded,
// closed when the stream ends.
func sseEvents(t *testing.T, url string) <-chan store.LiveEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("GET /api/events: %d", resp.StatusCode)
	}
	out := make(chan store.LiveEvent, 1024)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e store.LiveEvent
			if json.Unmarshal([]byte(data), &e) == nil {
				out <- e
			}
		}
	}()
	return out
}

// From outside: the admin API of an ipnd that does not lead (its store
// a DB of its own on the database) streams what the leading one stores
// and applies (GET /api/events, as ipnd tail reads it); when its
// listening connection is killed the stream ends, and the stream the
// client opens again goes on with what is committed next.
func TestPGLiveAdminAPIOfAFollowingProcess(t *testing.T) {
	c := pgtest.Start(t)
	lead, other := open(t, c.DSN()), open(t, c.DSN())
	srv := httptest.NewServer(admin.Handler(admin.Options{Store: other.Dashboard(), Token: "tok"}))
	defer srv.Close()
	defer other.Dashboard().EndLive() // as the admin listener's shutdown: the streams end first
	evs := sseEvents(t, srv.URL)
	b := pgBackend(t, lead)
	id, err := b.append(webhook("h1", "payment.completed", `"txn_id":"H1","order_id":"OH","amount":"10.00","currency":"USD"`))
	if err != nil {
		t.Fatal(err)
	}
	runUntilIdle(t, b, verifier(t), id)
	var got []string
	for len(got) < 3 {
		e, ok := next(t, evs)
		if !ok {
			t.Fatalf("the stream ended after %v", got)
		}
		got = append(got, fmt.Sprintf("%s %d %s %s %s>%s", e.Type, e.Notification, e.State, e.Order, e.From, e.To))
	}
	want := []string{"notification 1 received  >", "notification 1 applied  >", "order 1  OH >paid"}
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if _, err := lead.pool.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ipnd live events'`); err != nil {
		t.Fatal(err)
	}
	if e, ok := next(t, evs); ok {
		t.Fatalf("an event after the listener was killed: %+v", e)
	}
	var again <-chan store.LiveEvent
	waitFor(t, "GET /api/events answered again", func() bool {
		req, _ := http.NewRequest("GET", srv.URL+"/api/events", nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			again = sseEvents(t, srv.URL)
		}
		return resp.StatusCode == 200
	})
	if _, err := b.append(webhook("h2", "payment.completed", `"txn_id":"H2","order_id":"OH2","amount":"10.00","currency":"USD"`)); err != nil {
		t.Fatal(err)
	}
	if e, ok := next(t, again); !ok || e.Notification != 2 || e.State != "received" {
		t.Fatalf("after the stream was opened again: %+v %v", e, ok)
	}
}

// The admin API's decisions on orders (TestPGDecisions' scenario) and
// the operator's outbox decisions (TestPGOutboxDecisions': a discard
// writes a line in its order's history) stream their orders' changes
// from another process, as on the bbolt store.
func TestPGLiveDecisions(t *testing.T) {
	t.Run("orders", func(t *testing.T) {
		liveConformance(t, func(t *testing.T, b *backend) string { return decisionScenario(t, decideOn{b, b.reads.(decider)}) },
			`order n=0 gw= state= order=R1 review>paid reason=`)
	})
	t.Run("outbox", func(t *testing.T) {
		liveConformance(t, decisionsScenario, `discarded by cli (shop gone)`)
	})
}
