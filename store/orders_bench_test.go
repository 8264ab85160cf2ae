package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// BenchmarkOrderGrowth applies 10,000 events (IPND_BENCH_EVENTS) to one
// order, monthly payments over centuries, one Finish (one bbolt
// transaction) each, through the pipeline's own write path, and reports
// the cost of the first events and of the last ones, and the bytes the
// order's records take at the end. bbolt's fsync is off (NoSync) so that
// the figures are the work per event, not the disk's latency. The
// payments name no subscription: the subscription record (its list of
// payments) is not what is measured here.
func BenchmarkOrderGrowth(b *testing.B) {
	events := 10_000
	if n, err := strconv.Atoi(os.Getenv("IPND_BENCH_EVENTS")); err == nil && n > 10 {
		events = n
	}
	const orderID = "SUB-0001"
	for i := 0; i < b.N; i++ {
		db, err := Open(filepath.Join(b.TempDir(), "ipnd.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		db.bolt.NoSync = true
		batch := make([]journaled, 0, events)
		for id := 1; id <= events; id++ {
			n := sample("g", "sub-"+strconv.Itoa(id), `{}`)
			batch = append(batch, journaled{id: uint64(id), key: dedupKey(n.Gateway, n.DedupKey), rec: encodeRecord(n)})
		}
		if err := db.putJournaled(batch); err != nil {
			b.Fatal(err)
		}
		db.acked, db.applied = uint64(events), uint64(events)
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		took := make([]time.Duration, events+1)
		for id := 1; id <= events; id++ {
			ev := &ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("I-%06d", id),
				OrderID: orderID, Amount: "9.99", Currency: "USD", CustomerEmail: "c@example.com"}
			out := ipn.Outcome{ID: uint64(id), State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("g", ev),
				ApplyOrder: true, Context: ipn.ApplyContext{Gateway: "g"}}
			start := time.Now()
			if _, err := db.Finish([]ipn.Outcome{out}, uint64(id), t0.AddDate(0, id, 0)); err != nil {
				b.Fatal(err)
			}
			took[id] = time.Since(start)
		}
		o, err := db.GetOrder(orderID)
		if err != nil || o.Paid != fmt.Sprintf("%d.%02d", events*999/100, events*999%100) {
			b.Fatalf("order after %d events: %+v (%v)", events, o, err)
		}
		mean := func(from, to int) float64 {
			var sum time.Duration
			for _, d := range took[from : to+1] {
				sum += d
			}
			return float64(sum.Nanoseconds()) / float64(to-from+1)
		}
		size := orderBytes(b, db, orderID)
		db.Close()
		b.ReportMetric(float64(took[1].Nanoseconds()), "ns/event@1")
		b.ReportMetric(mean(1, 10), "ns/event@1-10")
		b.ReportMetric(mean(events-9, events), "ns/event@"+strconv.Itoa(events))
		b.ReportMetric(float64(size), "order-bytes@"+strconv.Itoa(events))
		fmt.Printf("\none order, %d events, one transaction each (mean of 10 events around the n-th):\n", events)
		for _, n := range []int{1, 100, 1000, 2500, 5000, 10_000, 20_000} {
			if n <= events {
				from := max(1, min(n, events-9))
				fmt.Printf("  n=%-6d %10s/event\n", n, time.Duration(mean(from, from+9)).Round(time.Microsecond))
			}
		}
		fmt.Printf("  the order's records after %d events: %d bytes\n", events, size)
	}
}

// orderBytes sums the keys and values of order id's records: its value
// in the orders bucket and, in every other bucket of the order's
// (order_*: facts, history, tally), the keys that hold its id.
func orderBytes(tb testing.TB, db *DB, id string) int {
	total := 0
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			switch {
			case bytes.Equal(name, bucketOrders):
				total += len(id) + len(b.Get([]byte(id)))
			case bytes.HasPrefix(name, []byte("order_")) && !bytes.Equal(name, bucketOrderCounts) && !bytes.Equal(name, bucketRefs):
				return b.ForEach(func(k, v []byte) error {
					if bytes.Contains(k, []byte(id)) {
						total += len(k) + len(v)
					}
					return nil
				})
			}
			return nil
		})
	})
	if err != nil {
		tb.Fatal(err)
	}
	return total
}
