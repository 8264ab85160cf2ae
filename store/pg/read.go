package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/ipn"
)

// State reads the processing record of notification id: nil when the
// pipeline has recorded none, ipn.ErrCorrupt when it does not decode.
func (db *DB) State(ctx context.Context, id uint64) (*ipn.Processing, error) {
	p, err := readState(queried(ctx, db.pool), id)
	return p, unavailable(err)
}

// GetOrder returns order id with all its facts and history, and the txn
// ids of its facts; ipn.ErrNotFound when there is none.
func (db *DB) GetOrder(ctx context.Context, id string) (*ipn.Order, error) {
	o, tally, err := storedOrder(queried(ctx, db.pool), id)
	if err != nil {
		return nil, unavailable(err)
	}
	if o == nil {
		return nil, fmt.Errorf("order %q: %w", id, ipn.ErrNotFound)
	}
	if tally == nil {
		return o, nil
	}
	if o.Facts, err = readSeq[ipn.OrderFact](queriedRows(ctx, db.pool), "order_facts", "fact", id); err != nil {
		return nil, unavailable(err)
	}
	o.TxnIDs = ipn.TxnIDs(o.Facts)
	if o.History, err = readSeq[ipn.OrderChange](queriedRows(ctx, db.pool), "order_history", "change", id); err != nil {
		return nil, unavailable(err)
	}
	return o, nil
}

// GetSubscription returns subscription id; ipn.ErrNotFound when there is
// none.
func (db *DB) GetSubscription(ctx context.Context, id string) (*ipn.Subscription, error) {
	var b []byte
	err := db.pool.QueryRow(ctx, `SELECT record FROM subscriptions WHERE id = $1`, []byte(id)).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("subscription %q: %w", id, ipn.ErrNotFound)
	}
	if err != nil {
		return nil, unavailable(err)
	}
	s := new(ipn.Subscription)
	return s, decode(b, s, fmt.Sprintf("subscription %q", id))
}

// Parked counts the events waiting for their order.
func (db *DB) Parked(ctx context.Context) (int, error) {
	var n int
	err := db.pool.QueryRow(ctx, `SELECT count(*) FROM parked_due`).Scan(&n)
	return n, unavailable(err)
}

// Outbox returns the outbox items in id order, from after on, at most
// limit.
func (db *DB) Outbox(ctx context.Context, after uint64, limit int) ([]ipn.OutboxItem, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, effect, delivery_id, notification, created_at, state, attempts, next_attempt, sent_at, last_error
		FROM outbox WHERE id > $1 ORDER BY id LIMIT $2`, int64(after), limit)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	var out []ipn.OutboxItem
	for rows.Next() {
		var id, notification int64
		var b []byte
		var it ipn.OutboxItem
		var next, sent *time.Time
		if err := rows.Scan(&id, &b, &it.DeliveryID, &notification, &it.CreatedAt, &it.State, &it.Attempts, &next, &sent, &it.LastError); err != nil {
			return nil, unavailable(err)
		}
		if err := json.Unmarshal(b, &it.Effect); err != nil {
			return nil, corrupt(fmt.Sprintf("outbox item %d", id), err)
		}
		it.ID, it.Notification = uint64(id), uint64(notification)
		if next != nil {
			it.NextAttempt = *next
		}
		if sent != nil {
			it.SentAt = *sent
		}
		out = append(out, it)
	}
	return out, unavailable(rows.Err())
}
