package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkIndexBuild times the move of a store written by schema 6 to
// schema 7: IPND_BENCH_INDEX_RECORDS notifications (default 100,000; the
// mix of index_test.go, processed by the real pipeline, with their
// orders and outbox items) stored, the indexes dropped as a build of 6
// would have left the file, then Open, which builds them.
func BenchmarkIndexBuild(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("IPND_BENCH_INDEX_RECORDS")); err == nil && v > 0 {
		n = v
	}
	for range b.N {
		path := filepath.Join(b.TempDir(), "ipnd.db")
		db, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		db.SetNoSync(true)
		stop := mixPipeline(b, db)
		now := time.Now()
		for from := 1; from <= n; from += 10000 {
			fillMix(b, db, from, min(10000, n-from+1), now)
		}
		stop()
		if err := db.bolt.Update(func(tx *bolt.Tx) error {
			for _, name := range indexBuckets {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(keySchema, u64(6))
		}); err != nil {
			b.Fatal(err)
		}
		db.SetNoSync(false)
		db.Close()
		start := time.Now()
		db, err = Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		var outbox, orders int
		db.bolt.View(func(tx *bolt.Tx) error {
			outbox, orders = tx.Bucket(bucketOutbox).Stats().KeyN, tx.Bucket(bucketOrders).Stats().KeyN
			return nil
		})
		db.Close()
		fmt.Printf("\nschema 6 -> 7: indexes of %d notifications, %d outbox items, %d orders built on open in %s\n",
			n, outbox, orders, took.Round(time.Millisecond))
	}
}
