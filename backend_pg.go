package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/notify"
	"ipnd/pipeline"
	"ipnd/store"
	"ipnd/store/pg"
)

// leaseTTL is the PostgreSQL leader's lease. The leader renews it every
// leaseTTL/4; when it dies or loses the database, another process takes
// over once the lease has expired: within leaseTTL plus one attempt
// (leaseTTL/4), 7.5 s, inside the 10 s that SPEC §12 allows. A leader
// that cannot renew stops leading before its lease can have expired.
const leaseTTL = 6 * time.Second

// probeEvery is how often a PostgreSQL store asks the database whether
// it takes writes (Writable, /healthz), besides each ingest.
const probeEvery = time.Second

// pgStore is the PostgreSQL store as serve uses it (a sharedStore): the
// dashboard's reads and the admin API's methods are pg.Dashboard's,
// ingest and the settings the DB's, the pipeline's Journal and the
// outbox's Deliveries come per term of leadership (Lead).
type pgStore struct {
	*pg.Dashboard
	db     *pg.DB
	leader *pg.Leader

	journal atomic.Pointer[pg.Journal] // the current term's (nil: not leading)
	damaged atomic.Int64               // DamagedSeen of the terms ended

	// dsnSum is the SHA-256 of the DSN the pool was opened with: a
	// reload that reads another one (store.dsn_file rewritten, say with
	// a rotated password) says it needs a restart (sameDSN).
	dsnSum [32]byte

	stopWatch context.CancelFunc
	watched   sync.WaitGroup
	closeOnce sync.Once
}

var _ sharedStore = (*pgStore)(nil)

// openPG opens the database of cfg's store.dsn (or dsn_file), migrating
// its schema, and starts probing it; onCommit is told each ingest
// transaction's duration and size.
func openPG(ctx context.Context, cfg *Config, log *slog.Logger, onCommit func(d time.Duration, n int)) (*pgStore, error) {
	dsn, err := cfg.storeDSN()
	if err != nil {
		return nil, err
	}
	db, err := openPGWaiting(ctx, dsn, pg.Options{OnCommit: onCommit}, log)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err) // pgx's errors never show the password
	}
	db.SetEffectKinds(effectKinds(cfg))
	s := &pgStore{Dashboard: db.Dashboard(), db: db, leader: db.NewLeader(leaseTTL), dsnSum: sha256.Sum256([]byte(dsn))}
	wctx, stop := context.WithCancel(context.Background())
	s.stopWatch = stop
	s.watched.Add(1)
	go func() { defer s.watched.Done(); db.Watch(wctx, probeEvery) }()
	return s, nil
}

// openPGWaiting opens the database of dsn. While it cannot be reached
// (down, restarting, a boot where it comes up after ipnd) it tries
// again, every second at first and at most every 10 s, logging each
// failure, until ctx ends (a stop signal): a service manager's restarts
// would give up after a few. What waiting cannot mend (a refused
// password, a database that does not exist, a newer schema, a DSN that
// does not parse) is returned at once.
func openPGWaiting(ctx context.Context, dsn string, opts pg.Options, log *slog.Logger) (*pg.DB, error) {
	wait := time.Second
	for attempt := 1; ; attempt++ {
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		db, err := pg.Open(octx, dsn, opts)
		cancel()
		if err == nil || !errors.Is(err, pg.ErrUnavailable) || ctx.Err() != nil {
			return db, err
		}
		log.Error("store: postgres unreachable at start; trying again (ipnd listens once it answers)",
			"error", err, "attempt", attempt, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// sameDSN reports whether cfg names the DSN the store was opened with
// (a DSN that cannot be read counts as another one).
func (s *pgStore) sameDSN(cfg *Config) bool {
	dsn, err := cfg.storeDSN()
	return err == nil && sha256.Sum256([]byte(dsn)) == s.dsnSum
}

func (s *pgStore) Append(ctx context.Context, n *ipn.Notification) (uint64, bool, error) {
	return s.db.Append(ctx, n)
}

func (s *pgStore) Writable() error                      { return s.db.Writable() }
func (s *pgStore) Refused() int64                       { return s.db.Refused() }
func (s *pgStore) SetParkFor(d time.Duration)           { s.db.SetParkFor(d) }
func (s *pgStore) SetEffectKinds(kinds map[string]bool) { s.db.SetEffectKinds(kinds) }

// ApplyErr is nil: a committed notification is in the database, there is
// no journal to apply.
func (s *pgStore) ApplyErr() error { return nil }

// Recovered is 0 and TornGroups nil: PostgreSQL recovers its own log.
func (s *pgStore) Recovered() int             { return 0 }
func (s *pgStore) TornGroups() []store.Damage { return nil }

// DamagedSeen counts the damaged records this process's terms have met.
func (s *pgStore) DamagedSeen() int64 {
	n := s.damaged.Load()
	if j := s.journal.Load(); j != nil {
		n += j.DamagedSeen()
	}
	return n
}

func (s *pgStore) Parked() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.db.Parked(ctx)
}

// Lead runs the leader election until ctx ends; see sharedStore.
func (s *pgStore) Lead(ctx context.Context, lead func(ctx context.Context, j pipeline.Journal, o notify.Outbox)) {
	s.leader.Run(ctx, func(ctx context.Context, epoch int64) {
		j := s.db.Journal(ctx, s.leader, epoch)
		s.journal.Store(j)
		defer func() {
			s.journal.Store(nil)
			s.damaged.Add(j.DamagedSeen())
		}()
		lead(ctx, j, s.db.Deliveries(ctx, s.leader, epoch))
	})
}

func (s *pgStore) Leading() bool {
	_, ok := s.leader.Leading()
	return ok
}

// Leadership asks the database who holds the lease (within a second).
func (s *pgStore) Leadership() admin.Leadership {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	holder, _ := s.leader.Holder(ctx)
	return admin.Leadership{Leading: s.Leading(), Process: s.leader.ID(), Leader: holder}
}

// Close stops the probe and closes the pool.
func (s *pgStore) Close() error {
	s.closeOnce.Do(func() {
		s.stopWatch()
		s.watched.Wait()
		s.db.Close()
	})
	return nil
}
