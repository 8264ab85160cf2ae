package pg

import (
	"context"
	"sync"
	"testing"
	"time"

	"ipnd/internal/pgtest"
)

// OnCommit is told each ingest transaction that stored new
// notifications and how many (the metric ipnd_store_commit_duration_seconds
// and _records); duplicates store nothing and are not counted. A
// panicking observer does not stop ingest.
func TestPGOnCommit(t *testing.T) {
	c := pgtest.Start(t)
	var mu sync.Mutex
	var commits, records int
	db, err := Open(context.Background(), c.DSN(), Options{OnCommit: func(took time.Duration, n int) {
		mu.Lock()
		defer mu.Unlock()
		if took <= 0 || n <= 0 {
			t.Errorf("OnCommit(%s, %d)", took, n)
		}
		commits++
		records += n
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, key := range []string{"a", "b", "a"} {
		if _, _, err := db.Append(context.Background(), note("shop", key)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if commits != 2 || records != 2 {
		t.Errorf("OnCommit told of %d commits with %d notifications, want 2 and 2 (the duplicate stores nothing)", commits, records)
	}
	mu.Unlock()

	boom, err := Open(context.Background(), c.DSN(), Options{OnCommit: func(time.Duration, int) { panic("boom") }})
	if err != nil {
		t.Fatal(err)
	}
	defer boom.Close()
	if id, dup, err := boom.Append(context.Background(), note("shop", "c")); err != nil || dup || id != 3 {
		t.Errorf("append with a panicking observer = %d, %v, %v; want 3, new", id, dup, err)
	}
}
