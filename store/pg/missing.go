package pg

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"time"

	"ipnd/fulfil"
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

// --- fulfilment (fulfil.go) ---

func (d *Dashboard) Catalog() *fulfil.Catalog { return nil }

func (d *Dashboard) SetCatalog(c *fulfil.Catalog) {}

func (d *Dashboard) SigningKey() (ed25519.PublicKey, error) { return nil, notBuilt("SigningKey") }

func (d *Dashboard) Reissue(id string, now time.Time) ([]ipn.Delivered, error) {
	return nil, notBuilt("Reissue")
}

func (d *Dashboard) License(key string) (*fulfil.License, error) { return nil, notBuilt("License") }

func (d *Dashboard) UpdateLicense(key string, f func(fulfil.License) (fulfil.License, error)) (fulfil.License, error) {
	return fulfil.License{}, notBuilt("UpdateLicense")
}

func (d *Dashboard) Download(token string, now time.Time) (*fulfil.Grant, string, error) {
	return nil, "", notBuilt("Download")
}

func (d *Dashboard) CountDownload(g *fulfil.Grant, n, size int64) error {
	return notBuilt("CountDownload")
}

func (d *Dashboard) PoolRemaining() map[string]int { return nil }

// --- health (serve's wiring, health.go) ---

func (d *Dashboard) Backup(w io.Writer, size func(int64)) (int64, error) {
	return 0, notBuilt("Backup")
}

func (d *Dashboard) Space() (store.Space, error) { return store.Space{}, notBuilt("Space") }

func (d *Dashboard) Lost() ([]store.LostRange, error) { return nil, nil }

func (d *Dashboard) Unacknowledged() ([]store.LostRange, uint64, error) { return nil, 0, nil }

func (d *Dashboard) AckDropped() (int, error) { return 0, nil }
