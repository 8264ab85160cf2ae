// Package store keeps all of ipnd's state in one bbolt file.
//
// Bucket layout (created when the file is opened):
//
//	meta   "schema" -> uint64 big-endian schema version; "created" -> RFC 3339;
//	       "wal" -> first id of the newest journal segment (absent after a
//	       clean stop); "wal2" -> first id of the first segment in format 2
//	lost   first id of a range -> JSON LostRange (ipnd recover --skip-damaged)
//	log    id (uint64 big-endian, 1, 2, 3, ...; the bucket's sequence is the newest) ->
//	       encoded raw notification (see record.go). Append-only: a key is
//	       written once and never changed or reused.
//	dedup  gateway + 0x00 + gateway's message id -> log id of the first copy
//	state  log id -> JSON ipn.Processing; absent means "received"
//	retry  due unix-nano + log id -> nothing: verification retries and replays
//	events payment-fact key (gateway, txn, type, status, amount) -> log id
//	       that applied it; a later notification of the same fact is a duplicate
//	meta "cursor" -> every log id up to it was processed or scheduled
//	orders, order_counts, subscriptions: order state (JSON) and counts by status
//	       (all orders; "test" NUL status: the test orders among them)
//	orders_by_change updated_at (unix nano, 8) + order id -> nothing: orders
//	       by last change (ListOrders), filled at open for older files
//	order_records  an order's facts, history and running tally past a few
//	       facts, under its id's prefix (orderlog.go): an event reads and
//	       writes a few of them, whatever the order's length
//	outbox id -> JSON ipn.OutboxItem as queued (written once);
//	       outbox_state id -> its state (attempts, next due, last error,
//	       state; a compact binary record, outboxstate.go), which a
//	       delivery result rewrites; outbox_cause effect cause -> id (a
//	       cause is queued once); outbox_due lane (effect kind) + 0x00 +
//	       due + id of pending items (each lane scans its own);
//	       outbox_counts state + kind -> count
//	outbox_attempts id + sequence -> JSON ipn.OutboxAttempt, the last 20
//	       delivery attempts of each item (attempts.go)
//	idempotency Idempotency-Key -> JSON record of the decision it made;
//	       idempotency_age recorded at + key, for expiry (decisions.go)
//
// Appends are group-committed to a write-ahead journal (journal.go)
// without a timer and without a writer goroutine: the Append that finds no
// commit running writes its record at once; the Appends that arrive
// meanwhile queue, and the first of them then writes the whole queue with
// one write and one fdatasync. Append returns only after its own record is
// synced. The applier goroutine copies journaled records into the log and
// dedup buckets; Open applies what a crash left in the journal; reads wait
// for the applier (settle), so they see every acknowledged record.
//
// What a decision reads and what it decided are read and written by
// ipnd/record, which drives the transaction (Finish, ExpireParked: look
// up, ipn.Decide, write, adopt parked events) through record.Tx; boltTx
// (tx.go) is record.Tx over a *bolt.Tx, each method one of the functions
// that keep the buckets above. The store decides nothing.
//
// Invariants: ids strictly increase and are never reused (not even those
// of a torn journal tail, which never got an answer); a raw record
// never changes; one bbolt Update per business fact.
package store
