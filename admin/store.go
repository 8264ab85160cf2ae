package admin

import (
	"io"
	"time"

	"ipnd/admin/ui"
	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/store"
)

// Store is what the admin API reads and changes in the store, whatever
// its backend (*store.DB is the bbolt one): the dashboard's (ui.Store)
// and the API's own. Each method is the store's: see store.DB for what
// it returns and its errors (the store's sentinels, which fail maps to
// status codes).
type Store interface {
	ui.Store

	// Notifications.
	ReplayMatching(f store.Filter, max int, now time.Time) (replayed []uint64, skipped int, more bool, err error)

	// Orders and what they delivered.
	CreateOrder(o ipn.Order) error
	DecideOrder(id string, d store.Decision, now time.Time) (store.DecisionResult, error)
	DeleteOrder(id string) error
	Catalog() *fulfil.Catalog
	Reissue(id string, now time.Time) ([]ipn.Delivered, error)
	License(key string) (*fulfil.License, error)
	UpdateLicense(key string, f func(fulfil.License) (fulfil.License, error)) (fulfil.License, error)

	// The outbox.
	DiscardOutbox(id uint64, by, why string, version int, now time.Time) (was ipn.OutboxItem, repeated bool, err error)

	// The store's files and health.
	Backup(w io.Writer, size func(int64)) (int64, error)
	Space() (store.Space, error)
	Lost() ([]store.LostRange, error)
	Unacknowledged() ([]store.LostRange, uint64, error)
	AckDropped() (int, error)
}

var _ Store = (*store.DB)(nil)
