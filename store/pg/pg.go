// Package pg is ipnd's PostgreSQL store (SPEC §12, `[store] backend =
// "postgres"`). This part opens the database, creates and migrates its schema, and
// ingests notifications with group commit. A 200 means the row has
// committed; ids are positive and strictly increasing in commit order,
// also with several ipnd processes on one database (the id counter's row
// lock serializes the allocating transactions, and a transaction commits
// before the next one can allocate).
//
// The pipeline runs on it through Journal (journal.go), in the process
// that leads (leader.go): record.Finish, record.Attach and
// record.ExpireParked drive pgTx (tx.go), a transaction as record.Tx,
// with the bbolt store's semantics, fenced by the lease's epoch. The
// outbox worker runs on it through Deliveries (outbox.go, notify.Outbox):
// due items by lane, an order's callbacks one at a time in queue order,
// results recorded fenced by the same epoch, woken by a NOTIFY from the
// transaction that queued. The dashboard's reads are Dashboard
// (dashboard.go): notifications by gateway, state and identifier (schema
// 5's notification_terms, written with the processing record), orders,
// subscriptions, the outbox; the operator's replays, retries, discards
// and resends of outbox items (outboxadmin.go) and retention
// (retention.go), from any process; Stats and the live event stream
// (live.go: the committing transactions NOTIFY their events, each
// process LISTENs, so a follower of any process sees every commit);
// fulfilment (download links, license keys: fulfil.go), recorded by the
// pipeline's transaction.
//
// The admin API's decisions on orders and its order writes are
// Dashboard's too (decisions.go): record.Decide, as on bbolt, in a
// transaction of any process, the order's row locked for it.
//
// ipnd migrate copies a stopped bbolt store into an empty database
// (Import) and a database into a new bbolt file (Export), each from one
// consistent snapshot and verified per table (migrate.go).
package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/store"
)

// SchemaVersion is the newest schema this binary knows.
const SchemaVersion = 9

// ErrUnavailable wraps every failure to reach or use the database: the
// receiver answers 503 and the gateway retries.
// It is a store.ErrUnavailable (errors.Is), which the admin API answers
// with 503.
var ErrUnavailable error = unavailableError{}

type unavailableError struct{}

func (unavailableError) Error() string        { return "postgres unavailable" }
func (unavailableError) Is(target error) bool { return target == store.ErrUnavailable }

// ErrNewerSchema is returned by Open when the database was written by a
// newer ipnd.
var ErrNewerSchema = errors.New("database schema is newer than this ipnd")

// migrations[i] takes the schema from version i to i+1, in one
// transaction with the version update.
var migrations = []string{
	`CREATE TABLE ipnd_counters (name text PRIMARY KEY, value bigint NOT NULL);
	 INSERT INTO ipnd_counters VALUES ('notification', 0);
	 CREATE TABLE notifications (
		id           bigint PRIMARY KEY CHECK (id > 0),
		gateway      text NOT NULL,
		dedup_key    text NOT NULL DEFAULT '',
		received_at  timestamptz NOT NULL,
		remote_addr  text NOT NULL DEFAULT '',
		content_type text NOT NULL DEFAULT '',
		headers      jsonb NOT NULL DEFAULT '{}',
		body         bytea,
		body_sha256  text NOT NULL DEFAULT '',
		purged_at    timestamptz,
		state        text NOT NULL DEFAULT 'received'
	 );
	 CREATE UNIQUE INDEX notifications_dedup ON notifications (gateway, dedup_key) WHERE dedup_key <> '';
	 CREATE INDEX notifications_received ON notifications (id) WHERE state = 'received';`,
	// 2: the pipeline leader's lease (leader.go).
	`CREATE TABLE ipnd_leader (
		id         int PRIMARY KEY CHECK (id = 1),
		holder     text NOT NULL DEFAULT '',
		epoch      bigint NOT NULL DEFAULT 0,
		expires_at timestamptz NOT NULL DEFAULT '-infinity'
	 );
	 INSERT INTO ipnd_leader (id) VALUES (1);`,
	// 3: the pipeline's state (tx.go). Keys that come from requests
	// (order ids, payment references, fact keys, causes) are bytea: text
	// refuses the NUL byte, which event keys hold. Records are json, not
	// jsonb: jsonb refuses the escape \u0000, which the encoding of such
	// a key (OrderFact.Key) or of a request's string holds, and json keeps
	// the text as written (what is queried has a column of its own).
	`INSERT INTO ipnd_counters VALUES ('cursor', 0), ('outbox', 0);
	 CREATE TABLE processing (
		id     bigint PRIMARY KEY REFERENCES notifications (id),
		state  text NOT NULL,
		record json NOT NULL
	 );
	 CREATE TABLE retries (
		due     timestamptz NOT NULL,
		id      bigint NOT NULL,
		gateway text NOT NULL DEFAULT '',
		PRIMARY KEY (due, id)
	 );
	 CREATE INDEX retries_id ON retries (id);
	 CREATE INDEX retries_gateway ON retries (gateway, id);
	 CREATE TABLE facts (key bytea PRIMARY KEY, id bigint NOT NULL);
	 CREATE TABLE payment_refs (
		gateway  text NOT NULL,
		ref      bytea NOT NULL,
		order_id bytea NOT NULL,
		PRIMARY KEY (gateway, ref)
	 );
	 CREATE TABLE orphans (
		gateway text NOT NULL,
		ref     bytea NOT NULL,
		id      bigint NOT NULL,
		parked  json NOT NULL,
		PRIMARY KEY (gateway, ref, id)
	 );
	 CREATE TABLE parked_due (
		at      timestamptz NOT NULL,
		id      bigint NOT NULL,
		gateway text NOT NULL,
		ref     bytea NOT NULL,
		PRIMARY KEY (at, id)
	 );
	 CREATE TABLE orders (
		id         bytea PRIMARY KEY,
		status     text NOT NULL,
		test       boolean NOT NULL DEFAULT false,
		updated_at timestamptz NOT NULL,
		record     json NOT NULL,
		tally      json
	 );
	 CREATE INDEX orders_status ON orders (status, updated_at, id);
	 CREATE INDEX orders_changed ON orders (updated_at, id);
	 CREATE TABLE order_facts (
		order_id bytea NOT NULL,
		seq      bigint NOT NULL,
		fact     json NOT NULL,
		PRIMARY KEY (order_id, seq)
	 );
	 CREATE TABLE order_fact_keys (
		order_id bytea NOT NULL,
		key      bytea NOT NULL,
		seq      bigint NOT NULL,
		PRIMARY KEY (order_id, key)
	 );
	 CREATE TABLE order_history (
		order_id bytea NOT NULL,
		seq      bigint NOT NULL,
		change   json NOT NULL,
		PRIMARY KEY (order_id, seq)
	 );
	 CREATE TABLE order_groups (
		order_id bytea NOT NULL,
		key      bytea NOT NULL,
		grp      json NOT NULL,
		PRIMARY KEY (order_id, key)
	 );
	 CREATE TABLE order_oneoffs (
		order_id bytea NOT NULL,
		key      bytea NOT NULL,
		amount   text NOT NULL,
		grp      bytea NOT NULL,
		PRIMARY KEY (order_id, key)
	 );
	 CREATE TABLE subscriptions (
		id     bytea PRIMARY KEY,
		status text NOT NULL,
		record json NOT NULL
	 );
	 CREATE TABLE outbox (
		id           bigint PRIMARY KEY,
		kind         text NOT NULL,
		order_id     bytea NOT NULL,
		cause        bytea NOT NULL UNIQUE,
		notification bigint NOT NULL,
		effect       json NOT NULL,
		delivery_id  text NOT NULL,
		created_at   timestamptz NOT NULL,
		state        text NOT NULL,
		attempts     int NOT NULL DEFAULT 0,
		next_attempt timestamptz,
		sent_at      timestamptz,
		last_error   text NOT NULL DEFAULT ''
	 );
	 CREATE INDEX outbox_due ON outbox (kind, next_attempt, id) WHERE state = 'pending';
	 CREATE INDEX outbox_order ON outbox (kind, order_id, id) WHERE state = 'pending';
	 CREATE INDEX outbox_notification ON outbox (notification);`,
	// 4: the delivery attempts of each outbox item, the last attemptsKept
	// (outbox.go), as the bbolt store's outbox_attempts.
	`CREATE TABLE outbox_attempts (
		outbox_id bigint NOT NULL,
		seq       bigint NOT NULL,
		attempt   json NOT NULL,
		PRIMARY KEY (outbox_id, seq)
	 );`,
	// 5: the dashboard's reads (dashboard.go). notification_terms: the
	// identifiers each notification's event names (txn id, parent txn,
	// order id, customer email, event id, subscription id), lower-cased
	// and hashed as the bbolt store's (the email stays out of the index),
	// written with the processing record (pgTx.PutState). A database at
	// schema 4 gets its terms and counts from its records by Open
	// (fillDashboard), not by this statement. notification_hours: per
	// gateway and hour of arrival, the notifications the pipeline has
	// recorded and how many of them are applied and invalid (the
	// overview's charts), moved with the processing record. order_counts:
	// the orders per status, test orders apart, moved with the order.
	`CREATE TABLE notification_terms (
		term bytea NOT NULL,
		id   bigint NOT NULL,
		PRIMARY KEY (term, id)
	 );
	 CREATE INDEX notification_terms_id ON notification_terms (id);
	 CREATE INDEX notifications_gateway ON notifications (gateway, id);
	 CREATE INDEX notifications_state ON notifications (state, id);
	 CREATE INDEX notifications_gateway_state ON notifications (gateway, state, id);
	 CREATE INDEX notifications_received_at ON notifications (received_at, id);
	 CREATE INDEX outbox_order_all ON outbox (order_id, id);
	 CREATE INDEX outbox_state ON outbox (state, id);
	 CREATE TABLE notification_hours (
		gateway  text NOT NULL,
		hour     timestamptz NOT NULL,
		received bigint NOT NULL DEFAULT 0,
		applied  bigint NOT NULL DEFAULT 0,
		invalid  bigint NOT NULL DEFAULT 0,
		PRIMARY KEY (gateway, hour)
	 );
	 CREATE TABLE order_counts (
		test   boolean NOT NULL,
		status text NOT NULL,
		n      bigint NOT NULL,
		PRIMARY KEY (test, status)
	 );`,
	// 6: retention (retention.go). ipnd_purge: where retention's last
	// pass stopped in each table (the last id, or order or subscription
	// id, looked at). (The Idempotency-Keys of resends are the
	// decisions', migration 7.)
	`CREATE TABLE IF NOT EXISTS ipnd_purge (
		name text PRIMARY KEY,
		id   bigint NOT NULL DEFAULT 0,
		key  bytea
	 );
	 INSERT INTO ipnd_purge (name) VALUES ('notifications'), ('outbox'), ('orders'), ('subscriptions')
	 ON CONFLICT DO NOTHING;`,
	// 7: the Idempotency-Keys of the admin API's decisions (decisions.go)
	// and of resends of outbox items (outboxadmin.go, under
	// "outbox/<id>"), as the bbolt store's idempotency bucket: the key,
	// when it was used (expiry), and the JSON record.KeyUse.
	// (IF NOT EXISTS: a database taken back to an older version by hand
	// keeps it.)
	`CREATE TABLE IF NOT EXISTS idempotency (
		key    bytea PRIMARY KEY,
		at     timestamptz NOT NULL,
		record json NOT NULL
	 );
	 CREATE INDEX IF NOT EXISTS idempotency_at ON idempotency (at);`,
	// 8: the fulfilment's tables (fulfil.go), as the bbolt store's buckets:
	// fulfilments, what each order was delivered (fulfil.Record);
	// dl_tokens, the hash of each download token and the delivery it
	// opens; licenses by the hash of their key (fulfil.License);
	// license_pool, each pool product's position in its pool file;
	// license_pool_used, the pool keys handed out (kept when a test order
	// is deleted: never handed out again); license_signing, the Ed25519
	// key that signs license_format = "signed" keys, shared by every ipnd
	// on the database (seed: its private half, created once; pub: the
	// public key the keys issued so far were signed with).
	`CREATE TABLE fulfilments (
		order_id bytea PRIMARY KEY,
		record   json NOT NULL
	 );
	 CREATE TABLE dl_tokens (
		token_hash text PRIMARY KEY,
		order_id   bytea NOT NULL,
		idx        int NOT NULL
	 );
	 CREATE INDEX dl_tokens_order ON dl_tokens (order_id);
	 CREATE TABLE licenses (
		hash     text PRIMARY KEY,
		order_id bytea NOT NULL,
		record   json NOT NULL
	 );
	 CREATE INDEX licenses_order ON licenses (order_id);
	 CREATE TABLE license_pool (
		product text PRIMARY KEY,
		pos     bigint NOT NULL
	 );
	 CREATE TABLE license_pool_used (
		hash     text PRIMARY KEY,
		order_id bytea NOT NULL
	 );
	 CREATE TABLE license_signing (
		id   int PRIMARY KEY CHECK (id = 1),
		seed bytea,
		pub  bytea
	 );
	 INSERT INTO license_signing (id) VALUES (1);`,
	// 9: outbox_counts, the number of outbox items per state and kind
	// (Dashboard.OutboxCounts, the metrics' ipnd_outbox_*), moved by the
	// transactions that queue items or change their state (txCounts),
	// filled here from the items.
	`CREATE TABLE outbox_counts (
		state text NOT NULL,
		kind  text NOT NULL,
		n     bigint NOT NULL,
		PRIMARY KEY (state, kind)
	 );
	 INSERT INTO outbox_counts SELECT state, kind, count(*) FROM outbox GROUP BY 1, 2;`,
}

// migrationFills[v] fills, in the transaction of migration v, what its
// statements cannot compute (in Go, as the writers do).
var migrationFills = map[int]func(context.Context, pgx.Tx) error{
	5: fillDashboard, // dashboard.go
}

// Options tune a DB; the zero value is usable.
type Options struct {
	MaxBatch int           // notifications per ingest transaction (default 256)
	Timeout  time.Duration // per ingest transaction, connecting included (default 5s)
	// OnCommit, when set, is called after each ingest transaction that
	// committed new notifications, with its duration and their number
	// (ipnd_store_commit_duration_seconds, as the bbolt store's).
	OnCommit func(took time.Duration, records int)
}

// DB is an open PostgreSQL store.
type DB struct {
	pool *pgxpool.Pool
	// ingest is the group commit's and the probe's own pool (2
	// connections), so that slow reads or the pipeline holding every
	// connection of pool neither delay a 200 nor make ingest answer 503.
	ingest *pgxpool.Pool
	opts   Options

	// The pipeline's settings (tx.go): the outbox kinds queued, how long
	// an event may stay parked, the products delivered, and the
	// random part of the delivery ids queued while the database is open.
	kinds   atomic.Pointer[map[string]bool]
	parkFor atomic.Int64
	catalog atomic.Pointer[fulfil.Catalog] // fulfil.go
	runID   string

	health health                      // Writable's (health.go)
	live   liveFeed                    // the live event stream's followers and listener (live.go)
	stats  atomic.Pointer[store.Stats] // the last Stats read (live.go)

	mu         sync.Mutex
	queue      []*appendReq
	committing bool
	closed     bool
}

type appendReq struct {
	n      *ipn.Notification
	id     uint64
	dup    bool
	err    error
	signal chan bool // true: promoted to commit the queue
}

// Open connects to dsn (libpq key/value or URL), creates or migrates the
// schema and refuses a database newer than this binary.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store.dsn: %s", dsnParseError(err))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > opts.Timeout {
		cfg.ConnConfig.ConnectTimeout = opts.Timeout
	}
	icfg := cfg.Copy()
	icfg.MaxConns, icfg.MinConns, icfg.MinIdleConns = 2, 0, 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	ingest, err := pgxpool.NewWithConfig(ctx, icfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	db := &DB{pool: pool, ingest: ingest, opts: opts, runID: newRunID()}
	if err := db.migrate(ctx); err != nil {
		ingest.Close()
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Close waits for the commit in progress and closes the pool.
func (db *DB) Close() {
	db.mu.Lock()
	db.closed = true
	db.mu.Unlock()
	db.live.close()
	db.ingest.Close()
	db.pool.Close()
}

// refusedForGood reports whether the server refused the connection for
// a reason that waiting does not mend: the role or its password (class
// 28), a database that does not exist (3D). Not: the server starting up
// or shutting down (57P0x), too many connections (53300), the network.
func refusedForGood(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "28") || strings.HasPrefix(pgErr.Code, "3D"))
}

// migrate brings the schema to SchemaVersion. Concurrent starts of
// several processes serialize on an advisory lock.
func (db *DB) migrate(ctx context.Context) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		if refusedForGood(err) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer conn.Release()
	const lockKey = 0x69706e64 // "ipnd"
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS ipnd_schema (version int NOT NULL)`); err != nil {
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "25006" {
			return fmt.Errorf("the database takes no writes (a standby, or default_transaction_read_only): ipnd needs the primary; with several hosts in the DSN add target_session_attrs=read-write (%w)", err)
		}
		return fmt.Errorf("create ipnd_schema: %w", err)
	}
	var v int
	err = conn.QueryRow(ctx, `SELECT version FROM ipnd_schema`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := conn.Exec(ctx, `INSERT INTO ipnd_schema VALUES (0)`); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("%w: the database is at schema version %d, this binary knows up to %d: run the newer ipnd, or restore a backup taken before the upgrade", ErrNewerSchema, v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("migrate the schema to version %d: %w", v+1, err)
		}
		if fill := migrationFills[v+1]; fill != nil {
			if err := fill(ctx, tx); err != nil {
				tx.Rollback(ctx)
				return fmt.Errorf("migrate the schema to version %d: %w", v+1, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE ipnd_schema SET version = $1`, v+1); err != nil {
			tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("migrate the schema to version %d: %w", v+1, err)
		}
	}
	return nil
}

// Append stores n and returns its id, or the id of the notification
// already stored with the same gateway and dedup key (dup). It returns
// only after the row has committed. Group commit as in the bbolt store:
// the caller that finds no commit running commits at once; callers
// arriving meanwhile queue and the first of them commits the queue.
func (db *DB) Append(ctx context.Context, n *ipn.Notification) (uint64, bool, error) {
	r := &appendReq{n: n, signal: make(chan bool, 1)}
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return 0, false, fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	db.queue = append(db.queue, r)
	if db.committing {
		db.mu.Unlock()
		if promoted := <-r.signal; !promoted {
			return r.id, r.dup, r.err
		}
		db.mu.Lock()
	}
	db.committing = true
	k := min(len(db.queue), db.opts.MaxBatch)
	batch := db.queue[:k:k]
	db.queue = append([]*appendReq(nil), db.queue[k:]...)
	db.mu.Unlock()

	err := db.commit(batch)
	db.noteAppend(len(batch), err)
	for _, b := range batch {
		if err != nil {
			b.id, b.dup, b.err = 0, false, err
		}
		if b != r {
			b.signal <- false
		}
	}
	db.mu.Lock()
	if len(db.queue) > 0 {
		db.queue[0].signal <- true
	} else {
		db.committing = false
	}
	db.mu.Unlock()
	return r.id, r.dup, r.err
}

// commit writes one batch in one transaction. The request's own context
// is not used: a gateway hanging up must not abort the batch of others.
func (db *DB) commit(batch []*appendReq) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), db.opts.Timeout)
	defer cancel()
	conn, err := db.ingest.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	// The transaction's statements go in two pipelines (pgx.Batch), one
	// round trip each: BEGIN, the counter and the dedup read; then the
	// rows, the counter, the NOTIFY and the COMMIT. A connection left
	// in a transaction by an error is rolled back here (or, if that
	// fails, closed by the pool on Release).
	committed := false
	defer func() {
		if !committed && !conn.Conn().IsClosed() && conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, rcancel := context.WithTimeout(context.Background(), db.opts.Timeout)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			rcancel()
		}
		conn.Release()
	}()
	// Duplicates of stored notifications, then within the batch.
	var gws, keys []string
	for _, b := range batch {
		if b.n.DedupKey != "" {
			gws, keys = append(gws, b.n.Gateway), append(keys, dedupText(b.n.DedupKey))
		}
	}
	read := &pgx.Batch{}
	read.Queue(`BEGIN`)
	// The counter row's lock is held to the commit: allocating
	// transactions of every process commit in id order.
	read.Queue(`SELECT value FROM ipnd_counters WHERE name = 'notification' FOR UPDATE`)
	if len(keys) > 0 {
		read.Queue(`SELECT n.gateway, n.dedup_key, n.id FROM notifications n
			JOIN unnest($1::text[], $2::text[]) AS k(gateway, dedup_key) USING (gateway, dedup_key)
			WHERE n.dedup_key <> ''`, gws, keys)
	}
	var next int64
	seen := map[[2]string]uint64{}
	if err := readBatch(conn.SendBatch(ctx, read), len(keys) > 0, &next, seen); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var (
		ids                             []int64
		gateways, dedups, addrs, ctypes []string
		received                        []time.Time
		headerss, bodies                [][]byte
		live                            []store.LiveEvent
	)
	for _, b := range batch {
		key := [2]string{b.n.Gateway, dedupText(b.n.DedupKey)}
		if b.n.DedupKey != "" {
			if id, ok := seen[key]; ok {
				b.id, b.dup = id, true
				continue
			}
		}
		next++
		b.id, b.dup = uint64(next), false
		if b.n.DedupKey != "" {
			seen[key] = b.id
		}
		headers, err := json.Marshal(b.n.Headers)
		if err != nil {
			return err
		}
		ids, gateways, dedups = append(ids, int64(b.id)), append(gateways, b.n.Gateway), append(dedups, key[1])
		received, addrs, ctypes = append(received, b.n.ReceivedAt), append(addrs, b.n.RemoteAddr), append(ctypes, toText(b.n.ContentType))
		headerss, bodies = append(headerss, headers), append(bodies, b.n.Body)
		live = append(live, store.StoredEvent(b.id, b.n))
	}
	write := &pgx.Batch{}
	if len(ids) > 0 {
		write.Queue(`INSERT INTO notifications (id, gateway, dedup_key, received_at, remote_addr, content_type, headers, body)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::jsonb[], $8::bytea[])`,
			ids, gateways, dedups, received, addrs, ctypes, headerss, bodies)
		write.Queue(`UPDATE ipnd_counters SET value = $1 WHERE name = 'notification'`, next)
		// The leader's pipeline is woken when this commits (Journal.Wake),
		// and every process's followers hear of them (live.go).
		chans, ps := ingestNotifies(live)
		write.Queue(notifySQL, chans, ps)
	}
	write.Queue(`COMMIT`)
	if err := commitBatch(conn.SendBatch(ctx, write), write.Len()); err != nil {
		// The outcome of a failed COMMIT is unknown: the rows may have
		// committed. The gateway's retry is then a duplicate, answered
		// with the stored id; nothing is stored twice.
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	committed = true
	if db.opts.OnCommit != nil && len(ids) > 0 {
		func() {
			defer func() { _ = recover() }() // an observer must not stop ingest
			db.opts.OnCommit(time.Since(start), len(ids))
		}()
	}
	return nil
}

// readBatch reads the results of commit's first pipeline: BEGIN, the
// counter's value into next and, when dedup, the stored notifications
// of the batch's dedup keys into seen (keys as the column has them:
// dedupText).
func readBatch(br pgx.BatchResults, dedup bool, next *int64, seen map[[2]string]uint64) error {
	err := func() error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(next); err != nil {
			return err
		}
		if !dedup {
			return nil
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g, k string
			var id int64
			if err := rows.Scan(&g, &k, &id); err != nil {
				return err
			}
			seen[[2]string{g, k}] = uint64(id)
		}
		return rows.Err()
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// commitBatch reads the results of commit's second pipeline, n
// statements of which the last is the COMMIT. An error in one skips
// the rest (the server ignores them to the pipeline's end), so the
// COMMIT ran only if every statement before it succeeded; it is
// checked to have committed (not "ROLLBACK").
func commitBatch(br pgx.BatchResults, n int) error {
	err := func() error {
		for i := 0; i < n-1; i++ {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		if tag.String() != "COMMIT" {
			return fmt.Errorf("commit: %s", tag)
		}
		return nil
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get returns the stored notification id.
func (db *DB) Get(ctx context.Context, id uint64) (*ipn.Notification, ipn.State, error) {
	n := &ipn.Notification{ID: id}
	var headers []byte
	var state string
	var purged *time.Time
	err := db.pool.QueryRow(ctx, `SELECT gateway, dedup_key, received_at, remote_addr, content_type, headers, body, body_sha256, purged_at, state
		FROM notifications WHERE id = $1`, int64(id)).Scan(&n.Gateway, textOf{&n.DedupKey}, &n.ReceivedAt, &n.RemoteAddr, textOf{&n.ContentType}, &headers, &n.Body, &n.BodySHA256, &purged, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", ipn.ErrNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if purged != nil {
		n.Purged = *purged
	}
	if err := json.Unmarshal(headers, &n.Headers); err != nil {
		return nil, "", fmt.Errorf("notification %d: headers: %w", id, err)
	}
	return n, ipn.State(state), nil
}
