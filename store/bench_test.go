package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures one durable append at a time (every op is a
// commit with its fsyncs) and with parallel appenders (group commit).
func BenchmarkAppend(b *testing.B) {
	body := strings.Repeat("x", 600)
	for _, par := range []int{1, 64} {
		b.Run("clients="+strconv.Itoa(par), func(b *testing.B) {
			db, err := Open(filepath.Join(b.TempDir(), "ipnd.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			var seq atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			if par == 1 {
				for i := 0; i < b.N; i++ {
					db.Append(context.Background(), sample("g", strconv.Itoa(i), body))
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					db.Append(context.Background(), sample("g", strconv.FormatInt(seq.Add(1), 10), body))
				}
			})
		})
	}
}

// BenchmarkAppendLargeStore compares one durable append at a time on an
// empty store with the same on a store already holding many records
// (IPND_BENCH_RECORDS, default 1,000,000; filled through the applier's own
// write path, 10,000 per transaction). It prints p50 and p99 of each and
// the bytes per stored record.
func BenchmarkAppendLargeStore(b *testing.B) {
	records := 1_000_000
	if n, err := strconv.Atoi(os.Getenv("IPND_BENCH_RECORDS")); err == nil && n > 0 {
		records = n
	}
	body := strings.Repeat("x", 600)
	measure := func(db *DB, prefix string) (p50, p99 time.Duration) {
		lats := make([]time.Duration, 0, 2000)
		for i := range 2000 {
			t0 := time.Now()
			if _, _, err := db.Append(context.Background(), sample("g", prefix+strconv.Itoa(i), body)); err != nil {
				b.Fatal(err)
			}
			lats = append(lats, time.Since(t0))
		}
		slices.Sort(lats)
		return lats[len(lats)/2], lats[len(lats)*99/100]
	}
	for i := 0; i < b.N; i++ {
		empty, err := Open(filepath.Join(b.TempDir(), "empty.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		e50, e99 := measure(empty, "e")
		empty.Close()

		path := filepath.Join(b.TempDir(), "large.db")
		large, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		batch := make([]journaled, 0, 10_000)
		for id := 1; id <= records; id++ {
			n := sample("g", "fill-"+strconv.Itoa(id), body)
			batch = append(batch, journaled{id: uint64(id), key: dedupKey(n.Gateway, n.DedupKey), rec: encodeRecord(n)})
			if len(batch) == cap(batch) || id == records {
				if err := large.putJournaled(batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		large.acked, large.applied = uint64(records), uint64(records)
		fill := time.Since(start)
		l50, l99 := measure(large, "l")
		st, _ := large.Stats()
		large.Close()
		fmt.Printf("\nappend, one at a time, 2,000 each: empty store p50 %s p99 %s; store with %d records (filled in %s, %.0f bytes/record) p50 %s p99 %s; p50 ratio %.2f\n",
			e50.Round(time.Microsecond), e99.Round(time.Microsecond), records, fill.Round(time.Second),
			float64(st.SizeBytes)/float64(st.LastID), l50.Round(time.Microsecond), l99.Round(time.Microsecond), float64(l50)/float64(e50))
	}
}
