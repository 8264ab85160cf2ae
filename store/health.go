package store

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketLost: first id of a range -> JSON LostRange; written only by a
// recovery with SkipDamaged.
var bucketLost = []byte("lost")

// LostRange is a stretch of ids given to notifications that a damaged
// journal could not give back (recorded by `ipnd recover --skip-damaged`).
type LostRange struct {
	First      uint64    `json:"first"`
	Last       uint64    `json:"last"`
	Segment    string    `json:"segment"`
	Offset     int64     `json:"offset"` // -1: the segment was missing
	Bounded    bool      `json:"bounded,omitempty"`
	Reason     string    `json:"reason"`
	RecordedAt time.Time `json:"recorded_at"`
	// Unacknowledged: a torn tail Open dropped, which may have been
	// acknowledged (damage to the newest write reads like a crash within
	// it); /healthz reports it until the operator acknowledges it
	// (AckDropped).
	Unacknowledged bool `json:"unacknowledged,omitempty"`
}

// bucketDropped: first id of a range -> LostRange; the torn tails Open
// dropped (TornGroups), which may have been acknowledged.
var bucketDropped = []byte("dropped")

// Dropped lists the torn tails Open dropped, oldest first, acknowledged
// by the operator or not.
func (db *DB) Dropped() ([]LostRange, error) {
	var out []LostRange
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDropped)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var r LostRange
			if err := decodeValue(v, &r); err != nil {
				return fmt.Errorf("%w: dropped range: %v", ErrCorrupt, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, mapClosed(err)
}

// Unacknowledged lists the dropped torn tails (Dropped) the operator has
// not acknowledged yet, and counts their ids.
func (db *DB) Unacknowledged() ([]LostRange, uint64, error) {
	all, err := db.Dropped()
	var out []LostRange
	var ids uint64
	for _, r := range all {
		if r.Unacknowledged {
			out = append(out, r)
			ids += r.Last - r.First + 1
		}
	}
	return out, ids, err
}

// AckDropped records that the operator has seen the dropped torn tails
// (Unacknowledged): /healthz stops reporting them. It returns how many
// ranges it acknowledged.
func (db *DB) AckDropped() (int, error) {
	n := 0
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDropped)
		if b == nil {
			return nil
		}
		type kv struct{ k, v []byte }
		var put []kv
		err := b.ForEach(func(k, v []byte) error {
			var r LostRange
			if err := decodeValue(v, &r); err != nil {
				return fmt.Errorf("%w: dropped range: %v", ErrCorrupt, err)
			}
			if !r.Unacknowledged {
				return nil
			}
			r.Unacknowledged = false
			nv, err := encodeValue(r)
			put = append(put, kv{append([]byte(nil), k...), nv})
			return err
		})
		if err != nil {
			return err
		}
		for _, e := range put {
			if err := b.Put(e.k, e.v); err != nil {
				return err
			}
		}
		n = len(put)
		return nil
	})
	return n, mapClosed(err)
}

// Lost lists the lost id ranges, oldest first.
func (db *DB) Lost() ([]LostRange, error) {
	var out []LostRange
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLost)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var r LostRange
			if err := decodeValue(v, &r); err != nil {
				return fmt.Errorf("%w: lost range: %v", ErrCorrupt, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, mapClosed(err)
}

// lostAt returns the lost range holding id, if any: a range of journal
// damage, or a torn tail dropped at a start (which may have been
// acknowledged: its ids are no more "not found" than damaged ones).
func lostAt(tx *bolt.Tx, id uint64) (*LostRange, error) {
	for _, name := range [][]byte{bucketLost, bucketDropped} {
		if r, err := rangeAt(tx.Bucket(name), id); err != nil || r != nil {
			return r, err
		}
	}
	return nil, nil
}

// rangeAt returns the range of b (first id -> LostRange) holding id.
func rangeAt(b *bolt.Bucket, id uint64) (*LostRange, error) {
	if b == nil {
		return nil, nil
	}
	c := b.Cursor()
	k, v := c.Seek(u64(id))
	if k == nil || getU64(k) > id {
		k, v = c.Prev()
	}
	if k == nil {
		return nil, nil
	}
	var r LostRange
	if err := decodeValue(v, &r); err != nil {
		return nil, fmt.Errorf("%w: lost range: %v", ErrCorrupt, err)
	}
	if id < r.First || id > r.Last {
		return nil, nil
	}
	return &r, nil
}

// identify records which directory and database file the store opened,
// and keeps a descriptor of the file to see its link count.
func (db *DB) identify() error {
	f, err := os.Open(db.path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		db.dirInfo, err = os.Stat(filepath.Dir(db.path))
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("store: %w", err)
	}
	db.file, db.fileInfo = f, fi
	return nil
}

func (db *DB) goneErr() error {
	if p := db.gone.Load(); p != nil {
		return *p
	}
	return nil
}

func (db *DB) setGone(err error) {
	db.gone.CompareAndSwap(nil, &err)
}

// checkLinked is the check on every group commit (one fstat): the
// database file still has a name.
func (db *DB) checkLinked() error {
	if st, err := db.file.Stat(); err == nil && unlinked(st) {
		err := fmt.Errorf("%w: %s was deleted", ErrFilesGone, db.path)
		db.setGone(err)
		return err
	}
	return nil
}

// checkFiles compares the directory, the database file and the current
// journal segment with what was opened: gone or replaced is ErrFilesGone.
func (db *DB) checkFiles() error {
	same := func(path string, want os.FileInfo) error {
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrFilesGone, path, err)
		}
		if !os.SameFile(st, want) {
			return fmt.Errorf("%w: %s is not the file ipnd opened", ErrFilesGone, path)
		}
		return nil
	}
	if err := same(filepath.Dir(db.path), db.dirInfo); err != nil {
		return err
	}
	if err := same(db.path, db.fileInfo); err != nil {
		return err
	}
	if err := db.checkLinked(); err != nil {
		return err
	}
	db.journal.mu.Lock()
	info := db.journal.info
	db.journal.mu.Unlock()
	if info == nil {
		return nil
	}
	if db.checkHook != nil {
		db.checkHook()
	}
	err := same(filepath.Join(filepath.Dir(db.path), info.Name()), info)
	if err != nil {
		// A segment retired since, and collected (deleted, as it should
		// be), is not a fault: the next check looks at the new one.
		db.journal.mu.Lock()
		retired := db.journal.info != info
		db.journal.mu.Unlock()
		if retired {
			return nil
		}
	}
	return err
}

// monitor checks the files every CheckInterval, and retries the journal
// while writing it fails, until Close.
func (db *DB) monitor() {
	defer close(db.monDone)
	t := time.NewTicker(db.opts.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-db.monStop:
			return
		case <-t.C:
		}
		if db.goneErr() != nil {
			continue
		}
		if err := db.checkFiles(); err != nil {
			db.setGone(err)
			continue
		}
		db.amu.Lock()
		failing := db.appendErr != nil
		db.amu.Unlock()
		if failing {
			db.probe()
		} else {
			db.markJournal()
		}
	}
}

// takeTurn makes the caller the group-commit leader when no commit runs
// (it then calls handOver); false when one runs or the store is closed.
func (db *DB) takeTurn() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed || db.committing {
		return false
	}
	db.committing = true
	return true
}

// markJournal writes, when no commit runs, the current segment's marker
// counting every record journaled so far as acknowledged (journal.mark).
func (db *DB) markJournal() {
	if !db.takeTurn() {
		return // a commit is running: its own marker counts what came before it
	}
	if err := db.journal.mark(); err != nil {
		db.amu.Lock()
		db.appendErr = err
		db.amu.Unlock()
	}
	db.handOver()
}

// probe takes the group-commit leader's turn when no commit runs, and
// checks that the journal can be written: it creates the segment a
// failed creation left missing (disk full), or syncs the current one.
// Success clears the append error, so that Writable recovers without
// waiting for a request.
func (db *DB) probe() {
	if !db.takeTurn() {
		return // a commit is running: it tells
	}
	db.amu.Lock()
	next := db.acked + 1
	db.amu.Unlock()
	var err error
	if db.journal.f == nil {
		err = db.journal.create(next, 0)
	} else {
		err = fdatasync(db.journal.f)
	}
	if err == nil {
		err = db.checkLinked()
	}
	db.amu.Lock()
	if err != nil {
		db.appendErr = err
	} else {
		db.appendErr = nil
	}
	db.amu.Unlock()
	db.handOver()
}

// Writable is nil while Append can store notifications, or why it
// cannot: the files are gone (ErrFilesGone, until a restart), writing the
// journal fails (disk full, I/O error; retried every CheckInterval), no
// segment is open and the disk has no room for one (ENOSPC), the
// applier is too far behind (ErrBacklog), or the store is closed.
func (db *DB) Writable() error {
	if err := db.goneErr(); err != nil {
		return err
	}
	db.mu.Lock()
	closed := db.closed
	db.mu.Unlock()
	if closed {
		return ErrClosed
	}
	db.amu.Lock()
	defer db.amu.Unlock()
	if db.appendErr != nil {
		return fmt.Errorf("store: writing the journal: %w", db.appendErr)
	}
	if db.backlog > db.opts.MaxBacklog {
		return fmt.Errorf("store: %d bytes journaled and not yet in the database (applier: %v): %w",
			db.backlog, db.applyErr, ErrBacklog)
	}
	if !db.journal.hasSegment() {
		// The next append creates a segment: say now if it cannot.
		dir := filepath.Dir(db.path)
		if free, ok := freeBytes(dir); ok && free < minSegment {
			return fmt.Errorf("store: no room for a journal segment in %s (%d bytes free): %w", dir, free, syscall.ENOSPC)
		}
	}
	return nil
}

// Refused is the number of Appends that failed (each answered 503).
func (db *DB) Refused() int64 { return db.refused.Load() }
