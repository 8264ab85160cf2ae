package pg

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
)

// TestPGWritable: the database stopped: an ingest fails, Writable says
// why and Refused counts it, and so does the probe while nothing comes;
// started again, the probe clears it by itself and ingest commits.
func TestPGWritable(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	note := func(key string) *ipn.Notification {
		return &ipn.Notification{Gateway: "test", DedupKey: key, ReceivedAt: time.Now(), Body: []byte(`{}`)}
	}
	ctx := context.Background()
	if err := db.Probe(ctx); err != nil || db.Writable() != nil {
		t.Fatalf("probe %v, writable %v", err, db.Writable())
	}
	if _, _, err := db.Append(ctx, note("a")); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if _, _, err := db.Append(ctx, note("b")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append with the database stopped = %v, want ErrUnavailable", err)
	}
	if err := db.Writable(); err == nil || !strings.Contains(err.Error(), "storing notifications failed") {
		t.Errorf("writable after a failed ingest = %v", err)
	}
	if n := db.Refused(); n != 1 {
		t.Errorf("refused = %d, want 1", n)
	}
	if err := db.Probe(ctx); !errors.Is(err, ErrUnavailable) || !errors.Is(db.Writable(), ErrUnavailable) {
		t.Errorf("probe with the database stopped = %v, writable %v", err, db.Writable())
	}
	c.Start()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); db.Watch(wctx, 50*time.Millisecond) }()
	deadline := time.Now().Add(30 * time.Second)
	for db.Writable() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("still not writable after the restart: %v", db.Writable())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if _, _, err := db.Append(ctx, note("b")); err != nil {
		t.Fatalf("append after the restart: %v", err)
	}
	db.Close()
	if !errors.Is(db.Writable(), store.ErrClosed) {
		t.Errorf("writable after close = %v, want store.ErrClosed", db.Writable())
	}
}

// TestPGHealthReads: a backup says PostgreSQL's tools are the way;
// Space reports the database and its tables; nothing is lost.
func TestPGHealthReads(t *testing.T) {
	db := open(t, pgtest.Start(t).DSN())
	d := db.Dashboard()
	if _, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(), Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := d.Backup(&buf, func(int64) {}); !errors.Is(err, store.ErrBackupElsewhere) || !strings.Contains(err.Error(), "pg_dump") || buf.Len() > 0 {
		t.Errorf("backup = %v (%d bytes), want ErrBackupElsewhere naming pg_dump", err, buf.Len())
	}
	sp, err := d.Space()
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for _, b := range sp.Buckets {
		tables = append(tables, b.Name)
	}
	if sp.FileBytes <= 0 || sp.Notifications != 1 || !strings.Contains(strings.Join(tables, ","), "notifications") {
		t.Errorf("space = %+v", sp)
	}
	if lost, _ := d.Lost(); lost != nil {
		t.Errorf("lost = %v", lost)
	}
	if drops, ids, _ := d.Unacknowledged(); drops != nil || ids != 0 {
		t.Errorf("unacknowledged = %v %d", drops, ids)
	}
}
