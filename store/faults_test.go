package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/internal/tmpfs"
)

// within polls cond until it holds, failing the test after d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// A disk with less room than a full segment still takes appends (the
// segment is smaller); a full disk refuses them and Writable says why;
// when room comes back, Writable recovers by itself and appends work.
func TestJournalDiskFull(t *testing.T) {
	dir := tmpfs.Mount(t, 4<<20)
	path := filepath.Join(dir, "ipnd.db")
	db := openAt(t, path, Options{CheckInterval: 20 * time.Millisecond}) // segments of 16 MiB do not fit in 4
	defer db.Close()
	ctx := context.Background()
	if _, _, err := db.Append(ctx, sample("g", "first", "x")); err != nil {
		t.Fatalf("append with less room than a full segment: %v", err)
	}
	if err := db.Writable(); err != nil {
		t.Fatalf("Writable = %v", err)
	}
	free := tmpfs.Fill(t, dir, 0)
	var err error
	for i := 0; err == nil && i < 100000; i++ { // until the preallocated segment is full
		_, _, err = db.Append(ctx, sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 2000)))
	}
	if err == nil {
		t.Fatal("appends never failed on a full disk")
	}
	if db.Writable() == nil || db.Refused() == 0 {
		t.Fatalf("after a failed append: Writable = %v, Refused = %d", db.Writable(), db.Refused())
	}
	free()
	within(t, 10*time.Second, "Writable and applying once room is back", func() bool {
		return db.Writable() == nil && db.ApplyErr() == nil
	})
	id, _, err := db.Append(ctx, sample("g", "after", "x"))
	if err != nil {
		t.Fatalf("append once room is back: %v", err)
	}
	if n, _, err := db.Get(id); err != nil || n.DedupKey != "after" {
		t.Fatalf("Get(%d) = %v, %v", id, n, err)
	}
}

// journaledOnTmpfs opens a store on a tmpfs of 8 MiB and journals n
// notifications of 1 KB that bbolt has not taken yet (the journal is not
// applied): what a crash under load leaves.
func journaledOnTmpfs(t *testing.T, n int) (dir, path string, db *DB) {
	t.Helper()
	dir = tmpfs.Mount(t, 8<<20)
	path = filepath.Join(dir, "ipnd.db")
	db = openAt(t, path, Options{noApply: true, SegmentSize: 1 << 20})
	for i := 1; i <= n; i++ {
		if _, _, err := db.Append(context.Background(), sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 1000))); err != nil {
			t.Fatal(err)
		}
	}
	return dir, path, db
}

// A crash on a full disk leaves records that bbolt cannot take at the
// next Open: Open still succeeds, appends fail (503) while the disk is
// full, and once room is back the applier writes the journal's records
// and appends work, without a reopen.
func TestJournalStartOnFullDisk(t *testing.T) {
	const n = 300
	dir, path, db := journaledOnTmpfs(t, n)
	ctx := context.Background()
	kill(t, db)
	free := tmpfs.Fill(t, dir, 0)

	db, err := Open(path, Options{CheckInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open on a full disk after a crash: %v", err)
	}
	defer db.Close()
	if db.ApplyErr() == nil {
		t.Error("ApplyErr is nil while the journal cannot be applied")
	}
	if _, _, err := db.Append(ctx, sample("g", "new", "x")); err == nil {
		t.Error("append on a full disk succeeded")
	}
	if db.Writable() == nil {
		t.Error("Writable is nil on a full disk")
	}
	free()
	within(t, 10*time.Second, "journal applied once room is back", func() bool { return db.ApplyErr() == nil && db.Writable() == nil })
	for i := 1; i <= n; i++ {
		if got, _, err := db.Get(uint64(i)); err != nil || got.DedupKey != fmt.Sprint(i) {
			t.Fatalf("record %d after room came back: %v, %v", i, got, err)
		}
	}
	if id, dup, err := db.Append(ctx, sample("g", "7", "again")); err != nil || !dup || id != 7 {
		t.Errorf("duplicate of a recovered record = %d, %v, %v", id, dup, err)
	}
	if id, _, err := db.Append(ctx, sample("g", "new", "x")); err != nil || id != n+1 {
		t.Errorf("append once room is back = %d, %v; want %d", id, err, n+1)
	}
}

// The data directory deleted under a running store: the next append
// fails, and Writable says the files are gone, for good.
func TestDataDirectoryDeleted(t *testing.T) {
	for _, c := range []struct {
		name string
		do   func(dir string)
	}{
		{"rm -rf", func(dir string) { os.RemoveAll(dir) }},
		{"replaced", func(dir string) {
			os.Rename(dir, dir+".old")
			os.Mkdir(dir, 0o700)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			db := openAt(t, filepath.Join(dir, "ipnd.db"), Options{CheckInterval: 20 * time.Millisecond})
			defer db.Close()
			ctx := context.Background()
			if _, _, err := db.Append(ctx, sample("g", "1", "x")); err != nil {
				t.Fatal(err)
			}
			c.do(dir)
			start := time.Now()
			within(t, 2*time.Second, "appends refused", func() bool {
				_, _, err := db.Append(ctx, sample("g", "", "x"))
				return errors.Is(err, ErrFilesGone)
			})
			if !errors.Is(db.Writable(), ErrFilesGone) {
				t.Errorf("Writable = %v, want ErrFilesGone", db.Writable())
			}
			t.Logf("refused %s after the change", time.Since(start))
		})
	}
}

// stalledWriter blocks every Write until release is closed.
type stalledWriter struct {
	started chan struct{}
	once    sync.Once
	release chan struct{}
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	return len(p), nil
}

// A backup whose reader stalls does not stall appends, even when the
// database must grow past its memory map (a remap waits for every read
// transaction): the snapshot's transaction ends before the download.
func TestBackupStalledReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{mmapSize: 64 << 10, ApplyDelay: -1})
	defer db.Close()
	ctx := context.Background()
	for i := range 50 {
		db.Append(ctx, sample("g", fmt.Sprint("pre", i), filler(fmt.Sprint("pre", i), 500)))
	}
	w := &stalledWriter{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := db.Backup(w, nil)
		done <- err
	}()
	<-w.started
	// 4 MiB of records: the file outgrows a 64 KiB map several times.
	appended := make(chan error, 1)
	go func() {
		for i := range 2000 {
			if _, _, err := db.Append(ctx, sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 2000))); err != nil {
				appended <- err
				return
			}
		}
		db.settle()
		appended <- nil
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(w.release)
		t.Fatal("appends stalled behind a stalled backup reader")
	}
	if n, _, err := db.Get(2050); err != nil || n.DedupKey != "1999" {
		t.Fatalf("last record = %v, %v", n, err)
	}
	close(w.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(snapshotDir(path), "*")); len(left) != 0 {
		t.Errorf("snapshot files left: %v", left)
	}
}

// The backup copy opens like the original and expects no journal.
func TestBackupCopyOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	defer db.Close()
	db.Append(context.Background(), sample("g", "1", "x"))
	cp := filepath.Join(t.TempDir(), "copy.db")
	f, _ := os.Create(cp)
	if _, err := db.Backup(f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, err := bolt.Open(cp, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	b.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyNewestSegment) != nil {
			t.Error("the copy still names a journal segment")
		}
		return nil
	})
	b.Close()
}

// The periodic file check does not take a segment that was retired and
// collected (deleted, as it should be) while it looked for a deleted
// one for a fault: a normal rotation never makes the store think its
// files are gone.
func TestFileCheckSegmentRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	// Each 48 KiB record fills a segment of the smallest size. The test
	// runs the check itself.
	db := openAt(t, path, Options{SegmentSize: 1, CheckInterval: time.Hour, ApplyDelay: -1})
	defer db.Close()
	ctx := context.Background()
	if _, _, err := db.Append(ctx, sample("g", "1", filler("1", 48<<10))); err != nil {
		t.Fatal(err)
	}
	first := segmentPath(path, 1)
	reached, proceed := make(chan struct{}), make(chan struct{})
	db.checkHook = func() { // the monitor never runs the check here: only this test
		close(reached)
		<-proceed
	}
	checked := make(chan error, 1)
	go func() { checked <- db.checkFiles() }()
	<-reached // the check has read which segment is current
	if _, _, err := db.Append(ctx, sample("g", "2", filler("2", 48<<10))); err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "the first segment collected", func() bool {
		_, err := os.Stat(first)
		return errors.Is(err, os.ErrNotExist)
	})
	close(proceed)
	if err := <-checked; err != nil {
		t.Fatalf("file check across a rotation = %v", err)
	}
	if err := db.Writable(); err != nil {
		t.Fatalf("Writable = %v", err)
	}
}

// Before any segment exists (a fresh start), a disk with no room for one
// makes Writable (and so /healthz) report it, before a request fails.
func TestWritableFullDiskBeforeFirstSegment(t *testing.T) {
	dir := tmpfs.Mount(t, 4<<20)
	path := filepath.Join(dir, "ipnd.db")
	db := openAt(t, path, Options{})
	defer db.Close()
	if err := db.Writable(); err != nil {
		t.Fatalf("Writable with room = %v", err)
	}
	free := tmpfs.Fill(t, dir, 0)
	if err := db.Writable(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Writable on a full disk with no segment = %v, want ENOSPC", err)
	}
	free()
	if err := db.Writable(); err != nil {
		t.Fatalf("Writable once room is back = %v", err)
	}
	if _, _, err := db.Append(context.Background(), sample("g", "1", "x")); err != nil {
		t.Fatal(err)
	}
}

// Open removes only the snapshots a crashed backup of ipnd left (in its
// own directory), never the operator's files that look like them.
func TestOpenKeepsOperatorBackups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	db.Close()
	mine := path + ".backup-2026-01-01"
	os.WriteFile(mine, []byte("the operator's"), 0o600)
	os.Mkdir(snapshotDir(path), 0o700)
	left := filepath.Join(snapshotDir(path), "backup-123.snapshot")
	os.WriteFile(left, []byte("a crashed backup's"), 0o600)
	reopen(t, path)
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("the operator's %s: %v", filepath.Base(mine), err)
	}
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a crashed backup's snapshot left: %v", err)
	}
}

// One backup at a time; and one whose snapshot would not fit on the disk
// fails at once, with the reason, instead of filling it.
func TestBackupRefused(t *testing.T) {
	t.Run("one at a time", func(t *testing.T) {
		db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{})
		defer db.Close()
		db.Append(context.Background(), sample("g", "1", "x"))
		w := &stalledWriter{started: make(chan struct{}), release: make(chan struct{})}
		done := make(chan error, 1)
		go func() {
			_, err := db.Backup(w, nil)
			done <- err
		}()
		<-w.started
		if _, err := db.Backup(io.Discard, nil); !errors.Is(err, ErrBackupRefused) {
			t.Errorf("a second backup at once = %v, want ErrBackupRefused", err)
		}
		close(w.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := db.Backup(io.Discard, nil); err != nil {
			t.Errorf("a backup after the first ended = %v", err)
		}
	})
	t.Run("no room", func(t *testing.T) {
		// Room for the database and the journal's segments (the journal
		// keeps records unpacked, and under -race its segments are
		// released later): the disk is filled below.
		dir := tmpfs.Mount(t, 32<<20)
		path := filepath.Join(dir, "ipnd.db")
		db := openAt(t, path, Options{SegmentSize: 256 << 10})
		defer db.Close()
		for i := range 1500 { // a database of some MiB
			if _, _, err := db.Append(context.Background(), sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 2000))); err != nil {
				t.Fatal(err)
			}
		}
		db.settle()
		st, _ := os.Stat(path)
		// Room for half the snapshot, and for the journal's next segment
		// (the append below may need one).
		free := tmpfs.Fill(t, dir, st.Size()/2+2*(256<<10))
		defer free()
		_, err := db.Backup(io.Discard, nil)
		if !errors.Is(err, ErrBackupRefused) || !strings.Contains(err.Error(), "free") {
			t.Fatalf("backup with room for half the snapshot = %v, want ErrBackupRefused naming the room", err)
		}
		if _, _, err := db.Append(context.Background(), sample("g", "after", "x")); err != nil {
			t.Errorf("append after the refused backup: %v", err)
		}
	})
}

// An empty segment bbolt records as the newest (a failed write or the
// probe left it) is replaced, under its name, by one that fits a group
// too large for it. On a full disk that replacement cannot be made: the
// recorded segment must stay as it is, so that a crash then (or a clean
// stop) does not leave the newest segment missing.
func TestJournalFullDiskKeepsRecordedSegment(t *testing.T) {
	for _, stop := range []string{"crash", "clean stop"} {
		t.Run(stop, func(t *testing.T) {
			dir := tmpfs.Mount(t, 8<<20)
			path := filepath.Join(dir, "ipnd.db")
			db := openAt(t, path, Options{SegmentSize: 256 << 10, CheckInterval: time.Hour})
			ctx := context.Background()
			if _, _, err := db.Append(ctx, sample("g", "1", "x")); err != nil {
				t.Fatal(err)
			}
			db.journal.fail(2) // an empty segment for id 2, recorded as the newest
			seg := segmentPath(path, 2)
			was, err := os.Stat(seg)
			if err != nil {
				t.Fatal(err)
			}
			free := tmpfs.Fill(t, dir, 0)
			defer free()
			if _, _, err := db.Append(ctx, sample("g", "2", filler("2", 700<<10))); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("a group larger than the room left = %v, want ENOSPC", err)
			}
			if is, err := os.Stat(seg); err != nil || !os.SameFile(was, is) {
				t.Fatalf("the recorded newest segment after the failed replacement: %v (same file: %v)", err, err == nil && os.SameFile(was, is))
			}
			if tmps, _ := filepath.Glob(seg + tempSuffix); len(tmps) != 0 {
				t.Errorf("the failed replacement left %v", tmps)
			}
			if stop == "crash" {
				kill(t, db)
			} else if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			free()
			db = reopen(t, path)
			if n, _, err := db.Get(1); err != nil || n.DedupKey != "1" {
				t.Fatalf("Get(1) = %v, %v", n, err)
			}
			if id, _, err := db.Append(ctx, sample("g", "2", filler("2", 700<<10))); err != nil || id != 2 {
				t.Fatalf("the large group once room is back = %d, %v; want 2", id, err)
			}
		})
	}
}

// tornEarlierRun journals n records (never applied), then a group of 3
// whose frames a crash lost (its marker on disk), at the start of a new
// segment when separate, else after the records; then starts on a full
// disk (bbolt cannot take the journal: the segments stay), gets room
// back, appends one record (id n+4, in a new segment) and crashes. The
// torn segment is then no longer the newest, and its ids are missing
// before the next one.
func tornEarlierRun(t *testing.T, n int, separate bool) string {
	t.Helper()
	dir := tmpfs.Mount(t, 8<<20)
	path := filepath.Join(dir, "ipnd.db")
	db := openAt(t, path, Options{noApply: true, SegmentSize: 1 << 20})
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		if _, _, err := db.Append(ctx, sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 1000))); err != nil {
			t.Fatal(err)
		}
	}
	if separate {
		db.journal.retire() // a new segment for the next group
	}
	var recs [][]byte
	for i := n + 1; i <= n+3; i++ {
		recs = append(recs, encodeRecord(sample("g", fmt.Sprint(i), "torn")))
	}
	at := db.journal.off
	if separate {
		at = segHeader
	}
	if err := db.journal.write(uint64(n+1), recs); err != nil { // never answered
		t.Fatal(err)
	}
	seg := db.journal.cur.path
	kill(t, db)
	corrupt(t, seg, func(b []byte) { clear(b[at : at+4096]) }) // its frames lost, its marker there

	free := tmpfs.Fill(t, dir, 0)
	db, err := Open(path, Options{noApply: true, CheckInterval: time.Hour}) // the applier never catches up
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	if db.ApplyErr() == nil {
		t.Fatal("the journal was applied on a full disk")
	}
	free()
	id, _, err := db.Append(ctx, sample("g", "new", "x"))
	if err != nil || id != uint64(n+4) {
		t.Fatalf("append once room is back = %d, %v; want %d", id, err, n+4)
	}
	want := 2
	if separate {
		want = 3
	}
	if segs := segmentFiles(t, path); len(segs) != want {
		t.Fatalf("segments %v, want %d", segs, want)
	}
	kill(t, db)
	return path
}

// A segment that ends in a torn tail stops being the newest when a later
// run, started on it, goes on in a new segment. Its marker shows the
// missing ids were given, never acknowledged: Open starts, every
// acknowledged record is found and no id is given again. Such a segment
// stays until bbolt has moved past its torn ids, also when its records
// are in bbolt before (a later segment follows it meanwhile).
func TestJournalTornTailOfAnEarlierRun(t *testing.T) {
	const n = 300
	check := func(t *testing.T, path string) {
		t.Helper()
		db := reopen(t, path)
		for i := uint64(1); i <= n+4; i++ {
			_, _, err := db.Get(i)
			switch torn := i > n && i <= n+3; {
			case torn && !errors.Is(err, ErrLost):
				t.Errorf("id %d of the torn tail: %v, want ErrLost (dropped, may have been acknowledged)", i, err)
			case !torn && err != nil:
				t.Errorf("acknowledged record %d: %v", i, err)
			}
		}
		if id, _, err := db.Append(context.Background(), sample("g", "newer", "x")); err != nil || id != n+5 {
			t.Errorf("next id = %d, %v; want %d", id, err, n+5)
		}
	}
	for _, separate := range []bool{true, false} {
		name := "after the records"
		if separate {
			name = "a segment of its own"
		}
		t.Run(name, func(t *testing.T) {
			path := tornEarlierRun(t, n, separate)
			check(t, path)
		})
	}
	t.Run("records in bbolt first", func(t *testing.T) {
		path := tornEarlierRun(t, n, false)
		// Another start on a full disk: the segments kept, the records
		// pending; then room back.
		free := tmpfs.Fill(t, filepath.Dir(path), 0)
		db, err := Open(path, Options{noApply: true, CheckInterval: time.Hour})
		if err != nil {
			t.Fatalf("Open on a full disk: %v", err)
		}
		free()
		if err := db.putJournaled(db.applyQ[:n]); err != nil { // the first segment's records, not yet the next's
			t.Fatal(err)
		}
		db.journal.collect(n)
		if _, err := os.Stat(segmentPath(path, 1)); err != nil {
			t.Fatalf("the torn segment went before bbolt moved past its torn ids: %v", err)
		}
		kill(t, db)
		check(t, path)
	})
}

// A crash on a full disk that leaves an empty segment (created for the
// next id, nothing written to it yet), then a start with room for a
// journal segment but not for bbolt to take the journal: the new
// segment takes the empty one's name, and collecting the old segments
// once room is back must not delete it. Notifications acknowledged
// before and after room came back survive a restart. (While the disk is
// full, ingest may refuse: a segment is built beside the one it
// replaces, so it needs room of its own; what was refused was never
// acknowledged.)
func TestJournalFullDiskCrashEmptySegment(t *testing.T) {
	const n = 300
	dir, path, db := journaledOnTmpfs(t, n)
	ctx := context.Background()
	// What a failed write leaves (journal.fail): the segment retired, the
	// next one created at the id that failed, and nothing in it.
	db.journal.fail(n + 1)
	if db.journal.f == nil {
		t.Fatal("no empty segment created")
	}
	kill(t, db)
	free := tmpfs.Fill(t, dir, 256<<10)

	db, err := Open(path, Options{CheckInterval: 20 * time.Millisecond, ApplyDelay: -1})
	if err != nil {
		t.Fatalf("Open on a full disk after a crash: %v", err)
	}
	if db.ApplyErr() == nil {
		t.Fatal("the journal was applied on a full disk")
	}
	acked := map[uint64]string{} // id -> dedup key of every notification that got its id
	appendSome := func(from, to int, full bool) {
		t.Helper()
		for i := from; i <= to; i++ {
			key := fmt.Sprint("after-", i)
			id, _, err := db.Append(ctx, sample("g", key, filler(key, 1000)))
			if err != nil && full {
				continue // refused (503): never acknowledged
			}
			if err != nil {
				t.Fatalf("append %s: %v", key, err)
			}
			acked[id] = key
		}
	}
	appendSome(1, 20, true) // behind the journal bbolt cannot take yet, where there is room
	free()
	within(t, 10*time.Second, "journal applied once room is back", func() bool { return db.ApplyErr() == nil && db.Writable() == nil })
	appendSome(21, 50, false)
	db.settle()
	kill(t, db)

	db = reopen(t, path)
	for i := uint64(1); i <= n; i++ {
		acked[i] = fmt.Sprint(i)
	}
	for id, want := range acked {
		if got, _, err := db.Get(id); err != nil || got.DedupKey != want {
			t.Fatalf("record %d after the restart: %v, %v; want %s", id, got, err, want)
		}
	}
}
