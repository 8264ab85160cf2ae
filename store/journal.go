package store

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The journal is a write-ahead log in front of bbolt.
//
// A bbolt commit costs two fdatasyncs (its pages, then its meta page) and
// rewrites every page it touches. Append instead writes a group of records
// to the journal with one write and one fdatasync, and returns; the
// applier goroutine then copies them into the log and dedup buckets in
// bbolt transactions of its own and deletes the segments whose records are
// all in bbolt. Open applies whatever an earlier run journaled but did not
// apply (crash, kill -9, power loss).
//
// A segment is the file <db>.wal-<id of its first record, 16 hex digits>,
// preallocated so that a sync after a write flushes data, not the file's
// size. Frames follow each other from offset 0:
//
//	u32 length of record | u32 CRC-32C of (length, id, record) | u64 id | record
//
// where record is encodeRecord's output. The ids in a segment are
// consecutive from its first id. Reading a segment stops at the first
// frame that is zero, torn, fails its CRC or breaks the sequence, and
// before the next segment's first id: a failed write is retried in a new
// segment that starts at the same id and so supersedes the failed frames.

const (
	frameHeader = 16
	// DefaultSegmentSize is the preallocated size of a journal segment.
	DefaultSegmentSize = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journaled is one record on its way from the journal into bbolt.
type journaled struct {
	id  uint64
	key []byte // dedup key, nil when the message has no id
	rec []byte
}

func appendFrame(b []byte, id uint64, rec []byte) []byte {
	var h [frameHeader]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(len(rec)))
	binary.BigEndian.PutUint64(h[8:16], id)
	sum := crc32.Update(0, castagnoli, h[0:4])
	sum = crc32.Update(sum, castagnoli, h[8:16])
	sum = crc32.Update(sum, castagnoli, rec)
	binary.BigEndian.PutUint32(h[4:8], sum)
	return append(append(b, h[:]...), rec...)
}

// readFrame decodes the frame at the start of b; ok is false for zeros, a
// torn frame or a bad checksum. rec aliases b.
func readFrame(b []byte) (id uint64, rec []byte, size int, ok bool) {
	if len(b) < frameHeader {
		return 0, nil, 0, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n == 0 || uint64(n) > uint64(len(b)-frameHeader) {
		return 0, nil, 0, false
	}
	rec = b[frameHeader : frameHeader+int(n)]
	sum := crc32.Update(0, castagnoli, b[0:4])
	sum = crc32.Update(sum, castagnoli, b[8:16])
	sum = crc32.Update(sum, castagnoli, rec)
	if sum != binary.BigEndian.Uint32(b[4:8]) {
		return 0, nil, 0, false
	}
	return binary.BigEndian.Uint64(b[8:16]), rec, frameHeader + int(n), true
}

type segment struct {
	path  string
	first uint64
	last  uint64 // the last id written and synced in it; 0 while none
}

// journal writes segments. Only the group-commit leader calls write, so f,
// cur, off and buf need no lock; mu guards old, which the applier trims.
type journal struct {
	base string // the database path; segments are base + ".wal-..."
	size int64
	buf  []byte

	f   *os.File
	cur segment
	off int64

	mu  sync.Mutex
	old []segment // closed segments, deleted once all their records are in bbolt
}

func segmentPath(base string, first uint64) string {
	return fmt.Sprintf("%s.wal-%016x", base, first)
}

// write appends the records, with ids first, first+1, ..., and syncs them.
// After an error the segment is retired: the next write starts a new one
// at the id it is given.
func (j *journal) write(first uint64, recs [][]byte) error {
	j.buf = j.buf[:0]
	for i, r := range recs {
		j.buf = appendFrame(j.buf, first+uint64(i), r)
	}
	if j.f != nil && j.off > 0 && j.off+int64(len(j.buf)) > j.size {
		j.retire()
	}
	if j.f == nil {
		if err := j.create(first, int64(len(j.buf))); err != nil {
			return err
		}
	}
	if _, err := j.f.WriteAt(j.buf, j.off); err != nil {
		j.fail(first)
		return err
	}
	if err := fdatasync(j.f); err != nil {
		// After a failed sync the kernel may have dropped the pages:
		// nothing in this segment past the last good sync is trusted.
		j.fail(first)
		return err
	}
	j.off += int64(len(j.buf))
	j.cur.last = first + uint64(len(recs)) - 1
	if cap(j.buf) > 4<<20 {
		j.buf = nil // do not keep a huge batch's buffer
	}
	return nil
}

func (j *journal) create(first uint64, need int64) error {
	path := segmentPath(j.base, first)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := preallocate(f, max(j.size, need)); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil { // the allocation and the new file survive power loss
		f.Close()
		os.Remove(path)
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil { // and so does its name
		f.Close()
		os.Remove(path)
		return err
	}
	j.f, j.cur, j.off = f, segment{path: path, first: first}, 0
	return nil
}

// fail retires the current segment after a failed write of the records
// from first on, and starts the next segment at first at once: on disk,
// the new segment's name then bounds the old one, so frames of the failed
// write that reached the disk anyway are never read back as records
// (their Appends got an error). Should that also fail, only a crash
// before the next successful write could bring them back.
func (j *journal) fail(first uint64) {
	j.retire()
	_ = j.create(first, 0)
}

// retire closes the current segment. One that holds no synced record is
// removed at once (its replacement reuses its name).
func (j *journal) retire() {
	j.f.Close()
	j.f = nil
	if j.cur.last == 0 {
		os.Remove(j.cur.path)
		return
	}
	j.mu.Lock()
	j.old = append(j.old, j.cur)
	j.mu.Unlock()
}

// collect deletes the retired segments whose records are all in bbolt.
func (j *journal) collect(applied uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.old = slices.DeleteFunc(j.old, func(s segment) bool {
		if s.last > applied {
			return false
		}
		os.Remove(s.path)
		return true
	})
}

// close closes the current segment and, when every record is in bbolt,
// deletes all segments.
func (j *journal) close(allApplied bool) {
	if j.f != nil {
		j.f.Close()
		j.f = nil
		if allApplied {
			os.Remove(j.cur.path)
		}
	}
	if allApplied {
		j.collect(math.MaxUint64)
	}
}

// segmentsOnDisk lists the journal segments of the database at base,
// oldest first.
func segmentsOnDisk(base string) ([]segment, error) {
	entries, err := os.ReadDir(filepath.Dir(base))
	if err != nil {
		return nil, err
	}
	prefix := filepath.Base(base) + ".wal-"
	var segs []segment
	for _, e := range entries {
		hex, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || len(hex) != 16 || hex != strings.ToLower(hex) || !e.Type().IsRegular() {
			continue // not a name segmentPath makes
		}
		first, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || first == 0 {
			continue
		}
		segs = append(segs, segment{path: filepath.Join(filepath.Dir(base), e.Name()), first: first})
	}
	slices.SortFunc(segs, func(a, b segment) int { return cmp.Compare(a.first, b.first) })
	return segs, nil
}

// readSegment returns the records of segs[i] with ids above after, up to
// the next segment's first id. They alias the file's bytes.
func readSegment(segs []segment, i int, after uint64) ([]journaled, error) {
	s := segs[i]
	limit := uint64(math.MaxUint64)
	if i+1 < len(segs) {
		limit = segs[i+1].first
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("store: journal: %w", err)
	}
	var out []journaled
	next := s.first
	for off := 0; next < limit; next++ {
		id, rec, size, ok := readFrame(data[off:])
		if !ok || id != next {
			break
		}
		off += size
		if id <= after {
			continue
		}
		n, err := decodeRecord(id, rec)
		if err != nil {
			return nil, fmt.Errorf("store: journal %s: %w", filepath.Base(s.path), err)
		}
		out = append(out, journaled{id: id, key: dedupKey(n.Gateway, n.DedupKey), rec: rec})
	}
	return out, nil
}
