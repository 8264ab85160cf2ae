package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// kill stops db the way kill -9 would: no applier drain, no cleanup; only
// the file lock is released so that the test can open the file again.
func kill(t *testing.T, db *DB) {
	t.Helper()
	db.mu.Lock()
	db.closed = true
	db.mu.Unlock()
	if db.journal.f != nil {
		db.journal.f.Close()
	}
	if err := db.bolt.Close(); err != nil {
		t.Fatal(err)
	}
}

// openAt opens the store at path; the test closes or kills it.
func openAt(t *testing.T, path string, opts Options) *DB {
	t.Helper()
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// reopen opens the store at path again, as the next start would, and
// closes it when the test ends.
func reopen(t *testing.T, path string) *DB {
	t.Helper()
	db := openAt(t, path, Options{})
	t.Cleanup(func() { db.Close() })
	return db
}

func segmentFiles(t *testing.T, path string) []string {
	t.Helper()
	segs, err := segmentsOnDisk(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range segs {
		names = append(names, filepath.Base(s.path))
	}
	return names
}

// readJournal returns the records of all segments with ids above after,
// in id order (Open reads them one segment at a time).
func readJournal(segs []segment, after uint64) ([]journaled, error) {
	var out []journaled
	for i := range segs {
		recs, err := readSegment(segs, i, after, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// Records journaled but never applied (the process died first) are in the
// database after the next Open, with their ids, and stay deduplicated.
func TestJournalRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true, SegmentSize: 8 << 10})
	ctx := context.Background()
	for i := 1; i <= 40; i++ {
		id, dup, err := db.Append(ctx, sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 300)))
		if err != nil || dup || id != uint64(i) {
			t.Fatalf("Append %d = %d, %v, %v", i, id, dup, err)
		}
	}
	// A duplicate of a journaled, unapplied record is caught.
	if id, dup, _ := db.Append(ctx, sample("g", "7", "again")); !dup || id != 7 {
		t.Fatalf("duplicate of an unapplied record = %d, %v", id, dup)
	}
	if n := len(segmentFiles(t, path)); n < 2 {
		t.Fatalf("%d segments, want several (8 KiB each)", n)
	}
	kill(t, db)

	db = reopen(t, path)
	if db.Recovered() != 40 {
		t.Errorf("recovered %d records, want 40", db.Recovered())
	}
	if segs := segmentFiles(t, path); len(segs) != 0 {
		t.Errorf("segments left after recovery: %v", segs)
	}
	for i := 1; i <= 40; i++ {
		n, _, err := db.Get(uint64(i))
		if err != nil || n.DedupKey != fmt.Sprint(i) {
			t.Fatalf("record %d after recovery: %v, %v", i, n, err)
		}
	}
	if id, dup, _ := db.Append(ctx, sample("g", "40", "x")); !dup || id != 40 {
		t.Errorf("duplicate after recovery = %d, %v", id, dup)
	}
	if id, _, _ := db.Append(ctx, sample("g", "41", "x")); id != 41 {
		t.Errorf("next id = %d, want 41", id)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}

// A torn or damaged frame ends the journal there: what precedes it is
// recovered, nothing after it is invented, and the id of the lost frame
// (it never got an answer, as far as the journal can tell) is not given
// again.
func TestJournalTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true})
	for i := 1; i <= 5; i++ {
		db.Append(context.Background(), sample("g", fmt.Sprint(i), "body"))
	}
	seg := db.journal.cur.path
	off := db.journal.off
	kill(t, db)
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xFF}, off-3) // inside the last frame's record
	f.Close()

	db = reopen(t, path)
	if s, _ := db.Stats(); s.LastID != 5 || db.Recovered() != 4 {
		t.Fatalf("last id %d, recovered %d; want 5 (given to the torn frame), 4", s.LastID, db.Recovered())
	}
	// Dropped as a torn tail, which may have been acknowledged: lost
	// (410, with the reason), not "not found".
	if _, _, err := db.Get(5); !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "unreadable frames") {
		t.Fatalf("Get(5) = %v, want ErrLost naming the torn tail", err)
	}
	if id, dup, _ := db.Append(context.Background(), sample("g", "5", "body")); dup || id != 6 {
		t.Errorf("resent record = %d, dup %v; want 6 (5 is never given again), new", id, dup)
	}
}

// A write that fails retires its segment; the next append starts a new
// segment at the same id, and a later recovery prefers it over the
// failed frames.
func TestJournalFailedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true})
	ctx := context.Background()
	db.Append(ctx, sample("g", "1", "one"))
	db.Append(ctx, sample("g", "2", "two"))
	db.journal.f.Close() // the next write fails, as on a broken disk
	if _, _, err := db.Append(ctx, sample("g", "3", "lost")); err == nil {
		t.Fatal("append on a failed journal succeeded")
	}
	id, dup, err := db.Append(ctx, sample("g", "3", "three"))
	if err != nil || dup || id != 3 {
		t.Fatalf("append after a failed write = %d, %v, %v; want 3", id, dup, err)
	}
	if segs := segmentFiles(t, path); len(segs) != 2 {
		t.Fatalf("segments %v, want the retired one and a new one", segs)
	}
	kill(t, db)
	db = reopen(t, path)
	n, _, err := db.Get(3)
	if err != nil || string(n.Body) != "three" {
		t.Fatalf("record 3 = %v, %v", n, err)
	}
	if s, _ := db.Stats(); s.LastID != 3 {
		t.Errorf("last id %d, want 3", s.LastID)
	}
}

// A later segment that starts at an id an earlier one also holds wins
// (format 1 segments, as a build of schema 3 left them).
func TestJournalSupersede(t *testing.T) {
	base := filepath.Join(t.TempDir(), "ipnd.db")
	write := func(first uint64, bodies ...string) {
		var b []byte
		for i, body := range bodies {
			b = frameKey{}.appendFrame(b, first+uint64(i), encodeRecord(sample("g", body, body)), true)
		}
		if err := os.WriteFile(segmentPath(base, first), append(b, make([]byte, 64)...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(1, "a", "b", "stale-c", "stale-d")
	write(3, "c", "d", "e")
	segs, err := segmentsOnDisk(base)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := readJournal(segs, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		n, _ := decodeRecord(r.id, r.rec)
		got = append(got, fmt.Sprintf("%d:%s", r.id, n.Body))
	}
	if fmt.Sprint(got) != "[2:b 3:c 4:d 5:e]" {
		t.Errorf("records after id 1 = %v", got)
	}
}

// Applied segments are deleted while the store runs; Close deletes the
// last one.
func TestJournalSegmentsCollected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := Open(path, Options{SegmentSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 60; i++ {
		if _, _, err := db.Append(context.Background(), sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 400))); err != nil {
			t.Fatal(err)
		}
	}
	db.settle()
	deadline := time.Now().Add(10 * time.Second)
	for len(segmentFiles(t, path)) > 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // poll: the applier deletes after its commit
	}
	if segs := segmentFiles(t, path); len(segs) != 1 {
		t.Errorf("segments while running = %v, want only the current one", segs)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := segmentFiles(t, path); len(segs) != 0 {
		t.Errorf("segments after Close = %v", segs)
	}
}

// Records the applier has not written when the store closes stay in the
// journal, Close says so, and the next Open applies them.
func TestJournalKeepsUnappliedOnClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true})
	db.Append(context.Background(), sample("g", "1", "x"))
	if err := db.Close(); err == nil || !strings.Contains(err.Error(), "journaled records") {
		t.Fatalf("Close = %v, want the records-left error", err)
	}
	if len(segmentFiles(t, path)) != 1 {
		t.Fatal("the journal was deleted with records not in the database")
	}
	db = reopen(t, path)
	if n, _, err := db.Get(1); err != nil || string(n.Body) != "x" {
		t.Fatalf("record 1 = %v, %v", n, err)
	}
}

// FuzzJournal: any bytes as a segment (either format) are read without
// a panic, into records with increasing ids; a format 1 segment is read
// as the build before format 2 read it: from its first id on, up to the
// first frame that cannot be read, with no damage reported. And in a format 2 segment
// written as the journal writes it (groups of frames, each group's
// marker), whose records carry forged frames (built the format 1 way,
// and with another segment's key) for ids of the segment, with bytes
// then overwritten and the end possibly zeroed, the invariant holds:
//   - every record returned is the one written with that id: no forged
//     frame is ever taken for a real one;
//   - below the id T where reading stopped, every intact frame is
//     returned and every other one reported as damage;
//   - what is dropped from T on is a torn tail: the marker does not
//     count T as acknowledged, and no intact frame there ends a group,
//     unless it ends the final group, the one with the hole at T, and no
//     intact frame follows it (a power cut kept its end, not all of it);
//   - damage is reported only where an intact frame that ends a group
//     follows, or the marker counts the ids as acknowledged;
//   - high covers every id of the dropped tail that a frame or the
//     marker shows was given, so none is given again.
func FuzzJournal(f *testing.F) {
	var valid []byte
	for i := uint64(1); i <= 3; i++ {
		valid = frameKey{}.appendFrame(valid, i, encodeRecord(sample("g", fmt.Sprint(i), "body")), true)
	}
	f.Add(valid, uint8(3), uint16(0), uint16(0), uint16(0), uint8(0))
	f.Add(valid[:len(valid)-1], uint8(5), uint16(0x15), uint16(200), uint16(7), uint8(1))
	f.Add([]byte{}, uint8(0), uint16(0), uint16(0), uint16(0), uint8(0))
	f.Add(bytes.Repeat([]byte{0}, 64), uint8(9), uint16(0xffff), uint16(0x8000|300), uint16(0), uint8(2))
	f.Add([]byte{0xff}, uint8(12), uint16(0x0421), uint16(1000), uint16(0), uint8(3))
	f.Add([]byte{0x40}, uint8(6), uint16(0x2a), uint16(128+16+3), uint16(0), uint8(0))
	// Found by the fuzzer: an acknowledged frame damaged before a final
	// group that never ended; damage to a marker slot's unused bytes.
	f.Add([]byte("000000000"), uint8(5), uint16(4), uint16(200), uint16(7), uint8(1))
	f.Add([]byte("0"), uint8(4), uint16(20), uint16(86), uint16(102), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, frames uint8, groups, pos, cut uint16, opts uint8) {
		// Any bytes at all, in either format.
		for _, v2 := range []bool{false, true} {
			seg := segment{path: "ipnd.db.wal-0000000000000001", first: 1, v2: v2, recorded: true}
			sc, err := scanSegment(seg, data, math.MaxUint64, 0)
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			for i, r := range sc.recs {
				if r.id == 0 || i > 0 && r.id <= sc.recs[i-1].id {
					t.Fatalf("record %d has id %d after %v", i, r.id, sc.recs)
				}
				if !v2 && r.id != uint64(i+1) {
					t.Fatalf("format 1: record %d has id %d: read past an unreadable frame", i, r.id)
				}
			}
			if !v2 && (len(sc.damage) != 0 || sc.next != uint64(len(sc.recs)+1)) {
				t.Fatalf("format 1: damage %v, next %d after %d records", sc.damage, sc.next, len(sc.recs))
			}
		}

		// A segment written as the journal writes it. Frame i ends a group
		// where bit i%16 of groups is set, and the last one does.
		n := int(frames)%20 + 1
		var salt, other [16]byte
		copy(salt[:], "fuzz-segment-key")
		copy(other[:], "another-segments")
		k, ko := keyOf(salt), keyOf(other)
		ends := func(i int) bool { return i == n || groups&(1<<(i%16)) != 0 }
		orig := encodeHeader(1, salt)
		orig = append(orig, make([]byte, segHeader-headerSize)...)
		var offs []int
		var recs [][]byte
		slot, groupFirst := 0, 1
		slots := [2][2]uint64{} // acked, handed written in each slot
		for i := 1; i <= n; i++ {
			body := []byte(fmt.Sprint("body", i))
			if opts&1 == 0 { // forged frames for the ids i and i+1 in the body
				evil := plainRecord(&ipn.Notification{Gateway: "g", Body: []byte("evil")})
				body = frameKey{}.appendFrame(body, uint64(i), evil, true)
				body = ko.appendFrame(body, uint64(i+1), evil, true)
			}
			rec := plainRecord(&ipn.Notification{Gateway: "g", DedupKey: fmt.Sprint(i), Body: body})
			offs = append(offs, len(orig))
			recs = append(recs, rec)
			orig = k.appendFrame(orig, uint64(i), rec, ends(i))
			if ends(i) {
				slots[slot] = [2]uint64{uint64(groupFirst - 1), uint64(i)}
				copy(orig[markerOffset(slot):], k.marker(uint64(groupFirst-1), uint64(i)))
				slot ^= 1
				groupFirst = i + 1
			}
		}
		if opts&2 != 0 { // an idle store marked everything acknowledged
			slots[slot] = [2]uint64{uint64(n), uint64(n)}
			copy(orig[markerOffset(slot):], k.marker(uint64(n), uint64(n)))
		}
		offs = append(offs, len(orig))
		// Damage as disks do it: bits flipped (data XORed in at pos) or,
		// with pos's top bit, a run of len(data) zeros; then the last cut
		// bytes zeroed (a torn write). The header's copy stays intact.
		seg0 := append([]byte(nil), orig...)
		at := min(int(pos&0x7fff), len(seg0))
		for i := 0; i < len(data) && at+i < len(seg0); i++ {
			if pos&0x8000 != 0 {
				seg0[at+i] = 0
			} else {
				seg0[at+i] ^= data[i]
			}
		}
		clear(seg0[len(seg0)-min(int(cut), len(seg0)-segHeader):])
		seg0 = append(seg0, make([]byte, 64)...) // preallocated zeros
		seg0 = append(seg0, encodeHeader(1, salt)...)
		intact := func(i int) bool { // frame i (1..n)
			return bytes.Equal(seg0[offs[i-1]:offs[i]], orig[offs[i-1]:offs[i]])
		}
		var acked, handed uint64
		anyMarker := false
		for s, v := range slots {
			o := int(markerOffset(s))
			if bytes.Equal(seg0[o:o+markerLen], orig[o:o+markerLen]) && v != [2]uint64{} {
				acked, handed = max(acked, v[0]), max(handed, v[1])
				anyMarker = true
			}
		}

		// finalCut: frames from T on dropped, i ending a group among them,
		// is a torn tail when no write can have followed that group (no
		// intact frame after i), none of its ids is acknowledged and the
		// hole at T is in i's own group (no group ends before i from T on),
		// or when no marker slot is intact to tell.
		finalCut := func(T, i int) bool {
			for j := i + 1; j <= n; j++ {
				if intact(j) {
					return false
				}
			}
			sameGroup := true
			for g := T; g < i; g++ {
				sameGroup = sameGroup && !ends(g)
			}
			return uint64(T) > acked && (sameGroup || !anyMarker)
		}

		seg := segment{path: "ipnd.db.wal-0000000000000001", first: 1, v2: true, recorded: true}
		sc, err := scanSegment(seg, seg0, math.MaxUint64, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint64][]byte{}
		for _, r := range sc.recs {
			if r.id > uint64(n) || !bytes.Equal(r.rec, recs[r.id-1]) {
				t.Fatalf("record %d was never written so (a forged frame taken?)", r.id)
			}
			got[r.id] = r.rec
		}
		lost := map[uint64]bool{}
		for _, d := range sc.damage {
			for id := d.First; id <= d.Last; id++ {
				if id > uint64(n) {
					t.Fatalf("damage %v beyond the %d ids written", d, n)
				}
				lost[id] = true
			}
		}
		T := n + 1 // where reading stopped
		for i := 1; i <= n; i++ {
			if got[uint64(i)] == nil && !lost[uint64(i)] {
				T = i
				break
			}
		}
		for i := 1; i < T; i++ {
			if intact(i) && lost[uint64(i)] {
				t.Fatalf("intact frame %d reported as damage %v", i, sc.damage)
			}
		}
		for i := T; i <= n; i++ {
			if got[uint64(i)] != nil || lost[uint64(i)] {
				t.Fatalf("frame %d read past the end of reading at %d", i, T)
			}
			if intact(i) && ends(i) && !finalCut(T, i) {
				t.Fatalf("intact frame %d, which ends a group, dropped as part of a torn tail from %d; damage %v", i, T, sc.damage)
			}
			if intact(i) && sc.high < uint64(i) {
				t.Fatalf("dropped frame %d not counted as given (high %d)", i, sc.high)
			}
		}
		if T <= n && uint64(T) <= acked {
			t.Fatalf("frames from %d dropped as a torn tail, but the marker counts up to %d acknowledged", T, acked)
		}
		if sc.high < handed || sc.high < uint64(T-1) {
			t.Fatalf("high %d, want at least the marker's %d and %d", sc.high, handed, T-1)
		}
		for id := range lost {
			justified := id <= acked
			for j := int(id) + 1; j <= n && !justified; j++ {
				justified = intact(j) && ends(j)
			}
			if !justified {
				t.Fatalf("id %d reported lost with no intact group end after it and not acknowledged (marker %d); damage %v", id, acked, sc.damage)
			}
		}
	})
}

// A write that failed after its frames reached the page cache (the sync
// failed) must not come back as a record after a crash: the Append got an
// error, and the gateway's resend is the one stored.
func TestJournalFailedAppendNotResurrected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true})
	ctx := context.Background()
	keyless := sample("g", "", "payload") // no message id: no dedup to hide a second copy
	for range 2 {
		if _, _, err := db.Append(ctx, keyless); err != nil {
			t.Fatal(err)
		}
	}
	seg, off, key := db.journal.cur.path, db.journal.off, db.journal.key
	db.journal.f.Close()
	if _, _, err := db.Append(ctx, keyless); err == nil {
		t.Fatal("append on a failed journal succeeded")
	}
	// What the failed write would have left in the old segment.
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(key.appendFrame(nil, 3, encodeRecord(keyless), true), off)
	f.Close()
	kill(t, db)

	db = reopen(t, path)
	id, _, err := db.Append(ctx, keyless) // the resend
	if s, _ := db.Stats(); err != nil || s.LastID != 3 || id != 3 {
		t.Fatalf("after a failed append and its resend: last id %d, resend got %d (%v); want 3, 3", s.LastID, id, err)
	}
}

// Past MaxBacklog bytes waiting for the applier, Append refuses (503 at
// the receiver) instead of growing memory without bound.
func TestJournalBacklogBound(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "ipnd.db"), Options{noApply: true, MaxBacklog: 2000})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var last error
	accepted := 0
	for i := range 20 {
		_, _, last = db.Append(context.Background(), sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 320)))
		if last != nil {
			break
		}
		accepted++
	}
	if !errors.Is(last, ErrBacklog) || accepted == 0 || accepted > 8 {
		t.Fatalf("accepted %d appends of ~400 bytes under a 2000-byte bound, then %v", accepted, last)
	}
}

// A file written by a build that knew schema 1, 2 or 3 (plain JSON values,
// unpacked records) is upgraded to 4, so that such a build refuses it from
// then on; everything written before reads as it was, and what is
// written after is packed.
func TestSchemaUpgrade(t *testing.T) {
	for _, from := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint(from), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipnd.db")
			writePlain = true
			fillTypical(t, path, Options{}, 20)
			writePlain = false
			db := reopen(t, path)
			db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(from)) })
			before := snapshotAPI(t, db)
			if packedValues(t, db) != 0 {
				t.Fatal("writePlain wrote packed values")
			}
			db.Close()

			db = reopen(t, path)
			defer db.Close()
			db.bolt.View(func(tx *bolt.Tx) error {
				if got := getU64(tx.Bucket(bucketMeta).Get(keySchema)); got != SchemaVersion || SchemaVersion != 9 {
					t.Errorf("schema after open = %d, want %d (9)", got, SchemaVersion)
				}
				return nil
			})
			if after := snapshotAPI(t, db); after != before {
				t.Errorf("after the upgrade the API shows\n%s\nwant\n%s", after, before)
			}
			// New writes are packed; old and new read side by side.
			if _, _, err := db.Append(context.Background(), sampleTypical(21)); err != nil {
				t.Fatal(err)
			}
			if err := db.CreateOrder(ipn.Order{ID: "ORD-NEW", Status: ipn.OrderPending, Amount: "10.00", Currency: "EUR",
				Description: strings.Repeat("a new order, packed; ", 10)}); err != nil {
				t.Fatal(err)
			}
			if n := packedValues(t, db); n != 2 {
				t.Errorf("%d packed values after two writes, want 2", n)
			}
			if _, err := db.GetOrder("ORD-NEW"); err != nil {
				t.Error(err)
			}
			if n, _, err := db.Get(21); err != nil || !bytes.Equal(n.Body, typicalBody(21)) {
				t.Errorf("Get(21) = %v; body %q", err, n.Body)
			}
			if _, err := db.List(Filter{Limit: 100}); err != nil {
				t.Error(err)
			}
		})
	}
}

// A segment that replaces one of the same name (an empty segment bbolt
// records as the newest, left by a failed write, too small for the next
// group) is built under a temporary name and renamed over it once its
// header is synced; a new segment too. A kill -9 at any step of either
// leaves a journal Open accepts: the files as each step left them are
// copied, and each copy opens with every acknowledged record and no id
// given twice.
func TestJournalCrashWhileCreatingSegment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true, SegmentSize: 4 << 10, CheckInterval: time.Hour})
	ctx := context.Background()
	if _, _, err := db.Append(ctx, sample("g", "1", "x")); err != nil {
		t.Fatal(err)
	}
	db.journal.fail(2) // an empty segment for id 2, of 4 KiB, recorded as the newest
	type crash struct {
		at, dir string
		acked   uint64 // the last id acknowledged then
	}
	var crashes []crash
	acked := uint64(1)
	db.journal.crashPoint = func(at string) {
		dir := t.TempDir()
		entries, err := os.ReadDir(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() == filepath.Base(pidPath(path)) {
				continue
			}
			b, err := os.ReadFile(filepath.Join(filepath.Dir(path), e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		crashes = append(crashes, crash{at: at, dir: dir, acked: acked})
	}
	// Too large for wal-2: replaced under its name. Then too large for
	// what is left of it: a new segment.
	for i := uint64(2); i <= 3; i++ {
		if id, _, err := db.Append(ctx, sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 10<<10))); err != nil || id != i {
			t.Fatalf("append = %d, %v; want %d", id, err, i)
		}
		acked = i
	}
	kill(t, db)
	if len(crashes) != 6 {
		t.Fatalf("%d crash points, want 3 for each of 2 segments", len(crashes))
	}
	for i, c := range crashes {
		t.Run(fmt.Sprintf("%d %s", i, c.at), func(t *testing.T) {
			p := filepath.Join(c.dir, filepath.Base(path))
			db, err := Open(p, Options{})
			if err != nil {
				t.Fatalf("Open after a crash at %q: %v", c.at, err)
			}
			defer db.Close()
			for id := uint64(1); id <= c.acked; id++ {
				if n, _, err := db.Get(id); err != nil || n.DedupKey != fmt.Sprint(id) {
					t.Errorf("acknowledged record %d: %v, %v", id, n, err)
				}
			}
			if id, _, err := db.Append(ctx, sample("g", "new", "x")); err != nil || id != c.acked+1 {
				t.Errorf("next id = %d, %v; want %d", id, err, c.acked+1)
			}
			if tmps, _ := filepath.Glob(p + ".wal-*" + tempSuffix); len(tmps) != 0 {
				t.Errorf("Open left %v", tmps)
			}
		})
	}
}

// A segment whose creation fails after its rename (bbolt cannot record
// it: a full disk) is removed again when no segment had its name, so its
// preallocated room goes back to bbolt; the append fails, and the next
// one, once bbolt records segments again, goes on.
func TestJournalUnrecordedSegmentRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true, SegmentSize: 1})
	defer db.Close()
	ctx := context.Background()
	if _, _, err := db.Append(ctx, sample("g", "1", filler("1", 40<<10))); err != nil {
		t.Fatal(err)
	}
	before := segmentFiles(t, path)
	record := db.journal.created
	db.journal.created = func(uint64) error { return syscall.ENOSPC }
	if _, _, err := db.Append(ctx, sample("g", "2", filler("2", 40<<10))); err == nil {
		t.Fatal("an append into a segment bbolt could not record succeeded")
	}
	if after := segmentFiles(t, path); !slices.Equal(after, before) {
		t.Fatalf("segments %v after the failed creation, want %v", after, before)
	}
	db.journal.created = record
	if _, _, err := db.Append(ctx, sample("g", "3", filler("3", 40<<10))); err != nil {
		t.Fatalf("append once segments are recorded again: %v", err)
	}
}
