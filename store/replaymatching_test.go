package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestReplayMatching: a bulk replay takes the notifications of the
// gateway and state asked, below before, newest first, at most max, and
// schedules each again (state received, "replay requested").
func TestReplayMatching(t *testing.T) {
	db := mustOpen(t)
	now := time.Now()
	for i := range 6 {
		gw := "a"
		if i%2 == 1 {
			gw = "b"
		}
		if _, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: gw, ReceivedAt: now, Body: []byte("{}"),
			DedupKey: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ids, more, err := db.Matching(Filter{Gateway: "a"}, 2)
	if err != nil || !slices.Equal(ids, []uint64{5, 3}) || !more {
		t.Fatalf("Matching a, 2: %v more %v, %v", ids, more, err)
	}
	ids, more, err = db.Matching(Filter{Gateway: "a", Before: 5}, 0)
	if err != nil || !slices.Equal(ids, []uint64{3, 1}) || more {
		t.Fatalf("Matching a before 5: %v more %v, %v", ids, more, err)
	}
	replayed, skipped, more, err := db.ReplayMatching(Filter{Gateway: "b", State: ipn.StateReceived}, 2, now)
	if err != nil || !slices.Equal(replayed, []uint64{6, 4}) || skipped != 0 || !more {
		t.Fatalf("ReplayMatching b: %v skipped %d more %v, %v", replayed, skipped, more, err)
	}
	_, p, err := db.Get(6)
	if err != nil || p.History[len(p.History)-1].Detail != "replay requested" {
		t.Fatalf("notification 6 after the bulk replay: %+v, %v", p, err)
	}
	if _, p, _ := db.Get(2); len(p.History) != 1 {
		t.Errorf("notification 2 (beyond max) was replayed: %+v", p.History)
	}
}
