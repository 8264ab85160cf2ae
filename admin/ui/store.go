package ui

import (
	"time"

	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/store"
)

// Store is what the dashboard reads and changes in the store, whatever
// its backend (*store.DB is the bbolt one). Each method is the store's:
// see store.DB for what it returns and its errors (the store's sentinels:
// store.ErrNotFound, ErrStale, ErrIndexing, ...).
type Store interface {
	// Notifications.
	Get(id uint64) (*ipn.Notification, *ipn.Processing, error)
	Find(q store.Query) ([]store.Item, error)
	FirstIDAt(t time.Time) (uint64, error)
	Matching(f store.Filter, max int) (ids []uint64, more bool, err error)
	Replay(id uint64, now time.Time) error
	Cursor() uint64
	OldestPendingByGateway(now time.Time) map[string]time.Time
	HourCounts(since time.Time) ([]store.HourCount, error)
	Stats() (store.Stats, error)
	Follow(buffer int) (<-chan store.LiveEvent, func(), error)

	// Orders, subscriptions and what orders delivered.
	GetOrder(id string) (*ipn.Order, error)
	ListOrders(status ipn.OrderStatus, before string, limit int) ([]ipn.Order, error)
	OrderFacts(id string, from, limit int) ([]ipn.OrderFact, error)
	OrderHistory(id string, from, limit int) ([]ipn.OrderChange, error)
	OrderCounts() (map[ipn.OrderStatus]int, error)
	TestOrderCounts() (map[ipn.OrderStatus]int, error)
	GetSubscription(id string) (*ipn.Subscription, error)
	ListSubscriptions(status ipn.SubscriptionStatus, after string, limit int) (subs []ipn.Subscription, next string, err error)
	Deliveries(id string) (*fulfil.Record, map[string]*fulfil.License, error)

	// The outbox.
	GetOutbox(id uint64) (ipn.OutboxItem, error)
	ListOutbox(state string, limit int) ([]store.OutboxItem, error)
	OutboxOf(notification uint64) ([]store.OutboxItem, error)
	OutboxOfOrder(id string) ([]store.OutboxItem, error)
	OutboxAttempts(id uint64) ([]ipn.OutboxAttempt, error)
	OutboxCounts() (map[string]map[string]int, error)
	RetryOutbox(id uint64, now time.Time) (ipn.OutboxItem, error)
	RetryDead(kind string, now time.Time) ([]uint64, error)
	ResendOutbox(id uint64, by, key string, now time.Time) (ipn.OutboxItem, error)
}

var _ Store = (*store.DB)(nil)
