package pg

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ipnd/internal/pgtest"
)

// Slow reads (a dashboard opened in several tabs, an admin API script:
// each read within the store's timeout) fill the connection pool for
// several lease periods. The leader keeps its lease all along: its
// renewals do not queue behind the reads for a pooled connection.
func TestPGLeaseRenewsWhilePoolBusy(t *testing.T) {
	c := pgtest.Start(t)
	a := open(t, c.DSN())
	ttl := time.Second
	la := a.NewLeader(ttl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var terms atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		la.Run(ctx, func(ctx context.Context, epoch int64) {
			terms.Add(1)
			<-ctx.Done()
		})
	})
	waitLeading(t, la, "a")
	// Four times as many slow reads as the pool has connections, each
	// well within the store's timeout.
	readers := 4 * int(a.pool.Config().MaxConns)
	rctx, rcancel := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	for range readers {
		rwg.Go(func() {
			for rctx.Err() == nil {
				qctx, qcancel := context.WithTimeout(rctx, a.opts.Timeout)
				a.pool.Exec(qctx, `SELECT pg_sleep(0.5)`)
				qcancel()
			}
		})
	}
	lost := false
	for end := time.Now().Add(5 * ttl); time.Now().Before(end); {
		if _, ok := la.Leading(); !ok {
			lost = true
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	rcancel()
	rwg.Wait()
	if lost || terms.Load() != 1 {
		t.Fatalf("a healthy leader lost its lease while slow reads filled the pool (%d terms): its renewals waited for a pooled connection", terms.Load())
	}
	cancel()
	wg.Wait()
}

// busyReads runs 4 slow reads per pooled connection, each within the
// store's timeout, until the returned stop is called.
func busyReads(db *DB, each string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 * int(db.pool.Config().MaxConns) {
		wg.Go(func() {
			for ctx.Err() == nil {
				qctx, qcancel := context.WithTimeout(ctx, db.opts.Timeout)
				db.pool.Exec(qctx, `SELECT pg_sleep(`+each+`)`)
				qcancel()
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// While slow reads fill the pool, ingest still commits and the probe
// still answers: the database is fine, so neither ingest nor /healthz
// says 503.
func TestPGIngestWhilePoolBusy(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	stop := busyReads(db, "1.8") // each just within open's 2 s timeout
	defer stop()
	for i := range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _, err := db.Append(ctx, note("paypal", fmt.Sprintf("busy-%d", i)))
		cancel()
		if err != nil {
			t.Fatalf("ingest %d failed while only reads were slow: %v", i, err)
		}
		if err := db.Probe(context.Background()); err != nil {
			t.Fatalf("probe %d failed while only reads were slow: %v", i, err)
		}
	}
	if err := db.Writable(); err != nil {
		t.Fatalf("not writable: %v", err)
	}
}
