package pg

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"ipnd/store"
)

// ErrExternalBackup is what a backup of a PostgreSQL store answers: its
// backups are PostgreSQL's own (pg_dump, or base backups with WAL
// archiving); ipnd backup copies a bbolt file only.
var ErrExternalBackup = fmt.Errorf("the store is PostgreSQL: back it up with PostgreSQL's tools (pg_dump, or base backups with pg_basebackup and WAL archiving); ipnd backup copies a bbolt store only: %w", store.ErrBackupElsewhere)

// health is what Writable answers from: the last failure of an ingest
// transaction and of the probe (Watch), each cleared by the next success
// of either, and the count of notifications refused.
type health struct {
	mu        sync.Mutex
	appendErr error     // the last ingest commit's failure (nil: it committed)
	probeErr  error     // the last probe's failure
	failedAt  time.Time // when appendErr was set
	refused   atomic.Int64
}

// noteAppend records the outcome of an ingest transaction of n
// notifications.
func (db *DB) noteAppend(n int, err error) {
	h := &db.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.refused.Add(int64(n))
		h.appendErr, h.failedAt = err, time.Now()
		return
	}
	h.appendErr, h.probeErr = nil, nil
}

// Writable returns nil while the database takes notifications, else why
// not (the last ingest transaction failed, or the last probe did, and
// nothing has succeeded since): ingest answers 503 meanwhile. It reads
// what was recorded; the probe (Watch) notices a database gone while no
// notification comes, and one come back.
func (db *DB) Writable() error {
	db.mu.Lock()
	closed := db.closed
	db.mu.Unlock()
	if closed {
		return store.ErrClosed
	}
	h := &db.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.probeErr != nil {
		return h.probeErr
	}
	if h.appendErr != nil {
		return fmt.Errorf("storing notifications failed: %w", h.appendErr)
	}
	return nil
}

// Refused is the number of notifications whose ingest transaction
// failed.
func (db *DB) Refused() int64 { return db.health.refused.Load() }

// Probe asks the database whether it takes writes now (it answers, and
// is not a standby in recovery) and records the answer for Writable.
func (db *DB) Probe(ctx context.Context) error {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, db.opts.Timeout)
	defer cancel()
	var recovery bool
	err := db.ingest.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&recovery)
	switch {
	case err != nil:
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	case recovery:
		err = fmt.Errorf("%w: the database is a standby in recovery (read-only)", ErrUnavailable)
	}
	h := &db.health
	h.mu.Lock()
	defer h.mu.Unlock()
	h.probeErr = err
	if err == nil && h.failedAt.Before(started) {
		// The database took a statement after the failed ingest: the next
		// ingest is likely to commit.
		h.appendErr = nil
	}
	return err
}

// Watch probes the database every interval until ctx ends (see Probe).
func (db *DB) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		db.Probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// --- the admin API's health reads on PostgreSQL ---

// Backup answers ErrExternalBackup: a PostgreSQL store is backed up by
// PostgreSQL.
func (d *Dashboard) Backup(w io.Writer, size func(int64)) (int64, error) {
	return 0, ErrExternalBackup
}

// Space reports the database's size (FileBytes), the notifications, and
// each of ipnd's tables with its indexes as a bucket. JournalBytes and
// FreeBytes are 0: PostgreSQL's WAL and free space are its own.
func (d *Dashboard) Space() (store.Space, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	var sp store.Space
	var notes int64
	if err := d.db.pool.QueryRow(ctx, `SELECT pg_database_size(current_database()), (SELECT count(*) FROM notifications)`).
		Scan(&sp.FileBytes, &notes); err != nil {
		return store.Space{}, unavailable(err)
	}
	sp.Notifications = int(notes)
	// Keys: the planner's estimate, or (a table not yet analyzed has
	// none: -1) the live rows the statistics count.
	rows, err := d.db.pool.Query(ctx, `SELECT c.relname,
			(CASE WHEN c.reltuples < 0 THEN coalesce(s.n_live_tup, 0) ELSE c.reltuples END)::bigint,
			pg_total_relation_size(c.oid), pg_relation_size(c.oid)
		FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
		WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace ORDER BY c.relname`)
	if err != nil {
		return store.Space{}, unavailable(err)
	}
	defer rows.Close()
	for rows.Next() {
		var b store.BucketSpace
		var keys int64
		if err := rows.Scan(&b.Name, &keys, &b.Bytes, &b.InUse); err != nil {
			return store.Space{}, unavailable(err)
		}
		b.Keys = int(keys)
		if notes > 0 {
			b.PerNotification = float64(b.Bytes) / float64(notes)
		}
		sp.Buckets = append(sp.Buckets, b)
	}
	if err := rows.Err(); err != nil {
		return store.Space{}, unavailable(err)
	}
	if notes > 0 {
		sp.PerNotification = float64(sp.FileBytes) / float64(notes)
	}
	return sp, nil
}

// Lost is empty: PostgreSQL keeps no journal of ipnd's that could lose
// records (a committed row is PostgreSQL's).
func (d *Dashboard) Lost() ([]store.LostRange, error) { return nil, nil }

// Unacknowledged is empty (see Lost).
func (d *Dashboard) Unacknowledged() ([]store.LostRange, uint64, error) { return nil, 0, nil }

// AckDropped acknowledges nothing (see Lost).
func (d *Dashboard) AckDropped() (int, error) { return 0, nil }
