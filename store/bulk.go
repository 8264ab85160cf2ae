package store

import (
	"errors"
	"fmt"

	"ipnd/ipn"
)

// BulkAppend stores ns as Append would (ids in order, dedup keys; a
// second copy within ns is skipped and gets id 0), in one bbolt
// transaction and without the journal. It is for benchmarks that fill a
// store with a million notifications: it waits for no group commit and
// must not run beside Append (it refuses while records wait for the
// applier). ns[i].ID is set.
func (db *DB) BulkAppend(ns []*ipn.Notification) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	for db.committing {
		db.idle.Wait()
	}
	if db.closed {
		return ErrClosed
	}
	db.amu.Lock()
	defer db.amu.Unlock()
	if len(db.applyQ) > 0 {
		return errors.New("store: BulkAppend: records wait for the applier")
	}
	recs := make([]journaled, 0, len(ns))
	next := db.acked + 1
	seen := map[string]bool{}
	for _, n := range ns {
		key := dedupKey(n.Gateway, n.DedupKey)
		if key != nil && seen[string(key)] {
			n.ID = 0
			continue
		}
		if key != nil {
			seen[string(key)] = true
		}
		n.ID = next
		recs = append(recs, journaled{id: next, key: key, rec: encodeRecord(n)})
		next++
	}
	if len(recs) == 0 {
		return nil
	}
	if err := db.putJournaled(recs); err != nil {
		return fmt.Errorf("store: BulkAppend: %w", err)
	}
	last := recs[len(recs)-1].id
	db.acked, db.applied = last, last
	close(db.appliedCh)
	db.appliedCh = make(chan struct{})
	db.poke()
	return nil
}

// SetNoSync turns bbolt's fsync of each commit off (true) or on again
// (false, after syncing the file). For benchmarks filling a store only:
// without it a crash may lose or damage what was committed.
func (db *DB) SetNoSync(on bool) error {
	db.bolt.NoSync = on
	if !on {
		return db.bolt.Sync()
	}
	return nil
}
