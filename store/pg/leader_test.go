package pg

import (
	"context"
	"errors"
	"sync"
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
	// The leader dies: its connections go (the pool's, and the lease's
	// own once it sees the store closed), it cannot renew.
	gone[first] = true
	took := time.Now()
	first.db.Close()
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

// A leader busy with overlapping fenced transactions (as the pipeline and
// the outbox lanes are under load: there is always one open) keeps its
// lease: the fences must not hold off its renewal, else it loses the lease
// every TTL and another process takes over (repeating what was in
// flight) although nothing failed.
func TestPGLeaderKeepsLeaseUnderFencedLoad(t *testing.T) {
	c := pgtest.Start(t)
	a, b := open(t, c.DSN()), open(t, c.DSN())
	ttl := time.Second
	la, lb := a.NewLeader(ttl), b.NewLeader(ttl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	terms := make(chan string, 100)
	busy := func(db *DB, l *Leader) func(ctx context.Context, epoch int64) {
		return func(ctx context.Context, epoch int64) {
			terms <- l.me
			done := make(chan struct{})
			for range 6 { // overlapping fenced transactions, each holding its fence a while
				go func() {
					defer func() { done <- struct{}{} }()
					for ctx.Err() == nil {
						tx, err := db.pool.Begin(ctx)
						if err != nil {
							continue
						}
						if l.Fence(ctx, tx, epoch) == nil {
							tx.Exec(ctx, `SELECT pg_sleep(0.03)`)
							tx.Commit(ctx)
						}
						tx.Rollback(context.Background())
					}
				}()
			}
			for range 6 {
				<-done
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { la.Run(ctx, busy(a, la)) })
	waitLeading(t, la, "a")
	wg.Go(func() { lb.Run(ctx, busy(b, lb)) })
	// Five lease periods of load: a leads all along, b never.
	window := time.After(5 * ttl)
	for {
		select {
		case who := <-terms:
			if who != la.me {
				t.Fatalf("b took over from a busy, healthy leader (a lost its lease: its renewals waited behind its own fences)")
			}
			continue
		case <-window:
		}
		break
	}
	if _, ok := la.Leading(); !ok {
		t.Fatal("a no longer leads")
	}
	cancel()
	wg.Wait()
}

// A takeover waits for the fenced transactions of the last leader that
// are still open (fenced while its lease held): their writes commit
// before the new epoch, and the old leader's next transaction is
// refused. The lease is expired by hand while one is open (an UPDATE
// that the fence's lock lets through, as it lets the renewals through).
func TestPGTakeoverWaitsForOpenFencedTx(t *testing.T) {
	c := pgtest.Start(t)
	a, b := open(t, c.DSN()), open(t, c.DSN())
	la, lb := a.NewLeader(time.Minute), b.NewLeader(time.Minute)
	ctx := context.Background()
	if _, err := a.pool.Exec(ctx, `CREATE TABLE lead_log (seq bigserial PRIMARY KEY, epoch bigint NOT NULL, who text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	ea, ok := la.acquire(ctx)
	if !ok {
		t.Fatal("a could not take a free lease")
	}
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := la.Fence(ctx, tx, ea); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO lead_log (epoch, who) VALUES ($1, 'a')`, ea); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE ipnd_leader SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	took := make(chan int64, 1)
	go func() {
		// acquire gives up after ttl/2; a minute's lease leaves it time.
		eb, ok := lb.acquire(ctx)
		if !ok {
			eb = 0
		}
		took <- eb
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var waiting int
		if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%ipnd_leader%FOR UPDATE%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 1 {
			break
		}
		select {
		case eb := <-took:
			t.Fatalf("b took the lease (epoch %d) while a's fenced transaction was open", eb)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("b's takeover never waited for a's open transaction")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("a's transaction, fenced while its lease held: %v", err)
	}
	eb := <-took
	if eb <= ea {
		t.Fatalf("b's takeover: epoch %d, want above %d", eb, ea)
	}
	if err := fencedWrite(ctx, la, ea); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a's write after the takeover: %v, want ErrNotLeader", err)
	}
	if err := fencedWrite(ctx, lb, eb); err != nil {
		t.Fatal(err)
	}
	var epochs []int64
	rows, _ := a.pool.Query(ctx, `SELECT epoch FROM lead_log ORDER BY seq`)
	for rows.Next() {
		var e int64
		rows.Scan(&e)
		epochs = append(epochs, e)
	}
	if rows.Err() != nil || len(epochs) != 2 || epochs[0] != ea || epochs[1] != eb {
		t.Fatalf("writes in commit order: %v (%v), want [%d %d]", epochs, rows.Err(), ea, eb)
	}
}

// waitLeading waits up to 30 s for l to lead (name names it in the
// failure).
func waitLeading(t *testing.T, l *Leader, name string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, ok := l.Leading(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not lead", name)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}
