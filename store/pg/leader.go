package pg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotLeader is returned by a fenced transaction of a process whose
// lease has ended (another process may lead now).
var ErrNotLeader = errors.New("this ipnd no longer leads the pipeline")

// Leader elects the one process that runs the pipeline and the outbox
// (SPEC §12) with a lease row: the leader renews it every TTL/4; when it
// dies or loses the database, another process takes over once the lease
// has expired, after at most TTL plus one attempt interval. Expiry is
// judged by the database's clock only, so the processes' clocks do not
// matter. A process stops leading on its own before its lease can have
// expired (its deadline is measured from before the renewal was sent),
// and every leader transaction is fenced (Fence): a write of a process
// whose lease has ended fails, so two processes never both apply.
type Leader struct {
	db    *DB
	ttl   time.Duration
	me    string
	mu    sync.Mutex
	epoch int64     // the lease's epoch while leading, else 0
	until time.Time // local (monotonic) end of the current lease

	// conn is the lease's own connection (Run's goroutine only): the
	// renewals never wait for a pooled one, which slow admin reads or
	// slow commits may all hold for longer than the lease.
	conn *pgx.Conn
}

// session returns the lease's connection, connecting it when there is
// none (ctx bounds the connect). Once the store is closed there is none:
// a process that cannot use its pool leads no more.
func (l *Leader) session(ctx context.Context) (*pgx.Conn, error) {
	l.db.mu.Lock()
	closed := l.db.closed
	l.db.mu.Unlock()
	if closed {
		l.drop()
		return nil, fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	if l.conn != nil && !l.conn.IsClosed() {
		return l.conn, nil
	}
	l.drop()
	conn, err := pgx.ConnectConfig(ctx, l.db.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	l.conn = conn
	return conn, nil
}

// drop closes the lease's connection after a failure (the next
// statement connects again: a statement cut by its deadline leaves it
// unusable).
func (l *Leader) drop() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.conn.Close(ctx)
		cancel()
		l.conn = nil
	}
}

// NewLeader returns the election of this process (not yet running).
func (db *DB) NewLeader(ttl time.Duration) *Leader {
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	host, _ := os.Hostname()
	var r [6]byte
	rand.Read(r[:])
	return &Leader{db: db, ttl: ttl, me: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(r[:]))}
}

// ID names this process in the lease row (host/pid/random).
func (l *Leader) ID() string { return l.me }

// Leading reports whether this process holds the lease now, and its
// epoch (increasing with every change of leader).
func (l *Leader) Leading() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epoch == 0 || time.Now().After(l.until) {
		return 0, false
	}
	return l.epoch, true
}

// Holder returns who holds the lease now according to the database ("" when
// nobody does).
func (l *Leader) Holder(ctx context.Context) (string, error) {
	var h string
	err := l.db.pool.QueryRow(ctx, `SELECT holder FROM ipnd_leader WHERE id = 1 AND expires_at > now()`).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return h, err
}

// Run campaigns until ctx ends. Each time this process gains the lease,
// lead runs with a context that ends when the lease is lost (or ctx
// ends); Run waits for lead to return before campaigning again. The
// lease is released when ctx ends, so that a clean shutdown hands over at
// once.
func (l *Leader) Run(ctx context.Context, lead func(ctx context.Context, epoch int64)) {
	tick := l.ttl / 4
	defer l.drop()
	for ctx.Err() == nil {
		epoch, ok := l.acquire(ctx)
		if !ok {
			select {
			case <-ctx.Done():
			case <-time.After(tick):
			}
			continue
		}
		leadCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); lead(leadCtx, epoch) }()
		l.renewLoop(leadCtx, epoch, tick)
		cancel()
		<-done
		l.mu.Lock()
		l.epoch = 0
		l.mu.Unlock()
		if ctx.Err() != nil {
			rctx, rcancel := context.WithTimeout(context.Background(), l.db.opts.Timeout)
			if conn, err := l.session(rctx); err == nil {
				conn.Exec(rctx, `UPDATE ipnd_leader SET expires_at = now() WHERE id = 1 AND holder = $1 AND epoch = $2`, l.me, epoch)
			}
			rcancel()
		}
	}
}

// acquire takes the lease if it is free or expired. The expired row is
// locked FOR UPDATE first: that waits for every fenced transaction of
// the last leader still open (each holds the row FOR KEY SHARE, Fence), so
// none of its writes commits after the takeover. A lease that is not
// expired is not locked, so that campaigning holds up nothing.
func (l *Leader) acquire(ctx context.Context) (int64, bool) {
	sent := time.Now()
	actx, cancel := context.WithTimeout(ctx, l.ttl/2)
	defer cancel()
	var epoch int64
	conn, err := l.session(actx)
	if err != nil {
		return 0, false
	}
	err = pgx.BeginFunc(actx, conn, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(actx, `SELECT 1 FROM ipnd_leader WHERE id = 1 AND expires_at <= now() FOR UPDATE`).Scan(&one); err != nil {
			return err
		}
		return tx.QueryRow(actx, `UPDATE ipnd_leader SET holder = $1, epoch = epoch + 1, expires_at = now() + $2::interval
			WHERE id = 1 AND expires_at <= now() RETURNING epoch`, l.me, l.ttl.String()).Scan(&epoch)
	})
	if err != nil {
		if !errors.Is(err, pgx.ErrNoRows) {
			l.drop()
		}
		return 0, false
	}
	l.mu.Lock()
	l.epoch, l.until = epoch, sent.Add(l.ttl)
	l.mu.Unlock()
	return epoch, true
}

// renewLoop renews the lease every tick until it cannot (the lease is
// then lost at the local deadline at the latest) or ctx ends.
func (l *Leader) renewLoop(ctx context.Context, epoch int64, tick time.Duration) {
	for {
		l.mu.Lock()
		until := l.until
		l.mu.Unlock()
		left := time.Until(until)
		if left <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(tick, left)):
		}
		if time.Now().After(until) {
			return
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, until)
		conn, err := l.session(rctx)
		if err != nil {
			cancel()
			continue // the lease stands until its deadline: retry
		}
		tag, err := conn.Exec(rctx, `UPDATE ipnd_leader SET expires_at = now() + $3::interval
			WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now()`, l.me, epoch, l.ttl.String())
		cancel()
		switch {
		case err == nil && tag.RowsAffected() == 1:
			l.mu.Lock()
			l.until = sent.Add(l.ttl)
			l.mu.Unlock()
		case err == nil:
			return // the row says someone else leads, or the lease ended
		}
		// On an error the lease stands until its deadline: retry, on a
		// new connection.
		l.drop()
	}
}

// Fence checks, inside a leader transaction, that this process still
// holds the lease of epoch; the row is locked FOR KEY SHARE to the end of
// tx, so no other process can take the lease over before tx has
// committed (acquire locks the row FOR UPDATE). The renewal's UPDATE
// (FOR NO KEY UPDATE) does not wait for it: a leader whose transactions
// overlap all the time, as under load, must still renew (with FOR SHARE
// it waited until no fenced transaction was open, and lost its lease).
func (l *Leader) Fence(ctx context.Context, tx pgx.Tx, epoch int64) error {
	var one int
	sql, args := l.fence(epoch)
	err := tx.QueryRow(ctx, sql, args...).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotLeader
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// fence is Fence's query: a row while this process holds the lease of
// epoch, locked FOR KEY SHARE.
func (l *Leader) fence(epoch int64) (string, []any) {
	return `SELECT 1 FROM ipnd_leader WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now() FOR KEY SHARE`, []any{l.me, epoch}
}
