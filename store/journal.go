package store

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
// consecutive from its first id. Reading a segment stops before the next
// segment's first id: a failed write is retried in a new segment that
// starts at the same id and so supersedes the failed frames.
//
// Damage. A frame that is zero, torn, fails its CRC or breaks the
// sequence ends the segment only when no valid frame follows it: that is
// a torn tail (a crash in the middle of a write whose Appends never got
// an answer). A valid frame after a bad one, ids missing between
// segments, or a missing newest segment (its first id is recorded in
// bbolt when it is created) is damage to acknowledged records: Open
// refuses (JournalDamageError) and leaves every file as it is, and only
// an explicit recovery (Options.SkipDamaged, `ipnd recover
// --skip-damaged`) applies the readable frames and records the rest as
// lost.

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
	size  int64  // bytes preallocated
}

// minSegment is the smallest preallocation tried when the full size does
// not fit on the disk.
const minSegment = 64 << 10

// journal writes segments. Only the group-commit leader calls write and
// create, so f, cur, off and buf need no lock; mu guards old, which the
// applier trims, and info, which the file check reads.
type journal struct {
	base string // the database path; segments are base + ".wal-..."
	size int64
	buf  []byte
	// created, when set, is called with a new segment's first id before
	// anything is written to it (the store records it in bbolt, so that a
	// deleted newest segment is noticed); an error fails the creation.
	created func(first uint64) error

	f   *os.File
	cur segment
	off int64

	mu   sync.Mutex
	old  []segment   // closed segments, deleted once all their records are in bbolt
	info os.FileInfo // of the current segment when it was created; nil while none
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
	if j.f != nil && j.off > 0 && j.off+int64(len(j.buf)) > j.cur.size {
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
	if st, err := j.f.Stat(); err == nil && unlinked(st) {
		// The segment was deleted under us (rm of the data directory): the
		// records would not be found after a restart.
		j.fail(first)
		return fmt.Errorf("%w: journal segment %s was deleted", ErrFilesGone, filepath.Base(j.cur.path))
	}
	j.off += int64(len(j.buf))
	j.cur.last = first + uint64(len(recs)) - 1
	if cap(j.buf) > 4<<20 {
		j.buf = nil // do not keep a huge batch's buffer
	}
	return nil
}

// create starts the segment for the records from first on, preallocated
// at the configured size or, when the disk has less than four times that
// room, at a quarter of the room (bbolt needs the rest to apply the
// journal), or at the largest smaller size (halving, at least need and
// minSegment) that fits:
// writes inside a preallocation need no new blocks, so durability is the
// same, only segments are more numerous.
func (j *journal) create(first uint64, need int64) error {
	path := segmentPath(j.base, first)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	size := max(j.size, need)
	if free, ok := freeBytes(filepath.Dir(path)); ok && free < 4*size {
		// Short of room: take a quarter of it, so that bbolt keeps room to
		// apply the journal (the segments go only once it has).
		size = max(need, minSegment, free/4/minSegment*minSegment)
	}
	for {
		err = preallocate(f, size)
		if err == nil || !errors.Is(err, syscall.ENOSPC) || size <= max(need, minSegment) {
			break
		}
		size = max(size/2, need, minSegment)
	}
	if err == nil {
		err = f.Sync() // the allocation and the new file survive power loss
	}
	if err == nil {
		err = syncDir(filepath.Dir(path)) // and so does its name
	}
	if err == nil && j.created != nil {
		err = j.created(first)
	}
	var st os.FileInfo
	if err == nil {
		st, err = f.Stat()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	j.f, j.cur, j.off = f, segment{path: path, first: first, size: size}, 0
	j.mu.Lock()
	j.info = st
	j.mu.Unlock()
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
// emptied at once (its replacement reuses its name; until then, an empty
// file still bears the id recorded as the newest segment's).
func (j *journal) retire() {
	if j.cur.last == 0 {
		j.f.Truncate(0)
	}
	j.f.Close()
	j.f = nil
	j.mu.Lock()
	j.info = nil
	if j.cur.last != 0 {
		j.old = append(j.old, j.cur)
	}
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
		j.mu.Lock()
		j.info = nil
		j.mu.Unlock()
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

// Damage is one stretch of acknowledged ids the journal cannot give back.
type Damage struct {
	Segment string // file name of the segment (of the next one, for ids missing before it)
	Offset  int64  // byte offset in Segment of the first unreadable byte; -1 when the ids have no file
	First   uint64 // first id at stake
	Last    uint64 // last id at stake
	// Bounded is true when the real last id is unknown (a missing newest
	// segment): Last is then the most ids such a segment can hold.
	Bounded bool
	Reason  string
}

func (d Damage) String() string {
	ids := fmt.Sprintf("ids %d-%d", d.First, d.Last)
	if d.First == d.Last {
		ids = fmt.Sprintf("id %d", d.First)
	}
	if d.Bounded {
		ids = fmt.Sprintf("ids from %d on (up to %d)", d.First, d.Last)
	}
	if d.Offset < 0 {
		return fmt.Sprintf("%s: %s (%s)", d.Segment, d.Reason, ids)
	}
	return fmt.Sprintf("%s at byte offset %d: %s (%s)", d.Segment, d.Offset, d.Reason, ids)
}

// JournalDamageError is Open's refusal to start on a damaged journal.
// Every file is left as it was.
type JournalDamageError struct {
	Path   string // the database
	Damage []Damage
}

func (e *JournalDamageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: %s: %v: ", e.Path, ErrJournalDamaged)
	for i, d := range e.Damage {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(d.String())
	}
	if len(e.Damage) > 0 && e.Damage[0].Offset < 0 && !e.Damage[0].Bounded {
		b.WriteString(". If the database was replaced by an older copy beside the journal of a later run, that" +
			" journal does not follow it: put the database back, or install the backup with `ipnd restore BACKUP`," +
			" which moves the journal aside")
	}
	b.WriteString(". Every file is kept as it was. To go on, stop ipnd, copy the data directory, then run " +
		"`ipnd recover --skip-damaged`: it applies every readable frame, records these ids as lost " +
		"(never given again) and moves the damaged segments aside")
	return b.String()
}

func (e *JournalDamageError) Unwrap() error { return ErrJournalDamaged }

// minFrame is the smallest frame encodeRecord can produce (8 bytes of
// record); it bounds how many ids a segment of a given size can hold.
const minFrame = frameHeader + 8

// scan is what reading a segment found.
type scan struct {
	recs   []journaled // ids above after, in order; they alias the file's bytes
	next   uint64      // the id after the last readable frame
	damage []Damage
}

// scanSegment reads the frames of the segment s (its bytes in data) with
// ids from s.first up to, not including, limit. At a frame that cannot be
// read it looks for the next valid frame (an id in the sequence's range
// and a good CRC) further on: none means a torn tail, where reading
// stops; one means damage: the ids in between are lost, and reading goes
// on there. Damage to ids up to after (already in bbolt) is not reported.
func scanSegment(s segment, data []byte, limit, after uint64) (scan, error) {
	var out scan
	name := filepath.Base(s.path)
	next := s.first
	for off := 0; next < limit; {
		id, rec, size, ok := readFrame(data[off:])
		if !ok || id != next {
			at, found := findFrame(data, off+1, next, limit)
			if at < 0 {
				break // torn tail
			}
			if found > next && found-1 > after { // ids lost that bbolt does not have
				out.damage = append(out.damage, Damage{Segment: name, Offset: int64(off), First: max(next, after+1),
					Last: found - 1, Reason: fmt.Sprintf("unreadable frames before a valid one (id %d at offset %d)", found, at)})
			}
			off, next = at, found
			continue
		}
		off += size
		next++
		if id <= after {
			continue
		}
		n, err := decodeRecord(id, rec)
		if err != nil {
			return out, fmt.Errorf("store: journal %s at byte offset %d: %w", name, off-size, err)
		}
		out.recs = append(out.recs, journaled{id: id, key: dedupKey(n.Gateway, n.DedupKey), rec: rec})
	}
	out.next = next
	return out, nil
}

// findFrame returns the offset and id of the first valid frame at or
// after from whose id is in [lo, hi), or -1.
func findFrame(data []byte, from int, lo, hi uint64) (int, uint64) {
	// A frame's id has a non-zero byte, so none starts past the last
	// non-zero byte less 8: the preallocated zeros after a torn tail are
	// not searched byte by byte.
	end := len(data)
	for end >= 8 && binary.LittleEndian.Uint64(data[end-8:end]) == 0 {
		end -= 8
	}
	for end > 0 && data[end-1] == 0 {
		end--
	}
	for p := from; p+frameHeader <= len(data) && p+8 < end; p++ {
		id := binary.BigEndian.Uint64(data[p+8 : p+16])
		if id < lo || id >= hi {
			continue
		}
		if got, _, _, ok := readFrame(data[p:]); ok && got == id {
			return p, id
		}
	}
	return -1, 0
}

// journalScan is the whole journal as recovery sees it.
type journalScan struct {
	segs   []segment // on disk, oldest first; last set to the last readable id
	damage []Damage
	end    uint64 // the newest id acknowledged and readable (or in bbolt)
	lost   uint64 // the highest id at stake in damage (0 when none)
}

// scanJournal checks every segment of the database at base, one at a
// time: seq is the newest id in bbolt, newest the first id of the newest
// segment the last run created (0 when unknown), maxIDs the most ids a
// missing newest segment could have held. Records are not kept (see
// readSegment).
func scanJournal(base string, seq, newest, maxIDs uint64) (journalScan, error) {
	var js journalScan
	segs, err := segmentsOnDisk(base)
	if err != nil {
		return js, fmt.Errorf("store: journal: %w", err)
	}
	expected := seq + 1 // every id from here on must be in a segment
	hasNewest := newest == 0
	for i := range segs {
		s := &segs[i]
		if s.first >= newest {
			hasNewest = true
		}
		if s.first > expected {
			js.damage = append(js.damage, Damage{Segment: filepath.Base(s.path), Offset: -1, First: expected,
				Last: s.first - 1, Reason: "ids missing before this segment (a segment deleted, or its end damaged)"})
			expected = s.first
		}
		data, err := os.ReadFile(s.path)
		if err != nil {
			return js, fmt.Errorf("store: journal: %w", err)
		}
		sc, err := scanSegment(*s, data, segmentLimit(segs, i, newest), seq)
		if err != nil {
			return js, err
		}
		js.damage = append(js.damage, sc.damage...)
		if sc.next > s.first {
			s.last = sc.next - 1
		}
		expected = max(expected, sc.next)
	}
	if !hasNewest {
		first := max(newest, expected)
		js.damage = append(js.damage, Damage{Segment: filepath.Base(segmentPath(base, newest)), Offset: -1,
			First: first, Last: newest + maxIDs - 1, Bounded: true,
			Reason: "the newest segment is missing"})
	}
	js.segs = segs
	js.end = expected - 1
	for _, d := range js.damage {
		js.lost = max(js.lost, d.Last)
	}
	return js, nil
}

// segmentLimit is the id before which segs[i] ends: the next segment's
// first id, or the newest segment's when that one is missing.
func segmentLimit(segs []segment, i int, newest uint64) uint64 {
	limit := uint64(math.MaxUint64)
	if i+1 < len(segs) {
		limit = segs[i+1].first
	}
	if newest > segs[i].first && newest < limit {
		limit = newest
	}
	return limit
}

// readSegment returns the readable records of segs[i] with ids above
// after (see scanSegment).
func readSegment(segs []segment, i int, after, newest uint64) ([]journaled, error) {
	data, err := os.ReadFile(segs[i].path)
	if err != nil {
		return nil, fmt.Errorf("store: journal: %w", err)
	}
	sc, err := scanSegment(segs[i], data, segmentLimit(segs, i, newest), after)
	return sc.recs, err
}
