package store

import (
	"bytes"
	"cmp"
	"crypto/rand"
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
// size. Format 2 (schema 4 on; bbolt's meta key wal2 holds the first id
// written so) lays it out as
//
//	header (64 bytes): "ipndwal\x00" | u32 format (2) | u32 0 | u64 first id |
//	                   16 random bytes, the segment's key | u32 CRC-32C of the above | zeros
//	two marker slots (32 bytes each): u64 acked | u64 handed | u32 check
//	frames, from offset 128
//	a copy of the header in the last 64 bytes of the preallocation
//
// and each frame as
//
//	u32 length of record, top bit set on the last frame of a group |
//	u32 check | u64 id XOR mask | record
//
// where record is plainRecord's output (packed, encodeRecord's output,
// in segments of builds before issue 23: both are read), check is the CRC-32C of the
// frame's length word, stored id and record, started from the CRC of the
// key's first 8 bytes, and mask is the key's last 8 bytes. A record's
// body comes from the request; without the key no one can build, inside
// it, bytes that pass for a frame of that segment, so a reader that
// looks for the next frame past damage never takes a frame embedded in a
// body for a real one. Format 1 (segments written before schema 4) has
// no header, no key (a plain CRC, the id as it is) and no group mark: it
// is still read, so that an upgrade applies what the last run left, and
// read as that build read it: the first frame that cannot be read ends
// the segment (a frame found past it may be bytes of a body).
//
// The ids in a segment are consecutive from its first id. Reading a
// segment stops before the next segment's first id: a failed write is
// retried in a new segment that starts at the same id and so supersedes
// the failed frames. Each write (one group of records, one fdatasync)
// also rewrites a marker slot, taking turns, with acked (the last id
// synced before this group: every id up to it was acknowledged) and
// handed (the last id of this group: no id above it was given out); an
// idle store writes acked up to its newest record within CheckInterval.
//
// Damage. A frame that is zero, torn, fails its check or breaks the
// sequence ends the segment only when it is in the torn tail: no valid
// frame follows it, or the frames that follow belong to a group that
// never ended (a crash in the middle of a write+fsync may persist its
// pages in any order; none of its Appends got an answer). Even then a
// frame the marker counts as acknowledged is damage. A final group whose
// last frame is there but not all before it is a torn tail too when the
// marker counts none of the lost ids as acknowledged and nothing follows
// it (no later write waited for its sync); Open reports it for a
// warning. Ids of a torn tail are never given again (the marker's handed
// bounds them), in whichever segment it is: a later run starts a new
// segment after it, and a segment followed by another within a run gets
// a marker counting all its records as acknowledged (retire). Any other
// valid frame that ends a group after a bad one, ids missing between
// segments, or a missing newest segment (its first id is recorded in
// bbolt when it is created) is damage to acknowledged records: Open refuses
// (JournalDamageError) and leaves every file as it is, and only an
// explicit recovery (Options.SkipDamaged, `ipnd recover --skip-damaged`)
// applies the readable frames and records the rest as lost.

const (
	frameHeader = 16
	// segHeader is where a format 2 segment's first frame starts: the
	// header and the two marker slots come before it.
	segHeader = 128
	// headerSize is the header's size, and that of its copy at the end.
	headerSize = 64
	markerSize = 32 // a slot; markerLen bytes of it are used
	markerLen  = 20
	// groupEnd marks, in a format 2 frame's length word, the last frame
	// of a group.
	groupEnd = 1 << 31
	// DefaultSegmentSize is the preallocated size of a journal segment.
	DefaultSegmentSize = 16 << 20
	// tempSuffix ends the name of a segment being created; segmentsOnDisk
	// does not list it, and Open removes it.
	tempSuffix = ".new"
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	// segMagic begins a format 2 segment. Read as a format 1 frame's
	// length it is 1.7 GB, more than any record.
	segMagic = []byte("ipndwal\x00")
)

// journaled is one record on its way from the journal into bbolt.
type journaled struct {
	id  uint64
	key []byte // dedup key, nil when the message has no id
	rec []byte
}

// frameKey is what the frames of one segment are written and checked
// with. The zero value is format 1: a plain CRC, the id as it is, and
// every frame ending a group.
type frameKey struct {
	v2   bool
	seed uint32 // CRC-32C of the segment key's first 8 bytes
	mask uint64 // the key's last 8 bytes, XORed into each stored id
}

func keyOf(salt [16]byte) frameKey {
	return frameKey{v2: true, seed: crc32.Update(0, castagnoli, salt[:8]), mask: binary.BigEndian.Uint64(salt[8:])}
}

// appendFrame appends the frame of rec with id; end marks the last frame
// of a group.
func (k frameKey) appendFrame(b []byte, id uint64, rec []byte, end bool) []byte {
	var h [frameHeader]byte
	n := uint32(len(rec))
	if k.v2 && end {
		n |= groupEnd
	}
	binary.BigEndian.PutUint32(h[0:4], n)
	binary.BigEndian.PutUint64(h[8:16], id^k.mask)
	sum := crc32.Update(k.seed, castagnoli, h[0:4])
	sum = crc32.Update(sum, castagnoli, h[8:16])
	sum = crc32.Update(sum, castagnoli, rec)
	binary.BigEndian.PutUint32(h[4:8], sum)
	return append(append(b, h[:]...), rec...)
}

// readFrame decodes the frame at the start of b; ok is false for zeros, a
// torn frame or a bad check. rec aliases b.
func (k frameKey) readFrame(b []byte) (id uint64, rec []byte, size int, end, ok bool) {
	if len(b) < frameHeader {
		return 0, nil, 0, false, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	end = true
	if k.v2 {
		end = n&groupEnd != 0
		n &^= groupEnd
	}
	if n == 0 || uint64(n) > uint64(len(b)-frameHeader) {
		return 0, nil, 0, false, false
	}
	rec = b[frameHeader : frameHeader+int(n)]
	sum := crc32.Update(k.seed, castagnoli, b[0:4])
	sum = crc32.Update(sum, castagnoli, b[8:16])
	sum = crc32.Update(sum, castagnoli, rec)
	if sum != binary.BigEndian.Uint32(b[4:8]) {
		return 0, nil, 0, false, false
	}
	return binary.BigEndian.Uint64(b[8:16]) ^ k.mask, rec, frameHeader + int(n), end, true
}

// encodeHeader is the header of a format 2 segment.
func encodeHeader(first uint64, salt [16]byte) []byte {
	h := make([]byte, headerSize)
	copy(h, segMagic)
	binary.BigEndian.PutUint32(h[8:12], 2)
	binary.BigEndian.PutUint64(h[16:24], first)
	copy(h[24:40], salt[:])
	binary.BigEndian.PutUint32(h[40:44], crc32.Checksum(h[:40], castagnoli))
	return h
}

// decodeHeader returns the key of the header h of the segment whose
// first id is first; ok is false when h is not that header, intact.
func decodeHeader(h []byte, first uint64) (salt [16]byte, ok bool) {
	if len(h) < headerSize || !bytes.Equal(h[:8], segMagic) || binary.BigEndian.Uint32(h[8:12]) != 2 ||
		binary.BigEndian.Uint64(h[16:24]) != first ||
		crc32.Checksum(h[:40], castagnoli) != binary.BigEndian.Uint32(h[40:44]) {
		return salt, false
	}
	copy(salt[:], h[24:40])
	return salt, true
}

// marker is the content of a marker slot.
func (k frameKey) marker(acked, handed uint64) []byte {
	m := make([]byte, markerLen)
	binary.BigEndian.PutUint64(m[0:8], acked)
	binary.BigEndian.PutUint64(m[8:16], handed)
	binary.BigEndian.PutUint32(m[16:20], crc32.Update(k.seed, castagnoli, m[:16]))
	return m
}

func markerOffset(slot int) int64 { return headerSize + int64(slot)*markerSize }

// markers reads both marker slots of a format 2 segment and returns the
// highest acked and handed among the intact ones (0 when none).
func (k frameKey) markers(data []byte) (acked, handed uint64) {
	for slot := range 2 {
		off := int(markerOffset(slot))
		if !k.v2 || len(data) < off+markerLen {
			continue
		}
		m := data[off : off+markerLen]
		if crc32.Update(k.seed, castagnoli, m[:16]) != binary.BigEndian.Uint32(m[16:20]) {
			continue
		}
		acked = max(acked, binary.BigEndian.Uint64(m[0:8]))
		handed = max(handed, binary.BigEndian.Uint64(m[8:16]))
	}
	return acked, handed
}

type segment struct {
	path  string
	first uint64
	last  uint64 // the last id written and synced in it; 0 while none
	size  int64  // bytes preallocated
	// v2 (when read): written in format 2. recorded (when read): bbolt
	// recorded its creation, so frames may have been written to it.
	v2, recorded bool
	// high (when read): the highest id it may have been given (scan.high);
	// above last when it ends in a torn tail.
	high uint64
}

// layout finds, in the bytes of the segment s, the frames' key and the
// stretch [start, end) they lie in. ok is false for a format 2 segment
// whose header and its copy are both unreadable.
func (s segment) layout(data []byte) (k frameKey, start, end int, ok bool) {
	if !s.v2 {
		return frameKey{}, 0, len(data), true
	}
	salt, ok := decodeHeader(data, s.first)
	end = len(data)
	if end >= segHeader+headerSize {
		copyAt := data[end-headerSize:]
		if bytes.Equal(copyAt[:8], segMagic) {
			end -= headerSize // frames stop before the copy
		}
		if !ok {
			salt, ok = decodeHeader(copyAt, s.first)
		}
	}
	if !ok {
		return k, 0, 0, false
	}
	start = min(segHeader, len(data))
	return keyOf(salt), start, max(start, end), true
}

// minSegment is the smallest preallocation tried when the full size does
// not fit on the disk.
const minSegment = 64 << 10

// journal writes segments. Only the group-commit leader calls write,
// mark and create, so f, cur, off, key, slot and marked need no lock; mu
// guards old, which the applier trims, and info and curPath, which the
// file check and collect read.
type journal struct {
	base string // the database path; segments are base + ".wal-..."
	size int64
	buf  []byte
	// created, when set, is called with a new segment's first id before
	// anything is written to it (the store records it in bbolt, so that a
	// deleted newest segment is noticed); an error fails the creation.
	created func(first uint64) error
	// crashPoint, when set (tests), is called at each step of create.
	crashPoint func(at string)
	// linked, when set, is called after each group's sync (the store
	// checks that the database file still has a name): an error fails
	// the group as a deleted segment does.
	linked func() error

	f      *os.File
	cur    segment
	off    int64
	key    frameKey // the current segment's
	slot   int      // the marker slot the next write rewrites
	marked uint64   // acked in the newest marker written

	mu      sync.Mutex
	old     []segment   // closed segments, deleted once all their records are in bbolt
	info    os.FileInfo // of the current segment when it was created; nil while none
	curPath string      // the current segment's path, "" while none
}

func segmentPath(base string, first uint64) string {
	return fmt.Sprintf("%s.wal-%016x", base, first)
}

// write appends the records, with ids first, first+1, ..., as one group,
// and syncs them. After an error the segment is retired: the next write
// starts a new one at the id it is given. Every id before first is
// acknowledged when write is called.
func (j *journal) write(first uint64, recs [][]byte) error {
	need := 0
	for _, r := range recs {
		need += frameHeader + len(r)
	}
	if j.f != nil && j.off+int64(need) > j.cur.size-headerSize {
		// Full; or empty and too small for this group (made by fail or
		// probe): its replacement, of the size needed, takes its name.
		j.retire()
	}
	if j.f == nil {
		if err := j.create(first, int64(need)); err != nil {
			return err
		}
	}
	j.buf = j.buf[:0]
	for i, r := range recs {
		j.buf = j.key.appendFrame(j.buf, first+uint64(i), r, i == len(recs)-1)
	}
	last := first + uint64(len(recs)) - 1
	if _, err := j.f.WriteAt(j.buf, j.off); err != nil {
		j.fail(first)
		return err
	}
	if _, err := j.f.WriteAt(j.key.marker(first-1, last), markerOffset(j.slot)); err != nil {
		j.fail(first)
		return err
	}
	j.slot ^= 1
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
	if j.linked != nil {
		if err := j.linked(); err != nil {
			j.fail(first)
			return err
		}
	}
	j.off += int64(len(j.buf))
	j.cur.last = last
	j.marked = first - 1
	if cap(j.buf) > 4<<20 {
		j.buf = nil // do not keep a huge batch's buffer
	}
	return nil
}

// mark writes a marker counting every record synced in the current
// segment as acknowledged, and syncs it, when the newest marker does not
// yet: from then on, an unreadable newest frame is damage, not a torn
// tail. A failure retires the segment.
func (j *journal) mark() error {
	if j.f == nil || j.cur.last == 0 || j.marked >= j.cur.last {
		return nil
	}
	_, err := j.f.WriteAt(j.key.marker(j.cur.last, j.cur.last), markerOffset(j.slot))
	if err == nil {
		err = fdatasync(j.f)
	}
	if err != nil {
		j.fail(j.cur.last + 1)
		return err
	}
	j.slot ^= 1
	j.marked = j.cur.last
	return nil
}

// create starts the segment for the records from first on, preallocated
// at the configured size or, when the disk has less than four times that
// room, at a quarter of the room (bbolt needs the rest to apply the
// journal), or at the largest smaller size (halving, at least what need
// bytes of frames take and minSegment) that fits:
// writes inside a preallocation need no new blocks, so durability is the
// same, only segments are more numerous.
//
// The segment is built under a temporary name (tempSuffix), its header
// and the header's copy synced, and only then renamed to its own name:
// a file under a segment's name always holds a readable header. That
// name may already be taken by a retired segment holding no record
// (retire keeps only those that do, and ids are not given twice), one
// that bbolt may record as the newest: the rename replaces it at once,
// and a creation that fails leaves it as it is.
func (j *journal) create(first uint64, need int64) error {
	path := segmentPath(j.base, first)
	tmp := path + tempSuffix
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	need += segHeader + headerSize
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
	var salt [16]byte
	rand.Read(salt[:]) // never fails (crypto/rand)
	head := encodeHeader(first, salt)
	if err == nil {
		_, err = f.WriteAt(head, 0)
	}
	if err == nil {
		_, err = f.WriteAt(head, size-headerSize)
	}
	if err == nil {
		err = f.Sync() // the allocation and the header survive power loss
	}
	j.step("synced")
	_, statErr := os.Stat(path)
	replaces := statErr == nil // a segment bbolt may record as the newest
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	j.step("renamed")
	// From here on the file bears the segment's name: it is not removed
	// on failure (a retired segment it replaced may be recorded as the
	// newest; holding no frame, it reads as empty).
	j.mu.Lock()
	j.old = slices.DeleteFunc(j.old, func(s segment) bool { return s.path == path })
	j.mu.Unlock()
	err = syncDir(filepath.Dir(path)) // the name survives power loss
	j.step("dir synced")
	if err == nil {
		f, err = reopenAs(f, path) // so that the file check sees the segment's name
	}
	recorded := false
	if err == nil && j.created != nil {
		err = j.created(first)
		recorded = err == nil
	}
	var st os.FileInfo
	if err == nil {
		st, err = f.Stat()
	}
	if err != nil {
		f.Close()
		if !replaces && !recorded {
			// Not recorded, holding nothing: give its room back (on a full
			// disk, to bbolt, whose write may be what failed).
			os.Remove(path)
		}
		return err
	}
	j.f, j.cur, j.off = f, segment{path: path, first: first, size: size}, segHeader
	j.key, j.slot, j.marked = keyOf(salt), 0, first-1
	j.mu.Lock()
	j.info, j.curPath = st, path
	j.mu.Unlock()
	return nil
}

// reopenAs opens path, which f was renamed to, and closes f; it fails
// when path is no longer the same file.
func reopenAs(f *os.File, path string) (*os.File, error) {
	g, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return f, err
	}
	was, err := f.Stat()
	if err == nil {
		var is os.FileInfo
		if is, err = g.Stat(); err == nil && !os.SameFile(was, is) {
			err = fmt.Errorf("%w: journal segment %s was replaced while it was created", ErrFilesGone, filepath.Base(path))
		}
	}
	if err != nil {
		g.Close()
		return f, err
	}
	f.Close()
	return g, nil
}

// step is called at each point of create a crash may stop at (tests).
func (j *journal) step(at string) {
	if j.crashPoint != nil {
		j.crashPoint(at)
	}
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
// cut back to its header at once (its replacement reuses its name;
// until then, the file still bears the id recorded as the newest
// segment's, and no frame of a failed write). One that does gets a
// marker counting all of them as acknowledged, when the newest does not
// yet: a later segment follows it, so its end can no longer be a torn
// tail, and the marker lets recovery tell damage to its last group from
// one (a segment with a torn tail stops being the newest when a later
// run starts the next one). Should that write fail, only damage to that
// last group would go unnoticed.
func (j *journal) retire() {
	if j.cur.last == 0 {
		j.f.Truncate(segHeader)
	} else if j.marked < j.cur.last {
		if _, err := j.f.WriteAt(j.key.marker(j.cur.last, j.cur.last), markerOffset(j.slot)); err == nil && fdatasync(j.f) == nil {
			j.slot ^= 1
			j.marked = j.cur.last
		}
	}
	j.f.Close()
	j.f = nil
	j.mu.Lock()
	j.info, j.curPath = nil, ""
	if j.cur.last != 0 {
		j.old = append(j.old, j.cur)
	}
	j.mu.Unlock()
}

// collect deletes the retired segments whose records (and the ids of a
// torn tail, for a segment an earlier run left) are all in bbolt. The
// current segment is never deleted, whatever old says.
func (j *journal) collect(applied uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.old = slices.DeleteFunc(j.old, func(s segment) bool {
		if max(s.last, s.high) > applied {
			return false
		}
		if s.path != j.curPath {
			os.Remove(s.path)
		}
		return true
	})
}

// hasSegment reports whether a segment is open for writing.
func (j *journal) hasSegment() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.curPath != ""
}

// close closes the current segment and, when every record is in bbolt,
// deletes all segments.
func (j *journal) close(allApplied bool) {
	if j.f != nil {
		j.f.Close()
		j.f = nil
		j.mu.Lock()
		j.info, j.curPath = nil, ""
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

// minFrame is the smallest frame a record can make (8 bytes of record:
// see minRecord); it bounds how many ids a segment of a given size can hold.
const minFrame = frameHeader + 8

// scan is what reading a segment found.
type scan struct {
	recs []journaled // ids above after, in order; they alias the file's bytes
	next uint64      // the id after the last readable frame
	high uint64      // the highest id the segment may have been given (its marker, a torn tail's frames)
	// cut: ids of the torn tail dropped (see scanSegment): a crash cut
	// their write short, or the newest write was damaged after its
	// fsync; nothing tells which, so they may have been acknowledged.
	cut    []Damage
	damage []Damage
}

// frames is the frame area of one segment.
type frames struct {
	k    frameKey
	data []byte // up to the end of the frame area
	live int    // only zeros from here on: no frame starts at or past it
}

func newFrames(k frameKey, data []byte, start int) frames {
	live := len(data)
	for live-8 >= start && binary.LittleEndian.Uint64(data[live-8:live]) == 0 {
		live -= 8
	}
	for live > start && data[live-1] == 0 {
		live--
	}
	return frames{k: k, data: data, live: live}
}

// find returns the offset and id of the first valid frame at or after
// from whose id is in [lo, hi), or -1.
func (fr frames) find(from int, lo, hi uint64) (int, uint64) {
	// A frame's length word is not zero, so none starts at live or past.
	for p := from; p < fr.live && p+frameHeader <= len(fr.data); p++ {
		id := binary.BigEndian.Uint64(fr.data[p+8:p+16]) ^ fr.k.mask
		if id < lo || id >= hi {
			continue
		}
		if got, _, _, _, ok := fr.k.readFrame(fr.data[p:]); ok && got == id {
			return p, id
		}
	}
	return -1, 0
}

// tail follows the valid frames from the one at at (whose id is id) on,
// each with a higher id than the one before: ends reports whether one of
// them ends a group, top is the highest id among them, and past is the
// offset just after the frame that ends the group (-1 when none does).
func (fr frames) tail(at int, id, hi uint64) (ends bool, top uint64, past int) {
	for at >= 0 {
		_, _, size, end, _ := fr.k.readFrame(fr.data[at:])
		top = id
		if end {
			return true, top, at + size
		}
		at, id = fr.find(at+size, id+1, hi)
	}
	return false, top, -1
}

// scanSegment reads the frames of the segment s (its bytes in data) with
// ids from s.first up to, not including, limit. At a frame that cannot be
// read it looks for the next valid frame (a good check, an id above the
// last one read and within what the segment can hold) further on. None,
// or only frames of a group that never ended, or only the rest of the
// final group when the marker counts none of the lost ids as
// acknowledged (reported in cut), is the torn tail: reading stops
// there, and the ids its frames and the segment's marker name are
// counted as given (high); the unreadable ids the marker counts as
// acknowledged are damage. Any other valid frame that ends a group, or
// one the marker counts as acknowledged, means damage: the ids in
// between are lost, and reading goes on there. A format 1 segment ends
// at its first unreadable frame, with no damage (as its build read it).
// Damage to ids up to after (already in bbolt) is not reported.
func scanSegment(s segment, data []byte, limit, after uint64) (scan, error) {
	out := scan{next: s.first, high: s.first - 1}
	name := filepath.Base(s.path)
	k, start, end, ok := s.layout(data)
	if !ok {
		if !s.recorded {
			return out, nil // its creation was cut short: nothing was written to it
		}
		d := Damage{Segment: name, Offset: 0, First: max(s.first, after+1), Last: limit - 1,
			Reason: "the segment's header and its copy are unreadable"}
		if limit == math.MaxUint64 {
			d.Last, d.Bounded = s.first+uint64(len(data)/minFrame), true
		}
		if d.Last >= d.First {
			out.damage = append(out.damage, d)
		}
		out.next, out.high = d.Last+1, d.Last
		return out, nil
	}
	fr := newFrames(k, data[:end], start)
	hi := min(limit, s.first+uint64((end-start)/minFrame)+1)
	acked, handed := k.markers(data)
	acked = min(acked, hi-1)
	next := s.first
	for off := start; next < hi; {
		id, rec, size, _, ok := k.readFrame(fr.data[off:])
		if !ok || id != next {
			if !k.v2 {
				// Format 1 (a segment the build before schema 4 left, read once
				// at the upgrade) is read as that build read it: the first
				// frame that cannot be read ends it, a torn tail. Without a
				// key, a frame found further on may be bytes of a body: none
				// is taken for a record, but their ids are never given
				// again (they may have been acknowledged).
				for at, found := fr.find(off+1, next, hi); at >= 0; at, found = fr.find(at+1, found+1, hi) {
					out.high = max(out.high, found)
				}
				break
			}
			at, found := fr.find(off+1, next, hi)
			ends, top, past := false, uint64(0), -1
			if at >= 0 {
				ends, top, past = fr.tail(at, found, hi)
			}
			// The final group, ended, with frames lost from next on and none
			// of them acknowledged: a power cut within its write+fsync kept
			// its last frame, not all before it. Nothing follows it, so no
			// later write waited for its sync: it was never acknowledged.
			// The hole must lie in that group: the newest intact marker is
			// its own (handed reaches its end) or the one before it (handed
			// below the hole); one that ends between the hole and the group
			// end found is an earlier group's, whose end was lost: damage.
			// (With both marker slots unreadable too, nothing tells.)
			cut := false
			if ends && next > acked && (handed >= top || handed < next) {
				beyond, _ := fr.find(past, top+1, hi)
				cut = beyond < 0
			}
			if cut && top > after {
				out.cut = append(out.cut, Damage{Segment: name, Offset: int64(off), First: max(next, after+1), Last: top,
					Reason: fmt.Sprintf("the last group's frames lost before its last one (id %d at offset %d)", found, at)})
			}
			// The torn tail: nothing valid follows, or only frames of a group
			// that never ended, none of which the marker counts as
			// acknowledged (an acknowledged one is read on from), or the cut
			// final group above.
			if at < 0 || !ends && found > acked || cut {
				out.high = max(out.high, handed, top)
				if next <= acked && acked > after {
					out.damage = append(out.damage, Damage{Segment: name, Offset: int64(off), First: max(next, after+1),
						Last: acked, Reason: fmt.Sprintf("unreadable frames at the end, acknowledged (the segment's marker counts ids up to %d)", acked)})
					out.high = max(out.high, acked)
				}
				// The rest of the torn tail: ids a write was given (the
				// marker written with it, its frames found) that do not
				// read back. A crash within the write+fsync (never
				// acknowledged) and damage to the newest write after its
				// fsync (acknowledged) look the same: reported in cut.
				if first, last := max(next, acked+1, after+1), min(out.high, limit-1); !cut && last >= first {
					out.cut = append(out.cut, Damage{Segment: name, Offset: int64(off), First: first, Last: last,
						Reason: "unreadable frames at the end of the journal"})
				}
				break
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
	out.high = min(max(out.high, next-1), limit-1)
	return out, nil
}

// journalScan is the whole journal as recovery sees it.
type journalScan struct {
	segs   []segment // on disk, oldest first; last set to the last readable id
	damage []Damage
	end    uint64   // the newest id that may have been given (or in bbolt): no new record may have it
	lost   uint64   // the highest id at stake in damage (0 when none)
	cut    []Damage // torn tails dropped, may have been acknowledged (scan.cut)
}

// scanJournal checks every segment of the database at base, one at a
// time: seq is the newest id in bbolt, newest the first id of the newest
// segment the last run created (0 when unknown), v2 the first id of the
// first segment written in format 2 (0 when none), maxIDs the most ids a
// missing newest segment could have held. Records are not kept (see
// readSegment).
func scanJournal(base string, seq, newest, v2, maxIDs uint64) (journalScan, error) {
	var js journalScan
	segs, err := segmentsOnDisk(base)
	if err != nil {
		return js, fmt.Errorf("store: journal: %w", err)
	}
	expected := seq + 1 // every id from here on must be in a segment
	hasNewest := newest == 0
	for i := range segs {
		s := &segs[i]
		s.v2 = v2 != 0 && s.first >= v2
		s.recorded = newest != 0 && s.first <= newest
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
		s.high = sc.high
		js.cut = append(js.cut, sc.cut...)
		// A torn tail's ids were given, never acknowledged: no new record
		// gets them. Any segment may end in one, not only the newest: a
		// later run, started on it, went on in a new segment. Within a run
		// a segment followed by another got a marker counting all its
		// records as acknowledged (retire), so that damage to its end is
		// not taken for a torn tail.
		expected = max(expected, sc.next, sc.high+1)
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
