package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn/gateway"
	"ipnd/metrics"
	"ipnd/public"
	"ipnd/store"
)

// ingestServer is a receiver over its own store, served on loopback, as
// serve wires it for ingest: with m as the receiver's observer and the
// store's commit hook, or with no metrics at all when m is nil.
func ingestServer(b *testing.B, name string, gw gateway.Gateway, m *metrics.Metrics) string {
	b.Helper()
	var opts store.Options
	if m != nil {
		opts.OnCommit = m.Committed
	}
	db, err := store.Open(filepath.Join(b.TempDir(), name+".db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	ro := public.ReceiverOptions{Gateways: []gateway.Gateway{gw}, Store: db}
	if m != nil {
		ro.Observer = m // left nil otherwise: a nil *Metrics would not be a nil Observer
	}
	srv := httptest.NewServer(public.NewReceiver(ro).Handler())
	b.Cleanup(func() {
		srv.Close()
		if err := db.Close(); err != nil {
			b.Error(err)
		}
	})
	return srv.URL + "/ipn/" + gw.Name()
}

// BenchmarkIngestMetrics measures the cost of metrics on the ingest path.
// Two receivers, one observed by a *metrics.Metrics (and its store's
// commit hook) and one with no observer, each over its own store on disk,
// take the same load at the same time, in several rounds: whatever else
// the machine does (other processes, fsync latency) then hits both alike,
// which sequential runs on a shared machine do not give (their spread was
// ±20 %). Each side gets about half the machine, so compare the two rates
// with each other, not with BenchmarkIngest. It prints req/s of each and
// the difference, and the time of the metrics calls one request makes.
// make bench runs it; IPND_BENCH_SECONDS sets the length of a round
// (default 3 s, 4 rounds) and IPND_BENCH_CLIENTS the clients per side
// (default 16).
func BenchmarkIngestMetrics(b *testing.B) {
	secs := 3.0
	if s, err := strconv.ParseFloat(os.Getenv("IPND_BENCH_SECONDS"), 64); err == nil && s > 0 {
		secs = s
	}
	clients := 16
	if c, err := strconv.Atoi(os.Getenv("IPND_BENCH_CLIENTS")); err == nil && c > 0 {
		clients = c
	}
	const rounds = 4
	per := time.Duration(secs * float64(time.Second))
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, err := gateway.DecodeWebhookSecret(secret)
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{secret}})
	if err != nil {
		b.Fatal(err)
	}
	newMetrics := func() *metrics.Metrics {
		return metrics.New(metrics.Options{Version: "bench", Gateways: []string{"test"}, RejectReasons: public.RejectReasons})
	}
	urls := [2]string{ingestServer(b, "off", gw, nil), ingestServer(b, "on", gw, newMetrics())}

	for i := 0; i < b.N; i++ {
		var (
			total [2]loadResult // metrics off, on
			runs  [2][]string   // req/s of each round, to show the spread
		)
		for r := 0; r < rounds; r++ {
			var (
				res [2]loadResult
				wg  sync.WaitGroup
			)
			for k := range 2 {
				side := (k + r) % 2 // alternate which side starts first
				wg.Add(1)
				go func() {
					defer wg.Done()
					res[side] = load(urls[side], key, clients, per, fmt.Sprintf("m%d-%d-%d-", i, r, side))
				}()
			}
			wg.Wait()
			for side, x := range res {
				total[side].reqs += x.reqs
				total[side].errors += x.errors
				total[side].elapsed += x.elapsed
				runs[side] = append(runs[side], fmt.Sprintf("%.0f", x.rate()))
			}
		}
		off, on := total[0], total[1]
		diff := (on.rate() - off.rate()) / off.rate() * 100

		// What the metrics add to one request: Received, and at most one
		// Committed (group commits share one), timed in a loop; as a share
		// of the CPU time a request has at the measured rates.
		const calls = 200_000
		scratch := newMetrics()
		start := time.Now()
		for range calls {
			scratch.Received("test", time.Millisecond)
			scratch.Committed(time.Millisecond, 1)
		}
		perReq := time.Since(start) / calls
		share := perReq.Seconds() * (off.rate() + on.rate()) / float64(runtimeProcs()) * 100

		fmt.Printf("\ningest with metrics off and on at the same time: %d clients each, %d rounds of %s, GOMAXPROCS=%d\n",
			clients, rounds, per, runtimeProcs())
		fmt.Printf("%-8s %10s %10s %8s   %s\n", "metrics", "req/s", "requests", "errors", "req/s of each round")
		fmt.Printf("%-8s %10.0f %10d %8d   %s\n", "off", off.rate(), off.reqs, off.errors, strings.Join(runs[0], " "))
		fmt.Printf("%-8s %10.0f %10d %8d   %s\n", "on", on.rate(), on.reqs, on.errors, strings.Join(runs[1], " "))
		fmt.Printf("difference on vs off: %+.1f %%\n", diff)
		fmt.Printf("metrics calls per request: %s, %.3f %% of the CPU time per request at these rates\n", perReq, share)
		if off.errors+on.errors > 0 {
			b.Errorf("%d requests failed", off.errors+on.errors)
		}
		b.ReportMetric(off.rate(), "req/s-off")
		b.ReportMetric(on.rate(), "req/s-on")
		b.ReportMetric(diff, "%diff")
		b.ReportMetric(float64(perReq.Nanoseconds()), "ns-metrics/req")
	}
}
