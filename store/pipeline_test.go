package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
)

// faultyJournal is the real store with the pipeline's writes failing
// until healed, as on a full disk (a fault at the seam the pipeline
// writes through).
type faultyJournal struct {
	*DB
	healed time.Time
	failed atomic.Int64
}

func (f *faultyJournal) Finish(outs []ipn.Outcome, cursor uint64, now time.Time) ([]ipn.Recorded, error) {
	if time.Now().Before(f.healed) {
		f.failed.Add(1)
		return nil, errors.New("no space left on device (injected)")
	}
	return f.DB.Finish(outs, cursor, now)
}

// TestPipelineOutlivesAFailingStore: the store fails the pipeline's
// writes for five minutes; the pipeline does not give up, reports itself
// degraded meanwhile, and processes the waiting notification by itself
// once the store works again. Virtual time (synctest) stands for the
// minutes.
func TestPipelineOutlivesAFailingStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{})
		defer db.Close()
		j := &faultyJournal{DB: db, healed: time.Now().Add(5 * time.Minute)}
		gw, err := gateway.New(gateway.Config{Name: "g", Kind: "standard-webhooks",
			Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
		if err != nil {
			t.Fatal(err)
		}
		p := pipeline.New(pipeline.Options{Journal: j, Gateways: []gateway.Gateway{gw}})
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- p.Run(ctx) }()
		if _, _, err := db.Append(ctx, sample("g", "m1", `{"type":"payment.completed","data":{"order_id":"O1","amount":"1.00","currency":"USD"}}`)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if err := p.Degraded(); err == nil {
			t.Errorf("a minute into the outage: not degraded (%d writes failed)", j.failed.Load())
		}
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		select {
		case err := <-ran:
			t.Fatalf("the pipeline stopped during the outage (after %d failed writes): %v", j.failed.Load(), err)
		default:
		}
		if n := j.failed.Load(); n < 10 {
			t.Errorf("only %d failed writes: the outage was not long enough to test giving up", n)
		}
		if _, pr, err := db.Get(1); err != nil || pr.State != ipn.StateApplied {
			t.Errorf("after the outage notification 1 is %+v (%v), want applied", pr, err)
		}
		if err := p.Degraded(); err != nil {
			t.Errorf("still degraded after the store healed: %v", err)
		}
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestPipelineBookkeeping(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := 1; i <= 4; i++ {
		db.Append(context.Background(), sample("g", fmt.Sprint(i), "b"))
	}
	work, err := db.Pending(now, 10)
	if err != nil || len(work) != 4 || !work[0].Fresh || work[0].Notification.ID != 1 {
		t.Fatalf("Pending = %d items, %v", len(work), err)
	}
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T"}
	outs := []ipn.Outcome{
		{ID: 1, State: ipn.StateApplied, Event: ev, EventKey: "k"},
		{ID: 2, State: ipn.StateApplied, Event: ev, EventKey: "k"}, // same fact
		{ID: 3, State: ipn.StateReceived, RetryAt: now.Add(time.Minute), Attempts: 1, Detail: "postback: HTTP 503"},
	}
	recs, err := db.Finish(outs, 3, now)
	var states []ipn.State
	for _, r := range recs {
		states = append(states, r.State)
	}
	if err != nil || fmt.Sprint(states) != "[applied duplicate received]" {
		t.Fatalf("Finish = %v, %v", states, err)
	}
	if _, p, _ := db.Get(2); p.DuplicateOf != 1 {
		t.Errorf("duplicate_of = %d, want 1", p.DuplicateOf)
	}
	// Finishing an applied notification again changes nothing.
	recs, _ = db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateInvalid}}, 0, now)
	if recs[0].State != ipn.StateApplied {
		t.Errorf("re-finish of an applied notification recorded %s", recs[0].State)
	}
	if db.Cursor() != 3 {
		t.Errorf("cursor = %d, want 3", db.Cursor())
	}
	// Now only 4 is pending; 3 becomes due a minute later.
	work, _ = db.Pending(now, 10)
	if len(work) != 1 || work[0].Notification.ID != 4 {
		t.Errorf("pending now = %+v", work)
	}
	if due, ok := db.NextDue(); !ok || !due.Equal(now.Add(time.Minute)) {
		t.Errorf("NextDue = %v, %v", due, ok)
	}
	if at, ok := db.OldestPending(); !ok || !at.Equal(sample("g", "", "").ReceivedAt) {
		t.Errorf("OldestPending = %v, %v", at, ok)
	}
	work, _ = db.Pending(now.Add(2*time.Minute), 10)
	if len(work) != 2 || work[1].Notification.ID != 3 || work[1].Fresh || work[1].Processing.Attempts != 1 {
		t.Errorf("pending later = %+v", work)
	}
	// Replay puts an applied notification back, due now, history kept.
	if err := db.Replay(1, now); err != nil {
		t.Fatal(err)
	}
	_, p, _ := db.Get(1)
	if p.State != ipn.StateReceived || len(p.History) != 3 {
		t.Errorf("after replay: %+v", p)
	}
	recs, _ = db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateApplied, Event: ev, EventKey: "k"}}, 0, now)
	if recs[0].State != ipn.StateApplied {
		t.Errorf("replayed notification recorded %s, want applied (its own fact)", recs[0].State)
	}
	if err := db.Replay(99, now); err == nil {
		t.Error("replay of a missing id succeeded")
	}
}

func TestOutboxBookkeeping(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	db.Append(context.Background(), sample("g", "1", "b"))
	db.Pending(now, 10) // as the pipeline does: the record is in the log before Finish
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T", OrderID: "O1", Amount: "5.00", Currency: "USD", CustomerEmail: "c@example.com"}
	if _, err := db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateApplied, Event: ev, EventKey: "k", ApplyOrder: true}}, 1, now); err != nil {
		t.Fatal(err)
	}
	due, _ := db.DueOutbox(now, 10)
	if len(due) == 0 {
		t.Fatal("no outbox item queued for a paid order")
	}
	it := due[0]
	// A failed attempt: pending again later, counted.
	db.FinishOutbox([]ipn.OutboxResult{{ID: it.ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: now.Add(time.Minute), Error: "451"}}, now)
	if d, _ := db.DueOutbox(now, 10); len(d) != len(due)-1 {
		t.Errorf("item still due right after a failed attempt")
	}
	// A manual retry while an attempt is in flight wins over its result.
	if _, err := db.RetryOutbox(it.ID, now); err != nil {
		t.Fatal(err)
	}
	db.FinishOutbox([]ipn.OutboxResult{{ID: it.ID, State: ipn.OutboxDead, Attempts: 2, Error: "550"}}, now)
	items, _ := db.ListOutbox(ipn.OutboxPending, 10)
	found := false
	for _, x := range items {
		found = found || (x.ID == it.ID && x.Attempts == 0)
	}
	if !found {
		t.Errorf("manual retry was undone by a stale result: %+v", items)
	}
	counts, _ := db.OutboxCounts()
	if counts[ipn.OutboxDead][it.Effect.Kind] != 0 || counts[ipn.OutboxPending][it.Effect.Kind] == 0 {
		t.Errorf("counts = %v", counts)
	}
	// Sent: never sent again, not retryable.
	db.FinishOutbox([]ipn.OutboxResult{{ID: it.ID, State: ipn.OutboxSent, Attempts: 1}}, now)
	if _, err := db.RetryOutbox(it.ID, now); !errors.Is(err, ErrExists) {
		t.Errorf("retry of a sent item: %v", err)
	}
}

// Behind an unfinished notification (a postback under way), the ones
// finished out of order neither fill Pending's window nor come back; once
// it is finished, they come back before the next unfinished ones, for the
// cursor to pass them.
func TestPendingWindowSkipsFinished(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := 1; i <= 10; i++ {
		db.Append(context.Background(), sample("g", fmt.Sprint(i), "b"))
	}
	var outs []ipn.Outcome
	for id := uint64(2); id <= 5; id++ {
		outs = append(outs, ipn.Outcome{ID: id, State: ipn.StateInvalid, Detail: "test"})
	}
	db.Pending(now, 10) // as the pipeline does: the records are in the log before Finish
	// 6 failed its postback: scheduled for later, settled until then.
	outs = append(outs, ipn.Outcome{ID: 6, State: ipn.StateReceived, RetryAt: now.Add(time.Hour), Attempts: 1, Detail: "503"})
	if _, err := db.Finish(outs, 0, now); err != nil { // 1 unfinished: the cursor stays
		t.Fatal(err)
	}
	ids := func() string {
		work, err := db.Pending(now, 3)
		if err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for _, w := range work {
			ids = append(ids, w.Notification.ID)
		}
		return fmt.Sprint(ids)
	}
	if got := ids(); got != "[1 7 8]" {
		t.Errorf("Pending(3) behind 1 = %v, want [1 7 8]", got)
	}
	if _, err := db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateInvalid, Detail: "test"}}, 0, now); err != nil {
		t.Fatal(err)
	}
	if got := ids(); got != "[1 2 3 4 5 6 7 8 9]" {
		t.Errorf("Pending(3) after 1 = %v, want 1..6 (settled, for the cursor) and 7 8 9", got)
	}
}

// TestPendingExceptLeavesHeldRetries: the retries of a gateway the
// pipeline holds (its postbacks fail, or it is not configured) are left
// out of Pending and NextDue without counting toward the window, so the
// other gateways' retries and replays are taken; the lag is kept per
// gateway, from the gateway each retry entry names.
func TestPendingExceptLeavesHeldRetries(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := 1; i <= 6; i++ {
		gw := "slow"
		if i > 4 {
			gw = "fast"
		}
		n := sample(gw, fmt.Sprint(i), "b")
		n.ReceivedAt = n.ReceivedAt.Add(time.Duration(i) * time.Minute)
		db.Append(context.Background(), n)
	}
	db.Pending(now, 10)
	var outs []ipn.Outcome
	for id := uint64(1); id <= 4; id++ {
		outs = append(outs, ipn.Outcome{ID: id, State: ipn.StateReceived, RetryAt: now, Detail: "waiting"})
	}
	if _, err := db.Finish(outs, 4, now); err != nil {
		t.Fatal(err)
	}
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T"}
	if _, err := db.Finish([]ipn.Outcome{{ID: 5, State: ipn.StateApplied, Event: ev, EventKey: "k5"},
		{ID: 6, State: ipn.StateApplied, Event: ev, EventKey: "k6"}}, 6, now); err != nil {
		t.Fatal(err)
	}
	if err := db.Replay(6, now); err != nil {
		t.Fatal(err)
	}
	var asked []string
	held := func(gw string, id uint64, state func() *ipn.Processing) bool {
		asked = append(asked, fmt.Sprintf("%s/%d", gw, id))
		if st := state(); st == nil || st.State != ipn.StateReceived {
			t.Errorf("state of %d = %+v", id, st)
		}
		return gw == "slow"
	}
	work, err := db.PendingExcept(now, 1, held)
	if err != nil || len(work) != 1 || work[0].Notification.ID != 6 || work[0].Fresh {
		t.Fatalf("PendingExcept = %+v, %v; want the replay of 6 past the 4 held retries", work, err)
	}
	if fmt.Sprint(asked) != "[slow/1 slow/2 slow/3 slow/4 fast/6]" {
		t.Errorf("asked about %v", asked)
	}
	if work, _ := db.Pending(now, 10); len(work) != 5 {
		t.Errorf("Pending (nothing held) = %d items, want 5", len(work))
	}
	if due, ok := db.NextDueExcept(func(gw string, _ uint64, _ func() *ipn.Processing) bool { return true }); ok {
		t.Errorf("NextDueExcept (all held) = %v", due)
	}
	if due, ok := db.NextDueExcept(held); !ok || !due.Equal(now) {
		t.Errorf("NextDueExcept = %v, %v; want the replay, due now", due, ok)
	}
	lag := db.OldestPendingByGateway(now)
	base := sample("g", "", "").ReceivedAt
	if len(lag) != 2 || !lag["slow"].Equal(base.Add(time.Minute)) || !lag["fast"].Equal(base.Add(6*time.Minute)) {
		t.Errorf("OldestPendingByGateway = %v", lag)
	}
}
