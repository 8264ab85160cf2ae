package pg

import (
	"context"
	"errors"
	"testing"
	"time"

	"ipnd/internal/pgtest"
)

// fencedWrite records (epoch, who) in one fenced leader transaction.
func fencedWrite(ctx context.Context, l *Leader, epoch int64) error {
	tx, err := l.db.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := l.Fence(ctx, tx, epoch); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO lead_log (epoch, who) VALUES ($1, $2)`, epoch, l.me); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Three processes campaign; the leader is taken away twice (its database
// connections closed, as when it dies, and a clean shutdown). Another
// takes over each time, and in commit order the leaders' fenced writes
// never interleave: no write of an old epoch after a newer one.
func TestPGLeaderTakeoverAndFencing(t *testing.T) {
	c := pgtest.Start(t)
	setup := open(t, c.DSN())
	if _, err := setup.pool.Exec(context.Background(), `CREATE TABLE lead_log (seq bigserial PRIMARY KEY, epoch bigint NOT NULL, who text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	type proc struct {
		db     *DB
		l      *Leader
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func() *proc {
		db, err := Open(context.Background(), c.DSN(), Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		p := &proc{db: db, l: db.NewLeader(time.Second), done: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		p.cancel = cancel
		go func() {
			defer close(p.done)
			p.l.Run(ctx, func(ctx context.Context, epoch int64) {
				for ctx.Err() == nil {
					if err := fencedWrite(ctx, p.l, epoch); errors.Is(err, ErrNotLeader) {
						return
					}
				}
			})
		}()
		t.Cleanup(func() { cancel(); <-p.done; db.Close() })
		return p
	}
	procs := []*proc{start(), start(), start()}
	leader := func(exclude map[*proc]bool) *proc {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			for _, p := range procs {
				if _, ok := p.l.Leading(); ok && !exclude[p] {
					return p
				}
			}
			time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
		}
		t.Fatal("no process leads")
		return nil
	}
	wrote := func(p *proc, atLeast int) {
		var n int
		for deadline := time.Now().Add(30 * time.Second); n < atLeast; {
			if time.Now().After(deadline) {
				t.Fatalf("leader wrote %d times in 30 s", n)
			}
			if err := setup.pool.QueryRow(context.Background(), `SELECT count(*) FROM lead_log WHERE who = $1`, p.l.me).Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
	}
	gone := map[*proc]bool{}
	first := leader(gone)
	wrote(first, 20)
	// The leader dies: its connections go, it cannot renew.
	gone[first] = true
	took := time.Now()
	first.db.pool.Close()
	second := leader(gone)
	wrote(second, 20)
	t.Logf("takeover after the leader lost the database: %v (lease 1s)", time.Since(took).Round(time.Millisecond))
	// A clean shutdown releases the lease at once.
	gone[second] = true
	took = time.Now()
	second.cancel()
	<-second.done
	third := leader(gone)
	t.Logf("takeover after a clean shutdown: %v", time.Since(took).Round(time.Millisecond))
	wrote(third, 20)
	rows, err := setup.pool.Query(context.Background(), `SELECT epoch, who FROM lead_log ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var last int64
	var lastWho string
	whos := map[string]bool{}
	for rows.Next() {
		var e int64
		var who string
		rows.Scan(&e, &who)
		if e < last || e == last && who != lastWho {
			t.Fatalf("write of epoch %d (%s) committed after epoch %d (%s)", e, who, last, lastWho)
		}
		last, lastWho = e, who
		whos[who] = true
	}
	if len(whos) != 3 {
		t.Fatalf("%d distinct leaders wrote, want 3", len(whos))
	}
}

// A process whose lease ended (here: the row is expired by hand, as if it
// had stalled past its lease) cannot write once another has taken over,
// even though it has not noticed yet.
func TestPGStaleLeaderFenced(t *testing.T) {
	c := pgtest.Start(t)
	a, b := open(t, c.DSN()), open(t, c.DSN())
	la, lb := a.NewLeader(time.Minute), b.NewLeader(time.Minute)
	ctx := context.Background()
	ea, ok := la.acquire(ctx)
	if !ok {
		t.Fatal("a could not take a free lease")
	}
	if _, ok := lb.acquire(ctx); ok {
		t.Fatal("b took a lease a holds")
	}
	if _, err := a.pool.Exec(ctx, `UPDATE ipnd_leader SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if _, ok := lb.acquire(ctx); !ok {
		t.Fatal("b could not take an expired lease")
	}
	if _, err := a.pool.Exec(ctx, `CREATE TABLE lead_log (seq bigserial PRIMARY KEY, epoch bigint NOT NULL, who text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := fencedWrite(ctx, la, ea); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("stale leader's write: %v, want ErrNotLeader", err)
	}
}
