package pg

import (
	"context"
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
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, ok := la.Leading(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a does not lead")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
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
