package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"ipnd/fulfil"
	"ipnd/internal/backoff"
	"ipnd/ipn"
	"ipnd/record"
)

// SchemaVersion is the layout version this build writes and understands.
// 2: acknowledged records may wait in the journal (<db>.wal-*), which a
// build that knows only 1 would ignore, losing them and reusing their
// ids; so it must refuse the file. 3: values and log records may be
// packed (codec.go), and the outbox due index has a lane in its keys
// (migrateOutboxDue), which a build that knows 2 would fail to decode or
// misread. 4: journal segments are written in format 2 (a header, keyed
// frames, markers; see journal.go), which a build that knows 3 would
// read as a torn tail and drop. 5: the pending callbacks and script
// runs of each order wait in a queue (bucket outbox_order, built on the
// first open) and only its oldest is in the due index; a build that
// knows 4 would not keep that queue, and the items it delivered would
// hold the order's later ones back. Files at 1 to 5 are upgraded on open
// (their values read as they are; new writes are packed; the journal a
// build of 3 left is read in format 1).
// 6: an order past a few facts keeps its facts, history and running
// tally apart from its value (orderlog.go), which a build that knows 5
// would read as an order without facts or history; such orders of a
// file at 5 or before move to that layout on open (migrateOrders).
// 7: the dashboard's indexes (index.go: notifications by gateway and
// state, by identifier, hourly counts; outbox items by state, order and
// notification), which a build that knows 6 would not keep up to date;
// a file at 6 or before gets them on open (buildIndexes, in bounded
// transactions that a restart resumes).
// 8: a change to an outbox item (a delivery result, a retry, a discard)
// is written to its state record (bucket outbox_state, outboxstate.go),
// not to the item, which a build that knows 7 would not read: it would
// see every item as it was queued, pending, and send it again. Nothing
// is rewritten on upgrade: an item without a state record is as its
// JSON says until its first change, so the move costs no time on open
// and there is nothing to resume after a crash.
// 9: an outbox item is queued in a binary layout (outboxbody.go), which a
// build that knows 8 would read as a damaged item and mark dead; and new
// keys of the identifier index go to bucket ix_terms, cut into ranges of
// ids (index.go), which a build that knows 8 would not read: its searches
// by txn id, order id or email would miss every notification indexed
// since. Nothing is rewritten on upgrade: items queued before read as
// their JSON says, and the keys schema 7 and 8 wrote stay in ix_term,
// which the readers walk too.
const SchemaVersion = 9

// Errors callers test with errors.Is.
var (
	ErrClosed = errors.New("store is closed")
	// ErrUnavailable: the store's database cannot be reached now (the
	// PostgreSQL backend's pg.ErrUnavailable is one): try again.
	ErrUnavailable = errors.New("store unavailable")
	ErrNotFound    = ipn.ErrNotFound
	ErrInUse       = errors.New("database is in use by another ipnd")
	ErrNewSchema   = errors.New("database schema is newer than this ipnd")
	ErrBacklog     = errors.New("store is behind: appends wait until the journal is applied")
	// ErrJournalDamaged: acknowledged records in the journal cannot be
	// read (see JournalDamageError); Open refuses unless SkipDamaged.
	ErrJournalDamaged = errors.New("journal damaged: acknowledged notifications cannot be read")
	// ErrFilesGone: the database or journal files were deleted or
	// replaced while ipnd ran; every append fails until a restart.
	ErrFilesGone = errors.New("database files deleted or replaced while running")
	// ErrLost: the id was given to a notification the journal lost
	// (recorded by a recovery with SkipDamaged).
	ErrLost = errors.New("lost to journal damage")
)

var (
	bucketMeta  = []byte("meta")
	bucketLog   = []byte("log")
	bucketDedup = []byte("dedup")
	bucketState = []byte("state")
	keySchema   = []byte("schema")
	keyCreated  = []byte("created")
	// keyNewestSegment (in meta): the first id of the newest journal
	// segment, absent after a clean stop; that segment must exist at Open.
	keyNewestSegment = []byte("wal")
	// keyWAL2 (in meta): the first id of the first journal segment written
	// in format 2; segments before it are format 1.
	keyWAL2 = []byte("wal2")
)

// Options tune Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another
	// process (default 2 s); then Open fails with ErrInUse.
	LockTimeout time.Duration
	// OnCommit, when set, is called after each group commit with its
	// duration and the number of records it wrote.
	OnCommit func(took time.Duration, records int)
	// MaxBatch caps the records in one group commit and in one
	// transaction of the applier (default 4096).
	MaxBatch int
	// SegmentSize is the preallocated size of a journal segment
	// (default DefaultSegmentSize).
	SegmentSize int64

	// ApplyDelay is how long the applier lets journaled records gather
	// before it writes a short batch into bbolt (default 10 ms; a reader
	// that needs them cuts it short). Fewer, larger bbolt transactions
	// leave the disk to the journal.
	ApplyDelay time.Duration
	// MaxBacklog bounds the bytes of records journaled but not yet in
	// bbolt (kept in memory until then; default 256 MiB). Past it, Append
	// fails with ErrBacklog (the receiver answers 503 and the gateway
	// retries) until the applier catches up.
	MaxBacklog int

	// SkipDamaged lets Open go on past journal damage (ipnd recover
	// --skip-damaged): it applies every readable frame, records the ids
	// at stake as lost (bucket lost; they are never given again, Get
	// answers ErrLost) and renames each damaged segment to
	// <segment>.damaged. Damaged reports what it found.
	SkipDamaged bool
	// CheckInterval is how often the store checks that its directory and
	// files are still the ones it opened, and retries a journal that
	// could not be written (disk full), so that Writable recovers without
	// traffic (default 1 s).
	CheckInterval time.Duration
	// BackupMaxPinned bounds what the read transaction of a backup's
	// snapshot holds (default 1 GiB): the bytes of the pages later commits
	// free, which bbolt cannot reuse while it is open, so the file grows
	// by them. The snapshot also lets go once the applier falls behind by
	// a quarter of MaxBacklog (a commit that must remap the growing file
	// waits for the transaction): ingest never reaches the backlog's 503
	// because of a backup. Either fails the backup (ErrBackupTooSlow); no
	// clock bounds it, so a multi-GB database is copied whole while ingest
	// goes on. Negative (tests): any snapshot fails.
	BackupMaxPinned int64

	// noApply (tests) leaves journaled records out of bbolt, as a run
	// killed before its applier wrote them would.
	noApply bool
	// mmapSize (tests) is bbolt's initial memory map size (default 1 GiB).
	mmapSize int
	// EffectKinds, when set, lists the effect kinds queued in the outbox
	// (e.g. no shop_callback when no shop is configured); nil queues all.
	EffectKinds map[string]bool
}

// DB is ipnd's database. Its methods are safe for concurrent use.
type DB struct {
	catalog atomic.Pointer[fulfil.Catalog] // products delivered (SetCatalog; fulfil.go)

	bolt    *bolt.DB
	path    string
	opts    Options
	kinds   atomic.Pointer[map[string]bool] // effect kinds queued (Options.EffectKinds, SetEffectKinds)
	parkFor atomic.Int64                    // orders.park_for (SetParkFor); 0: parked events wait forever
	events  Broadcaster                     // live events for GET /api/events (events.go)

	// Group commit state, guarded by mu. At most one Append goroutine, the
	// leader, commits at a time (committing); the others queue and wait.
	mu         sync.Mutex
	idle       *sync.Cond // broadcast when committing becomes false
	closed     bool
	committing bool
	queue      []*appendReq

	journal *journal // only the group-commit leader writes to it

	// Records journaled but not yet in bbolt, guarded by amu. The applier
	// takes them from applyQ in order; unapplied maps their dedup keys to
	// their ids so that a duplicate is caught before bbolt has it.
	amu       sync.Mutex
	applyQ    []journaled
	unapplied map[string]uint64
	backlog   int           // bytes of the records in applyQ
	acked     uint64        // the newest id journaled (only the leader changes it)
	applied   uint64        // the newest id in bbolt
	appliedCh chan struct{} // closed and replaced when applied grows
	applyErr  error         // the applier's last error, nil after a success
	applyWake chan struct{} // a record was journaled
	applyNow  chan struct{} // a reader waits in settle
	applyStop chan struct{}
	applyDone chan struct{}
	recovered int
	damage    []Damage // found by recovery with SkipDamaged
	cut       []Damage // final groups recovery dropped though their last frame was there
	// floor, when floorAt is set (by keepPending, before the applier
	// starts; read-only after): once the record floorAt is in bbolt, the
	// log's sequence moves up to floor, past the ids a torn tail was given.
	floor, floorAt uint64

	// Health. gone is set for good when the files were deleted or
	// replaced; appendErr (guarded by amu) is the last failure to write
	// the journal, cleared by the next success. refused counts failed
	// Appends.
	gone        atomic.Pointer[error]
	appendErr   error
	refused     atomic.Int64
	damagedSeen atomic.Int64 // outcomes recorded as failed: a record they read is damaged
	backingUp   atomic.Bool  // a Backup runs (one at a time)
	file        *os.File     // the database file, opened again: link count
	fileInfo    os.FileInfo  // of the database file at Open
	dirInfo     os.FileInfo  // of its directory at Open
	monStop     chan struct{}
	monDone     chan struct{}
	// checkHook (tests), when set, runs in checkFiles between reading
	// which segment is current and looking at it.
	checkHook func()

	wake       chan struct{} // see Wake
	outboxWake chan struct{} // see OutboxWake
	runID      string        // see newRunID
	split      splitGuess    // see split.go; only write transactions touch it
}

type appendReq struct {
	key []byte // dedup key
	rec []byte
	id  uint64
	dup bool
	err error
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
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.ApplyDelay == 0 {
		opts.ApplyDelay = 10 * time.Millisecond
	}
	if opts.MaxBacklog <= 0 {
		opts.MaxBacklog = 256 << 20
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = time.Second
	}
	if opts.BackupMaxPinned == 0 {
		opts.BackupMaxPinned = 1 << 30
	}
	if opts.mmapSize <= 0 {
		opts.mmapSize = 1 << 30
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	_, statErr := os.Stat(path)
	// Before bbolt rebuilds its free page list on open, which panics on a
	// damaged file out of reach of recover: a damaged file is refused
	// with what to do.
	if err := checkFile(path); err != nil {
		return nil, err
	}
	b, err := openBolt(path, &bolt.Options{
		Timeout: opts.LockTimeout,
		// The freelist is rebuilt on open instead of written by every
		// commit: fewer pages per fsync on the ingest path.
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: opts.mmapSize,
	})
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		_ = syncDir(filepath.Dir(path)) // best effort: the new file's directory entry survives power loss
	}
	if err == nil {
		// Rebuilding the free page list walked every page with a map of
		// them (about 40 bytes a page: 190 MB of heap for a 5 GB file,
		// 5,000,000 notifications; issue 23). Garbage now, but the
		// runtime would hand it back to the system only slowly: the
		// daemon's resident memory would keep the peak of its start.
		if st, serr := os.Stat(path); serr == nil && st.Size() >= freeAfterOpen {
			debug.FreeOSMemory()
		}
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
	db := &DB{bolt: b, path: path, opts: opts, wake: make(chan struct{}, 1), outboxWake: make(chan struct{}, 1),
		journal:   &journal{base: path, size: opts.SegmentSize},
		unapplied: map[string]uint64{}, appliedCh: make(chan struct{}),
		applyWake: make(chan struct{}, 1), applyNow: make(chan struct{}, 1), applyStop: make(chan struct{}), applyDone: make(chan struct{}),
		monStop: make(chan struct{}), monDone: make(chan struct{})}
	db.idle = sync.NewCond(&db.mu)
	db.runID = newRunID()
	db.journal.created = db.recordSegment
	db.journal.linked = db.checkLinked
	fail := func(err error) (*DB, error) {
		if db.file != nil {
			db.file.Close()
		}
		b.Close()
		return nil, err
	}
	if err := db.identify(); err != nil {
		return fail(err)
	}
	if err := db.init(); err != nil {
		return fail(err)
	}
	if err := db.buildIndexes(); err != nil {
		return fail(err)
	}
	removeSnapshots(path) // a backup's snapshot left by a crash
	if err := db.recoverJournal(); err != nil {
		return fail(err)
	}
	if opts.noApply {
		close(db.applyDone)
	} else {
		go db.applier()
	}
	go db.monitor()
	_ = os.WriteFile(pidPath(path), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	return db, nil
}

// freeAfterOpen: from this file size on, Open returns the memory its
// free page list's rebuild used to the system at once.
const freeAfterOpen = 256 << 20

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

// syncDir makes the entries of dir (a file created or renamed in it)
// survive power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (db *DB) init() error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		newQueues := tx.Bucket(bucketOutboxOrder) == nil
		for _, name := range [][]byte{bucketMeta, bucketLog, bucketDedup, bucketState, bucketRetry, bucketEvents,
			bucketOrders, bucketOrderCounts, bucketSubs, bucketOutbox, bucketOutboxCause,
			bucketOutboxDue, bucketOutboxCounts, bucketOutboxOrder, bucketRefs, bucketOrphans, bucketOrdersByChange,
			bucketOrderRecords, bucketIdempotency, bucketIdempotencyAge, bucketAttempts,
			bucketIxState, bucketIxTerms, bucketIxTerm, bucketIxHour, bucketIxOutState, bucketIxOutOrder, bucketIxOutNotif, bucketIxOrderStatus,
			bucketOutboxState} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: create bucket %s: %w", name, err)
			}
		}
		if err := migrateOutboxDue(tx); err != nil {
			return fmt.Errorf("store: outbox lanes: %w", err)
		}
		if newQueues {
			if err := migrateOutboxOrder(tx); err != nil {
				return fmt.Errorf("store: outbox order queues: %w", err)
			}
		}
		if err := migrateParked(tx, time.Now()); err != nil {
			return fmt.Errorf("store: parked events: %w", err)
		}
		if err := indexOrdersByChange(tx); err != nil {
			return fmt.Errorf("store: orders by change: %w", err)
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("store: %s: %w: bad schema key", db.path, ErrCorrupt)
			}
			got := binary.BigEndian.Uint64(v)
			if got > SchemaVersion {
				return fmt.Errorf("store: %s: %w: file has schema %d, this build knows %d; run a newer ipnd",
					db.path, ErrNewSchema, got, SchemaVersion)
			}
			if got == SchemaVersion {
				return nil
			}
			// 1 -> 2 -> 3 change no value already written (the due index keys
			// were rewritten above): only older builds must now refuse the file.
			// 5 -> 6: the orders move to the layout of orderlog.go.
			// 7 -> 8 rewrites nothing (an outbox item without a state
			// record reads as its JSON says), nor does 8 -> 9 (an item
			// queued before reads as its JSON says; the identifier index's
			// old keys stay in ix_term, read as they are).
			if got < 6 {
				if _, err := db.migrateOrders(tx); err != nil {
					return fmt.Errorf("store: moving orders to schema 6: %w", err)
				}
			}
			// 6 -> 7: the indexes are built after this transaction
			// (buildIndexes); from now on a build that knows 6 refuses the file.
			if got < 7 {
				if err := startIndexBuild(tx); err != nil {
					return fmt.Errorf("store: indexes of schema 7: %w", err)
				}
			}
		}
		if meta.Get(keyCreated) == nil {
			if err := meta.Put(keyCreated, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, u64(SchemaVersion))
	})
}

// Close stops accepting appends, lets the commits already queued finish,
// waits until the journaled records are in bbolt and closes the file. It
// is safe to call twice.
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
	close(db.monStop)
	<-db.monDone
	close(db.applyStop)
	<-db.applyDone
	db.amu.Lock()
	left, applyErr := len(db.applyQ), db.applyErr
	db.amu.Unlock()
	// Records the applier could not write stay in the journal; the next
	// Open applies them. The newest segment's id is cleared before the
	// segments go, so that a crash in between leaves no false alarm.
	allApplied := left == 0 && db.clearNewestSegment() == nil
	db.journal.close(allApplied)
	os.Remove(pidPath(db.path))
	db.file.Close()
	err := db.bolt.Close()
	if left > 0 && err == nil {
		err = fmt.Errorf("store: %d journaled records not yet in the database (applied at next start): %w", left, applyErr)
	}
	return err
}

// Path is the database file's path.
func (db *DB) Path() string { return db.path }

// Append stores n durably and returns its log id. When n.DedupKey is set
// and the same gateway already sent a message with that key, nothing is
// stored and Append returns the first copy's id with duplicate true. It
// returns only after the record is synced to the journal; an error means
// the record is not stored (ErrClosed after Close).
//
// Group commit without a timer: the caller that finds no commit running
// becomes the leader and commits its record at once; callers arriving
// meanwhile queue, and when the leader's commit ends the first of them is
// promoted and commits the whole queue (up to MaxBatch) with one write
// and one fdatasync.
func (db *DB) Append(_ context.Context, n *ipn.Notification) (id uint64, dup bool, err error) {
	defer func() {
		if err == nil && !dup {
			db.announceStored(id, n) // live events (events.go)
		}
	}()
	// The journal takes the record plain: packing it (for bbolt) is the
	// applier's work, off the request's path (see putJournaled).
	r := &appendReq{key: dedupKey(n.Gateway, n.DedupKey), rec: plainRecord(n), signal: make(chan bool, 1)}
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
	db.handOver()
	return r.id, r.dup, r.err
}

// handOver ends the current leader's turn: the first queued request is
// promoted to commit the rest, or committing ends.
func (db *DB) handOver() {
	db.mu.Lock()
	if len(db.queue) > 0 {
		db.queue[0].signal <- true // hand over: it commits the rest
	} else {
		db.committing = false
		db.idle.Broadcast()
	}
	db.mu.Unlock()
}

func (db *DB) commit(batch []*appendReq) {
	start := time.Now()
	n, err := db.journalBatch(batch)
	if err != nil {
		db.refused.Add(int64(len(batch)))
		// A duplicate of a record in the failed write would point at
		// nothing: the whole group fails, and the gateway retries.
		for _, r := range batch {
			r.id, r.dup, r.err = 0, false, err
		}
	}
	if db.opts.OnCommit != nil && n > 0 {
		func() {
			defer func() { _ = recover() }() // an observer must not stop ingest
			db.opts.OnCommit(time.Since(start), n)
		}()
	}
	for _, r := range batch {
		r.signal <- false
	}
}

// journalBatch gives each new record of batch the next id, writes the new
// ones to the journal and queues them for the applier. Duplicates (of a
// stored record, of one still in the journal, or within batch) get the
// first copy's id. It returns the number of records written.
func (db *DB) journalBatch(batch []*appendReq) (int, error) {
	var (
		fresh []*appendReq
		seen  map[string]uint64
	)
	if err := db.goneErr(); err != nil {
		return 0, err
	}
	if err := db.checkLinked(); err != nil {
		return 0, err
	}
	db.amu.Lock() // the applier cannot drop a key from unapplied between bbolt and the map
	first := db.acked + 1
	if db.backlog > db.opts.MaxBacklog {
		applyErr := db.applyErr
		db.amu.Unlock()
		return 0, fmt.Errorf("store: %d bytes journaled and not yet in the database (applier: %v): %w",
			db.backlog, applyErr, ErrBacklog)
	}
	err := db.view(func(tx *bolt.Tx) error {
		dedup := tx.Bucket(bucketDedup)
		for _, r := range batch {
			r.id, r.dup, r.err = 0, false, nil
			if r.key != nil {
				if id, ok := seen[string(r.key)]; ok {
					r.id, r.dup = id, true
					continue
				}
				if id, ok := db.unapplied[string(r.key)]; ok {
					r.id, r.dup = id, true
					continue
				}
				if v := dedup.Get(r.key); len(v) == 8 {
					r.id, r.dup = binary.BigEndian.Uint64(v), true
					continue
				}
				if seen == nil {
					seen = map[string]uint64{}
				}
				seen[string(r.key)] = first + uint64(len(fresh))
			}
			r.id = first + uint64(len(fresh))
			fresh = append(fresh, r)
		}
		return nil
	})
	db.amu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("store: commit: %w", mapClosed(err))
	}
	if len(fresh) == 0 {
		return 0, nil
	}
	recs := make([][]byte, len(fresh))
	for i, r := range fresh {
		recs[i] = r.rec
	}
	if err := db.journal.write(first, recs); err != nil {
		if errors.Is(err, ErrFilesGone) {
			db.setGone(err)
		}
		db.amu.Lock()
		db.appendErr = err
		db.amu.Unlock()
		return 0, fmt.Errorf("store: journal: %w", err)
	}
	db.amu.Lock()
	db.appendErr = nil
	for _, r := range fresh {
		if r.key != nil {
			db.unapplied[string(r.key)] = r.id
		}
		db.applyQ = append(db.applyQ, journaled{id: r.id, key: r.key, rec: r.rec})
		db.backlog += len(r.rec)
	}
	db.acked = first + uint64(len(fresh)) - 1
	db.amu.Unlock()
	select {
	case db.applyWake <- struct{}{}:
	default:
	}
	return len(fresh), nil
}

// view is bolt.View with bbolt's assertion panics (a damaged file) turned
// into errors, so that a group-commit leader always hands over. Nothing
// has been written when it fails.
func (db *DB) view(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: %w: panic: %v", ErrCorrupt, p)
		}
	}()
	return db.bolt.View(fn)
}

// applier copies journaled records into bbolt, oldest first, as many per
// transaction as are waiting (up to MaxBatch), after letting a short batch
// gather for ApplyDelay. When a transaction fails (disk full) it retries
// with backoff; the records stay in the journal, so nothing is lost if the
// process stops meanwhile.
func (db *DB) applier() {
	defer close(db.applyDone)
	failures := 0
	limit := db.opts.MaxBatch // halved after each failure: a full disk may take a smaller batch
	for {
		db.amu.Lock()
		n := min(len(db.applyQ), limit)
		batch := db.applyQ[:n:n]
		db.amu.Unlock()
		if n == 0 {
			select {
			case <-db.applyWake:
				db.gather()
			case <-db.applyNow:
			case <-db.applyStop:
				db.amu.Lock()
				n = len(db.applyQ)
				db.amu.Unlock()
				if n == 0 {
					return
				}
			}
			continue
		}
		err := db.putJournaled(batch)
		last := batch[n-1].id
		db.amu.Lock()
		db.applyErr = err
		if err == nil {
			for _, r := range batch {
				db.backlog -= len(r.rec)
				if r.key != nil && db.unapplied[string(r.key)] == r.id {
					delete(db.unapplied, string(r.key))
				}
			}
			if len(db.unapplied) == 0 && n >= 1024 {
				db.unapplied = map[string]uint64{} // a map never shrinks: let a burst's go
			}
			clear(db.applyQ[:n]) // drop the records' bytes; append reallocates past them
			db.applyQ = db.applyQ[n:]
			db.applied = db.atLeastFloor(last)
			close(db.appliedCh)
			db.appliedCh = make(chan struct{})
		}
		db.amu.Unlock()
		if err == nil {
			failures, limit = 0, db.opts.MaxBatch
			db.poke()
			db.journal.collect(last)
			if n < db.opts.MaxBatch {
				db.gather()
			}
			continue
		}
		failures++
		limit = max(1, limit/2)
		select {
		case <-time.After(backoff.Delay(10*time.Millisecond, 5*time.Second, failures)):
		case <-db.applyStop:
			return // the journal keeps them for the next Open
		}
	}
}

// gather waits ApplyDelay, or less when a reader or Close needs the
// records now.
func (db *DB) gather() {
	if db.opts.ApplyDelay <= 0 {
		return
	}
	t := time.NewTimer(db.opts.ApplyDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-db.applyNow:
	case <-db.applyStop:
	}
}

// putJournaled writes records into the log and dedup buckets in one
// transaction. Records already there (replayed from the journal after a
// crash that followed their commit) are skipped.
func (db *DB) putJournaled(recs []journaled) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: apply: panic: %v", p)
		}
	}()
	// Packed before the transaction, so that bbolt's writer lock is not
	// held meanwhile; the journal holds them plain (Append).
	packed := make([][]byte, len(recs))
	for i, r := range recs {
		packed[i] = packRecord(r.rec)
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketLog)
		log.FillPercent = 1.0 // sequential keys: fill pages completely
		dedup := tx.Bucket(bucketDedup)
		seq := log.Sequence()
		for i, r := range recs {
			if r.id <= seq {
				continue
			}
			if err := log.Put(u64(r.id), packed[i]); err != nil {
				return err
			}
			seq = r.id
			if r.key != nil && dedup.Get(r.key) == nil {
				if err := dedup.Put(r.key, u64(r.id)); err != nil {
					return err
				}
				db.inserted(tx, bucketDedup, dedup, r.key)
			}
		}
		return log.SetSequence(db.atLeastFloor(seq))
	})
	if err != nil {
		return fmt.Errorf("store: apply: %w", mapClosed(err))
	}
	return nil
}

// recoverJournal applies the journaled records bbolt lacks (an earlier
// run stopped before its applier wrote them), then deletes the segments.
// Damage to acknowledged records stops it before anything is written,
// unless SkipDamaged (see Options). When bbolt cannot take the records
// (disk full), Open still succeeds: they stay in the journal and in
// memory, and the applier retries (ApplyErr says why meanwhile).
func (db *DB) recoverJournal() error {
	var seq, newest, v2 uint64
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketLog).Sequence()
		newest = getU64(tx.Bucket(bucketMeta).Get(keyNewestSegment))
		v2 = getU64(tx.Bucket(bucketMeta).Get(keyWAL2))
		return nil
	}); err != nil {
		return err
	}
	// A missing newest segment held at most this many ids: one batch, or
	// a segment's worth of the smallest frames.
	maxIDs := max(uint64(db.opts.MaxBatch), uint64(max(db.opts.SegmentSize, DefaultSegmentSize))/minFrame)
	// A segment whose creation a crash cut short, under its temporary
	// name: never recorded, nothing written to it.
	if entries, err := os.ReadDir(filepath.Dir(db.path)); err == nil {
		prefix := filepath.Base(db.path) + ".wal-"
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), tempSuffix) && e.Type().IsRegular() {
				os.Remove(filepath.Join(filepath.Dir(db.path), e.Name()))
			}
		}
	}
	js, err := scanJournal(db.path, seq, newest, v2, maxIDs)
	if err != nil {
		return err
	}
	db.cut = js.cut
	if len(js.damage) > 0 && !db.opts.SkipDamaged {
		return &JournalDamageError{Path: db.path, Damage: js.damage}
	}
	var pending []journaled // what bbolt could not take
	var applyErr error
	for i := range js.segs { // one segment in memory at a time, unless bbolt fails
		recs, err := readSegment(js.segs, i, seq, newest)
		if err != nil {
			return err
		}
		for applyErr == nil && len(recs) > 0 {
			k := min(len(recs), db.opts.MaxBatch)
			if applyErr = db.putJournaled(recs[:k]); applyErr != nil {
				break
			}
			db.recovered += k
			seq = max(seq, recs[k-1].id)
			recs = recs[k:]
		}
		if applyErr != nil {
			pending = append(pending, recs...)
		}
	}
	if applyErr != nil {
		if len(js.damage) > 0 {
			return fmt.Errorf("store: applying the journal left by the last run: %w", applyErr)
		}
		db.keepPending(js.segs, pending, seq, max(seq, js.end), applyErr)
		return nil
	}
	if len(js.damage) > 0 {
		if err := db.recordLost(js.damage, seq); err != nil {
			return err
		}
		seq = max(seq, js.lost)
		for _, d := range js.damage {
			if d.Offset >= 0 {
				p := filepath.Join(filepath.Dir(db.path), d.Segment)
				if err := os.Rename(p, p+".damaged"); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("store: moving the damaged segment aside: %w", err)
				}
			}
		}
		db.damage = js.damage
	}
	if len(js.cut) > 0 {
		// Kept, for /healthz until the operator acknowledges them. Best effort: Open goes on (the caller logs
		// TornGroups) when bbolt cannot take it.
		drops := make([]Damage, len(js.cut))
		for i, d := range js.cut {
			d.Reason = "dropped at start as the journal's torn tail, may have been acknowledged: " + d.Reason
			drops[i] = d
		}
		if db.recordLost(drops, seq, true) == nil {
			seq = max(seq, js.end)
		}
	}
	// No id the journal may have given (a torn tail's) is given again.
	top := max(seq, js.end)
	db.acked, db.applied = top, top
	if (newest != 0 || top > seq) && db.finishRecovery(top) != nil {
		// Keep the segments: the next Open reads them again (all applied)
		// and retries; new records get ids past top meanwhile.
		return nil
	}
	for _, s := range js.segs {
		os.Remove(s.path)
	}
	return nil
}

// keepPending starts the store with records that the last run journaled
// and bbolt could not take at Open: the applier writes them when it can,
// and their segments are collected then. top is the newest id the
// journal may have given: new records get ids past it, and the log's
// sequence moves up to it with the last pending record.
func (db *DB) keepPending(segs []segment, pending []journaled, seq, top uint64, applyErr error) {
	db.applyQ = pending
	for _, r := range pending {
		db.backlog += len(r.rec)
		if r.key != nil {
			db.unapplied[string(r.key)] = r.id
		}
	}
	db.applied, db.acked = seq, top
	if len(pending) > 0 {
		db.floor, db.floorAt = top, pending[len(pending)-1].id
	}
	db.applyErr = fmt.Errorf("store: applying the journal left by the last run: %w", applyErr)
	for _, s := range segs {
		// A segment goes once bbolt has its records and the ids of its
		// torn tail (high): until then a later segment may follow it, and
		// its marker explains the ids missing before that one. A segment
		// with neither has nothing to wait for; its name may be taken
		// again by the next segment, which collect must not delete.
		if s.last != 0 || s.high >= s.first {
			db.journal.old = append(db.journal.old, s)
		}
	}
}

// atLeastFloor is seq, or floor once seq has reached floorAt (see
// keepPending).
func (db *DB) atLeastFloor(seq uint64) uint64 {
	if db.floorAt != 0 && seq >= db.floorAt && seq < db.floor {
		return db.floor
	}
	return seq
}

// finishRecovery moves the log's sequence up to top (past ids a torn
// tail was given) and clears the newest segment's id: the journal's
// segments can go.
func (db *DB) finishRecovery(top uint64) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		if log := tx.Bucket(bucketLog); log.Sequence() < top {
			if err := log.SetSequence(top); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyNewestSegment) == nil {
			return nil
		}
		return meta.Delete(keyNewestSegment)
	})
}

// recordLost writes the damaged ranges to the lost bucket and moves the
// log's sequence past them, so that their ids are never given again.
// With dropped, they are torn tails Open dropped (TornGroups), written to
// the dropped bucket for the operator to acknowledge.
func (db *DB) recordLost(damage []Damage, seq uint64, dropped ...bool) error {
	now := time.Now().UTC()
	unacked, bucket := len(dropped) > 0 && dropped[0], bucketLost
	if unacked {
		bucket = bucketDropped
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		lost, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		top := seq
		for _, d := range damage {
			v, err := encodeValue(LostRange{First: d.First, Last: d.Last, Segment: d.Segment, Offset: d.Offset,
				Bounded: d.Bounded, Reason: d.Reason, RecordedAt: now, Unacknowledged: unacked})
			if err != nil {
				return err
			}
			if err := lost.Put(u64(d.First), v); err != nil {
				return err
			}
			top = max(top, d.Last)
		}
		return tx.Bucket(bucketLog).SetSequence(top)
	})
	if err != nil {
		return fmt.Errorf("store: recording the lost ids: %w", err)
	}
	return nil
}

// recordSegment notes the first id of a new journal segment as the
// newest's, and as the first in format 2 when none was before
// (journal.created).
func (db *DB) recordSegment(first uint64) error {
	recorded := false
	db.bolt.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		recorded = meta.Get(keyWAL2) != nil && getU64(meta.Get(keyNewestSegment)) == first
		return nil
	})
	if recorded {
		// A segment rebuilt under the name bbolt records (after a failed
		// write, or for a group too large): no bbolt write, which a full
		// disk could refuse.
		return nil
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyWAL2) == nil {
			if err := meta.Put(keyWAL2, u64(first)); err != nil {
				return err
			}
		}
		return meta.Put(keyNewestSegment, u64(first))
	})
	if err != nil {
		return fmt.Errorf("recording the new segment: %w", err)
	}
	return nil
}

func (db *DB) clearNewestSegment() error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyNewestSegment) })
}

// TornGroups are the ids Open dropped as the journal's torn tail: frames
// at its end that do not read back, which a crash within their
// write+fsync leaves (never acknowledged), and so does damage to the
// newest write after its fsync (acknowledged): they may have been
// acknowledged. Their ids are not given again, they are recorded as lost
// ranges for the operator to acknowledge (Unacknowledged); the caller
// logs them.
func (db *DB) TornGroups() []Damage { return db.cut }

// Damaged is the journal damage that Open skipped (SkipDamaged); nil
// when there was none.
func (db *DB) Damaged() []Damage { return db.damage }

// ApplyErr is the applier's last error while it fails to copy journaled
// records into bbolt (disk full, I/O error), nil while it works. The
// records are safe in the journal meanwhile, but reads do not see them.
func (db *DB) ApplyErr() error {
	db.amu.Lock()
	defer db.amu.Unlock()
	return db.applyErr
}

// Recovered is the number of records Open took from the journal of a run
// that stopped before writing them into the database.
func (db *DB) Recovered() int { return db.recovered }

// settle waits until every record acknowledged so far is in bbolt, so
// that a read sees each notification that got its 200. It gives up after
// a few seconds (a failing disk) and lets the read go on.
func (db *DB) settle() {
	db.amu.Lock()
	target := db.acked
	if db.applied >= target || db.applyErr != nil {
		db.amu.Unlock()
		return // caught up, or the applier is failing: read what bbolt has
	}
	select {
	case db.applyNow <- struct{}{}:
	default:
	}
	timer := time.NewTimer(3 * time.Second)
	defer timer.Stop()
	for db.applied < target {
		ch := db.appliedCh
		db.amu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return
		}
		db.amu.Lock()
	}
	db.amu.Unlock()
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
	db.settle()
	var (
		n *ipn.Notification
		p *ipn.Processing
	)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLog).Get(u64(id))
		if v == nil {
			if r, err := lostAt(tx, id); err != nil || r != nil {
				if err != nil {
					return err
				}
				return fmt.Errorf("notification %d: %w (%s: %s, recorded %s)", id, ErrLost, r.Segment, r.Reason,
					r.RecordedAt.Format(time.RFC3339))
			}
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
	p, err := stateOf(tx, n.ID)
	if p == nil && err == nil {
		p = receivedState(n)
	}
	return p, err
}

// stateOf reads the processing state of id; nil when the pipeline has
// not recorded any.
func stateOf(tx *bolt.Tx, id uint64) (*ipn.Processing, error) {
	v := tx.Bucket(bucketState).Get(u64(id))
	if v == nil {
		return nil, nil
	}
	var p ipn.Processing
	if err := decodeValue(v, &p); err != nil {
		return nil, fmt.Errorf("%w: state of %d: %v", ErrCorrupt, id, err)
	}
	return &p, nil
}

// receivedState is the state of a notification the pipeline has not
// touched.
func receivedState(n *ipn.Notification) *ipn.Processing { return record.Received(n) }

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
	db.settle()
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
			if errors.Is(err, ErrCorrupt) {
				continue // damaged: left out of the list (Get reports it)
			}
			if err != nil {
				return err
			}
			if f.Gateway != "" && n.Gateway != f.Gateway {
				continue
			}
			p, err := processing(tx, n)
			if errors.Is(err, ErrCorrupt) {
				continue
			}
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

// ErrBackupRefused: a backup cannot start now, because another one is
// running or the data directory has no room for its snapshot; nothing
// was written, and a later try may succeed.
var ErrBackupRefused = errors.New("backup refused")

// ErrBackupElsewhere is wrapped by a store whose backups are made by
// another tool (PostgreSQL's pg_dump or base backups): the error says
// which.
var ErrBackupElsewhere = errors.New("backups are not ipnd's")

// snapshotDir is the directory, beside the database and owned by ipnd,
// where Backup keeps its snapshot while it streams it.
func snapshotDir(dbPath string) string { return dbPath + ".tmp" }

const snapshotPattern = "backup-*.snapshot"

// removeSnapshots removes the snapshots a crashed Backup left, and
// nothing else.
func removeSnapshots(dbPath string) {
	left, _ := filepath.Glob(filepath.Join(snapshotDir(dbPath), snapshotPattern))
	for _, p := range left {
		os.Remove(p)
	}
}

// Backup writes a consistent copy of the whole database to w. size,
// when not nil, is called with the byte count before anything is written.
//
// The copy is taken first into a temporary file beside the database (in
// the directory <db>.tmp, removed when Backup returns, and by the next
// Open after a crash), within one read transaction, at the speed of the
// disk; it is then streamed to w with no transaction open, so a slow
// reader holds nothing. Appends go to the journal meanwhile; the
// transaction holds back page reuse and, when the file must be remapped,
// the applier: Backup lets it go, failing with ErrBackupTooSlow, once the
// pages it keeps from reuse pass BackupMaxPinned or the applier's backlog
// passes a quarter of MaxBacklog, so ingest never answers 503 because of a
// backup. One backup runs at a time, and only when the data directory has
// room for the snapshot (the database's size) and a journal segment
// besides; else it fails at once with ErrBackupRefused.
func (db *DB) Backup(w io.Writer, size func(int64)) (int64, error) {
	if !db.backingUp.CompareAndSwap(false, true) {
		return 0, fmt.Errorf("store: %w: another backup is running", ErrBackupRefused)
	}
	defer db.backingUp.Store(false)
	db.settle()
	dir := filepath.Dir(db.path)
	if st, err := os.Stat(db.path); err == nil {
		need := st.Size() + db.opts.SegmentSize
		if free, ok := freeBytes(dir); ok && free < need {
			return 0, fmt.Errorf("store: %w: the snapshot needs %d bytes in %s (the database and a journal segment), %d are free",
				ErrBackupRefused, need, dir, free)
		}
	}
	if err := os.Mkdir(snapshotDir(db.path), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return 0, fmt.Errorf("store: backup snapshot: %w", err)
	}
	f, err := os.CreateTemp(snapshotDir(db.path), snapshotPattern)
	if err != nil {
		return 0, fmt.Errorf("store: backup snapshot: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	dw := &heldWriter{w: f, db: db}
	if err := db.view(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(dw)
		return err
	}); err != nil {
		if dw.failed != nil {
			err = dw.failed // bbolt keeps only the text of its writer's error
		}
		return 0, fmt.Errorf("store: backup snapshot: %w", mapClosed(err))
	}
	if err := forgetJournal(f.Name()); err != nil {
		return 0, fmt.Errorf("store: backup snapshot: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store: backup snapshot: %w", err)
	}
	if size != nil {
		size(st.Size())
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("store: backup snapshot: %w", err)
	}
	return io.Copy(w, struct{ io.Reader }{f}) // hide ReadFrom: w's own deadlines apply per write
}

// ErrBackupTooSlow: the snapshot of a backup held back more than it may
// (Options.BackupMaxPinned, or the applier's backlog), and let go.
var ErrBackupTooSlow = errors.New("backup snapshot held back too much while it copied")

// heldWriter writes the snapshot and, every 64 writes (2 MiB of bbolt's
// copy), checks what its read transaction holds back. failed keeps the
// first error it returned (ErrBackupTooSlow, or the file's: ENOSPC).
type heldWriter struct {
	w      io.Writer
	db     *DB
	writes int
	failed error
}

func (h *heldWriter) Write(p []byte) (int, error) {
	if h.writes++; h.writes%64 == 1 {
		if err := h.db.snapshotHeld(); err != nil {
			h.failed = cmp.Or(h.failed, err)
			return 0, h.failed
		}
	}
	n, err := h.w.Write(p)
	if err != nil && h.failed == nil {
		h.failed = err
	}
	return n, err
}

// snapshotHeld is nil while a backup's snapshot may keep its read
// transaction open (see Backup).
func (db *DB) snapshotHeld() error {
	pinned := int64(db.bolt.Stats().PendingPageN) * int64(db.bolt.Info().PageSize)
	db.amu.Lock()
	backlog := db.backlog
	db.amu.Unlock()
	switch {
	case db.opts.BackupMaxPinned < 0 || pinned > db.opts.BackupMaxPinned:
		return fmt.Errorf("%w: %d bytes of pages kept from reuse, the bound is %d", ErrBackupTooSlow, pinned, max(db.opts.BackupMaxPinned, 0))
	case backlog > db.opts.MaxBacklog/4:
		return fmt.Errorf("%w: the applier is %d bytes behind (it waits for the snapshot to remap the growing file), the bound is %d",
			ErrBackupTooSlow, backlog, db.opts.MaxBacklog/4)
	}
	return nil
}

// forgetJournal removes the newest segment's id from a copy of the
// database: the copy has no journal (everything acknowledged is in it),
// and must not look for one when it is opened.
func forgetJournal(path string) error {
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	err = b.Update(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil && meta.Get(keyNewestSegment) != nil {
			return meta.Delete(keyNewestSegment)
		}
		return nil
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	return err
}

// Check runs bbolt's consistency check and returns the first problem, or
// ErrClosed.
func (db *DB) Check() error {
	db.settle()
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
	SizeBytes    int64 // the database file
	JournalBytes int64 // the journal segments on disk
	LastID       uint64
}

// Stats reads the file sizes and the newest log id.
func (db *DB) Stats() (Stats, error) {
	db.settle()
	var s Stats
	err := db.bolt.View(func(tx *bolt.Tx) error {
		s.SizeBytes = tx.Size()
		s.LastID = tx.Bucket(bucketLog).Sequence()
		return nil
	})
	if segs, serr := segmentsOnDisk(db.path); serr == nil {
		for _, seg := range segs {
			if st, err := os.Stat(seg.path); err == nil {
				s.JournalBytes += st.Size()
			}
		}
	}
	return s, mapClosed(err)
}
