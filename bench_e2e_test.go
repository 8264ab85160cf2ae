package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/store"
)

// BenchmarkE2E is the measurement of issue 23: one ipnd on its default
// delivery settings (run serve in this process, default log level), 64
// clients posting N payment.completed notifications, each creating an
// order with a customer email; the go-smtp server the tests use and a
// shop on loopback, both answering at once. A bare httprouter server
// takes the same N posts from the same 64 clients first, in the same run,
// as the baseline of the ingest rate. It prints, per stage: ingest
// acknowledged/s (ratio to bare, p99), applied to orders/s (the metrics'
// processed counter, polled), customer emails accepted/s, shop callbacks
// answered 2xx/s, end to end (the last email and callback) and the
// largest RssAnon seen during the run. The daemon runs in this process,
// so RssAnon (read from /proc/self/status) is the daemon's with the
// clients', the SMTP server's and the shop's heaps added.
//
// IPND_E2E_N sets N (default 60,000). IPND_E2E_PREFILL=M grows a store
// by M processed payments first (Prefill, fsync off), then runs the
// empty store and, right after it, a synced copy of the grown one (as a
// store that grew over months is on disk: the time that takes is
// printed), and prints the ratios of the pair; IPND_E2E_PAIRS=K runs K
// such pairs, and IPND_E2E_PREFILLED=path keeps the grown store between
// runs (grown there when missing). Each run prints the bytes this
// process wrote to disk per
// payment (/proc/self/io write_bytes). IPND_E2E_PROFILE=prefix writes CPU
// profiles of the daemon's runs: prefix.E0.ingest.cpu (P0 for the
// prefilled store) while the clients post, prefix.E0.drain.cpu from then
// until the last email and callback (not with -test.cpuprofile).
//
// Each run on the empty store is made on both backends: bbolt, then
// PostgreSQL (a throwaway cluster of this benchmark's on this machine,
// server defaults; a database of its own per run), whose table also
// prints the server's CPU and disk writes per payment (its processes'
// /proc). Without server binaries the postgres run is left out with a
// line saying so. IPND_E2E_ROUNDS=K (without a prefill) makes K rounds,
// each a bare run and both backends, the first backend alternating
// (bbolt first in even rounds); IPND_E2E_PGSTAT=1 loads
// pg_stat_statements and prints the statements the postgres runs spent
// their time in. The prefilled store is bbolt's only. make bench runs it.
func BenchmarkE2E(b *testing.B) {
	n := 60000
	if v, err := strconv.Atoi(os.Getenv("IPND_E2E_N")); err == nil && v > 0 {
		n = v
	}
	prefill, _ := strconv.Atoi(os.Getenv("IPND_E2E_PREFILL"))
	pairs := 1
	if v, err := strconv.Atoi(os.Getenv("IPND_E2E_PAIRS")); err == nil && v > 0 {
		pairs = v
	}
	rounds := 1
	if v, err := strconv.Atoi(os.Getenv("IPND_E2E_ROUNDS")); err == nil && v > 0 && prefill <= 0 {
		rounds = v
	}
	pgc, noPG := benchPG(b)
	if noPG != "" {
		pgNotMeasured("BenchmarkE2E", noPG)
		defer pgNotMeasured("BenchmarkE2E", noPG)
	} else if os.Getenv("IPND_E2E_PGSTAT") == "1" {
		pgEnableStatements(b, pgc)
	}
	// pgRun is the run on PostgreSQL, printed (nothing without a server).
	pgRun := func(prefix string, bareRes loadResult) {
		if pgc == nil {
			return
		}
		r := e2eRun(b, b.TempDir(), prefix, n, pgc)
		e2ePrint(b, "empty store, postgres", n, bareRes, r)
	}
	for i := range b.N {
		if prefill <= 0 {
			for k := range rounds {
				suffix := ""
				if k > 0 {
					suffix = fmt.Sprintf("r%d", k)
				}
				bare := bareServer(b) // http://addr/ipn/test: signedPoster's /ipn/shop matches the route
				bareRes := e2ePost(b, strings.TrimSuffix(bare, "/ipn/test"), fmt.Sprintf("bare%d%s", i, suffix), n)
				if k%2 == 1 {
					pgRun(fmt.Sprintf("G%d%s", i, suffix), bareRes)
				}
				r := e2eRun(b, b.TempDir(), fmt.Sprintf("E%d%s", i, suffix), n, nil)
				e2ePrint(b, "empty store", n, bareRes, r)
				if k%2 == 0 {
					pgRun(fmt.Sprintf("G%d%s", i, suffix), bareRes)
				}
			}
			continue
		}
		bare := bareServer(b)
		bareRes := e2ePost(b, strings.TrimSuffix(bare, "/ipn/test"), fmt.Sprintf("bare%d", i), n)
		// PostgreSQL's run comes first, then the store is grown, so that
		// each empty-store run and its prefilled run follow each other
		// (the machine's load drifts over the minutes a prefill takes).
		pgRun(fmt.Sprintf("G%d", i), bareRes)
		pristine := e2ePrefilled(b, prefill)
		for k := range pairs {
			r := e2eRun(b, b.TempDir(), fmt.Sprintf("E%dr%d", i, k), n, nil)
			e2ePrint(b, "empty store", n, bareRes, r)
			dir := b.TempDir()
			e2eCopySynced(b, pristine, filepath.Join(dir, "ipnd.db"))
			big := e2eRun(b, dir, fmt.Sprintf("P%dr%d", i, k), n, nil)
			e2ePrint(b, fmt.Sprintf("%d stored", prefill), n, bareRes, big)
			ratio := func(a, b time.Duration) float64 { return a.Seconds() / b.Seconds() }
			fmt.Printf("  ratio to the empty store just before: ingest %.2f, applied %.2f, emails %.2f, callbacks %.2f, end to end %.2f\n",
				big.ingest.rate()/r.ingest.rate(), ratio(r.applied, big.applied), ratio(r.emails, big.emails),
				ratio(r.callbacks, big.callbacks), ratio(max(r.emails, r.callbacks), max(big.emails, big.callbacks)))
			b.ReportMetric(big.ingest.rate()/r.ingest.rate(), "prefilled-ingest-ratio")
			b.ReportMetric(ratio(max(r.emails, r.callbacks), max(big.emails, big.callbacks)), "prefilled-e2e-ratio")
		}
	}
}

// e2ePrefilled returns a store file grown by prefill processed payments:
// IPND_E2E_PREFILLED names a file kept between runs (grown there when it
// does not exist yet; the runs work on copies), else one in a temp dir.
func e2ePrefilled(b *testing.B, prefill int) string {
	path := os.Getenv("IPND_E2E_PREFILLED")
	if path == "" {
		path = filepath.Join(b.TempDir(), "ipnd.db")
	}
	if st, err := os.Stat(path); err == nil {
		fmt.Printf("\nprefilled store %s kept from an earlier run: %d MB (IPND_E2E_PREFILL is not checked against it)\n", path, st.Size()>>20)
		return path
	}
	t0 := time.Now()
	e2ePrefill(b, path, prefill)
	st, _ := os.Stat(path)
	fmt.Printf("\nprefilled %d processed payments (orders, no outbox items) in %s with NoSync: ipnd.db %d MB\n",
		prefill, time.Since(t0).Round(time.Second), st.Size()>>20)
	return path
}

// e2eCopySynced copies the prefilled store to dst and writes it back: a
// store that grew over months is on disk, so no writeback of the copy
// may queue ahead of the measured run's fdatasyncs.
func e2eCopySynced(b *testing.B, src, dst string) {
	t0 := time.Now()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		b.Fatal(err)
	}
	out.Close()
	syscall.Sync()
	fmt.Printf("\ncopied the prefilled store and wrote it back in %s (Dirty %s, Writeback %s after)\n", time.Since(t0).Round(time.Millisecond),
		meminfo("Dirty"), meminfo("Writeback"))
}

// e2ePrint prints the table of one e2eRun.
func e2ePrint(b *testing.B, store string, n int, bareRes loadResult, r e2eResult) {
	{
		fmt.Printf("\ne2e (%s): %d payment.completed (order + customer email + shop callback each), 64 clients, GOMAXPROCS=%d, load average at start %s\n",
			store, n, runtimeProcs(), r.load)
		fmt.Printf("  %-34s %9.0f/s  p99 %s (%d errors)\n", "bare httprouter server, 200", bareRes.rate(), bareRes.p99.Round(10*time.Microsecond), bareRes.errors)
		fmt.Printf("  %-34s %9.0f/s  p99 %s, %.2fx bare (%d errors)\n", "ingest, acknowledged", r.ingest.rate(), r.ingest.p99.Round(10*time.Microsecond),
			r.ingest.rate()/bareRes.rate(), r.ingest.errors)
		fmt.Printf("  %-34s %9.0f/s  (all applied %.1f s after the first post)\n", "applied to orders", float64(n)/r.applied.Seconds(), r.applied.Seconds())
		fmt.Printf("  %-34s %9.0f/s  (last at %.1f s)\n", "customer emails accepted (SMTP)", float64(n)/r.emails.Seconds(), r.emails.Seconds())
		fmt.Printf("  %-34s %9.0f/s  (last at %.1f s)\n", "shop callbacks answered 2xx", float64(n)/r.callbacks.Seconds(), r.callbacks.Seconds())
		e2e := max(r.emails, r.callbacks)
		fmt.Printf("  %-34s %9.0f/s  %.1f s for all\n", "end to end (last email and callback)", float64(n)/e2e.Seconds(), e2e.Seconds())
		fmt.Printf("  %-34s %9.1f s\n", "ipnd listening after", r.startup.Seconds())
		fmt.Printf("  %-34s %9.0f µs while posting, %.0f µs in all (this process: daemon + clients + SMTP + shop; steadier than rates on a shared machine)\n",
			"CPU per payment", float64(r.ingestCPU.Microseconds())/float64(n), float64(r.cpu.Microseconds())/float64(n))
		if r.pg {
			fmt.Printf("  %-34s %9.0f µs while posting, %.0f µs in all (the PostgreSQL server's processes)\n",
				"PostgreSQL CPU per payment", float64(r.pgIngestCPU.Microseconds())/float64(n), float64(r.pgCPU.Microseconds())/float64(n))
		}
		fmt.Printf("  %-34s %9.1f MB (max of /proc/self/status every 100 ms; in-process: daemon + clients + SMTP + shop)\n", "RssAnon", float64(r.rssAnon)/(1<<20))
		fmt.Printf("  %-34s %9.1f KB per payment (/proc/self/io write_bytes, until the last email and callback)\n", "written to disk",
			float64(r.written)/1024/float64(n))
		if r.pg {
			fmt.Printf("  %-34s %9.1f KB per payment (its live processes' write_bytes, until the last email and callback)\n", "PostgreSQL written to disk",
				float64(r.pgWritten)/1024/float64(n))
			fmt.Print(r.statements)
		}
		if store != "empty store" && !r.pg {
			return
		}
		m := ""
		if r.pg {
			m = "pg-"
		}
		b.ReportMetric(r.ingest.rate(), m+"ingest/s")
		b.ReportMetric(r.ingest.rate()/bareRes.rate(), m+"ingest-ratio")
		b.ReportMetric(float64(r.ingest.p99.Microseconds())/1000, m+"ingest-p99-ms")
		b.ReportMetric(float64(n)/r.applied.Seconds(), m+"applied/s")
		b.ReportMetric(float64(n)/r.emails.Seconds(), m+"emails/s")
		b.ReportMetric(float64(n)/r.callbacks.Seconds(), m+"callbacks/s")
		b.ReportMetric(float64(n)/e2e.Seconds(), m+"e2e/s")
		b.ReportMetric(float64(r.rssAnon)/(1<<20), m+"rssanon-MB")
	}
}

// e2ePrefill grows the database at path by n processed payments with
// store.Prefill: the notifications e2ePost would send (gateway shop,
// orders PRE-i with a customer email), with the outcomes the pipeline
// records for them (the gateway's Normalize, ipn.Assess).
func e2ePrefill(b *testing.B, path string, n int) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	g, err := gateway.New(gateway.Config{Name: "shop", Kind: "standard-webhooks", Secrets: []string{secret}})
	if err != nil {
		b.Fatal(err)
	}
	pol := ipn.Policy{Gateway: "shop", Gateways: []string{"shop"}}
	at := time.Now().Add(-24 * time.Hour).UTC()
	err = store.Prefill(path, n, func(id uint64) (*ipn.Notification, ipn.Outcome) {
		i := strconv.FormatUint(id, 10)
		body, _ := json.Marshal(map[string]any{"type": "payment.completed", "data": map[string]any{"order_id": "PRE-" + i, "txn_id": "T-PRE-" + i,
			"amount": "1.00", "currency": "USD", "customer_email": "PRE-" + i + "@example.com"}})
		nt := &ipn.Notification{ID: id, Gateway: "shop", ReceivedAt: at, RemoteAddr: "127.0.0.1", ContentType: "application/json",
			Headers: http.Header{"Webhook-Id": {"m-PRE-" + i}}, Body: body, DedupKey: "m-PRE-" + i}
		ev, err := g.Normalize(nt)
		if err != nil {
			b.Fatal(err)
		}
		return nt, ipn.Assess(ipn.Outcome{ID: id}, ev, pol, true)
	}, func(done int) {
		if done%500_000 == 0 {
			fmt.Printf("  prefill: %d\n", done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
}

// e2eResult is what one e2eRun measured; durations from the first post.
type e2eResult struct {
	ingest                     loadResult
	applied, emails, callbacks time.Duration
	rssAnon                    int64
	startup                    time.Duration // from run serve to both listeners up
	// CPU time (user and system) of this whole process: while the
	// clients post, and until the last email and callback.
	ingestCPU, cpu time.Duration
	load           string
	written        int64 // bytes this process wrote to disk (write_bytes)
	// On PostgreSQL: the server's CPU time while the clients post and
	// until the last email and callback, what it wrote to disk, and its
	// statements (IPND_E2E_PGSTAT).
	pg                 bool
	pgIngestCPU, pgCPU time.Duration
	pgWritten          int64
	statements         string
}

// e2ePost posts n payments (prefix-0 .. prefix-(n-1)) to the receiver at
// base from 64 clients with postAll, timing each request.
func e2ePost(b *testing.B, base, prefix string, n int) loadResult {
	post := signedPoster(b, func() string { return base }, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	var (
		mu   sync.Mutex
		lats = make([]time.Duration, 0, n)
		errs atomic.Int64
	)
	timed := func(msgID, typ string, data map[string]any) int {
		t0 := time.Now()
		code := post(msgID, typ, data)
		d := time.Since(t0)
		if code != 200 {
			errs.Add(1)
			return code
		}
		mu.Lock()
		lats = append(lats, d)
		mu.Unlock()
		return code
	}
	start := time.Now()
	postAllClients(b, timed, prefix, n, 64, nil)
	return loadResult{errors: int(errs.Load()), elapsed: time.Since(start)}.add(loadResult{lats: lats, reqs: len(lats)})
}

// e2eRun starts ipnd (its own directory, default delivery settings), a
// go-smtp server and a shop, posts n payments and waits until every one
// is applied, emailed and called back. With a cluster, ipnd's store is
// a new database on it (named after prefix), else bbolt in dir.
func e2eRun(b *testing.B, dir, prefix string, n int, pgc *pgtest.Cluster) e2eResult {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var accepted, answered atomic.Int64
	smtpd := newFakeSMTP(b, "127.0.0.1:0")
	smtpd.mu.Lock()
	smtpd.forget = true // a relay passes mail on; it does not keep 60,000 messages in this heap
	smtpd.answer = func(rcpt string, _ int) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, prefix+"-") {
			accepted.Add(1)
		}
		return nil
	}
	smtpd.mu.Unlock()
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answered.Add(1)
	}))
	defer shop.Close()
	dsn := ""
	if pgc != nil {
		var err error
		if dsn, err = pgc.Database(strings.ToLower(prefix)); err != nil {
			b.Fatal(err)
		}
	}
	cfg := writeBenchConfig(b, dir, dsn, fmt.Sprintf(`[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "Shop <shop@example.com>"
[shop]
url = %q
secret = %q
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, smtpd.port(), shop.URL, shopSecret, secret))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
	defer func() { cancel(); <-done }()
	// On a large store, Open reads the whole file (bbolt rebuilds its
	// freelist: NoFreelistSync): the time to listen is part of the result.
	t0 := time.Now()
	waitForTB(b, "ipnd listening", 30*time.Minute, func() bool {
		_, err1 := os.Stat(filepath.Join(dir, "public.addr"))
		_, err2 := os.Stat(filepath.Join(dir, "admin.addr"))
		return err1 == nil && err2 == nil
	})
	addr := func(which string) string {
		a, _ := os.ReadFile(filepath.Join(dir, which+".addr"))
		return strings.TrimSpace(string(a))
	}
	adminAddr := []byte(addr("admin"))
	applied := func() int64 {
		for _, l := range strings.Split(adminGet(adminAddr, "/metrics"), "\n") {
			if v, ok := strings.CutPrefix(l, `ipnd_notifications_processed_total{gateway="shop",result="applied"} `); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return int64(f)
			}
		}
		return 0
	}
	load, _ := os.ReadFile("/proc/loadavg")
	var r e2eResult
	r.startup = time.Since(t0)
	r.load = strings.Join(strings.Fields(string(load))[:3], " ")

	// RssAnon, sampled until the end.
	var rss atomic.Int64
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v := rssAnon(); v > rss.Load() {
				rss.Store(v)
			}
			select {
			case <-stopRSS:
				return
			case <-t.C:
			}
		}
	}()

	profile := os.Getenv("IPND_E2E_PROFILE")
	startProfile := func(name string) {
		if profile == "" {
			return
		}
		pprof.StopCPUProfile()
		f, err := os.Create(profile + "." + prefix + "." + name + ".cpu")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		if profile != "" {
			pprof.StopCPUProfile()
		}
	}()

	var port int
	if pgc != nil {
		r.pg, port = true, pgc.Port
		if os.Getenv("IPND_E2E_PGSTAT") == "1" {
			pgResetStatements(pgc)
		}
	}
	// The time allowed until the last email and callback (PostgreSQL's
	// runs, several times slower here, get more).
	limit := 10 * time.Minute
	if pgc != nil {
		limit = 30 * time.Minute
	}
	startProfile("ingest")
	start, cpu0, written0, pg0 := time.Now(), processCPU(), writeBytes(), pgServerUsage(port)
	var wg sync.WaitGroup
	wg.Go(func() {
		r.ingest = e2ePost(b, "http://"+addr("public"), prefix, n)
		r.ingestCPU = processCPU() - cpu0
		if r.pg {
			r.pgIngestCPU = pgServerUsage(port).cpu - pg0.cpu
		}
		startProfile("drain")
	})
	// The applied counter is polled every 200 ms on the admin API's
	// /metrics (a scrape reads the pipeline's lag: polled more often, it
	// would weigh on what it measures); emails and callbacks are counted
	// as they arrive, polled every 5 ms.
	wg.Go(func() {
		for deadline := start.Add(limit); applied() < int64(n); time.Sleep(e2ePoll()) {
			if time.Now().After(deadline) {
				b.Errorf("after %s: %d applied", limit, applied())
				return
			}
		}
		r.applied = time.Since(start)
	})
	for deadline := start.Add(limit); r.emails == 0 || r.callbacks == 0; time.Sleep(5 * time.Millisecond) {
		if r.emails == 0 && accepted.Load() >= int64(n) {
			r.emails = time.Since(start)
		}
		if r.callbacks == 0 && answered.Load() >= int64(n) {
			r.callbacks = time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatalf("after %s: %d emails, %d callbacks", limit, accepted.Load(), answered.Load())
		}
	}
	wg.Wait()
	close(stopRSS)
	<-rssDone
	r.rssAnon = rss.Load()
	r.cpu = processCPU() - cpu0
	r.written = writeBytes() - written0
	if r.pg {
		pg1 := pgServerUsage(port)
		r.pgCPU, r.pgWritten = pg1.cpu-pg0.cpu, pg1.written-pg0.written
		if os.Getenv("IPND_E2E_PGSTAT") == "1" {
			r.statements = pgStatements(pgc, dsn)
		}
	}
	return r
}

// e2ePoll is the interval of e2eRun's polls of the applied counter: 200
// ms, or IPND_E2E_POLL (a Go duration). On PostgreSQL a scrape of
// /metrics costs far more than on bbolt (the outbox gauges count the
// outbox table), so that a longer interval tells how much the polls
// weigh on what they measure.
func e2ePoll() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("IPND_E2E_POLL")); err == nil && d > 0 {
		return d
	}
	return 200 * time.Millisecond
}

// writeBytes is what this process has written to disk (/proc/self/io
// write_bytes; 0 when unknown).
func writeBytes() int64 {
	b, _ := os.ReadFile("/proc/self/io")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// meminfo is the value of a line of /proc/meminfo ("Dirty": "1234 kB").
func meminfo(key string) string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssAnon is this process's RssAnon in bytes (0 when unknown).
func rssAnon() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
