package store

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestCheckFileAcceptsHealthyFiles: checkFile must never refuse a file
// bbolt itself finds consistent (a false positive keeps ipnd down): page
// sizes, both free list types, synced and rebuilt free lists, nested and
// inline buckets, overflow pages, deletions that shrink and merge the
// trees, growth over many transactions and a compacted copy.
func TestCheckFileAcceptsHealthyFiles(t *testing.T) {
	type variant struct {
		pageSize int
		flType   bolt.FreelistType
		noSync   bool
	}
	var variants []variant
	for _, ps := range []int{4096, 16384, 65536} {
		for _, fl := range []bolt.FreelistType{bolt.FreelistArrayType, bolt.FreelistMapType} {
			for _, ns := range []bool{false, true} {
				variants = append(variants, variant{ps, fl, ns})
			}
		}
	}
	for _, v := range variants {
		name := fmt.Sprintf("page%d-%s-nosync%v", v.pageSize, v.flType, v.noSync)
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "x.db")
			rng := rand.New(rand.NewPCG(uint64(v.pageSize), 7))
			opts := &bolt.Options{PageSize: v.pageSize, FreelistType: v.flType, NoFreelistSync: v.noSync}
			check := func(when string) {
				t.Helper()
				if err := checkFile(path); err != nil {
					t.Fatalf("%s: checkFile refused a healthy file: %v", when, err)
				}
			}
			check("absent")
			for round := range 12 {
				b, err := bolt.Open(path, 0o600, opts)
				if err != nil {
					t.Fatal(err)
				}
				for range 8 {
					if err := b.Update(func(tx *bolt.Tx) error {
						return mutate(tx, rng)
					}); err != nil {
						t.Fatal(err)
					}
				}
				if err := b.View(func(tx *bolt.Tx) error {
					for err := range tx.Check() {
						return err
					}
					return nil
				}); err != nil {
					t.Fatalf("round %d: bbolt's own check: %v", round, err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				check(fmt.Sprintf("round %d", round))
			}
			// A compacted copy.
			src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			cpath := filepath.Join(dir, "compact.db")
			dst, err := bolt.Open(cpath, 0o600, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := bolt.Compact(dst, src, 1<<16); err != nil {
				t.Fatal(err)
			}
			src.Close()
			dst.Close()
			if err := checkFile(cpath); err != nil {
				t.Fatalf("compacted copy refused: %v", err)
			}
			// The copy reopened with the other free list settings.
			b, err := bolt.Open(cpath, 0o600, &bolt.Options{NoFreelistSync: !v.noSync})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Update(func(tx *bolt.Tx) error { return mutate(tx, rng) }); err != nil {
				t.Fatal(err)
			}
			b.Close()
			if err := checkFile(cpath); err != nil {
				t.Fatalf("compacted copy after a write with the other free list setting: %v", err)
			}
		})
	}
}

// mutate puts and deletes random keys of random sizes in a few nested
// buckets, some of which stay small enough to be inline.
func mutate(tx *bolt.Tx, rng *rand.Rand) error {
	for range 40 {
		top, err := tx.CreateBucketIfNotExists(fmt.Appendf(nil, "b%d", rng.IntN(4)))
		if err != nil {
			return err
		}
		b := top
		if rng.IntN(3) == 0 {
			if b, err = top.CreateBucketIfNotExists(fmt.Appendf(nil, "n%d", rng.IntN(6))); err != nil {
				return err
			}
		}
		switch op := rng.IntN(10); {
		case op < 6:
			k := binary.BigEndian.AppendUint64(nil, rng.Uint64N(5000))
			size := rng.IntN(300)
			if rng.IntN(40) == 0 {
				size = rng.IntN(200_000) // overflow pages
			}
			v := make([]byte, size)
			for i := range v {
				v[i] = byte(rng.Uint32())
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
		case op < 9:
			c := b.Cursor()
			k, v := c.Seek(binary.BigEndian.AppendUint64(nil, rng.Uint64N(5000)))
			for n := rng.IntN(50); k != nil && n > 0; n-- {
				if v != nil || len(k) == 8 { // not a nested bucket
					if err := c.Delete(); err != nil {
						return err
					}
				}
				k, v = c.Next()
			}
		default:
			if rng.IntN(4) == 0 {
				_ = top.DeleteBucket(fmt.Appendf(nil, "n%d", rng.IntN(6)))
			}
		}
	}
	return nil
}

// TestCheckFileEmptyFile: an empty file (bbolt initializes it) passes.
func TestCheckFileEmptyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkFile(p); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}
