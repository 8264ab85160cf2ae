package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/ipn"
	"ipnd/record"
	"ipnd/store"
)

// ErrNotEmpty is the error of Import into a database that holds data.
var ErrNotEmpty = errors.New("the PostgreSQL database is not empty")

// dataTables are the tables Import fills, in the order it fills them.
var dataTables = []string{"notifications", "processing", "retries", "facts", "payment_refs", "orphans", "parked_due",
	"orders", "order_facts", "order_fact_keys", "order_history", "order_groups", "order_oneoffs", "subscriptions", "outbox", "outbox_attempts", "idempotency",
	"fulfilments", "dl_tokens", "licenses", "license_pool", "license_pool_used"}

// Copied is what Import copied: rows per table (in dataTables' order)
// as counted in the database after the copy, and the counters it set.
type Copied struct {
	Tables       []TableCount
	Notification uint64 // the notification id counter
	Cursor       uint64
	Outbox       uint64 // the outbox id counter
}

// TableCount is the rows of one table.
type TableCount struct {
	Table string
	Rows  int64
}

// Import copies snapshot s of a bbolt store into this database, which
// must be empty (ErrNotEmpty otherwise), in one transaction: a failure
// at any point (the database going away included) leaves it as it was,
// empty. Before the commit it counts each table's rows in the
// transaction and fails unless each is what it copied.
func (db *DB) Import(ctx context.Context, s *store.Snapshot) (Copied, error) {
	var out Copied
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return out, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The counters' rows stay locked to the commit: an ipnd ingesting or
	// leading on this database meanwhile waits, and finds it full after.
	rows, err := tx.Query(ctx, `SELECT name, value FROM ipnd_counters ORDER BY name FOR UPDATE`)
	if err != nil {
		return out, err
	}
	var busy []string
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			rows.Close()
			return out, err
		}
		if v != 0 {
			busy = append(busy, fmt.Sprintf("counter %s at %d", name, v))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, err
	}
	for _, t := range dataTables {
		var has bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t+`)`).Scan(&has); err != nil {
			return out, err
		}
		if has {
			busy = append(busy, "table "+t+" has rows")
		}
	}
	if len(busy) > 0 {
		return out, fmt.Errorf("%w (%v): migrate copies into a new, empty database only; create one (createdb) and name it in -to", ErrNotEmpty, busy)
	}

	want := map[string]int64{}
	cp := func(table string, cols []string, walk func(emit func(...any) error) error) error {
		n, err := copyWalk(ctx, tx, table, cols, walk)
		want[table] += n
		if err != nil {
			return fmt.Errorf("copy %s: %w", table, err)
		}
		return nil
	}
	err = cp("notifications", []string{"id", "gateway", "dedup_key", "received_at", "remote_addr", "content_type", "headers", "body", "body_sha256", "purged_at", "state"},
		func(emit func(...any) error) error {
			return s.Notifications(func(n *ipn.Notification, p *ipn.Processing) error {
				headers, err := json.Marshal(n.Headers)
				if err != nil {
					return err
				}
				state := ipn.StateReceived
				if p != nil {
					state = p.State
				}
				return emit(int64(n.ID), n.Gateway, dedupText(n.DedupKey), n.ReceivedAt, n.RemoteAddr, toText(n.ContentType), headers, n.Body, n.BodySHA256,
					timeOrNil(n.Purged), string(state))
			})
		})
	if err == nil {
		err = cp("processing", []string{"id", "state", "record"}, func(emit func(...any) error) error {
			return s.Notifications(func(n *ipn.Notification, p *ipn.Processing) error {
				if p == nil {
					return nil
				}
				b, err := json.Marshal(p)
				if err != nil {
					return err
				}
				return emit(int64(n.ID), string(p.State), b)
			})
		})
	}
	if err == nil {
		err = cp("retries", []string{"due", "id", "gateway"}, func(emit func(...any) error) error {
			return s.Retries(func(due time.Time, id uint64, gateway string) error { return emit(due, int64(id), gateway) })
		})
	}
	if err == nil {
		err = cp("facts", []string{"key", "id"}, func(emit func(...any) error) error {
			return s.Facts(func(key string, id uint64) error { return emit([]byte(key), int64(id)) })
		})
	}
	if err == nil {
		err = cp("payment_refs", []string{"gateway", "ref", "order_id"}, func(emit func(...any) error) error {
			return s.Refs(func(gateway, ref, order string) error { return emit(gateway, []byte(ref), []byte(order)) })
		})
	}
	if err == nil {
		err = cp("orphans", []string{"gateway", "ref", "id", "parked"}, func(emit func(...any) error) error {
			return s.Orphans(func(gateway, ref string, id uint64, w ipn.Parked) error {
				b, err := json.Marshal(w)
				if err != nil {
					return err
				}
				return emit(gateway, []byte(ref), int64(id), b)
			})
		})
	}
	if err == nil {
		err = cp("parked_due", []string{"at", "id", "gateway", "ref"}, func(emit func(...any) error) error {
			return s.ParkedDue(func(at time.Time, id uint64, gateway, ref string) error {
				return emit(at, int64(id), gateway, []byte(ref))
			})
		})
	}
	// The orders, one walk per table: a walk holds one order at a time.
	orders := func(table string, cols []string, each func(o *store.ExportedOrder, emit func(...any) error) error) {
		if err != nil {
			return
		}
		err = cp(table, cols, func(emit func(...any) error) error {
			return s.Orders(func(o *store.ExportedOrder) error { return each(o, emit) })
		})
	}
	orders("orders", []string{"id", "status", "test", "updated_at", "record", "tally"}, func(o *store.ExportedOrder, emit func(...any) error) error {
		rec, err := json.Marshal(&o.Order)
		if err != nil {
			return err
		}
		var tally []byte
		if o.Tally != nil {
			if tally, err = json.Marshal(o.Tally); err != nil {
				return err
			}
		}
		return emit([]byte(o.Order.ID), string(o.Order.Status), o.Order.Test, o.Order.UpdatedAt, rec, tally)
	})
	orders("order_facts", []string{"order_id", "seq", "fact"}, func(o *store.ExportedOrder, emit func(...any) error) error {
		for _, seq := range sortedKeys(o.Facts) {
			b, err := json.Marshal(o.Facts[seq])
			if err != nil {
				return err
			}
			if err := emit([]byte(o.Order.ID), int64(seq), b); err != nil {
				return err
			}
		}
		return nil
	})
	orders("order_fact_keys", []string{"order_id", "key", "seq"}, func(o *store.ExportedOrder, emit func(...any) error) error {
		for _, k := range sortedKeys(o.FactKeys) {
			if err := emit([]byte(o.Order.ID), []byte(k), int64(o.FactKeys[k])); err != nil {
				return err
			}
		}
		return nil
	})
	orders("order_history", []string{"order_id", "seq", "change"}, func(o *store.ExportedOrder, emit func(...any) error) error {
		for _, seq := range sortedKeys(o.History) {
			b, err := json.Marshal(o.History[seq])
			if err != nil {
				return err
			}
			if err := emit([]byte(o.Order.ID), int64(seq), b); err != nil {
				return err
			}
		}
		return nil
	})
	orders("order_groups", []string{"order_id", "key", "grp"}, func(o *store.ExportedOrder, emit func(...any) error) error {
		for _, k := range sortedKeys(o.Groups) {
			b, err := json.Marshal(o.Groups[k])
			if err != nil {
				return err
			}
			if err := emit([]byte(o.Order.ID), []byte(k), b); err != nil {
				return err
			}
		}
		return nil
	})
	orders("order_oneoffs", []string{"order_id", "key", "amount", "grp"}, func(o *store.ExportedOrder, emit func(...any) error) error {
		for _, e := range o.OneOffs {
			if err := emit([]byte(o.Order.ID), e.Key, e.Amount, []byte(e.Group)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = cp("subscriptions", []string{"id", "status", "record"}, func(emit func(...any) error) error {
			return s.Subscriptions(func(sub *ipn.Subscription) error {
				b, err := json.Marshal(sub)
				if err != nil {
					return err
				}
				return emit([]byte(sub.ID), string(sub.Status), b)
			})
		})
	}
	if err == nil {
		err = cp("outbox", []string{"id", "kind", "order_id", "cause", "notification", "effect", "delivery_id", "created_at", "state",
			"attempts", "next_attempt", "sent_at", "last_error"}, func(emit func(...any) error) error {
			return s.Outbox(func(it *ipn.OutboxItem) error {
				b, err := json.Marshal(&it.Effect)
				if err != nil {
					return err
				}
				return emit(int64(it.ID), it.Effect.Kind, []byte(it.Effect.OrderID), []byte(it.Effect.Cause), int64(it.Notification), b,
					it.DeliveryID, it.CreatedAt, it.State, it.Attempts, timeOrNil(it.NextAttempt), timeOrNil(it.SentAt), it.LastError)
			})
		})
	}
	if err == nil {
		err = cp("outbox_attempts", []string{"outbox_id", "seq", "attempt"}, func(emit func(...any) error) error {
			return s.Attempts(func(outbox, seq uint64, a ipn.OutboxAttempt) error {
				b, err := json.Marshal(a)
				if err != nil {
					return err
				}
				return emit(int64(outbox), int64(seq), b)
			})
		})
	}
	if err == nil {
		err = cp("idempotency", []string{"key", "at", "record"}, func(emit func(...any) error) error {
			return s.Keys(func(key string, use record.KeyUse) error {
				b, err := json.Marshal(use)
				if err != nil {
					return err
				}
				return emit([]byte(key), use.At, b)
			})
		})
	}
	if err == nil {
		err = importFulfilment(ctx, tx, s, cp) // fulfil_migrate.go
	}
	if err != nil {
		return out, err
	}

	// The counters past every id copied: none is given again.
	var maxID, maxOut int64
	if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT max(id) FROM notifications), 0), coalesce((SELECT max(id) FROM outbox), 0)`).Scan(&maxID, &maxOut); err != nil {
		return out, err
	}
	out.Notification = max(s.Sequence, uint64(maxID))
	out.Outbox = max(s.OutboxSeq, uint64(maxOut))
	out.Cursor = s.Cursor
	for name, v := range map[string]uint64{"notification": out.Notification, "outbox": out.Outbox, "cursor": out.Cursor} {
		if _, err := tx.Exec(ctx, `UPDATE ipnd_counters SET value = $2 WHERE name = $1`, name, int64(v)); err != nil {
			return out, err
		}
	}

	// What the dashboard reads, made from the rows copied (dashboard.go).
	if err := fillDashboard(ctx, tx); err != nil {
		return out, err
	}
	if err := fillOutboxCounts(ctx, tx); err != nil {
		return out, err
	}

	// Verify: the rows in each table are the rows copied.
	for _, t := range dataTables {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t).Scan(&n); err != nil {
			return out, err
		}
		if n != want[t] {
			return out, fmt.Errorf("verify %s: %d rows in the database, %d copied: nothing was committed", t, n, want[t])
		}
		out.Tables = append(out.Tables, TableCount{Table: t, Rows: n})
	}
	if err := tx.Commit(ctx); err != nil {
		return Copied{}, fmt.Errorf("%w: commit: %v (the copy is committed or not at all: run migrate again, it refuses a database that has it)", ErrUnavailable, err)
	}
	return out, nil
}

// timeOrNil is t, or NULL when it is zero.
func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func sortedKeys[K string | uint64, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// errStopped ends a walk whose copy has failed.
var errStopped = errors.New("copy stopped")

// copyWalk copies into table the rows walk emits, with COPY, walking in
// a goroutine of its own (one at a time: the snapshot's transaction is
// used by that goroutine alone while the copy runs). It returns the rows
// copied.
func copyWalk(ctx context.Context, tx pgx.Tx, table string, cols []string, walk func(emit func(...any) error) error) (int64, error) {
	ch := make(chan []any, 256)
	done := make(chan struct{})
	walked := make(chan error, 1)
	go func() {
		defer close(ch)
		walked <- walk(func(row ...any) error {
			select {
			case ch <- row:
				return nil
			case <-done:
				return errStopped
			}
		})
	}()
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromFunc(func() ([]any, error) {
		row, ok := <-ch
		if !ok {
			return nil, nil
		}
		return row, nil
	}))
	close(done)
	for range ch {
	}
	if werr := <-walked; werr != nil && !errors.Is(werr, errStopped) {
		return n, werr
	}
	return n, err
}

// Export copies this database into w (a new bbolt database, see
// store.Import) from one read-only snapshot (REPEATABLE READ): a copy
// as of one moment, whatever runs meanwhile. It counts what it copied
// per table against the rows in the snapshot and fails unless each
// matches.
func (db *DB) Export(ctx context.Context, w *store.Importer) (Copied, error) {
	var out Copied
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	each := func(sql string, fn func(pgx.Rows) error) error {
		return queriedRows(ctx, tx)(sql, nil, fn)
	}
	copied := map[string]int64{}
	// Notifications with their processing records.
	err = each(`SELECT n.id, n.gateway, n.dedup_key, n.received_at, n.remote_addr, n.content_type, n.headers, n.body, n.body_sha256, n.purged_at, p.record
		FROM notifications n LEFT JOIN processing p USING (id) ORDER BY n.id`, func(r pgx.Rows) error {
		var id int64
		n := &ipn.Notification{}
		var headers, rec []byte
		var purged *time.Time
		if err := r.Scan(&id, &n.Gateway, textOf{&n.DedupKey}, &n.ReceivedAt, &n.RemoteAddr, textOf{&n.ContentType}, &headers, &n.Body, &n.BodySHA256, &purged, &rec); err != nil {
			return err
		}
		n.ID = uint64(id)
		n.ReceivedAt = n.ReceivedAt.UTC()
		if purged != nil {
			n.Purged = purged.UTC()
		}
		if err := decode(headers, &n.Headers, fmt.Sprintf("notification %d: headers", id)); err != nil {
			return err
		}
		p, err := decodeState(rec, n.ID)
		if err != nil {
			return err
		}
		copied["notifications"]++
		if p != nil {
			copied["processing"]++
		}
		return w.Notification(n, p)
	})
	if err == nil {
		err = each(`SELECT due, id, gateway FROM retries ORDER BY due, id`, func(r pgx.Rows) error {
			var due time.Time
			var id int64
			var gw string
			if err := r.Scan(&due, &id, &gw); err != nil {
				return err
			}
			copied["retries"]++
			return w.Retry(due, uint64(id), gw)
		})
	}
	if err == nil {
		err = each(`SELECT key, id FROM facts ORDER BY key`, func(r pgx.Rows) error {
			var k []byte
			var id int64
			if err := r.Scan(&k, &id); err != nil {
				return err
			}
			copied["facts"]++
			return w.Fact(string(k), uint64(id))
		})
	}
	if err == nil {
		err = each(`SELECT gateway, ref, order_id FROM payment_refs ORDER BY gateway, ref`, func(r pgx.Rows) error {
			var gw string
			var ref, order []byte
			if err := r.Scan(&gw, &ref, &order); err != nil {
				return err
			}
			copied["payment_refs"]++
			return w.Ref(gw, string(ref), string(order))
		})
	}
	if err == nil {
		err = each(`SELECT gateway, ref, id, parked FROM orphans ORDER BY gateway, ref, id`, func(r pgx.Rows) error {
			var gw string
			var ref, b []byte
			var id int64
			if err := r.Scan(&gw, &ref, &id, &b); err != nil {
				return err
			}
			var p ipn.Parked
			if err := decode(b, &p, fmt.Sprintf("orphan %d", id)); err != nil {
				return err
			}
			copied["orphans"]++
			return w.Orphan(gw, string(ref), uint64(id), p)
		})
	}
	if err == nil {
		err = each(`SELECT at, id, gateway, ref FROM parked_due ORDER BY at, id`, func(r pgx.Rows) error {
			var at time.Time
			var id int64
			var gw string
			var ref []byte
			if err := r.Scan(&at, &id, &gw, &ref); err != nil {
				return err
			}
			copied["parked_due"]++
			return w.ParkedDue(at, uint64(id), gw, string(ref))
		})
	}
	// Orders: the small ones as they come; the large ones' records after
	// (one query each: a connection runs one query at a time).
	var large []*store.ExportedOrder
	if err == nil {
		err = each(`SELECT id, record, tally FROM orders ORDER BY id`, func(r pgx.Rows) error {
			var id, rec, tally []byte
			if err := r.Scan(&id, &rec, &tally); err != nil {
				return err
			}
			o := &store.ExportedOrder{}
			if err := decode(rec, &o.Order, fmt.Sprintf("order %q", id)); err != nil {
				return err
			}
			copied["orders"]++
			if tally == nil {
				return w.Order(o)
			}
			o.Tally = new(ipn.Tally)
			if err := decode(tally, o.Tally, fmt.Sprintf("tally of order %q", id)); err != nil {
				return err
			}
			large = append(large, o)
			return nil
		})
	}
	for _, o := range large {
		if err != nil {
			break
		}
		err = exportRecords(ctx, tx, o, copied)
		if err == nil {
			err = w.Order(o)
		}
	}
	if err == nil {
		err = each(`SELECT record FROM subscriptions ORDER BY id`, func(r pgx.Rows) error {
			var b []byte
			if err := r.Scan(&b); err != nil {
				return err
			}
			s := new(ipn.Subscription)
			if err := decode(b, s, "subscription"); err != nil {
				return err
			}
			copied["subscriptions"]++
			return w.Subscription(s)
		})
	}
	if err == nil {
		err = each(`SELECT id, effect, delivery_id, notification, created_at, state, attempts, next_attempt, sent_at, last_error
			FROM outbox ORDER BY id`, func(r pgx.Rows) error {
			var id, notification int64
			var b []byte
			var it ipn.OutboxItem
			var next, sent *time.Time
			if err := r.Scan(&id, &b, &it.DeliveryID, &notification, &it.CreatedAt, &it.State, &it.Attempts, &next, &sent, &it.LastError); err != nil {
				return err
			}
			if err := decode(b, &it.Effect, fmt.Sprintf("outbox item %d", id)); err != nil {
				return err
			}
			it.ID, it.Notification, it.CreatedAt = uint64(id), uint64(notification), it.CreatedAt.UTC()
			if next != nil {
				it.NextAttempt = next.UTC()
			}
			if sent != nil {
				it.SentAt = sent.UTC()
			}
			copied["outbox"]++
			return w.Outbox(&it)
		})
	}
	if err == nil {
		err = each(`SELECT outbox_id, seq, attempt FROM outbox_attempts ORDER BY outbox_id, seq`, func(r pgx.Rows) error {
			var id, seq int64
			var b []byte
			if err := r.Scan(&id, &seq, &b); err != nil {
				return err
			}
			var a ipn.OutboxAttempt
			if err := decode(b, &a, fmt.Sprintf("attempt %d of outbox item %d", seq, id)); err != nil {
				return err
			}
			copied["outbox_attempts"]++
			return w.Attempt(uint64(id), uint64(seq), a)
		})
	}
	if err == nil {
		err = each(`SELECT key, record FROM idempotency ORDER BY key`, func(r pgx.Rows) error {
			var k, b []byte
			if err := r.Scan(&k, &b); err != nil {
				return err
			}
			var use record.KeyUse
			if err := decode(b, &use, fmt.Sprintf("idempotency key %q", k)); err != nil {
				return err
			}
			copied["idempotency"]++
			return w.Key(string(k), use)
		})
	}
	if err == nil {
		err = exportFulfilment(ctx, tx, w, copied) // fulfil_migrate.go
	}
	if err != nil {
		return out, err
	}
	var seq, cursor, outSeq int64
	if err := tx.QueryRow(ctx, `SELECT (SELECT value FROM ipnd_counters WHERE name = 'notification'), (SELECT value FROM ipnd_counters WHERE name = 'cursor'),
		(SELECT value FROM ipnd_counters WHERE name = 'outbox')`).Scan(&seq, &cursor, &outSeq); err != nil {
		return out, err
	}
	out.Notification, out.Cursor, out.Outbox = uint64(seq), uint64(cursor), uint64(outSeq)
	if err := w.Counters(out.Notification, out.Cursor, out.Outbox); err != nil {
		return out, err
	}
	// Verify: the rows of each table in the snapshot are the rows copied,
	// and the new database holds them.
	for _, t := range dataTables {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t).Scan(&n); err != nil {
			return out, err
		}
		if n != copied[t] {
			return out, fmt.Errorf("verify %s: %d rows in the database, %d copied", t, n, copied[t])
		}
		if got := w.Count(t); got >= 0 && int64(got) != n {
			return out, fmt.Errorf("verify %s: %d rows in PostgreSQL, %d records in the new database", t, n, got)
		}
		out.Tables = append(out.Tables, TableCount{Table: t, Rows: n})
	}
	return out, nil
}

// exportRecords reads large order o's facts, fact keys, history, tally
// records and one-off index into it.
func exportRecords(ctx context.Context, tx pgx.Tx, o *store.ExportedOrder, copied map[string]int64) error {
	oid := []byte(o.Order.ID)
	o.Facts, o.FactKeys, o.History, o.Groups = map[uint64]ipn.OrderFact{}, map[string]uint64{}, map[uint64]ipn.OrderChange{}, map[string]ipn.Group{}
	rows := queriedRows(ctx, tx)
	err := rows(`SELECT seq, fact FROM order_facts WHERE order_id = $1`, []any{oid}, func(r pgx.Rows) error {
		var seq int64
		var b []byte
		var f ipn.OrderFact
		if err := r.Scan(&seq, &b); err != nil {
			return err
		}
		if err := decode(b, &f, fmt.Sprintf("fact %d of order %q", seq, oid)); err != nil {
			return err
		}
		copied["order_facts"]++
		o.Facts[uint64(seq)] = f
		return nil
	})
	if err == nil {
		err = rows(`SELECT key, seq FROM order_fact_keys WHERE order_id = $1`, []any{oid}, func(r pgx.Rows) error {
			var k []byte
			var seq int64
			if err := r.Scan(&k, &seq); err != nil {
				return err
			}
			copied["order_fact_keys"]++
			o.FactKeys[string(k)] = uint64(seq)
			return nil
		})
	}
	if err == nil {
		err = rows(`SELECT seq, change FROM order_history WHERE order_id = $1`, []any{oid}, func(r pgx.Rows) error {
			var seq int64
			var b []byte
			var h ipn.OrderChange
			if err := r.Scan(&seq, &b); err != nil {
				return err
			}
			if err := decode(b, &h, fmt.Sprintf("change %d of order %q", seq, oid)); err != nil {
				return err
			}
			copied["order_history"]++
			o.History[uint64(seq)] = h
			return nil
		})
	}
	if err == nil {
		err = rows(`SELECT key, grp FROM order_groups WHERE order_id = $1`, []any{oid}, func(r pgx.Rows) error {
			var k, b []byte
			var g ipn.Group
			if err := r.Scan(&k, &b); err != nil {
				return err
			}
			if err := decode(b, &g, fmt.Sprintf("tally record %q of order %q", k, oid)); err != nil {
				return err
			}
			copied["order_groups"]++
			o.Groups[string(k)] = g
			return nil
		})
	}
	if err == nil {
		err = rows(`SELECT key, amount, grp FROM order_oneoffs WHERE order_id = $1 ORDER BY key`, []any{oid}, func(r pgx.Rows) error {
			var e store.ExportedOneOff
			var grp []byte
			if err := r.Scan(&e.Key, &e.Amount, &grp); err != nil {
				return err
			}
			e.Group = string(grp)
			copied["order_oneoffs"]++
			o.OneOffs = append(o.OneOffs, e)
			return nil
		})
	}
	return err
}
