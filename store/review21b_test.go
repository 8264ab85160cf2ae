package store

import (
	"path/filepath"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestIndexAfterBulkReplayAndPurge: a bulk replay moves each replayed
// notification in the by-state index (to received, then to where it
// ends) and leaves no stale entry; a purge (store.raw_retention) then
// keeps the indexes and hourly counts equal to what reading everything
// finds, and a purged notification is no longer found by its customer's
// email.
func TestIndexAfterBulkReplayAndPurge(t *testing.T) {
	db := reopen(t, filepath.Join(t.TempDir(), "ipnd.db"))
	stop := mixPipeline(t, db)
	defer stop()
	now := time.Now()
	fillMix(t, db, 1, 120, now)
	since := now.Add(-48 * time.Hour)
	checkIndexes(t, db, since)

	for _, st := range []ipn.State{ipn.StateInvalid, ipn.StateApplied} {
		replayed, skipped, _, err := db.ReplayMatching(Filter{State: st}, MaxBulkReplay, time.Now())
		if err != nil || len(replayed) == 0 || skipped != 0 {
			t.Fatalf("ReplayMatching %s: %d replayed, %d skipped, %v", st, len(replayed), skipped, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		items, err := db.Find(Query{State: ipn.StateReceived, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replayed notifications were not processed again")
		}
		select {
		case <-db.Wake():
		case <-time.After(2 * time.Millisecond):
		}
	}
	checkIndexes(t, db, since)

	if p, err := db.Purge(now.Add(time.Hour), 1000); err != nil || p.Notifications == 0 {
		t.Fatalf("Purge: %+v %v", p, err)
	}
	checkIndexes(t, db, since)
	for _, q := range []Query{{Term: "c3@example.com"}, {Term: "C3@EXAMPLE.COM"}} {
		if ids := findAll(t, db, q); len(ids) != 0 {
			t.Errorf("Find(%+v) after the purge: %v, want none (the email is purged)", q, head(ids))
		}
	}
	for _, q := range []Query{{Term: "tx-00003"}, {Order: "ORD-00003"}} {
		if ids := findAll(t, db, q); len(ids) == 0 {
			t.Errorf("Find(%+v) after the purge: nothing (the order and txn ids are kept)", q)
		}
	}
}
