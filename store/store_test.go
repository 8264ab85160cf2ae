package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// mustOpen opens a store in a fresh temp dir and, at cleanup, checks the
// file's consistency before closing it.
func mustOpen(tb testing.TB) *DB {
	tb.Helper()
	db, err := Open(filepath.Join(tb.TempDir(), "ipnd.db"), Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := db.Check(); err != nil {
			tb.Errorf("consistency check: %v", err)
		}
		if err := db.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return db
}

// filler is n bytes of hex that depend on seed and do not pack smaller
// (see codec.go), for tests that count bytes.
func filler(seed string, n int) string {
	var b []byte
	for i := 0; len(b) < n; i++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", seed, i))
		b = hex.AppendEncode(b, sum[:])
	}
	return string(b[:n])
}

func sample(gateway, key string, body string) *ipn.Notification {
	return &ipn.Notification{
		Gateway:     gateway,
		ReceivedAt:  time.Date(2026, 11, 24, 10, 0, 0, 123, time.UTC),
		RemoteAddr:  "203.0.113.7",
		ContentType: "application/json",
		Headers:     http.Header{"Webhook-Id": {key}, "X-Multi": {"a", "b"}},
		Body:        []byte(body),
		DedupKey:    key,
	}
}

func TestAppendGetRoundTrip(t *testing.T) {
	db := mustOpen(t)
	in := sample("test", "msg_1", "{\"a\":\xff}")
	id, dup, err := db.Append(context.Background(), in)
	if err != nil || dup || id != 1 {
		t.Fatalf("Append = %d, %v, %v; want 1, false, nil", id, dup, err)
	}
	got, p, err := db.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	in.ID = 1
	if got.Gateway != in.Gateway || !got.ReceivedAt.Equal(in.ReceivedAt) || got.RemoteAddr != in.RemoteAddr ||
		got.ContentType != in.ContentType || got.DedupKey != in.DedupKey || !bytes.Equal(got.Body, in.Body) ||
		fmt.Sprint(got.Headers) != fmt.Sprint(in.Headers) || got.ID != 1 {
		t.Errorf("Get = %+v, want %+v", got, in)
	}
	if p.State != ipn.StateReceived || len(p.History) != 1 {
		t.Errorf("processing = %+v, want received with one history entry", p)
	}
	if _, _, err := db.Get(2); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(2) err = %v, want ErrNotFound", err)
	}
}

func TestDedup(t *testing.T) {
	db := mustOpen(t)
	ctx := context.Background()
	id1, dup, _ := db.Append(ctx, sample("a", "k", "1"))
	if dup {
		t.Fatal("first copy reported duplicate")
	}
	id2, dup, err := db.Append(ctx, sample("a", "k", "2"))
	if err != nil || !dup || id2 != id1 {
		t.Errorf("second copy = %d, %v, %v; want %d, true, nil", id2, dup, err, id1)
	}
	// Same key on another gateway is not a duplicate; no key never is.
	id3, dup, _ := db.Append(ctx, sample("b", "k", "3"))
	if dup || id3 != 2 {
		t.Errorf("other gateway = %d, %v; want 2, false", id3, dup)
	}
	for i := 0; i < 2; i++ {
		if _, dup, _ := db.Append(ctx, sample("a", "", "x")); dup {
			t.Error("empty dedup key reported duplicate")
		}
	}
	if s, _ := db.Stats(); s.LastID != 4 {
		t.Errorf("LastID = %d, want 4", s.LastID)
	}
}

// TestConcurrentAppend runs 64 posters against one store (run it with
// -race): every append gets a distinct id, ids are dense from 1, each
// duplicate pair is stored once, and group commit batched something.
func TestConcurrentAppend(t *testing.T) {
	var mu sync.Mutex
	commits, records := 0, 0
	db, err := Open(filepath.Join(t.TempDir(), "ipnd.db"), Options{OnCommit: func(_ time.Duration, n int) {
		mu.Lock()
		commits++
		records += n
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const posters, each = 64, 40
	ids := make(chan uint64, posters*each*2)
	var wg sync.WaitGroup
	for p := 0; p < posters; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				key := fmt.Sprintf("p%d-%d", p, i)
				for copy := 0; copy < 2; copy++ { // every message twice
					id, dup, err := db.Append(context.Background(), sample("g", key, key))
					if err != nil {
						t.Error(err)
						return
					}
					if !dup {
						ids <- id
					}
				}
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[uint64]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	if len(seen) != posters*each {
		t.Fatalf("stored %d, want %d", len(seen), posters*each)
	}
	for id := uint64(1); id <= posters*each; id++ {
		if !seen[id] {
			t.Fatalf("id %d missing: ids are not dense", id)
		}
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if records != posters*each || commits >= records {
		t.Errorf("commits = %d for %d records: want fewer commits than records (group commit)", commits, records)
	}
	t.Logf("%d records in %d commits", records, commits)
}

func TestReopenKeepsRecordsAndIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		db.Append(context.Background(), sample("g", fmt.Sprint(i), "b"))
	}
	db.Close()
	if _, _, err := db.Append(context.Background(), sample("g", "late", "b")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close err = %v, want ErrClosed", err)
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id, _, err := db.Append(context.Background(), sample("g", "new", "b"))
	if err != nil || id != 4 {
		t.Errorf("id after reopen = %d, %v; want 4", id, err)
	}
	if _, dup, _ := db.Append(context.Background(), sample("g", "1", "b")); !dup {
		t.Error("dedup index lost across reopen")
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open err = %v, want ErrInUse", err)
	}
	if want := fmt.Sprintf("pid %d", os.Getpid()); !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not name %q", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %s", d)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucketIfNotExists(bucketMeta)
		return m.Put(keySchema, u64(SchemaVersion+1))
	})
	b.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrNewSchema) {
		t.Fatalf("Open err = %v, want ErrNewSchema", err)
	}
}

func TestListPagingAndFilters(t *testing.T) {
	db := mustOpen(t)
	for i := 1; i <= 10; i++ {
		gw := "a"
		if i%2 == 0 {
			gw = "b"
		}
		db.Append(context.Background(), sample(gw, fmt.Sprint(i), "x"))
	}
	ids := func(items []Item) []uint64 {
		var out []uint64
		for _, it := range items {
			out = append(out, it.Notification.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{Limit: 3}, "[10 9 8]"},
		{Filter{Limit: 3, Before: 8}, "[7 6 5]"},
		{Filter{Gateway: "b", Limit: 2, Before: 7}, "[6 4]"},
		{Filter{Before: 1}, "[]"},
		{Filter{Before: 99, Limit: 1}, "[10]"},
		{Filter{State: ipn.StateApplied}, "[]"},
		{Filter{State: ipn.StateReceived, Limit: 2}, "[10 9]"},
	} {
		got, err := db.List(tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if s := fmt.Sprint(ids(got)); s != tc.want {
			t.Errorf("List(%+v) = %s, want %s", tc.f, s, tc.want)
		}
	}
}

func TestBackupDuringIngest(t *testing.T) {
	db := mustOpen(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			db.Append(ctx, sample("g", fmt.Sprint(i), "body"))
		}
	}()
	for {
		if s, _ := db.Stats(); s.LastID > 50 {
			break
		}
	}
	var buf bytes.Buffer
	var announced int64
	n, err := db.Backup(&buf, func(s int64) { announced = s })
	cancel()
	wg.Wait()
	if err != nil || n != int64(buf.Len()) || n != announced {
		t.Fatalf("Backup = %d, %v (buffer %d, announced %d)", n, err, buf.Len(), announced)
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cp, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if err := cp.Check(); err != nil {
		t.Fatal(err)
	}
	s, _ := cp.Stats()
	if s.LastID < 50 {
		t.Errorf("backup holds %d records, want at least 50", s.LastID)
	}
	if _, _, err := cp.Get(s.LastID); err != nil {
		t.Errorf("newest record in backup: %v", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(sample("test", "k", "{}")))
	purged := sample("test", "k", "")
	purged.BodySHA256, purged.Purged = "ab", time.Unix(1, 0)
	f.Add(encodePurged(purged))
	f.Add(encodeRecord(sampleTypical(1))) // packed
	f.Add([]byte{1})
	f.Add([]byte{})
	long := sampleTypical(2)
	long.Gateway = strings.Repeat("g", 300) // past recordGateway's prefix
	f.Add(encodeRecord(long))
	f.Fuzz(func(t *testing.T, data []byte) {
		gw, gerr := recordGateway(1, data) // never panics
		n, err := decodeRecord(1, data)
		if err != nil {
			return
		}
		// The gateway read from the first bytes is the whole record's.
		if gerr != nil || gw != n.Gateway {
			t.Fatalf("recordGateway = %q, %v; the record's is %q", gw, gerr, n.Gateway)
		}
		// Whatever decodes must encode back to something that decodes equal.
		enc := encodeRecord(n)
		if !n.Purged.IsZero() {
			if len(n.Body) != 0 || n.Headers != nil || n.RemoteAddr != "" {
				t.Fatalf("a purged record decoded with raw data: %+v", n)
			}
			enc = encodePurged(n)
		}
		again, err := decodeRecord(1, enc)
		if err != nil || !bytes.Equal(again.Body, n.Body) || again.Gateway != n.Gateway || again.BodySHA256 != n.BodySHA256 ||
			!again.Purged.Equal(n.Purged) || again.DedupKey != n.DedupKey || !again.ReceivedAt.Equal(n.ReceivedAt) ||
			!reflect.DeepEqual(again.Headers, n.Headers) {
			t.Fatalf("round trip of decoded record failed: %v", err)
		}
	})
}

// TestDedupWithinOneBatch: many goroutines post the same few messages at
// once, so copies land in the same group commit; each is stored once.
func TestDedupWithinOneBatch(t *testing.T) {
	db := mustOpen(t)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 20; i++ {
				db.Append(context.Background(), sample("g", fmt.Sprint(i%4), "x"))
			}
		}()
	}
	close(start)
	wg.Wait()
	if s, _ := db.Stats(); s.LastID != 4 {
		t.Errorf("stored %d, want 4", s.LastID)
	}
}

// A message id longer than bbolt's key limit is still deduplicated and
// does not fail the other appends of its batch.
func TestLongDedupKey(t *testing.T) {
	db := mustOpen(t)
	long := strings.Repeat("k", 40_000)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint(i)
			if i%5 == 0 {
				key = long
			}
			if _, _, err := db.Append(context.Background(), sample("g", key, "x")); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s, _ := db.Stats(); s.LastID != 17 {
		t.Errorf("stored %d, want 17 (16 short keys + 1 long)", s.LastID)
	}
}

// A panicking commit observer does not stop ingest.
func TestPanickingObserver(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "ipnd.db"), Options{OnCommit: func(time.Duration, int) { panic("boom") }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 3; i++ {
		if _, _, err := db.Append(context.Background(), sample("g", fmt.Sprint(i), "x")); err != nil {
			t.Fatal(err)
		}
	}
}

// A damaged file gives an error, not a panic.
func TestOpenDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		db.Append(context.Background(), sample("g", fmt.Sprint(i), filler(fmt.Sprint(i), 500)))
	}
	db.Close()
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	junk := bytes.Repeat([]byte{0xA5}, 4096*4)
	f.WriteAt(junk, 4096*3)
	f.Close()
	db, err = Open(path, Options{})
	if err == nil {
		err = db.Check()
		db.Close()
	}
	if err == nil {
		t.Fatal("a damaged file opened and checked clean")
	}
	t.Logf("damaged file: %v", err)
}
