package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// journalRun appends n keyed records to a store that never applies them
// (the journal holds them all, as after a kill -9), kills it, and returns
// the database path.
func journalRun(t *testing.T, n int, segSize int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{noApply: true, SegmentSize: segSize})
	for i := 1; i <= n; i++ {
		id, _, err := db.Append(context.Background(), sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 100+i%50)))
		if err != nil || id != uint64(i) {
			t.Fatalf("Append %d = %d, %v", i, id, err)
		}
	}
	kill(t, db)
	return path
}

// frameOffsets maps each id of the segment file to its frame's offset.
func frameOffsets(t *testing.T, seg string) map[uint64]int {
	t.Helper()
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]int{}
	for off := 0; ; {
		id, _, size, ok := readFrame(data[off:])
		if !ok {
			return out
		}
		out[id] = off
		off += size
	}
}

// snapshotDir reads every file of dir except the database (whose meta
// page any open rewrites).
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if e.Name() == "ipnd.db" || e.Name() == "ipnd.db.pid" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// damagedOpen asserts that Open refuses with a JournalDamageError naming
// want (segment, offset, ids), and that it changed no journal file.
func damagedOpen(t *testing.T, path string, want ...string) *JournalDamageError {
	t.Helper()
	before := snapshotDir(t, filepath.Dir(path))
	db, err := Open(path, Options{})
	if err == nil {
		db.Close()
		t.Fatal("Open succeeded on a damaged journal")
	}
	var de *JournalDamageError
	if !errors.As(err, &de) || !errors.Is(err, ErrJournalDamaged) {
		t.Fatalf("Open = %v, want a JournalDamageError", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not name %q:\n%v", w, err)
		}
	}
	if !strings.Contains(err.Error(), "ipnd recover --skip-damaged") {
		t.Errorf("error does not say how to go on: %v", err)
	}
	after := snapshotDir(t, filepath.Dir(path))
	if len(after) != len(before) {
		t.Errorf("files before %d, after %d", len(before), len(after))
	}
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed by the refused Open", name)
		}
	}
	return de
}

// skipDamaged opens with SkipDamaged and checks that every id but lost
// is found, lost ids answer ErrLost, and new appends get ids past top.
func skipDamaged(t *testing.T, path string, n int, lost map[uint64]bool, top uint64) {
	t.Helper()
	db := openAt(t, path, Options{SkipDamaged: true})
	if len(db.Damaged()) == 0 {
		t.Error("Damaged() is empty after skipping damage")
	}
	for i := uint64(1); i <= uint64(n); i++ {
		_, _, err := db.Get(i)
		switch {
		case lost[i] && !errors.Is(err, ErrLost):
			t.Errorf("lost id %d: Get = %v, want ErrLost", i, err)
		case !lost[i] && err != nil:
			t.Errorf("id %d, intact in the journal: Get = %v", i, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := segmentFiles(t, path); len(segs) != 0 {
		t.Errorf("segments left after recovery: %v", segs)
	}
	db = reopen(t, path)
	id, dup, err := db.Append(context.Background(), sample("g", "new", "x"))
	if err != nil || dup || id <= top {
		t.Fatalf("append after recovery = %d, %v, %v; want an id above %d", id, dup, err, top)
	}
	if ls, err := db.Lost(); err != nil || len(ls) == 0 {
		t.Errorf("Lost() = %v, %v", ls, err)
	}
}

// One flipped byte, or a run of zeros, in the middle of a segment is
// damage, not a torn tail: Open refuses, names the segment, the offset
// and the ids, and keeps every file; SkipDamaged then applies every
// intact frame, records exactly the damaged ids as lost, moves the
// segment aside and never gives those ids again.
func TestJournalDamageMidSegment(t *testing.T) {
	const n = 60
	cases := []struct {
		name string
		// damage returns the first offset changed and the ids it hits.
		damage func(f *os.File, offs map[uint64]int) (int, []uint64)
	}{
		{"flip in the first frame's record", func(f *os.File, offs map[uint64]int) (int, []uint64) {
			return flip(f, offs[1]+frameHeader+5), []uint64{1}
		}},
		{"flip in a middle frame's length", func(f *os.File, offs map[uint64]int) (int, []uint64) {
			return flip(f, offs[30]+2), []uint64{30}
		}},
		{"flip in a frame's id", func(f *os.File, offs map[uint64]int) (int, []uint64) {
			return flip(f, offs[17]+15), []uint64{17}
		}},
		{"flip in the frame before the last", func(f *os.File, offs map[uint64]int) (int, []uint64) {
			return flip(f, offs[n-1]+frameHeader+20), []uint64{n - 1}
		}},
		{"zeros over three frames", func(f *os.File, offs map[uint64]int) (int, []uint64) {
			start := offs[20] + 10
			f.WriteAt(make([]byte, offs[23]-start), int64(start))
			return offs[20], []uint64{20, 21, 22}
		}},
		{"zeros from a frame's start", func(f *os.File, offs map[uint64]int) (int, []uint64) {
			f.WriteAt(make([]byte, offs[42]-offs[40]), int64(offs[40]))
			return offs[40], []uint64{40, 41}
		}},
		{"two damaged places", func(f *os.File, offs map[uint64]int) (int, []uint64) {
			flip(f, offs[50]+frameHeader)
			return flip(f, offs[10]+frameHeader+1), []uint64{10, 50}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := journalRun(t, n, 64<<10)
			seg := segmentPath(path, 1)
			offs := frameOffsets(t, seg)
			f, err := os.OpenFile(seg, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, ids := c.damage(f, offs)
			f.Close()
			at := offs[ids[0]] // damage is reported at the start of the first frame it hits
			want := []string{filepath.Base(seg), fmt.Sprintf("byte offset %d", at)}
			lost := map[uint64]bool{}
			for _, id := range ids {
				lost[id] = true
			}
			if len(ids) == 1 || ids[len(ids)-1]-ids[0] > uint64(len(ids)) {
				want = append(want, fmt.Sprintf("id %d", ids[0]))
			} else {
				want = append(want, fmt.Sprintf("ids %d-%d", ids[0], ids[len(ids)-1]))
			}
			de := damagedOpen(t, path, want...)
			var got []uint64
			for _, d := range de.Damage {
				for id := d.First; id <= d.Last; id++ {
					got = append(got, id)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(ids) {
				t.Errorf("ids at stake %v, want %v", got, ids)
			}
			skipDamaged(t, path, n, lost, n)
			if _, err := os.Stat(seg + ".damaged"); err != nil {
				t.Errorf("damaged segment not moved aside: %v", err)
			}
		})
	}
}

func flip(f *os.File, off int) int {
	b := make([]byte, 1)
	f.ReadAt(b, int64(off))
	b[0] ^= 0x40
	f.WriteAt(b, int64(off))
	return off
}

// A segment missing from the sequence (deleted) loses acknowledged
// records: Open refuses and names the ids; so it does for the newest
// segment, whose first id bbolt records when it is created.
func TestJournalMissingSegment(t *testing.T) {
	t.Run("middle", func(t *testing.T) {
		path := journalRun(t, 40, 2<<10)
		segs, err := segmentsOnDisk(path)
		if err != nil || len(segs) < 3 {
			t.Fatalf("segments %v, %v; want 3 or more", segs, err)
		}
		gone := segs[1]
		os.Remove(gone.path)
		from, to := gone.first, segs[2].first-1
		damagedOpen(t, path, filepath.Base(segs[2].path), fmt.Sprintf("ids %d-%d", from, to), "missing")
		lost := map[uint64]bool{}
		for id := from; id <= to; id++ {
			lost[id] = true
		}
		skipDamaged(t, path, 40, lost, 40)
	})
	t.Run("newest", func(t *testing.T) {
		path := journalRun(t, 40, 2<<10)
		segs, _ := segmentsOnDisk(path)
		newest := segs[len(segs)-1]
		os.Remove(newest.path)
		damagedOpen(t, path, filepath.Base(newest.path), fmt.Sprintf("ids from %d on", newest.first), "newest segment is missing")
		lost := map[uint64]bool{}
		for id := newest.first; id <= 40; id++ {
			lost[id] = true
		}
		skipDamaged(t, path, 40, lost, 40)
	})
	t.Run("only", func(t *testing.T) {
		path := journalRun(t, 20, 64<<10)
		os.Remove(segmentPath(path, 1))
		damagedOpen(t, path, filepath.Base(segmentPath(path, 1)), "ids from 1 on")
	})
}

// A clean stop and a backup copy leave no newest-segment record behind:
// neither the next start nor the copy reports a missing segment.
func TestJournalCleanStopNoFalseAlarm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	db.Append(context.Background(), sample("g", "1", "x"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, path)
	if n, _, err := db.Get(1); err != nil || n.DedupKey != "1" {
		t.Fatalf("Get(1) = %v, %v", n, err)
	}
}
