package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// holdRetries appends n notifications of gateway gw (received a second
// apart from base) and records them waiting (received, a retry due), as
// the pipeline does while gw's verify URL hangs.
func holdRetries(tb testing.TB, db *DB, gw string, n int, base, now time.Time) {
	tb.Helper()
	ids := make([]uint64, n)
	var wg sync.WaitGroup
	workers := 32
	if n < 100 {
		workers = 1 // ids in the order of receipt
	}
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				s := sample(gw, fmt.Sprintf("%s-%d", gw, i), "b")
				s.ReceivedAt = base.Add(time.Duration(i) * time.Second)
				id, _, err := db.Append(context.Background(), s)
				if err != nil {
					tb.Error(err)
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	db.settle()
	slices.Sort(ids)
	for len(ids) > 0 {
		chunk := ids[:min(500, len(ids))]
		ids = ids[len(chunk):]
		var outs []ipn.Outcome
		for _, id := range chunk {
			outs = append(outs, ipn.Outcome{ID: id, State: ipn.StateReceived, RetryAt: now, Detail: "waiting"})
		}
		if _, err := db.Finish(outs, chunk[len(chunk)-1], now); err != nil {
			tb.Fatal(err)
		}
	}
}

// The lag per gateway reads the oldest retry of each gateway from an
// index: it follows retries scheduled, rescheduled, replayed and
// finished, and is built for a store whose retries predate the index.
func TestLagIndexFollowsRetries(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	base := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	holdRetries(t, db, "slow", 3, base, now)                 // ids 1-3
	holdRetries(t, db, "other", 2, base.Add(time.Hour), now) // ids 4-5
	check := func(what string, want map[string]time.Time) {
		t.Helper()
		got := db.OldestPendingByGateway(now)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: OldestPendingByGateway = %v, want %v", what, got, want)
		}
	}
	check("held", map[string]time.Time{"slow": base, "other": base.Add(time.Hour)})
	// The oldest of slow is rescheduled later: still the oldest received.
	if _, err := db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateReceived, Attempts: 1, RetryAt: now.Add(time.Hour),
		Detail: "verification attempt 1 failed"}}, 5, now); err != nil {
		t.Fatal(err)
	}
	check("rescheduled", map[string]time.Time{"slow": base, "other": base.Add(time.Hour)})
	// It ends: the next one is the oldest.
	if _, err := db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateInvalid, Attempts: 1, Detail: "INVALID"}}, 5, now); err != nil {
		t.Fatal(err)
	}
	check("first ended", map[string]time.Time{"slow": base.Add(time.Second), "other": base.Add(time.Hour)})
	if _, err := db.Finish([]ipn.Outcome{{ID: 4, State: ipn.StateInvalid}, {ID: 5, State: ipn.StateInvalid}}, 5, now); err != nil {
		t.Fatal(err)
	}
	check("other ended", map[string]time.Time{"slow": base.Add(time.Second)})
	// A replay of a finished one waits again.
	if err := db.Replay(1, now); err != nil {
		t.Fatal(err)
	}
	check("replayed", map[string]time.Time{"slow": base})
	// A store whose retries were scheduled before the index existed (and
	// entries naming no gateway, as older builds wrote them).
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketRetryGateway); err != nil {
			return err
		}
		retry := tx.Bucket(bucketRetry)
		k, _ := retry.Cursor().First()
		return retry.Put(k, nil)
	}); err != nil {
		t.Fatal(err)
	}
	check("before the index is built", map[string]time.Time{"slow": base})
	if _, err := db.Finish([]ipn.Outcome{{ID: 2, State: ipn.StateInvalid}}, 5, now); err != nil {
		t.Fatal(err)
	}
	check("index built", map[string]time.Time{"slow": base})
	if _, err := db.Finish([]ipn.Outcome{{ID: 1, State: ipn.StateInvalid}}, 5, now); err != nil {
		t.Fatal(err)
	}
	check("index built, first ended", map[string]time.Time{"slow": base.Add(2 * time.Second)})
	if _, err := db.Finish([]ipn.Outcome{{ID: 3, State: ipn.StateInvalid}}, 5, now); err != nil {
		t.Fatal(err)
	}
	check("none left", map[string]time.Time{})
}

// BenchmarkLagManyHeld is the cost of one scrape of the lag per gateway
// (and of the admin /healthz) while 20,000 notifications of one gateway
// wait for its hanging verify URL.
func BenchmarkLagManyHeld(b *testing.B) {
	db := mustOpen(b)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	holdRetries(b, db, "slow", 20000, now.Add(-10*time.Hour), now)
	holdRetries(b, db, "fast", 1, now.Add(-time.Minute), now)
	b.ResetTimer()
	for range b.N {
		if lag := db.OldestPendingByGateway(now); len(lag) != 2 {
			b.Fatal(lag)
		}
	}
}

// BenchmarkPendingManyHeld is one idle pipeline step (PendingExcept and
// NextDueExcept) while 20,000 notifications of one gateway wait for its
// lane.
func BenchmarkPendingManyHeld(b *testing.B) {
	db := mustOpen(b)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	holdRetries(b, db, "slow", 20000, now.Add(-10*time.Hour), now)
	held := func(gw string, _ uint64, state func() *ipn.Processing) bool {
		st := state()
		return gw == "slow" && st != nil && !st.WasVerified()
	}
	b.ResetTimer()
	for range b.N {
		if work, err := db.PendingExcept(now, 64, held); err != nil || len(work) != 0 {
			b.Fatal(work, err)
		}
		if due, ok := db.NextDueExcept(held); ok {
			b.Fatal("all held, but due", due)
		}
	}
}

// More than skipScan retries of a gateway whose lane is held do not hide
// the replays and retries of other gateways due after them: they are
// taken, NextDueExcept names them, and once they are gone it says that
// nothing is due (the pipeline sleeps until woken).
func TestHeldRetriesPastSkipScanHideNoOtherGateway(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	holdRetries(t, db, "slow", skipScan+100, now.Add(-time.Hour), now)
	holdRetries(t, db, "fast", 1, now.Add(-time.Minute), now)
	fast := uint64(skipScan + 101)
	if err := db.Replay(fast, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	asked := 0
	held := func(gw string, id uint64, state func() *ipn.Processing) bool {
		asked++
		return gw == "slow" || id != fast
	}
	work, err := db.PendingExcept(now.Add(2*time.Second), 64, held)
	if err != nil || len(work) != 1 || work[0].Notification.ID != fast {
		t.Fatalf("PendingExcept = %d items (%v); want the replay of the fast gateway's notification", len(work), err)
	}
	if asked > skipScan+1 {
		t.Errorf("skip asked %d times, want at most skipScan+1", asked)
	}
	if due, ok := db.NextDueExcept(held); !ok || !due.Equal(now.Add(time.Second)) {
		t.Errorf("NextDueExcept = %v, %v; want the replay, due at %v", due, ok, now.Add(time.Second))
	}
	if _, err := db.Finish([]ipn.Outcome{{ID: fast, State: ipn.StateInvalid}}, fast, now); err != nil {
		t.Fatal(err)
	}
	if due, ok := db.NextDueExcept(held); ok {
		t.Errorf("NextDueExcept = %v; want nothing due (all held)", due)
	}
}

// BenchmarkLagBacklog is the cost of one scrape of the lag per gateway
// while 10,000 fresh notifications wait for the pipeline (a burst):
// the first skipScan after the cursor are looked at (issue 23).
func BenchmarkLagBacklog(b *testing.B) {
	db := mustOpen(b)
	batch := make([]journaled, 0, 10000)
	for id := 1; id <= cap(batch); id++ {
		n := sampleTypical(id)
		batch = append(batch, journaled{id: uint64(id), key: dedupKey(n.Gateway, n.DedupKey), rec: plainRecord(n)})
	}
	if err := db.putJournaled(batch); err != nil {
		b.Fatal(err)
	}
	db.acked, db.applied = uint64(len(batch)), uint64(len(batch))
	b.ResetTimer()
	for range b.N {
		if lag := db.OldestPendingByGateway(time.Now()); len(lag) != 1 {
			b.Fatal(lag)
		}
	}
}
