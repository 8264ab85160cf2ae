package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

var (
	bucketRetry  = []byte("retry")  // due unix-nano (8) + id (8) -> the notification's gateway ("" in older records)
	bucketEvents = []byte("events") // ipn.Outcome.EventKey -> id of the notification that applied it
	keyCursor    = []byte("cursor") // in meta: every id <= cursor has been processed or scheduled
	// bucketRetryGateway indexes the retry entries by gateway: gateway +
	// 0x00 + id (8) -> the retry key, so that the oldest notification
	// scheduled of each gateway is one seek away (the lag per gateway is
	// read on every scrape and /healthz, while a hanging verify URL can
	// hold many thousands). Made, from the retry entries, by the first
	// write that schedules or ends a retry (see retryIndex).
	bucketRetryGateway = []byte("retry_gateway")
)

// Wake returns a channel that receives a value after new notifications are
// committed or a replay is requested. There is one such channel: it is
// meant for the single pipeline.
func (db *DB) Wake() <-chan struct{} { return db.wake }

func (db *DB) poke() {
	select {
	case db.wake <- struct{}{}:
	default:
	}
}

// Pending returns up to max notifications to process: the first ones
// after the cursor (Fresh), skipping none, then retries and replays due at
// now. Fresh ones already settled (final, or with a retry scheduled later:
// recorded out of order, or before a crash moved the cursor) are returned
// too when they precede the first unsettled one, without counting toward
// max, so the caller can move the cursor past them; Finish does not apply
// them again.
func (db *DB) Pending(now time.Time, max int) ([]ipn.Work, error) {
	return db.PendingExcept(now, max, nil)
}

// skip, given to PendingExcept and NextDueExcept, names the due retries
// to leave where they are (the pipeline's: one being verified now, or
// one whose gateway takes no postback now or is not configured). gateway
// and id name the notification; state reads its processing record (nil
// when it does not decode).

// skipScan bounds how many due retries one call asks skip about and
// passes over: past them, the retries of a gateway skip named already in
// the call are passed over without asking (a key each, no record read),
// so that the retries and replays of other gateways are still reached
// behind the many thousands a hanging verify URL can hold.
const skipScan = 4096

// retrySkip asks skip about the due retries of one call, in due order
// (see skipScan). nil skip leaves out nothing.
type retrySkip struct {
	tx      *bolt.Tx
	skip    func(gateway string, id uint64, state func() *ipn.Processing) bool
	skipped int
	held    map[string]bool // gateways skip named in this call
}

// leave reports whether the retry entry k (value v) stays where it is.
func (r *retrySkip) leave(k, v []byte) bool {
	if r.skip == nil {
		return false
	}
	gw := retryGatewayOf(r.tx, k, v)
	if r.skipped >= skipScan && r.held[gw] {
		return true
	}
	if !skipRetry(r.tx, r.skip, gw, binary.BigEndian.Uint64(k[8:])) {
		return false
	}
	if r.held == nil {
		r.held = map[string]bool{}
	}
	r.skipped++
	r.held[gw] = true
	return true
}

// PendingExcept is Pending, leaving out the due retries skip names
// (they do not count toward max). Fresh notifications are never left out.
func (db *DB) PendingExcept(now time.Time, max int, skip func(gateway string, id uint64, state func() *ipn.Processing) bool) ([]ipn.Work, error) {
	db.settle()
	var out []ipn.Work
	err := db.bolt.View(func(tx *bolt.Tx) error {
		cursor := getU64(tx.Bucket(bucketMeta).Get(keyCursor))
		c := tx.Bucket(bucketLog).Cursor()
		// Only unsettled ones count toward max. Settled ones (finished,
		// or waiting for a retry) are returned only before the first
		// unsettled one: the caller moves the cursor over them. Behind a
		// notification still being verified, those settled meanwhile are
		// skipped, so they do not fill the window (64 × max are scanned
		// at most).
		todo, scanned, blocked := 0, 0, false
		for k, v := c.Seek(u64(cursor + 1)); k != nil && todo < max && scanned < 64*max; k, v = c.Next() {
			scanned++
			id := binary.BigEndian.Uint64(k)
			p, err := stateOf(tx, id)
			if errors.Is(err, ErrCorrupt) {
				p = nil // taken as received: Finish records it as failed (finishDamaged)
			} else if err != nil {
				return err
			}
			settled := p != nil && p.Settled(now)
			if settled && blocked {
				continue
			}
			n, err := decodeRecord(id, v)
			if errors.Is(err, ErrCorrupt) {
				n = &ipn.Notification{ID: id} // Finish records it as failed (finishDamaged)
			} else if err != nil {
				return err
			}
			if p == nil {
				p = receivedState(n)
			}
			if !settled {
				todo++
				blocked = true
			}
			out = append(out, ipn.Work{Notification: n, Processing: p, Fresh: true})
		}
		rs := &retrySkip{tx: tx, skip: skip}
		rc := tx.Bucket(bucketRetry).Cursor()
		for k, gw := rc.First(); k != nil && todo < max; k, gw = rc.Next() {
			if len(k) != 16 || int64(binary.BigEndian.Uint64(k[:8])) > now.UnixNano() {
				break
			}
			id := binary.BigEndian.Uint64(k[8:])
			if id > cursor {
				continue // still ahead of the cursor: taken as fresh
			}
			if rs.leave(k, gw) {
				continue
			}
			v := tx.Bucket(bucketLog).Get(u64(id))
			if v == nil {
				continue
			}
			n, err := decodeRecord(id, v)
			if errors.Is(err, ErrCorrupt) {
				n = &ipn.Notification{ID: id}
			} else if err != nil {
				return err
			}
			p, err := processing(tx, n)
			if errors.Is(err, ErrCorrupt) {
				p = receivedState(n)
			} else if err != nil {
				return err
			}
			out = append(out, ipn.Work{Notification: n, Processing: p})
			todo++
		}
		return nil
	})
	return out, err
}

// skipRetry asks skip about the due retry of notification id, whose retry
// entry names gateway (older entries name none: the log record does). A
// notification whose gateway cannot be read is never skipped: Finish
// records it as failed.
func skipRetry(tx *bolt.Tx, skip func(string, uint64, func() *ipn.Processing) bool, gateway string, id uint64) bool {
	if gateway == "" {
		n, err := logged(tx, id)
		if err != nil || n.Gateway == "" {
			return false
		}
		gateway = n.Gateway
	}
	return skip(gateway, id, func() *ipn.Processing {
		p, err := stateOf(tx, id)
		if err != nil {
			return nil
		}
		return p
	})
}

// NextDue returns when the earliest scheduled retry or replay is due,
// or the oldest parked event expires (ExpireParked), if sooner.
func (db *DB) NextDue() (time.Time, bool) {
	return db.NextDueExcept(nil)
}

// NextDueExcept is NextDue, leaving out the retries skip names (past
// skipScan of them, all those of the gateways it named: see skipScan).
func (db *DB) NextDueExcept(skip func(gateway string, id uint64, state func() *ipn.Processing) bool) (time.Time, bool) {
	var due time.Time
	var ok bool
	db.bolt.View(func(tx *bolt.Tx) error {
		due, ok = nextRetryDue(tx, skip)
		if at, parked := db.nextParkedDue(tx); parked && (!ok || at.Before(due)) {
			due, ok = at, true
		}
		return nil
	})
	return due, ok
}

// nextRetryDue is when the earliest retry that skip does not leave out
// (see retrySkip) is due; false when every retry is left out.
func nextRetryDue(tx *bolt.Tx, skip func(gateway string, id uint64, state func() *ipn.Processing) bool) (time.Time, bool) {
	c := tx.Bucket(bucketRetry).Cursor()
	rs := &retrySkip{tx: tx, skip: skip}
	for k, gw := c.First(); len(k) == 16; k, gw = c.Next() {
		if !rs.leave(k, gw) {
			return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))), true
		}
	}
	return time.Time{}, false
}

// Finish records the outcomes of a batch of notifications in a single
// transaction and moves the cursor to cursor (when that is further):
// record.Finish, in one Update. For each outcome: state, history entry,
// event, retry schedule, and the event key that makes a later copy of
// the same payment fact a duplicate. A notification already final
// (processed before a crash) is left as it is. It returns the state
// recorded for each outcome. The notifications are ones Pending
// returned, so they are in the log already: Finish does not wait for the
// applier.
func (db *DB) Finish(outs []ipn.Outcome, cursor uint64, now time.Time) ([]ipn.Recorded, error) {
	states, damaged, err := record.Finish(db.update, outs, cursor, now)
	if err == nil {
		db.damagedSeen.Add(int64(damaged))
		db.pokeOutbox()
		db.announceFinished(outs, states, now) // live events (events.go)
	}
	return states, mapClosed(err)
}

// dropRetries deletes every retry scheduled for notification id (the
// retry bucket holds the few notifications waiting for a postback).
func dropRetries(tx *bolt.Tx, id uint64) error {
	retry := tx.Bucket(bucketRetry)
	var keys [][]byte
	err := retry.ForEach(func(k, _ []byte) error {
		if len(k) == 16 && binary.BigEndian.Uint64(k[8:]) == id {
			keys = append(keys, slices.Clone(k))
		}
		return nil
	})
	for _, k := range keys {
		if err == nil {
			err = deleteRetry(tx, k)
		}
	}
	return err
}

// DamagedSeen counts the outcomes recorded as failed because a record
// they read did not decode (see ipn.Unreadable).
func (db *DB) DamagedSeen() int64 { return db.damagedSeen.Load() }

// logged reads notification id from the log.
func logged(tx *bolt.Tx, id uint64) (*ipn.Notification, error) {
	v := tx.Bucket(bucketLog).Get(u64(id))
	if v == nil {
		return nil, fmt.Errorf("notification %d: %w", id, ErrNotFound)
	}
	return decodeRecord(id, v)
}

// Cursor returns the pipeline cursor.
func (db *DB) Cursor() uint64 {
	var c uint64
	db.bolt.View(func(tx *bolt.Tx) error {
		c = getU64(tx.Bucket(bucketMeta).Get(keyCursor))
		return nil
	})
	return c
}

// Replay schedules notification id to be processed again now, whatever
// its state. Effects that already happened are keyed by their cause and
// are not repeated.
func (db *DB) Replay(id uint64, now time.Time) error {
	db.settle()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		n, err := logged(tx, id)
		if err != nil {
			return err
		}
		if !n.Purged.IsZero() {
			// Its body is gone (store.raw_retention): processing it again
			// could only find it unreadable.
			return fmt.Errorf("notification %d: %w", id, ErrPurged)
		}
		p, err := processing(tx, n)
		if err != nil {
			return err
		}
		if !p.NextAttempt.IsZero() {
			if err := deleteRetry(tx, retryKey(p.NextAttempt, id)); err != nil {
				return err
			}
		}
		record.Replay(p, now)
		if err := putRetry(tx, retryKey(now, id), []byte(n.Gateway)); err != nil {
			return err
		}
		return putProcessing(tx, id, p)
	})
	if err == nil {
		db.poke()
	}
	return err
}

func putProcessing(tx *bolt.Tx, id uint64, p *ipn.Processing) error {
	b, err := encodeValue(p)
	if err != nil {
		return err
	}
	states := tx.Bucket(bucketState)
	if err := indexProcessing(tx, id, states.Get(u64(id)), p); err != nil { // index.go
		return err
	}
	return states.Put(u64(id), b)
}

func retryKey(due time.Time, id uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(due.UnixNano()))
	binary.BigEndian.PutUint64(k[8:], id)
	return k
}

// retryGatewayOf is the gateway of retry entry k with value v (older
// entries name none: the log record does; "" when it does not decode).
func retryGatewayOf(tx *bolt.Tx, k, v []byte) string {
	if len(v) > 0 || len(k) != 16 {
		return string(v)
	}
	if n, err := logged(tx, binary.BigEndian.Uint64(k[8:])); err == nil {
		return n.Gateway
	}
	return ""
}

func retryIndexKey(gateway string, id uint64) []byte {
	k := make([]byte, 0, len(gateway)+9)
	k = append(append(k, gateway...), 0)
	return binary.BigEndian.AppendUint64(k, id)
}

// retryIndex returns the index of the retry entries by gateway, made
// (from the retry entries) when it does not exist yet: a database
// written before it, or one an older build of this schema wrote.
func retryIndex(tx *bolt.Tx) (*bolt.Bucket, error) {
	if b := tx.Bucket(bucketRetryGateway); b != nil {
		return b, nil
	}
	b, err := tx.CreateBucket(bucketRetryGateway)
	if err != nil {
		return nil, err
	}
	err = tx.Bucket(bucketRetry).ForEach(func(k, v []byte) error {
		if gw := retryGatewayOf(tx, k, v); gw != "" {
			return b.Put(retryIndexKey(gw, binary.BigEndian.Uint64(k[8:])), bytes.Clone(k))
		}
		return nil
	})
	return b, err
}

// putRetry schedules retry entry k of gateway gw, in the index too.
func putRetry(tx *bolt.Tx, k, gw []byte) error {
	idx, err := retryIndex(tx)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketRetry).Put(k, gw); err != nil {
		return err
	}
	if g := retryGatewayOf(tx, k, gw); g != "" {
		return idx.Put(retryIndexKey(g, binary.BigEndian.Uint64(k[8:])), k)
	}
	return nil
}

// deleteRetry removes retry entry k, and its index entry.
func deleteRetry(tx *bolt.Tx, k []byte) error {
	idx, err := retryIndex(tx)
	if err != nil {
		return err
	}
	retry := tx.Bucket(bucketRetry)
	v := retry.Get(k)
	if v == nil {
		return nil
	}
	if g := retryGatewayOf(tx, k, v); g != "" {
		ik := retryIndexKey(g, binary.BigEndian.Uint64(k[8:]))
		if bytes.Equal(idx.Get(ik), k) {
			if err := idx.Delete(ik); err != nil {
				return err
			}
		}
	}
	return retry.Delete(k)
}

// oldestRetries calls consider with the oldest (lowest) id scheduled for
// a retry of each gateway: from the index, a seek per gateway (entries
// whose retry is gone, left by a build without the index, are passed
// over); without the index, from every retry entry.
func oldestRetries(tx *bolt.Tx, consider func(gateway string, id uint64)) {
	retry, idx := tx.Bucket(bucketRetry), tx.Bucket(bucketRetryGateway)
	if idx == nil {
		retry.ForEach(func(k, v []byte) error {
			if len(k) == 16 {
				if gw := retryGatewayOf(tx, k, v); gw != "" {
					consider(gw, binary.BigEndian.Uint64(k[8:]))
				}
			}
			return nil
		})
		return
	}
	c := idx.Cursor()
	k, v := c.First()
	for k != nil {
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) != i+9 {
			k, v = c.Next()
			continue
		}
		gw := k[:i]
		if retry.Get(v) != nil {
			consider(string(gw), binary.BigEndian.Uint64(k[i+1:]))
			k, v = c.Seek(append(bytes.Clone(gw), 1)) // the next gateway
			continue
		}
		k, v = c.Next()
	}
}

func getU64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// OldestPending returns when the oldest notification still waiting for
// processing (after the cursor, or scheduled for a retry) was received.
func (db *DB) OldestPending() (time.Time, bool) {
	var at time.Time
	var ok bool
	for _, t := range db.OldestPendingByGateway(time.Now()) {
		if !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	return at, ok
}

// OldestPendingByGateway returns, per gateway, when its oldest
// notification still waiting for processing was received: the first
// unsettled one of each gateway among the first skipScan after the
// cursor, and the oldest one scheduled for a retry (a seek per gateway
// in the index of the retries by gateway).
func (db *DB) OldestPendingByGateway(now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	db.bolt.View(func(tx *bolt.Tx) error {
		oldest := map[string]uint64{}
		consider := func(gateway string, id uint64) {
			if first, seen := oldest[gateway]; !seen || id < first {
				oldest[gateway] = id
			}
		}
		cursor := getU64(tx.Bucket(bucketMeta).Get(keyCursor))
		c := tx.Bucket(bucketLog).Cursor()
		scanned := 0
		for k, v := c.Seek(u64(cursor + 1)); k != nil && scanned < skipScan; k, v = c.Next() {
			scanned++
			id := binary.BigEndian.Uint64(k)
			if p, err := stateOf(tx, id); err == nil && p != nil && p.Settled(now) {
				continue
			}
			// Only the gateway: the first bytes (a scrape reads up to
			// skipScan records here under a backlog).
			if gw, err := recordGateway(id, v); err == nil {
				if _, seen := oldest[gw]; !seen {
					consider(gw, id)
				}
			}
		}
		oldestRetries(tx, consider)
		for gateway, id := range oldest {
			if n, err := logged(tx, id); err == nil {
				out[gateway] = n.ReceivedAt
			}
		}
		return nil
	})
	return out
}
