package main

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"time"

	"ipnd/admin"
	"ipnd/fulfil"
	"ipnd/notify"
	"ipnd/pipeline"
	"ipnd/public"
	"ipnd/store"
)

// Store is the store as one ipnd process uses it, whatever its backend:
// what each part is handed (the receiver's Appender, the pipeline's
// Journal, the outbox worker's Outbox, the admin API's Store, the
// fulfilment routes' FulfilStore, retention's purger), the health that
// /healthz and the metrics read, and the settings a reload changes.
// In serve only openStore names the backend (*store.DB, the bbolt one;
// pgStore, PostgreSQL); the offline commands (recover, restore, the
// backup's check) work on the bbolt file itself. Each method is the
// store's (see store.DB for its errors).
//
// The pipeline's Journal and the outbox worker's Outbox are not part of
// it: a store one process runs alone (bbolt) is a localStore, which is
// both, for the life of the process; a store several processes share
// (PostgreSQL) is a sharedStore, which hands them out per term of
// leadership (see app.lead).
type Store interface {
	public.Appender
	admin.Store
	public.FulfilStore
	purger
	watched

	// Settings a start or a reload copies from the config.
	SetParkFor(d time.Duration)
	SetEffectKinds(kinds map[string]bool)
	SetCatalog(c *fulfil.Catalog)
	SigningKey() (ed25519.PublicKey, error)

	// Health and counts for /healthz, the metrics and the start's log.
	ApplyErr() error
	Recovered() int
	TornGroups() []store.Damage
	DamagedSeen() int64
	Parked() (int, error)
	PoolRemaining() map[string]int
	LiveDropped() uint64
	LiveFollowers() int
	LiveRefused() uint64

	// EndLive ends the live event streams (the admin listener's shutdown
	// does not wait for them); Close stops the store, last.
	EndLive()
	Close() error
}

// purger is the store as retention sees it (store.raw_retention).
type purger interface {
	Purge(cutoff time.Time, max int) (store.Purged, error)
}

// watched is the store as watchStore sees it: whether it takes
// notifications, and how many it refused.
type watched interface {
	Writable() error
	Refused() int64
}

// localStore is a store this process alone runs the pipeline and the
// outbox on: they are started once, on the store itself.
type localStore interface {
	Store
	pipeline.Journal
	notify.Outbox
}

// sharedStore is a store several ipnd share: every process ingests, one
// at a time (the leader) runs the pipeline and the outbox.
type sharedStore interface {
	Store
	// Lead campaigns for the lease until ctx ends. Each term this process
	// gains runs lead with that term's Journal and Outbox (fenced by the
	// term's epoch); lead's ctx ends when the lease is lost, and lead
	// must have stopped using them when it returns.
	Lead(ctx context.Context, lead func(ctx context.Context, j pipeline.Journal, o notify.Outbox))
	// Leadership says whether this process leads, and who does.
	Leadership() admin.Leadership
	// Leading reports whether this process holds the lease now.
	Leading() bool
}

var _ localStore = (*store.DB)(nil)

// openStore opens the store cfg names (the bbolt file store.path, or the
// PostgreSQL database of store.dsn); onCommit is told each group
// commit's duration and size.
func openStore(ctx context.Context, cfg *Config, log *slog.Logger, onCommit func(d time.Duration, n int)) (Store, error) {
	if cfg.postgres() {
		return openPG(ctx, cfg, log, onCommit)
	}
	db, err := store.Open(cfg.Store.Path, store.Options{EffectKinds: effectKinds(cfg), OnCommit: onCommit})
	if err != nil {
		return nil, err
	}
	return db, nil
}
