package pg

import (
	"errors"
	"fmt"
	"io"
	"time"

	"ipnd/ipn"
	"ipnd/store"
)

// ErrNotBuilt is returned by the parts of the store not built on
// PostgreSQL yet. Each group below is replaced by its own file.
var ErrNotBuilt = errors.New("not built on the postgres backend yet")

func notBuilt(what string) error { return fmt.Errorf("%s: %w", what, ErrNotBuilt) }

// --- decisions and orders (decisions.go) ---

func (d *Dashboard) CreateOrder(o ipn.Order) error { return notBuilt("CreateOrder") }

func (d *Dashboard) DecideOrder(id string, dec store.Decision, now time.Time) (store.DecisionResult, error) {
	return store.DecisionResult{}, notBuilt("DecideOrder")
}

func (d *Dashboard) DeleteOrder(id string) error { return notBuilt("DeleteOrder") }

// --- the outbox's decisions, replays, retention (outboxadmin.go, retention.go) ---

func (d *Dashboard) Replay(id uint64, now time.Time) error { return notBuilt("Replay") }

func (d *Dashboard) ReplayMatching(f store.Filter, max int, now time.Time) ([]uint64, int, bool, error) {
	return nil, 0, false, notBuilt("ReplayMatching")
}

func (d *Dashboard) RetryOutbox(id uint64, now time.Time) (ipn.OutboxItem, error) {
	return ipn.OutboxItem{}, notBuilt("RetryOutbox")
}

func (d *Dashboard) RetryDead(kind string, now time.Time) ([]uint64, error) {
	return nil, notBuilt("RetryDead")
}

func (d *Dashboard) ResendOutbox(id uint64, by, key string, now time.Time) (ipn.OutboxItem, error) {
	return ipn.OutboxItem{}, notBuilt("ResendOutbox")
}

func (d *Dashboard) DiscardOutbox(id uint64, by, why string, version int, now time.Time) (ipn.OutboxItem, bool, error) {
	return ipn.OutboxItem{}, false, notBuilt("DiscardOutbox")
}

func (d *Dashboard) Purge(cutoff time.Time, max int) (store.Purged, error) {
	return store.Purged{}, notBuilt("Purge")
}

// --- stats and the live event stream (live.go) ---

func (d *Dashboard) Stats() (store.Stats, error) { return store.Stats{}, notBuilt("Stats") }

func (d *Dashboard) Follow(buffer int) (<-chan store.LiveEvent, func(), error) {
	return nil, nil, notBuilt("Follow")
}

func (d *Dashboard) LiveDropped() uint64 { return 0 }

func (d *Dashboard) LiveFollowers() int { return 0 }

func (d *Dashboard) LiveRefused() uint64 { return 0 }

func (d *Dashboard) EndLive() {}

// --- health (serve's wiring, health.go) ---

func (d *Dashboard) Backup(w io.Writer, size func(int64)) (int64, error) {
	return 0, notBuilt("Backup")
}

func (d *Dashboard) Space() (store.Space, error) { return store.Space{}, notBuilt("Space") }

func (d *Dashboard) Lost() ([]store.LostRange, error) { return nil, nil }

func (d *Dashboard) Unacknowledged() ([]store.LostRange, uint64, error) { return nil, 0, nil }

func (d *Dashboard) AckDropped() (int, error) { return 0, nil }
