package pg

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"ipnd/ipn"
	"ipnd/record"
	"ipnd/store"
)

// The merchant's decisions on orders (approve, cancel, note, dispute),
// the orders the admin API registers and the test orders it deletes, as
// the bbolt store's (store/decisions.go, orders.go): each in one
// transaction of any process (the admin API answers on every one, not
// only on the leader), unfenced. record.Decide drives the decision, as
// on bbolt.
//
// Concurrency: a decision holds its Idempotency-Key (a transaction-level
// advisory lock) and then the order's row (FOR NO KEY UPDATE, as the
// pipeline and the outbox worker take it) from its first read to its
// commit, so the version it checks is the version it changes, and two
// requests with one key are applied once. A transaction PostgreSQL
// aborts to break a deadlock (the pipeline holds the outbox counter and
// waits for the order's row that the decision holds while it waits for
// the counter) or a serialization failure is run again, a few times.

// decisionTries bounds how many times a decision's transaction is run
// when PostgreSQL aborts it to break a deadlock.
const decisionTries = 4

// retryable says whether err is PostgreSQL aborting a transaction that
// would succeed when run again: a deadlock broken, a serialization
// failure.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// decisionErr is err as the admin API reads it: the store's and the
// decision's sentinels as they are, every other failure ErrUnavailable.
func decisionErr(err error) error {
	for _, known := range []error{store.ErrStale, store.ErrKeyReused, store.ErrExists, store.ErrNotTest,
		ipn.ErrNotInReview, ipn.ErrFinal, ipn.ErrNoOpenDispute, ipn.ErrBadDecision} {
		if errors.Is(err, known) {
			return err
		}
	}
	return unavailable(err)
}

// decisionTx runs fn in one transaction, committed when it returns nil,
// with the order counts it moved; run again when PostgreSQL aborts it
// to break a deadlock.
func (d *Dashboard) decisionTx(fn func(t *pgTx) error) error {
	var err error
	for range decisionTries {
		if err = d.updateOnce(fn); !retryable(err) { // outboxadmin.go
			break
		}
	}
	return decisionErr(err)
}

// CreateOrder registers an expected order; store.ErrExists when the id
// is taken.
func (d *Dashboard) CreateOrder(o ipn.Order) error {
	return d.decisionTx(func(t *pgTx) error {
		b, err := json.Marshal(&o)
		if err != nil {
			return err
		}
		var inserted bool
		found, err := t.row(`INSERT INTO orders (id, status, test, updated_at, record) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO NOTHING RETURNING true`, []any{[]byte(o.ID), string(o.Status), o.Test, o.UpdatedAt, b}, &inserted)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("order %q: %w", o.ID, store.ErrExists)
		}
		t.counts.order(nil, &o)
		return nil
	})
}

// DecideOrder applies decision dec to order id (ipn.DecideOrder, or
// ipn.CloseDispute for a dispute), writes the order and the
// Idempotency-Key and queues the effects (waking the leader's outbox
// worker), in one transaction: record.Decide, as on bbolt. Errors:
// store.ErrNotFound, store.ErrStale, store.ErrKeyReused,
// ipn.ErrNotInReview, ipn.ErrFinal, ipn.ErrNoOpenDispute,
// ipn.ErrBadDecision, ErrUnavailable.
func (d *Dashboard) DecideOrder(id string, dec store.Decision, now time.Time) (store.DecisionResult, error) {
	var res store.DecisionResult
	err := d.decisionTx(func(t *pgTx) error {
		var err error
		res, _, err = record.Decide(t, id, dec, now)
		if err != nil || res.Repeated || res.Order == nil {
			return err
		}
		return t.notifyLive(store.OrderEvent(res.Order.ID, res.Change)) // every process's followers (live.go)
	})
	if err != nil {
		return store.DecisionResult{}, err
	}
	return res, nil
}

// DeleteOrder removes a test order with its facts and the references
// that lead to it, as the bbolt store's: its payment references, the
// payment facts it applied (so that the same test payment sent again
// makes a new order), its records and its count. The notifications that
// built it stay, and so do the outbox items they queued.
// store.ErrNotFound when there is no such order, store.ErrNotTest when
// it is a real one. What it was delivered goes with it (its links and
// licenses; a pool key stays handed out: DeleteDeliveries, fulfil.go).
func (d *Dashboard) DeleteOrder(id string) error {
	return d.decisionTx(func(t *pgTx) error {
		o, err := t.OrderInFull(id)
		if err != nil {
			return err
		}
		if o == nil {
			return fmt.Errorf("order %q: %w", id, store.ErrNotFound)
		}
		if !o.Test {
			return fmt.Errorf("order %q: %w", id, store.ErrNotTest)
		}
		var keys [][]byte
		for _, f := range o.Facts {
			if f.Key != "" {
				keys = append(keys, []byte(f.Key))
			}
		}
		oid := []byte(id)
		if len(keys) > 0 {
			if err := t.exec(`DELETE FROM facts WHERE key = ANY($1::bytea[])`, keys); err != nil {
				return err
			}
		}
		for _, table := range []string{"payment_refs", "order_facts", "order_fact_keys", "order_history", "order_groups", "order_oneoffs"} {
			if err := t.exec(`DELETE FROM `+table+` WHERE order_id = $1`, oid); err != nil {
				return err
			}
		}
		if err := t.exec(`DELETE FROM orders WHERE id = $1`, oid); err != nil {
			return err
		}
		if err := t.DeleteDeliveries(id); err != nil {
			return err
		}
		if t.counts.orders == nil {
			t.counts.orders = map[orderKey]int64{}
		}
		t.counts.orders[orderKey{o.Test, o.Status}]--
		return nil
	})
}

// The reads and writes of record.Decide on PostgreSQL.

// StoredOrder reads order id's row, locked to the end of the
// transaction.
func (t *pgTx) StoredOrder(id string) (*ipn.Order, *ipn.Tally, error) {
	return lockedOrder(t.row, id)
}

// OrderInFull reads order id with every fact and history entry, its row
// locked to the end of the transaction.
func (t *pgTx) OrderInFull(id string) (*ipn.Order, error) {
	o, tally, err := lockedOrder(t.row, id)
	if err != nil || o == nil || tally == nil {
		return o, err
	}
	if o.Facts, err = readSeq[ipn.OrderFact](t.rows, "order_facts", "fact", id); err != nil {
		return nil, err
	}
	o.TxnIDs = ipn.TxnIDs(o.Facts)
	if o.History, err = readSeq[ipn.OrderChange](t.rows, "order_history", "change", id); err != nil {
		return nil, err
	}
	return o, nil
}

// ShownOrder reads order id as Dashboard.GetOrder returns it, with what
// the transaction wrote.
func (t *pgTx) ShownOrder(id string) (*ipn.Order, error) {
	o, tally, err := storedOrder(t.row, id)
	if err != nil || o == nil || tally == nil {
		return o, err
	}
	last := `ORDER BY seq DESC LIMIT ` + fmt.Sprint(shownEntries)
	if o.Facts, err = readSeqWhere[ipn.OrderFact](t.rows, "order_facts", "fact", id, last); err != nil {
		return nil, err
	}
	slices.Reverse(o.Facts)
	o.TxnIDs = ipn.TxnIDs(o.Facts)
	if o.History, err = readSeqWhere[ipn.OrderChange](t.rows, "order_history", "change", id, last); err != nil {
		return nil, err
	}
	slices.Reverse(o.History)
	return o, nil
}

// keyLockClass is the first half of the advisory locks on Idempotency-
// Keys ("idky"): the two-int lock space, apart from the schema's lock.
const keyLockClass = 0x69646b79

// keyLock is the second half of the advisory lock on key.
func keyLock(key string) int32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int32(h.Sum32())
}

// KeyUse reads what Idempotency-Key key was used for, and holds the key
// (an advisory lock) to the end of the transaction: the same key sent
// twice at once is decided once, the other request sees it used.
func (t *pgTx) KeyUse(key string) (*record.KeyUse, error) {
	if err := t.exec(`SELECT pg_advisory_xact_lock($1, $2)`, int32(keyLockClass), keyLock(key)); err != nil {
		return nil, err
	}
	var b []byte
	found, err := t.row(`SELECT record FROM idempotency WHERE key = $1`, []any{[]byte(key)}, &b)
	if err != nil || !found {
		return nil, err
	}
	var use record.KeyUse
	if err := decode(b, &use, fmt.Sprintf("idempotency key %q", key)); err != nil {
		return nil, err
	}
	if use.Order == "" {
		return nil, nil
	}
	return &use, nil
}

// PutOrderChange writes order next, which keeps its facts and history
// apart, with tally tl and its history entry change, and moves the order
// counts from old.
func (t *pgTx) PutOrderChange(old, next *ipn.Order, tl ipn.Tally, change ipn.OrderChange) error {
	t.counts.order(old, next) // dashboard.go
	if err := t.putJSON(upsertChange, []byte(next.ID), int64(next.Changes-1), change); err != nil {
		return err
	}
	return t.putOrder(next, &tl)
}

// RememberKey records what Idempotency-Key key was used for, and forgets
// the keys used record.IdempotencyTTL before use.At, at most 100 at a
// time, oldest first (those another transaction is forgetting are left
// to it).
func (t *pgTx) RememberKey(key string, use record.KeyUse) error {
	if err := t.exec(`DELETE FROM idempotency WHERE key IN (
			SELECT key FROM idempotency WHERE at <= $1 ORDER BY at LIMIT 100 FOR UPDATE SKIP LOCKED)`,
		use.At.Add(-record.IdempotencyTTL)); err != nil {
		return err
	}
	return t.putJSON(`INSERT INTO idempotency (key, at, record) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET at = excluded.at, record = excluded.record`, []byte(key), use.At, use)
}
