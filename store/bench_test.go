package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
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

// typicalBody is the body of typical notification i from a Standard
// Webhooks gateway: 230 bytes of JSON (TestTypicalBody checks), with a
// payment id that looks random, as gateways' do, and the shop's
// sequential order number.
func typicalBody(i int) []byte {
	return fmt.Appendf(nil, `{"type":"payment.completed","timestamp":"2026-11-24T10:00:00Z","data":{"txn_id":"%s","order_id":"ORD-%06d","amount":"149.90","currency":"EUR","status":"completed","customer_email":"j@example.com","customer_name":"JDoe"}}`,
		randomID("txn", i, 10), i)
}

// randomID is an id of n characters that looks random (the same for the
// same kind and i).
func randomID(kind string, i, n int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", kind, i))
	return hex.EncodeToString(sum[:])[:n]
}

const typicalSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// sampleTypical is typical notification i as the receiver stores it: a
// signed Standard Webhooks request with the headers the gateway keeps.
func sampleTypical(i int) *ipn.Notification {
	key, _ := gateway.DecodeWebhookSecret(typicalSecret)
	body := typicalBody(i)
	msgID := "msg_" + randomID("msg", i, 26)
	at := time.Now().UTC()
	return &ipn.Notification{Gateway: "shop", ReceivedAt: at, RemoteAddr: "203.0.113.7:48212",
		ContentType: "application/json", Body: body, DedupKey: msgID, Headers: http.Header{
			"Webhook-Id":        {msgID},
			"Webhook-Timestamp": {strconv.FormatInt(at.Unix(), 10)},
			"Webhook-Signature": {gateway.SignWebhook(key, msgID, at.Unix(), body)},
			"User-Agent":        {"Svix-Webhooks/1.62.0 (sender-AbCdE; +https://www.svix.com/http-sender/)"},
		}}
}

// fillTypical stores n typical notifications as the daemon does: signed
// requests appended with the receiver's headers, the real pipeline
// verifying them and creating each one's order, and the outbox items it
// queues (one customer email and one shop callback per notification)
// recorded as sent. It returns the store's Space.
func fillTypical(tb testing.TB, path string, opts Options, n int) Space {
	tb.Helper()
	opts.EffectKinds = map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectShopCallback: true}
	db, err := Open(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	gw, err := gateway.New(gateway.Config{Name: "shop", Kind: "standard-webhooks", Secrets: []string{typicalSecret}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := pipeline.New(pipeline.Options{Journal: db, Gateways: []gateway.Gateway{gw}, BatchDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	for i := 1; i <= n; i++ {
		nt := sampleTypical(i)
		if _, _, err := db.Append(ctx, nt); err != nil {
			tb.Fatal(err)
		}
	}
	for deadline := time.Now().Add(2 * time.Minute); db.Cursor() < uint64(n); {
		if time.Now().After(deadline) {
			tb.Fatalf("the pipeline processed %d of %d in 2 minutes", db.Cursor(), n)
		}
		select {
		case err := <-ran:
			tb.Fatalf("pipeline stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-ran
	for _, kind := range ipn.OutboxLanes {
		for {
			items, _, err := db.DueLane(kind, time.Now().Add(time.Hour), 500)
			if err != nil {
				tb.Fatal(err)
			}
			if len(items) == 0 {
				break
			}
			res := make([]ipn.OutboxResult, len(items))
			for i, it := range items {
				res[i] = ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1}
			}
			if err := db.FinishOutbox(res, time.Now()); err != nil {
				tb.Fatal(err)
			}
		}
	}
	sp, err := db.Space()
	if err != nil {
		tb.Fatal(err)
	}
	return sp
}

// BenchmarkSpace prints the bytes per typical notification (230-byte
// body, its order, one customer email and one shop callback, sent) in
// each bucket, written as schema 2 did (plain JSON values, unpacked
// records) and as this build does, in the same run.
func BenchmarkSpace(b *testing.B) {
	const n = 5000
	for i := 0; i < b.N; i++ {
		var sp [2]Space
		for k, plain := range []bool{true, false} {
			writePlain = plain
			sp[k] = fillTypical(b, filepath.Join(b.TempDir(), "ipnd.db"), Options{}, n)
			writePlain = false
		}
		fmt.Printf("\nspace: %d typical notifications (230-byte body, its order, a customer email and a shop callback, sent)\n", n)
		fmt.Printf("%-14s %8s %14s %14s\n", "bucket", "keys", "plain B/ntf", "packed B/ntf")
		var sum [2]float64
		for j, after := range sp[1].Buckets {
			before := sp[0].Buckets[j]
			if before.Bytes == 0 && after.Bytes == 0 {
				continue
			}
			fmt.Printf("%-14s %8d %8.0f (%2.0f%%) %8.0f (%2.0f%%)\n", after.Name, after.Keys,
				before.PerNotification, 100*fill(before), after.PerNotification, 100*fill(after))
			sum[0] += before.PerNotification
			sum[1] += after.PerNotification
		}
		fmt.Printf("%-14s %8s %14.0f %14.0f   ratio %.2f; file %.0f -> %.0f bytes/notification\n", "total", "",
			sum[0], sum[1], sum[1]/sum[0], sp[0].PerNotification, sp[1].PerNotification)
		b.ReportMetric(sum[1], "bytes/notification")
	}
}

// fill is the share of a bucket's pages in use.
func fill(b BucketSpace) float64 {
	if b.Bytes == 0 {
		return 0
	}
	return float64(b.InUse) / float64(b.Bytes)
}

// BenchmarkBackupLargeStore measures a backup of a large database while
// ingest goes on (issue 20 point 6): it fills a store to
// IPND_BENCH_BACKUP_MB (default 2048) through the applier's write path
// with incompressible bodies, measures the ingest rate of 16 parallel
// appenders for 5 s, then again while Backup copies the whole database to
// io.Discard, and prints the database size, the backup's time, both
// rates, the pages the snapshot kept from reuse and the file's growth.
func BenchmarkBackupLargeStore(b *testing.B) {
	target := int64(2048) << 20
	if n, err := strconv.Atoi(os.Getenv("IPND_BENCH_BACKUP_MB")); err == nil && n > 0 {
		target = int64(n) << 20
	}
	for i := 0; i < b.N; i++ {
		path := filepath.Join(b.TempDir(), "large.db")
		db, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		batch := make([]journaled, 0, 10_000)
		id := 0
		for {
			st, _ := os.Stat(path)
			if st.Size() >= target {
				break
			}
			for range cap(batch) {
				id++
				n := sample("g", "fill-"+strconv.Itoa(id), randomID("body", id, 64)+strings.Repeat(randomID("pad", id, 64), 12))
				batch = append(batch, journaled{id: uint64(id), key: dedupKey(n.Gateway, n.DedupKey), rec: encodeRecord(n)})
			}
			if err := db.putJournaled(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
		db.acked, db.applied = uint64(id), uint64(id)
		fill := time.Since(start)
		st, _ := os.Stat(path)
		size := st.Size()

		var stop atomic.Bool
		var count atomic.Int64
		ingest := func(d time.Duration, during func()) (float64, time.Duration) {
			stop.Store(false)
			count.Store(0)
			done := make(chan struct{})
			for w := range 16 {
				go func() {
					defer func() { done <- struct{}{} }()
					for k := 0; !stop.Load(); k++ {
						if _, _, err := db.Append(context.Background(), sample("g", fmt.Sprintf("in-%d-%d-%d", i, w, k), "ingest body")); err != nil {
							b.Error(err)
							return
						}
						count.Add(1)
					}
				}()
			}
			t0 := time.Now()
			if during != nil {
				during()
			} else {
				time.Sleep(d)
			}
			el := time.Since(t0)
			stop.Store(true)
			for range 16 {
				<-done
			}
			return float64(count.Load()) / el.Seconds(), el
		}
		before, _ := ingest(5*time.Second, nil)
		var backupErr error
		var copied int64
		var maxPinned int64
		during, took := ingest(0, func() {
			watch := make(chan struct{})
			go func() {
				for {
					select {
					case <-watch:
						return
					case <-time.After(50 * time.Millisecond):
						maxPinned = max(maxPinned, int64(db.bolt.Stats().PendingPageN)*int64(db.bolt.Info().PageSize))
					}
				}
			}()
			copied, backupErr = db.Backup(io.Discard, nil)
			close(watch)
		})
		if backupErr != nil {
			b.Fatal(backupErr)
		}
		after, _ := os.Stat(path)
		db.Close()
		t0 := time.Now()
		if err := checkFile(path); err != nil {
			b.Fatal(err)
		}
		check := time.Since(t0)
		t0 = time.Now()
		if db, err = Open(path, Options{}); err != nil {
			b.Fatal(err)
		}
		reopen := time.Since(t0)
		fmt.Printf("\nopen of the %d MiB database: %s, of which the damage check (checkFile) %s\n", after.Size()>>20, reopen.Round(time.Millisecond), check.Round(time.Millisecond))
		fmt.Printf("\nbackup of a %d MiB database (%d records, filled in %s): %d MiB copied in %s; ingest 16 clients: %.0f/s before, %.0f/s during the backup (%.2f); pages kept from reuse at most %d MiB; file grew %d MiB\n",
			size>>20, id, fill.Round(time.Second), copied>>20, took.Round(100*time.Millisecond), before, during, during/before,
			maxPinned>>20, (after.Size()-size)>>20)
		db.Close()
	}
}
