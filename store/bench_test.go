package store

import (
	"context"
	"fmt"
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

// typicalBody is a typical payment notification of a Standard Webhooks
// gateway: 230 bytes of JSON (the length is checked).
func typicalBody(id int) []byte {
	s := fmt.Sprintf(`{"type":"payment.completed","timestamp":"2026-11-24T10:00:00Z","data":{"txn_id":"TXN-%06d","order_id":"ORD-%06d","amount":"149.90","currency":"EUR","status":"completed","customer_email":"j@example.com","customer_name":"JDoe"}}`, id, id)
	return []byte(s)
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
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := ipn.DecodeWebhookSecret(secret)
	gw, err := ipn.NewGateway(ipn.GatewayConfig{Name: "shop", Kind: "standard-webhooks", Secrets: []string{secret}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := ipn.NewPipeline(ipn.PipelineOptions{Journal: db, Gateways: []ipn.Gateway{gw}, BatchDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	at := time.Now().UTC()
	for i := 1; i <= n; i++ {
		body := typicalBody(i)
		if len(body) != 230 {
			tb.Fatalf("typical body is %d bytes, want 230", len(body))
		}
		msgID := "msg_2pKq8sL3vXc9TYnq" + fmt.Sprintf("%06d", i)
		ts := at.Unix()
		nt := &ipn.Notification{Gateway: "shop", ReceivedAt: at, RemoteAddr: "203.0.113.7:48212",
			ContentType: "application/json", Body: body, DedupKey: msgID, Headers: http.Header{
				"Webhook-Id":        {msgID},
				"Webhook-Timestamp": {strconv.FormatInt(ts, 10)},
				"Webhook-Signature": {ipn.SignWebhook(key, msgID, ts, body)},
				"User-Agent":        {"Svix-Webhooks/1.62.0 (sender-AbCdE; +https://www.svix.com/http-sender/)"},
			}}
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
// each bucket.
func BenchmarkSpace(b *testing.B) {
	const n = 5000
	for i := 0; i < b.N; i++ {
		sp := fillTypical(b, filepath.Join(b.TempDir(), "ipnd.db"), Options{}, n)
		fmt.Printf("\nspace: %d typical notifications (230-byte body, order, customer email, shop callback)\n", n)
		fmt.Printf("%-14s %8s %10s %7s %9s\n", "bucket", "keys", "bytes", "in use", "bytes/ntf")
		var sum float64
		for _, bs := range sp.Buckets {
			if bs.Bytes == 0 {
				continue
			}
			fmt.Printf("%-14s %8d %10d %6.0f%% %9.0f\n", bs.Name, bs.Keys, bs.Bytes, 100*float64(bs.InUse)/float64(bs.Bytes), bs.PerNotification)
			sum += bs.PerNotification
		}
		fmt.Printf("%-14s %8s %10s %7s %9.0f (file %.0f)\n", "total", "", "", "", sum, sp.PerNotification)
	}
}
