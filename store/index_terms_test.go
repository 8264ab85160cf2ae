package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// checkTerms compares what Find answers for identifiers of the mix
// (every customer, some txn and order ids), paged 50 and 7 at a time,
// with what reading everything finds.
func checkTerms(t *testing.T, db *DB, n int) {
	t.Helper()
	all := everything(t, db)
	terms := []string{"TX-00001", fmt.Sprintf("tx-%05d", n/2), fmt.Sprintf("ORD-%05d", n-1), "ord-00064"}
	for c := range 40 {
		terms = append(terms, fmt.Sprintf("c%d@example.com", c))
	}
	for _, term := range terms {
		var want []uint64
		for _, it := range all {
			if slices.Contains(eventTerms(it.Processing.Event), strings.ToLower(term)) {
				want = append(want, it.Notification.ID)
			}
		}
		if got := findAll(t, db, Query{Term: term}); !slices.Equal(got, want) {
			t.Errorf("Find(%q): %d ids %v..., reading everything: %d %v...", term, len(got), head(got), len(want), head(want))
		}
		var got []uint64
		for q := (Query{Term: term, Limit: 7}); ; {
			items, err := db.Find(q)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				got = append(got, it.Notification.ID)
			}
			if len(items) < q.Limit {
				break
			}
			q.Before = items[len(items)-1].Notification.ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("Find(%q) 7 a page: %d ids %v..., want %d %v...", term, len(got), head(got), len(want), head(want))
		}
	}
	// Pages that begin at a range's edge.
	for _, before := range []uint64{64, 65, 128, 129, uint64(n), ^uint64(0)} {
		var want []uint64
		for _, it := range all {
			if id := it.Notification.ID; id < before && slices.Contains(eventTerms(it.Processing.Event), "c1@example.com") {
				want = append(want, id)
			}
		}
		if got := findAll(t, db, Query{Term: "c1@example.com", Before: before}); !slices.Equal(got, want) {
			t.Errorf("Find(c1, before %d): %v..., want %v...", before, head(got), head(want))
		}
	}
}

// termKeys reads the keys of the identifier index: the ranges' and the
// one tree of schema 8.
func termKeys(t *testing.T, db *DB) (ranged, legacy [][]byte) {
	t.Helper()
	db.bolt.View(func(tx *bolt.Tx) error {
		tx.Bucket(bucketIxTerms).ForEach(func(k, _ []byte) error {
			ranged = append(ranged, bytes.Clone(k))
			return nil
		})
		tx.Bucket(bucketIxTerm).ForEach(func(k, _ []byte) error {
			legacy = append(legacy, bytes.Clone(k))
			return nil
		})
		return nil
	})
	return ranged, legacy
}

// The identifier index is written in ranges of ids: each key in the
// range of its id, none in the one tree of schema 8, so that a commit's
// new keys land in the newest range, whatever the store holds (issue
// 23). Searches by identifier find what reading everything finds, across
// ranges and from any page's start.
func TestIndexTermsInRanges(t *testing.T) {
	defer func(b int) { termPartBits = b }(termPartBits)
	termPartBits = 6 // 64 ids a range
	db := reopen(t, filepath.Join(t.TempDir(), "ipnd.db"))
	stop := mixPipeline(t, db)
	defer stop()
	const n = 1000
	fillMix(t, db, 1, n, time.Now())
	ranged, legacy := termKeys(t, db)
	if len(ranged) < 2*n || len(legacy) != 0 {
		t.Fatalf("%d keys in ranges, %d in the one tree; want them all (at least %d) in ranges", len(ranged), len(legacy), 2*n)
	}
	parts := map[uint32]bool{}
	for _, k := range ranged {
		if len(k) != 20 || uint64(binary.BigEndian.Uint32(k)) != binary.BigEndian.Uint64(k[12:])>>termPartBits {
			t.Fatalf("key %x: not range (id>>%d), hash, id", k, termPartBits)
		}
		parts[binary.BigEndian.Uint32(k)] = true
	}
	if len(parts) != n>>termPartBits+1 {
		t.Errorf("%d ranges, want %d", len(parts), n>>termPartBits+1)
	}
	checkTerms(t, db, n)
}

// A file of schema 8 keeps its identifier index in one tree: on upgrade
// to 9 nothing is rewritten, its keys are still found, new keys go to the
// ranges, and a notification processed again with other identifiers
// leaves no key behind in either.
func TestIndexTermsFromSchema8(t *testing.T) {
	defer func(b int) { termPartBits = b }(termPartBits)
	termPartBits = 6
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := reopen(t, path)
	stop := mixPipeline(t, db)
	now := time.Now()
	fillMix(t, db, 1, 600, now)
	stop()
	// Back to what a build of schema 8 wrote: hash, id in ix_term.
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketIxTerms); err != nil {
			return err
		}
		legacy := tx.Bucket(bucketIxTerm)
		return tx.Bucket(bucketState).ForEach(func(k, v []byte) error {
			var p ipn.Processing
			if err := decodeValue(v, &p); err != nil {
				return err
			}
			for _, term := range eventTerms(p.Event) {
				if err := legacy.Put(append(TermHash(term), k...), nil); err != nil {
					return err
				}
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(8)) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = reopen(t, path)
	db.bolt.View(func(tx *bolt.Tx) error {
		if got := getU64(tx.Bucket(bucketMeta).Get(keySchema)); got != 9 {
			t.Errorf("schema after open: %d, want 9", got)
		}
		return nil
	})
	ranged, legacy := termKeys(t, db)
	if len(ranged) != 0 || len(legacy) < 2*600 {
		t.Fatalf("after the upgrade: %d keys in ranges, %d in the one tree; want none rewritten", len(ranged), len(legacy))
	}
	checkTerms(t, db, 600)
	stop = mixPipeline(t, db)
	defer stop()
	fillMix(t, db, 601, 300, now)
	ranged, legacy2 := termKeys(t, db)
	if len(ranged) < 2*300 || len(legacy2) != len(legacy) {
		t.Errorf("after 300 more: %d keys in ranges, %d in the one tree (was %d); want the new ones in ranges only",
			len(ranged), len(legacy2), len(legacy))
	}
	checkTerms(t, db, 900)

	// Notification 2 (in schema 8's tree) and 702 (in a range) processed
	// again with other identifiers: no key of an identifier they no
	// longer name is left in either, the new ones are in the ranges.
	has := func(h []byte, id uint64) (inRange, inTree bool) {
		ranged, legacy := termKeys(t, db)
		return slices.ContainsFunc(ranged, func(k []byte) bool { return bytes.Equal(k, termKey(h, id)) }),
			slices.ContainsFunc(legacy, func(k []byte) bool { return bytes.Equal(k, append(bytes.Clone(h), u64(id)...)) })
	}
	_, legacyBefore := termKeys(t, db)
	for _, id := range []uint64{2, 702} {
		var was, now []string
		if err := db.bolt.Update(func(tx *bolt.Tx) error {
			raw := tx.Bucket(bucketState).Get(u64(id))
			var p ipn.Processing
			if err := decodeValue(raw, &p); err != nil {
				return err
			}
			was = eventTerms(p.Event)
			ev := *p.Event
			ev.TxnID, ev.OrderID, ev.CustomerEmail = fmt.Sprintf("NEW-TX-%d", id), fmt.Sprintf("NEW-ORD-%d", id), "new@example.com"
			p.Event = &ev
			now = eventTerms(p.Event)
			return indexProcessing(tx, id, bytes.Clone(raw), &p)
		}); err != nil {
			t.Fatal(err)
		}
		if len(was) < 3 {
			t.Fatalf("notification %d names %v", id, was)
		}
		for _, term := range was {
			if slices.Contains(now, term) {
				continue
			}
			if r, l := has(TermHash(term), id); r || l {
				t.Errorf("notification %d: the key of %q it no longer names is left (in a range %v, in the tree %v)", id, term, r, l)
			}
		}
		for _, term := range now {
			if r, _ := has(TermHash(term), id); !r && !slices.Contains(was, term) {
				t.Errorf("notification %d: no key of %q in the ranges", id, term)
			}
		}
	}
	if _, legacy := termKeys(t, db); len(legacy) != len(legacyBefore)-3 {
		t.Errorf("the tree of schema 8: %d keys, want %d (notification 2's three old identifiers gone)", len(legacy), len(legacyBefore)-3)
	}
}
