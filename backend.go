package main

import (
	"crypto/ed25519"
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
// In serve only openStore names the backend (*store.DB, the bbolt one);
// the offline commands (recover, restore, the backup's check) work on the
// bbolt file itself. Each method is the store's (see store.DB for its
// errors).
type Store interface {
	public.Appender
	pipeline.Journal
	notify.Outbox
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

var _ Store = (*store.DB)(nil)

// openStore opens the store cfg names (the bbolt file store.path);
// onCommit is told each group commit's duration and size.
func openStore(cfg *Config, onCommit func(d time.Duration, n int)) (Store, error) {
	db, err := store.Open(cfg.Store.Path, store.Options{EffectKinds: effectKinds(cfg), OnCommit: onCommit})
	if err != nil {
		return nil, err
	}
	return db, nil
}
