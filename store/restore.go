package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileInfo describes a database file: its schema and what it holds.
type FileInfo struct {
	Schema        uint64
	LastID        uint64 // the newest notification's log id
	Notifications int
	Orders        int
	OutboxItems   int
	Lost          int    // ids recorded as lost (journal damage), never given again
	Sequence      uint64 // the highest id given (LastID, or above: ids lost or of a torn tail)
}

// Inspect opens the database file at path read-only, checks bbolt's
// consistency (every page reachable once, no freed page in use) and the
// schema (one this build knows), and counts what it holds. A file ipnd
// has open fails with ErrInUse.
func Inspect(path string) (FileInfo, error) {
	var fi FileInfo
	if _, err := os.Stat(path); err != nil {
		return fi, fmt.Errorf("store: %w", err)
	}
	if err := checkFileSize(path); err != nil {
		return fi, err
	}
	if err := checkFile(path); err != nil { // bbolt's check panics on some damage
		return fi, err
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return fi, fmt.Errorf("store: %s: %w", path, ErrInUse)
	}
	if err != nil {
		return fi, fmt.Errorf("store: %s is not an ipnd database: %w", path, err)
	}
	defer b.Close()
	err = b.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
		}
		meta := tx.Bucket(bucketMeta)
		log := tx.Bucket(bucketLog)
		if meta == nil || log == nil {
			return fmt.Errorf("%w: %s has no ipnd buckets", ErrCorrupt, path)
		}
		fi.Schema = getU64(meta.Get(keySchema))
		if fi.Schema == 0 || fi.Schema > SchemaVersion {
			return fmt.Errorf("store: %s: %w: schema %d, this build knows 1 to %d", path, ErrNewSchema, fi.Schema, SchemaVersion)
		}
		if k, _ := log.Cursor().Last(); k != nil {
			fi.LastID = binary.BigEndian.Uint64(k)
		}
		fi.Sequence = max(log.Sequence(), fi.LastID)
		fi.Notifications = log.Stats().KeyN
		if o := tx.Bucket(bucketOrders); o != nil {
			fi.Orders = o.Stats().KeyN
		}
		if o := tx.Bucket(bucketOutbox); o != nil {
			fi.OutboxItems = o.Stats().KeyN
		}
		if l := tx.Bucket(bucketLost); l != nil {
			fi.Lost = l.Stats().KeyN
		}
		return nil
	})
	return fi, err
}

// Restored is what Restore did.
type Restored struct {
	FileInfo          // the database as installed: the backup and what the journal brought back
	Backup   FileInfo // the backup as it was
	Aside    string   // the directory the previous files went to ("" when there were none)
	// FromJournal counts the notifications the journal of the previous
	// database held and the backup did not: they are in the restored
	// database, with their ids (the pipeline processes them on start).
	FromJournal int
	// NotBack are the ids above the backup's that the previous database
	// had given and that neither the backup nor its journal holds (they
	// were only in the replaced database, or the journal is damaged):
	// recorded as lost, never given again (show answers 410).
	NotBack []Damage
	// Unknown is set when there was no database to replace, or it could
	// not be read, and no journal said how far its ids went: ids it gave
	// after the backup may be given again.
	Unknown bool
}

// Restore installs the backup at backup as the database at path, with
// ipnd stopped: it checks the backup (Inspect), copies it beside the
// database and applies to the copy the journal's records the backup does
// not have (the notifications acknowledged since the backup that were
// not yet applied, or whose database is damaged), recording as lost the
// ids it cannot bring back; then it moves the current database and its
// journal segments, if any, into a new directory beside them (path +
// ".before-restore-" + time; nothing is deleted) and renames the copy into
// place. It fails with ErrInUse while ipnd has the database open, and
// changes nothing when the backup does not check or the journal cannot be
// read.
func Restore(path, backup string, now time.Time) (Restored, error) {
	var r Restored
	fi, err := Inspect(backup)
	if err != nil {
		return r, fmt.Errorf("restore: the backup: %w", err)
	}
	r.Backup, r.FileInfo = fi, fi
	prevSeq, prevKnown := uint64(0), false
	if _, err := os.Stat(path); err == nil {
		// Locked while ipnd runs: refuse before touching anything.
		prev, err := Inspect(path)
		if errors.Is(err, ErrInUse) {
			return r, fmt.Errorf("restore: %s: %w: stop ipnd first", path, ErrInUse)
		}
		prevSeq, prevKnown = prev.Sequence, err == nil
	}
	// None: a new machine, or the data directory moved away. Which ids
	// the database it replaces gave after the backup is not known here
	// (unless a journal beside it says): Unknown.
	// The copy first: until it is synced beside the database, nothing
	// is moved, so a failure (a full disk) leaves everything as it was.
	dir := filepath.Dir(path)
	tmp := path + ".restoring"
	os.Remove(tmp) // left by a restore that crashed
	if err := copyFile(backup, tmp); err != nil {
		os.Remove(tmp)
		return r, fmt.Errorf("restore: %w", err)
	}
	segs, err := segmentsOnDisk(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		os.Remove(tmp)
		return r, fmt.Errorf("restore: %w", err)
	}
	aside := path + ".before-restore-" + now.UTC().Format("20060102T150405Z")
	if err := bringBack(tmp, path, aside, fi, prevSeq, prevKnown, now, &r); err != nil {
		os.Remove(tmp)
		return r, fmt.Errorf("restore: bringing back the journal's notifications: %w", err)
	}
	if r.FileInfo, err = Inspect(tmp); err != nil {
		os.Remove(tmp)
		return r, fmt.Errorf("restore: the restored copy: %w", err)
	}
	var current []string
	var owner *syscall.Stat_t
	if st, err := os.Stat(path); err == nil {
		current = append(current, path)
		owner, _ = st.Sys().(*syscall.Stat_t)
	}
	for _, s := range segs {
		current = append(current, s.path)
	}
	if len(current) > 0 {
		r.Aside = aside
		if err := os.Mkdir(aside, 0o700); err != nil {
			os.Remove(tmp)
			return r, fmt.Errorf("restore: %w", err)
		}
		// The database is linked aside, not moved: it keeps its name until
		// the copy replaces it in one rename, so that a restore cut short
		// never leaves the directory without a database (the next start
		// would create an empty one and give its ids again).
		linked := false
		for i, p := range current {
			dst := filepath.Join(aside, filepath.Base(p))
			var err error
			if p == path {
				if err = os.Link(p, dst); err == nil {
					linked = true
				} else {
					err = os.Rename(p, dst) // a file system without hard links
				}
			} else {
				err = os.Rename(p, dst)
			}
			if err != nil {
				// Put back what was moved: the database stays as it was.
				for _, q := range current[:i] {
					if q == path && linked {
						os.Remove(filepath.Join(aside, filepath.Base(q)))
					} else {
						os.Rename(filepath.Join(aside, filepath.Base(q)), q)
					}
				}
				os.Remove(tmp)
				return r, fmt.Errorf("restore: moving %s aside: %w", p, err)
			}
		}
	}
	if owner != nil {
		// The service's user, not root's (sudo ipnd restore), owns it.
		os.Chown(tmp, int(owner.Uid), int(owner.Gid))
	}
	if restoreCrashPoint != nil {
		restoreCrashPoint("install")
	}
	if err := os.Rename(tmp, path); err != nil {
		return r, fmt.Errorf("restore: installing the copy (the previous files are in %s): %w", r.Aside, err)
	}
	if r.Aside != "" {
		if err := syncDir(r.Aside); err != nil {
			return r, fmt.Errorf("restore: %w", err)
		}
	}
	return r, syncDir(dir)
}

// bringBack applies to the copy of the backup at tmp the records of the
// journal beside the database at path that the backup lacks, and records
// as lost the ids above the backup's that the previous database gave
// (prevSeq, when prevKnown) or the journal names and that cannot be
// brought back, so that none is given again. aside is where the previous
// files go (for the reasons).
func bringBack(tmp, path, aside string, backup FileInfo, prevSeq uint64, prevKnown bool, now time.Time, r *Restored) error {
	b, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	defer b.Close()
	var seq, v2 uint64
	if err := b.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketLog).Sequence()
		v2 = getU64(tx.Bucket(bucketMeta).Get(keyWAL2))
		return nil
	}); err != nil {
		return err
	}
	segs, err := segmentsOnDisk(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if v2 == 0 {
		// The backup predates format 2: the segments written since start
		// with its header.
		for _, s := range segs {
			if head, err := readHead(s.path); err == nil && bytes.Equal(head, segMagic) {
				v2 = s.first
				break
			}
		}
	}
	js := journalScan{end: seq}
	if len(segs) > 0 {
		// The newest segment is unknown (the previous database recorded it):
		// a missing one cannot be noticed, but ids past prevSeq would be.
		if js, err = scanJournal(path, seq, 0, v2, 0); err != nil {
			return err
		}
	}
	err = b.Update(func(tx *bolt.Tx) error {
		log, dedup := tx.Bucket(bucketLog), tx.Bucket(bucketDedup)
		top := seq
		for i := range js.segs {
			recs, err := readSegment(js.segs, i, seq, 0)
			if err != nil {
				return err
			}
			for _, rec := range recs {
				if rec.id <= top {
					continue
				}
				if err := log.Put(u64(rec.id), rec.rec); err != nil {
					return err
				}
				top = rec.id
				r.FromJournal++
				if rec.key != nil && dedup.Get(rec.key) == nil {
					if err := dedup.Put(rec.key, u64(rec.id)); err != nil {
						return err
					}
				}
			}
		}
		r.NotBack = append(r.NotBack, js.damage...)
		for _, d := range js.cut {
			d.Reason = "dropped as the journal's torn tail, may have been acknowledged: " + d.Reason
			r.NotBack = append(r.NotBack, d)
		}
		if end := max(js.end, js.lost, top); prevKnown && prevSeq > end {
			r.NotBack = append(r.NotBack, Damage{Segment: filepath.Base(path), Offset: -1, First: end + 1, Last: prevSeq,
				Reason: "only in the database the backup replaced (kept in " + filepath.Base(aside) + "), not in the journal"})
		}
		r.Unknown = !prevKnown && len(segs) == 0
		if len(r.NotBack) > 0 {
			lost, err := tx.CreateBucketIfNotExists(bucketLost)
			if err != nil {
				return err
			}
			for _, d := range r.NotBack {
				v, err := encodeValue(LostRange{First: d.First, Last: d.Last, Segment: d.Segment, Offset: d.Offset,
					Bounded: d.Bounded, Reason: "restore: " + d.Reason, RecordedAt: now.UTC()})
				if err != nil {
					return err
				}
				if err := lost.Put(u64(d.First), v); err != nil {
					return err
				}
				top = max(top, d.Last)
			}
		}
		// No id the previous database or its journal may have given is
		// given again.
		return log.SetSequence(max(top, js.end, prevSeq))
	})
	if err != nil {
		return err
	}
	return b.Sync()
}

// restoreCrashPoint, when set (tests), is called at each step of Restore.
var restoreCrashPoint func(at string)

// readHead reads the first bytes of a segment, as long as its magic.
func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, len(segMagic))
	_, err = io.ReadFull(f, head)
	return head, err
}

// checkFileSize refuses a bbolt file shorter than its newest meta page
// says (a truncated copy): bbolt would map the missing pages and the
// process would crash reading them. The meta pages are the first two;
// each holds, after the 16-byte page header, magic, version, page size,
// flags, the root bucket (16 bytes), the freelist page, then the high
// water mark (pgid) and the txid.
func checkFileSize(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	const magic = 0xED0CDAED
	var best struct{ txid, end uint64 }
	found := false
	for _, off := range []int64{0, -1} {
		hdr := make([]byte, 80)
		if off < 0 {
			// The second meta page starts one page in: the page size is in
			// the first.
			first := make([]byte, 80)
			if _, err := f.ReadAt(first, 0); err != nil {
				break
			}
			off = int64(binary.LittleEndian.Uint32(first[24:28]))
			if off < 512 || off > 1<<16 {
				break
			}
		}
		if _, err := f.ReadAt(hdr, off); err != nil {
			continue
		}
		m := hdr[16:]
		if binary.LittleEndian.Uint32(m[0:4]) != magic {
			continue
		}
		pageSize := uint64(binary.LittleEndian.Uint32(m[8:12]))
		pgid, txid := binary.LittleEndian.Uint64(m[40:48]), binary.LittleEndian.Uint64(m[48:56])
		if !found || txid > best.txid {
			best.txid, best.end, found = txid, pgid*pageSize, true
		}
	}
	if !found {
		return fmt.Errorf("%w: %s is not a bbolt database (no meta page)", ErrCorrupt, path)
	}
	if uint64(st.Size()) < best.end {
		return fmt.Errorf("%w: %s is truncated: %d bytes, its pages need %d", ErrCorrupt, path, st.Size(), best.end)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// String is a one-line summary for the CLI.
func (fi FileInfo) String() string {
	parts := []string{fmt.Sprintf("schema %d", fi.Schema), fmt.Sprintf("last id %d", fi.LastID),
		fmt.Sprintf("%d notifications", fi.Notifications), fmt.Sprintf("%d orders", fi.Orders),
		fmt.Sprintf("%d outbox items", fi.OutboxItems)}
	if fi.Lost > 0 {
		parts = append(parts, fmt.Sprintf("%d lost id ranges", fi.Lost))
	}
	return strings.Join(parts, ", ")
}
