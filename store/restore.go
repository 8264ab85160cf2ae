package store

import (
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
	Lost          int // ids recorded as lost (journal damage), never given again
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

// Restore installs the backup at backup as the database at path, with
// ipnd stopped: it checks the backup (Inspect), moves the current
// database and its journal segments, if any, into a new directory beside
// them (path + ".before-restore-" + time; nothing is deleted), then
// copies the backup into place (written to a temporary file, synced,
// renamed). It fails with ErrInUse while ipnd has the database open, and
// changes nothing when the backup does not check. It returns what was
// restored and the directory the previous files went to ("" when there
// were none).
func Restore(path, backup string, now time.Time) (FileInfo, string, error) {
	fi, err := Inspect(backup)
	if err != nil {
		return fi, "", fmt.Errorf("restore: the backup: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		// Locked while ipnd runs: refuse before touching anything.
		if _, err := Inspect(path); errors.Is(err, ErrInUse) {
			return fi, "", fmt.Errorf("restore: %s: %w: stop ipnd first", path, ErrInUse)
		}
	}
	// The copy first: until it is synced beside the database, nothing
	// is moved, so a failure (a full disk) leaves everything as it was.
	dir := filepath.Dir(path)
	tmp := path + ".restoring"
	os.Remove(tmp) // left by a restore that crashed
	if err := copyFile(backup, tmp); err != nil {
		os.Remove(tmp)
		return fi, "", fmt.Errorf("restore: %w", err)
	}
	var current []string
	var owner *syscall.Stat_t
	if st, err := os.Stat(path); err == nil {
		current = append(current, path)
		owner, _ = st.Sys().(*syscall.Stat_t)
	}
	segs, err := segmentsOnDisk(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		os.Remove(tmp)
		return fi, "", fmt.Errorf("restore: %w", err)
	}
	for _, s := range segs {
		current = append(current, s.path)
	}
	aside := ""
	if len(current) > 0 {
		aside = path + ".before-restore-" + now.UTC().Format("20060102T150405Z")
		if err := os.Mkdir(aside, 0o700); err != nil {
			os.Remove(tmp)
			return fi, "", fmt.Errorf("restore: %w", err)
		}
		for i, p := range current {
			if err := os.Rename(p, filepath.Join(aside, filepath.Base(p))); err != nil {
				// Put back what was moved: the database stays as it was.
				for _, q := range current[:i] {
					os.Rename(filepath.Join(aside, filepath.Base(q)), q)
				}
				os.Remove(tmp)
				return fi, "", fmt.Errorf("restore: moving %s aside: %w", p, err)
			}
		}
	}
	if owner != nil {
		// The service's user, not root's (sudo ipnd restore), owns it.
		os.Chown(tmp, int(owner.Uid), int(owner.Gid))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fi, aside, fmt.Errorf("restore: installing the copy (the previous files are in %s): %w", aside, err)
	}
	if aside != "" {
		if err := syncDir(aside); err != nil {
			return fi, aside, fmt.Errorf("restore: %w", err)
		}
	}
	return fi, aside, syncDir(dir)
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
