package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"ipnd/ipn"
)

// SchemaVersion is the layout version this build writes and understands.
const SchemaVersion = 1

// Errors callers test with errors.Is.
var (
	ErrClosed    = errors.New("store is closed")
	ErrNotFound  = errors.New("not found")
	ErrInUse     = errors.New("database is in use by another ipnd")
	ErrNewSchema = errors.New("database schema is newer than this ipnd")
)

var (
	bucketMeta  = []byte("meta")
	bucketLog   = []byte("log")
	bucketDedup = []byte("dedup")
	bucketState = []byte("state")
	keySchema   = []byte("schema")
	keyCreated  = []byte("created")
)

// Options tune Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another
	// process (default 2 s); then Open fails with ErrInUse.
	LockTimeout time.Duration
	// OnCommit, when set, is called after each group commit with its
	// duration and the number of records it wrote.
	OnCommit func(took time.Duration, records int)
	// MaxBatch caps the records in one group commit (default 4096).
	MaxBatch int
	// EffectKinds, when set, lists the effect kinds queued in the outbox
	// (e.g. no shop_callback when no shop is configured); nil queues all.
	EffectKinds map[string]bool
}

// DB is ipnd's database. Its methods are safe for concurrent use.
type DB struct {
	bolt *bolt.DB
	path string
	opts Options

	// Group commit state, guarded by mu. At most one Append goroutine, the
	// leader, commits at a time (committing); the others queue and wait.
	mu         sync.Mutex
	idle       *sync.Cond // broadcast when committing becomes false
	closed     bool
	committing bool
	queue      []*appendReq

	wake       chan struct{} // see Wake
	outboxWake chan struct{} // see OutboxWake
}

type appendReq struct {
	gateway string
	dedup   string
	rec     []byte
	id      uint64
	dup     bool
	err     error
	// signal receives false when the request is committed (or failed),
	// or true when it is promoted to commit the queue itself.
	signal chan bool
}

// Open opens (creating if needed) the database at path, creates the
// buckets and checks the schema version.
func Open(path string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 4096
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	_, statErr := os.Stat(path)
	b, err := openBolt(path, &bolt.Options{
		Timeout: opts.LockTimeout,
		// The freelist is rebuilt on open instead of written by every
		// commit: fewer pages per fsync on the ingest path.
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30,
	})
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		syncDir(filepath.Dir(path)) // the new file's directory entry survives power loss
	}
	if errors.Is(err, berrors.ErrTimeout) {
		who := "unknown pid"
		if pid, rerr := os.ReadFile(pidPath(path)); rerr == nil {
			who = "pid " + strings.TrimSpace(string(pid))
		}
		return nil, fmt.Errorf("store: %s: %w (%s)", path, ErrInUse, who)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{bolt: b, path: path, opts: opts, wake: make(chan struct{}, 1), outboxWake: make(chan struct{}, 1)}
	db.idle = sync.NewCond(&db.mu)
	if err := db.init(); err != nil {
		b.Close()
		return nil, err
	}
	_ = os.WriteFile(pidPath(path), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	return db, nil
}

func pidPath(dbPath string) string { return dbPath + ".pid" }

// openBolt is bolt.Open with its assertion panics (a damaged file) turned
// into ErrCorrupt.
func openBolt(path string, o *bolt.Options) (b *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("%w: %v (restore from a backup)", ErrCorrupt, p)
		}
	}()
	return bolt.Open(path, 0o600, o)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func (db *DB) init() error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketLog, bucketDedup, bucketState, bucketRetry, bucketEvents,
			bucketOrders, bucketOrderCounts, bucketSubs, bucketOutbox, bucketOutboxCause,
			bucketOutboxDue, bucketOutboxCounts} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("store: %s: %w: bad schema key", db.path, ErrCorrupt)
			}
			if got := binary.BigEndian.Uint64(v); got > SchemaVersion {
				return fmt.Errorf("store: %s: %w: file has schema %d, this build knows %d; run a newer ipnd",
					db.path, ErrNewSchema, got, SchemaVersion)
			}
			return nil
		}
		if err := meta.Put(keyCreated, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
			return err
		}
		return meta.Put(keySchema, u64(SchemaVersion))
	})
}

// Close stops accepting appends, lets the commits already queued finish
// and closes the file. It is safe to call twice.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	for db.committing {
		db.idle.Wait()
	}
	db.mu.Unlock()
	os.Remove(pidPath(db.path))
	return db.bolt.Close()
}

// Path is the database file's path.
func (db *DB) Path() string { return db.path }

// Append stores n durably and returns its log id. When n.DedupKey is set
// and the same gateway already sent a message with that key, nothing is
// stored and Append returns the first copy's id with duplicate true. It
// returns only after the transaction holding the record has committed; an
// error means the record is not stored (ErrClosed after Close).
//
// Group commit without a timer: the caller that finds no commit running
// becomes the leader and commits its record at once; callers arriving
// meanwhile queue, and when the leader's commit ends the first of them is
// promoted and commits the whole queue (up to MaxBatch) in one
// transaction, with one pair of fsyncs.
func (db *DB) Append(_ context.Context, n *ipn.Notification) (uint64, bool, error) {
	r := &appendReq{gateway: n.Gateway, dedup: n.DedupKey, rec: encodeRecord(n), signal: make(chan bool, 1)}
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return 0, false, ErrClosed
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

	db.commit(batch)

	db.mu.Lock()
	if len(db.queue) > 0 {
		db.queue[0].signal <- true // hand over: it commits the rest
	} else {
		db.committing = false
		db.idle.Broadcast()
	}
	db.mu.Unlock()
	return r.id, r.dup, r.err
}

func (db *DB) commit(batch []*appendReq) {
	start := time.Now()
	err := db.write(batch)
	if err != nil && len(batch) > 1 {
		// One bad record must not fail the others: retry them one by one
		// so that only the culprit gets the error.
		for _, r := range batch {
			if e := db.write([]*appendReq{r}); e != nil {
				r.id, r.dup, r.err = 0, false, e
			}
		}
		err = nil
	} else if err != nil {
		batch[0].id, batch[0].dup, batch[0].err = 0, false, err
	}
	if db.opts.OnCommit != nil {
		func() {
			defer func() { _ = recover() }() // an observer must not stop ingest
			db.opts.OnCommit(time.Since(start), len(batch))
		}()
	}
	db.poke()
	for _, r := range batch {
		r.signal <- false
	}
}

// write appends the records of batch in one transaction. A panic inside
// bbolt becomes an error, so that the group-commit hand-off always runs.
func (db *DB) write(batch []*appendReq) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: commit: panic: %v", p)
		}
	}()
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketLog)
		log.FillPercent = 1.0 // sequential keys: fill pages completely
		dedup := tx.Bucket(bucketDedup)
		for _, r := range batch {
			r.id, r.dup = 0, false
			key := dedupKey(r.gateway, r.dedup)
			if key != nil {
				if v := dedup.Get(key); len(v) == 8 {
					r.id, r.dup = binary.BigEndian.Uint64(v), true
					continue
				}
			}
			id, err := log.NextSequence()
			if err != nil {
				return err
			}
			if err := log.Put(u64(id), r.rec); err != nil {
				return err
			}
			if key != nil {
				if err := dedup.Put(key, u64(id)); err != nil {
					return err
				}
			}
			r.id = id
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: commit: %w", mapClosed(err))
	}
	return nil
}

// dedupKey is gateway + 0x00 + the gateway's message id; ids longer than
// 200 bytes are replaced by their SHA-256, so that no key is too large
// for bbolt. nil when there is no id.
func dedupKey(gateway, id string) []byte {
	if id == "" {
		return nil
	}
	if len(id) > 200 {
		sum := sha256.Sum256([]byte(id))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return append(append([]byte(gateway), 0), id...)
}

// mapClosed turns bbolt's "database not open" into ErrClosed.
func mapClosed(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// Get returns the raw notification with the given id and its processing
// state (state "received" when the pipeline has not touched it), or
// ErrNotFound.
func (db *DB) Get(id uint64) (*ipn.Notification, *ipn.Processing, error) {
	var (
		n *ipn.Notification
		p *ipn.Processing
	)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLog).Get(u64(id))
		if v == nil {
			return fmt.Errorf("notification %d: %w", id, ErrNotFound)
		}
		var err error
		if n, err = decodeRecord(id, v); err != nil {
			return err
		}
		p, err = processing(tx, n)
		return err
	})
	return n, p, mapClosed(err)
}

func processing(tx *bolt.Tx, n *ipn.Notification) (*ipn.Processing, error) {
	v := tx.Bucket(bucketState).Get(u64(n.ID))
	if v == nil {
		return &ipn.Processing{State: ipn.StateReceived,
			History: []ipn.HistoryEntry{{At: n.ReceivedAt, State: ipn.StateReceived}}}, nil
	}
	var p ipn.Processing
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("%w: state of %d: %v", ErrCorrupt, n.ID, err)
	}
	return &p, nil
}

// Filter selects notifications for List. Zero fields match everything.
type Filter struct {
	Gateway string
	State   ipn.State
	Before  uint64 // only ids below this; 0 = from the newest
	Limit   int    // default 50, at most 1000
}

// Item is one notification with its processing state.
type Item struct {
	Notification *ipn.Notification
	Processing   *ipn.Processing
}

// List returns matching notifications, newest first.
func (db *DB) List(f Filter) ([]Item, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, 1000)
	var out []Item
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLog).Cursor()
		k, v := c.Last()
		if f.Before > 0 {
			if sk, _ := c.Seek(u64(f.Before)); sk != nil {
				k, v = c.Prev() // the newest id below Before
			} else {
				k, v = c.Last()
			}
		}
		for ; k != nil && len(out) < f.Limit; k, v = c.Prev() {
			id := binary.BigEndian.Uint64(k)
			if f.Before > 0 && id >= f.Before {
				continue
			}
			n, err := decodeRecord(id, v)
			if err != nil {
				return err
			}
			if f.Gateway != "" && n.Gateway != f.Gateway {
				continue
			}
			p, err := processing(tx, n)
			if err != nil {
				return err
			}
			if f.State != "" && p.State != f.State {
				continue
			}
			out = append(out, Item{n, p})
		}
		return nil
	})
	return out, mapClosed(err)
}

// Backup writes a consistent copy of the whole database to w (a read
// transaction: appends go on meanwhile). size, when not nil, is called
// with the byte count before anything is written.
func (db *DB) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, mapClosed(err)
}

// Check runs bbolt's consistency check and returns the first problem, or
// ErrClosed.
func (db *DB) Check() error {
	return mapClosed(db.bolt.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drain: the checker uses tx until it closes the channel
			if first == nil {
				first = err
			}
		}
		return first
	}))
}

// Stats is a summary for health checks and metrics.
type Stats struct {
	SizeBytes int64
	LastID    uint64
}

// Stats reads the file size and the newest log id.
func (db *DB) Stats() (Stats, error) {
	var s Stats
	err := db.bolt.View(func(tx *bolt.Tx) error {
		s.SizeBytes = tx.Size()
		s.LastID = tx.Bucket(bucketLog).Sequence()
		return nil
	})
	return s, mapClosed(err)
}
