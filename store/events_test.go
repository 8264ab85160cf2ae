package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// A follower that does not read is dropped once its buffer is full
// (its channel closed, counted), and ingest goes on without waiting for
// it; a follower that reads gets every event; EndLive ends them all.
func TestLiveEventsDropSlowFollowers(t *testing.T) {
	db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{})
	slow, _ := db.Subscribe(2)
	fast, stopFast := db.Subscribe(100)
	defer stopFast()
	for i := range 5 {
		if _, _, err := db.Append(context.Background(), sample("g", fmt.Sprint(i), "{}")); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for range slow {
		n++
	}
	if n != 2 || db.LiveDropped() != 1 {
		t.Errorf("slow follower got %d events before it was dropped (dropped %d), want 2 and 1", n, db.LiveDropped())
	}
	for i := range 5 {
		select {
		case e := <-fast:
			if e.Type != LiveNotification || e.Notification != uint64(i+1) || e.Gateway != "g" {
				t.Errorf("event %d: %+v", i, e)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("fast follower: event %d missing", i)
		}
	}
	db.EndLive()
	if _, ok := <-fast; ok {
		t.Error("EndLive left a stream open")
	}
	if late, _ := db.Subscribe(1); func() bool { _, ok := <-late; return ok }() {
		t.Error("a subscription after EndLive is open")
	}
}
