package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// Every int an outbox item holds reads back from the binary layout,
// whatever its size: a CoinPayments IPN's received_confirms is any int
// (strconv.Atoi), and an item written but refused on reading is lost.
func TestReview23cOutboxBodyIntRange(t *testing.T) {
	for _, v := range []int{math.MaxInt32 + 1, math.MaxInt64, math.MinInt32 - 1, math.MinInt64} {
		it := ipn.OutboxItem{ID: 1, State: ipn.OutboxPending, Effect: ipn.Effect{Kind: ipn.EffectShopCallback,
			Event: &ipn.Event{Confirmations: v},
			Order: &ipn.OrderSnapshot{Version: v, Deliveries: []ipn.Delivered{{DownloadsLeft: v}}}}}
		var got ipn.OutboxItem
		if err := decodeOutboxBody(outboxBody(&it), &got); err != nil || !reflect.DeepEqual(got, it) {
			t.Errorf("ints %d: read %+v, %v", v, got, err)
		}
	}
}

// termWalk lists what termIDs walks for h below before.
func termWalk(b *bolt.Bucket, h []byte, before uint64) []uint64 {
	var out []uint64
	for w := termIDs(b, h, before); w.ok; w.next() {
		out = append(out, w.id)
	}
	return out
}

// The identifier index's walk, compared with the ids themselves: for
// every page start (before) around the ranges' borders, a hash with keys
// in some ranges only, hashes just below and above it in every range,
// and ids up to the last one a range can hold (2^48-1 with ranges of
// 2^16): each id once, newest first, none missed.
func TestReview23cTermIDsAtBorders(t *testing.T) {
	defer func(b int) { termPartBits = b }(termPartBits)
	for _, bits := range []int{2, 16} {
		termPartBits = bits
		db := mustOpen(t)
		w := uint64(1) << bits
		top := uint64(1)<<(32+bits) - 1 // the last id a range can hold
		h := []byte{0x80, 0, 0, 0, 0, 0, 0, 1}
		lo := []byte{0x80, 0, 0, 0, 0, 0, 0, 0}
		hi := []byte{0x80, 0, 0, 0, 0, 0, 0, 2}
		ids := []uint64{1, 2, w - 1, w, w + 1, 3*w - 1, 3 * w, 7*w + 2, 100 * w, top - w, top - 1, top}
		var all []uint64
		for id := uint64(1); id < 12*w; id += w / 2 {
			all = append(all, id)
		}
		all = append(all, top-2, top)
		if err := db.bolt.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketIxTerms)
			for _, id := range ids {
				if err := b.Put(termKey(h, id), nil); err != nil {
					return err
				}
			}
			for _, id := range all {
				for _, x := range [][]byte{lo, hi} {
					if err := b.Put(termKey(x, id), nil); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var befores []uint64
		for _, id := range append(slices.Clone(ids), all...) {
			befores = append(befores, id-1, id, id+1)
		}
		befores = append(befores, 0, top+1, top+2, 1<<48, 1<<48+1, math.MaxUint32<<16, math.MaxUint64-1, math.MaxUint64)
		db.bolt.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketIxTerms)
			for _, before := range befores {
				var want []uint64
				for _, id := range slices.Backward(ids) {
					if before == 0 || id < before {
						want = append(want, id)
					}
				}
				if got := termWalk(b, h, before); !slices.Equal(got, want) {
					t.Errorf("ranges of 2^%d, before %d: walked %v, want %v", bits, before, got, want)
				}
			}
			return nil
		})
	}
}

// A stored item whose packed length is damaged (it claims up to
// maxUnpacked bytes and holds a few) is an error that costs what its
// bytes are: before, each read of it (every outbox page, the lanes'
// scans) allocated the 64 MiB it claimed, a heap bound's worth.
func TestReview23cDamagedPackedLengthAllocatesLittle(t *testing.T) {
	for _, v := range [][]byte{
		append(binary.AppendUvarint([]byte{tagOutboxPacked}, maxUnpacked), 0x00, 0x01),
		append(binary.AppendUvarint([]byte{tagJSON}, maxUnpacked), 0xf0, 0x05, 'a'),
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 10 {
			var it ipn.OutboxItem
			if err := decodeOutboxBody(v, &it); err == nil {
				t.Fatalf("% x decoded", v)
			}
		}
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
			t.Errorf("10 reads of a damaged %d-byte item allocated %d MiB", len(v), got>>20)
		}
	}
}

// The binary layout has one encoding per item (FuzzOutboxBody's
// invariant: what decodes encodes to the same bytes): a varint with
// bytes its value does not need, or a known lane written by name, was
// never written, so it is damage, not an item (the fuzzer found the
// first: testdata/fuzz/FuzzOutboxBody/2c7b33b091d20f36).
func TestReview23cOutboxBodyOneEncoding(t *testing.T) {
	it := ipn.OutboxItem{ID: 0x73, Attempts: 2, Effect: ipn.Effect{Kind: "shop_callbacX"}}
	good := encodeOutboxBody(&it)
	byName := bytes.Replace(good, []byte("shop_callbacX"), []byte(ipn.EffectShopCallback), 1)
	overlongID := append([]byte{tagOutboxBin, outboxBinFormat, 0xf3, 0x00}, good[3:]...)
	for name, v := range map[string][]byte{"known kind by name": byName, "overlong id": overlongID} {
		var got ipn.OutboxItem
		if err := decodeOutboxBody(v, &got); err == nil {
			t.Errorf("%s: decoded as %+v", name, got)
		}
	}
}

// Retention scrubs the customer's email from the notifications' events:
// on a file upgraded from schema 8 (keys in ix_term) with newer keys in
// the ranges, no key of a scrubbed email is left in either, a search by
// it finds nothing, and the identifiers kept (txn ids) are still found
// in both.
func TestReview23cPurgeLeavesNoEmailKey(t *testing.T) {
	defer func(b int) { termPartBits = b }(termPartBits)
	termPartBits = 3
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := reopen(t, path)
	stop := mixPipeline(t, db)
	now := time.Now()
	fillMix(t, db, 1, 60, now.Add(-2*time.Hour))
	stop()
	if err := db.bolt.Update(func(tx *bolt.Tx) error { // as schema 8 wrote it
		if err := tx.DeleteBucket(bucketIxTerms); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketIxTerms); err != nil {
			return err
		}
		legacy := tx.Bucket(bucketIxTerm)
		if err := tx.Bucket(bucketState).ForEach(func(k, v []byte) error {
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
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(8))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = reopen(t, path)
	stop = mixPipeline(t, db)
	defer stop()
	fillMix(t, db, 61, 40, now.Add(-time.Hour))
	if got := findAll(t, db, Query{Term: "c1@example.com"}); len(got) < 2 {
		t.Fatalf("before the purge c1 is found in %v", got)
	}
	for {
		p, err := db.Purge(now, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if !p.More {
			break
		}
	}
	for c := range 40 {
		email := fmt.Sprintf("c%d@example.com", c)
		if got := findAll(t, db, Query{Term: email}); len(got) != 0 {
			t.Errorf("after the purge %s is found in %v", email, got)
		}
		h := TermHash(email)
		ranged, legacy := termKeys(t, db)
		for _, k := range ranged {
			if bytes.Equal(k[4:12], h) {
				t.Errorf("after the purge a key of %s is left in the ranges: %x", email, k)
			}
		}
		for _, k := range legacy {
			if bytes.Equal(k[:8], h) {
				t.Errorf("after the purge a key of %s is left in ix_term: %x", email, k)
			}
		}
	}
	for _, id := range []int{1, 59, 61, 100} {
		if got := findAll(t, db, Query{Term: fmt.Sprintf("tx-%05d", id)}); !slices.Equal(got, []uint64{uint64(id)}) {
			t.Errorf("after the purge tx-%05d is found in %v", id, got)
		}
	}
}
