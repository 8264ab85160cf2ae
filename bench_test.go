package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn/gateway"
	"ipnd/metrics"
	"ipnd/public"
	"ipnd/store"
)

// loadResult is what one load run (or several, added up) measured.
type loadResult struct {
	reqs     int
	errors   int
	elapsed  time.Duration
	p50, p99 time.Duration
	lats     []time.Duration // sorted
}

// add merges r and o as if they were one run.
func (r loadResult) add(o loadResult) loadResult {
	r.reqs += o.reqs
	r.errors += o.errors
	r.elapsed += o.elapsed
	r.lats = append(r.lats, o.lats...)
	slices.Sort(r.lats)
	if len(r.lats) > 0 {
		r.p50 = r.lats[len(r.lats)/2]
		r.p99 = r.lats[len(r.lats)*99/100]
	}
	return r
}

func (r loadResult) rate() float64 { return float64(r.reqs) / r.elapsed.Seconds() }

// benchBody is a realistic ~600-byte ipnd event.
func benchBody(id string) []byte {
	return []byte(fmt.Sprintf(`{"type":"payment.completed","timestamp":"2026-11-24T10:00:00Z","data":{"txn_id":"TXN-%s","order_id":"ORDER-%s","amount":"149.90","currency":"EUR","status":"completed","customer_email":"customer.name@example.com","customer_name":"Customer Name","receiver":"shop@example.com","description":"%s"}}`,
		id, id, strings.Repeat("x", 320)))
}

// load posts signed, distinct notifications to url from clients
// goroutines for d, and measures throughput and latency.
func load(url string, key []byte, clients int, d time.Duration, prefix string) loadResult {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	return loadWith(&http.Client{Transport: tr, Timeout: 10 * time.Second}, url, key, clients, d, prefix)
}

// loadWith is load through the given client (HTTPS, no keep-alive).
func loadWith(client *http.Client, url string, key []byte, clients int, d time.Duration, prefix string) loadResult {
	var (
		seq   atomic.Int64
		errs  atomic.Int64
		mu    sync.Mutex
		lats  []time.Duration
		wg    sync.WaitGroup
		start = time.Now()
		stop  = start.Add(d)
	)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for time.Now().Before(stop) {
				id := prefix + strconv.FormatInt(seq.Add(1), 10)
				body := benchBody(id)
				ts := time.Now().Unix()
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Webhook-Id", id)
				req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
				req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, id, ts, body))
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return loadResult{errors: int(errs.Load()), elapsed: time.Since(start)}.add(loadResult{lats: lats, reqs: len(lats)})
}

// bareServer is the baseline: an httprouter handler that reads the body
// and answers 200, with nothing stored.
func bareServer(tb testing.TB) string {
	rt := httprouter.New()
	rt.POST("/ipn/:gateway", func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "OK")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: rt}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/ipn/test"
}

// adminGet fetches path from the admin listener at addr (as read from
// admin.addr) with the tests' token; "" when the request fails.
func adminGet(addr []byte, path string) string {
	req, _ := http.NewRequest("GET", "http://"+strings.TrimSpace(string(addr))+path, nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return string(text)
}

// scrapeCommits reads the group-commit counters from a metrics page.
func scrapeCommits(text string) (commits, secs, records float64) {
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "ipnd_store_commit_duration_seconds_count":
			commits = v
		case "ipnd_store_commit_duration_seconds_sum":
			secs = v
		case "ipnd_store_commit_records_sum":
			records = v
		}
	}
	return
}

// BenchmarkIngest puts the same load at 1, 16 and 64 clients on three
// servers, taking turns in several rounds (so that a noisy moment of a
// shared machine does not land on one server only), and prints
// throughput, latency and the ratio to the baseline:
//
//   - bare: an httprouter handler that reads the body and answers 200;
//   - ingest: the ingest path as serve wires it (receiver, signature
//     check, metrics, the store's journal with every 200 fsync'd, the
//     applier writing into bbolt), with no pipeline behind it;
//   - daemon: the whole appliance through run serve, with the pipeline
//     applying orders and the outbox mailing customer and merchant (to an
//     SMTP relay in this process) while the load goes on;
//   - pgingest and pgdaemon: ingest and daemon on PostgreSQL (a
//     throwaway cluster of this benchmark's on this machine, server
//     defaults: every 200 is a committed transaction); left out, with a
//     line saying so, where there are no server binaries. The postgres
//     store reports no group-commit metrics: their column is "-".
//
// make bench runs it; IPND_BENCH_SECONDS sets the length of each run.
func BenchmarkIngest(b *testing.B) {
	secs := 3.0
	if s, err := strconv.ParseFloat(os.Getenv("IPND_BENCH_SECONDS"), 64); err == nil && s > 0 {
		secs = s
	}
	d := time.Duration(secs * float64(time.Second))
	dir := b.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := gateway.DecodeWebhookSecret(secret)
	// Emails go to an SMTP relay, as in production (the file mailer of the
	// embedded defaults would add an fsync per email on the same disk).
	smtpd := newFakeSMTP(b, "127.0.0.1:0")
	smtpd.mu.Lock()
	smtpd.forget = true // a relay passes mail on; it does not keep 100,000 messages in this process's heap
	smtpd.mu.Unlock()
	extra := mailConfig(smtpd.port(), "") + fmt.Sprintf(`[log]
level = "warn"
[[gateway]]
name = "test"
kind = "standard-webhooks"
secret = %q
`, secret)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := writeBenchConfig(b, dir, "", extra)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	var addr []byte
	for len(addr) == 0 && time.Now().Before(deadline) {
		addr, _ = os.ReadFile(filepath.Join(dir, "public.addr"))
		time.Sleep(10 * time.Millisecond)
	}
	daemon := "http://" + strings.TrimSpace(string(addr)) + "/ipn/test"
	adminAddr, _ := os.ReadFile(filepath.Join(dir, "admin.addr"))
	daemonStats := func() (float64, float64, float64) { return scrapeCommits(adminGet(adminAddr, "/metrics")) }
	// daemonIdle waits until the daemon has processed and mailed all it
	// received, so that its backlog does not take CPU from the next run.
	daemonIdle := benchIdle(b, "daemon", adminAddr)
	gw, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{secret}})
	if err != nil {
		b.Fatal(err)
	}
	im := metrics.New(metrics.Options{Version: "bench", Gateways: []string{"test"}, RejectReasons: public.RejectReasons})
	ingest := ingestServer(b, "ingest", gw, im)
	ingestStats := func() (float64, float64, float64) {
		rec := httptest.NewRecorder()
		im.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return scrapeCommits(rec.Body.String())
	}
	bare := bareServer(b)

	fmt.Printf("\ndisk: pwrite+fsync of one 4 KiB page p50 %s (a journal group commit does one)\n", fsyncP50(b, dir))
	type server struct {
		name  string
		url   string
		stats func() (float64, float64, float64)
		idle  func() // a daemon's: waits until its backlog is done
	}
	servers := []server{{"bare", bare, nil, nil}, {"ingest", ingest, ingestStats, nil}, {"daemon", daemon, daemonStats, daemonIdle}}
	pgc, noPG := benchPG(b)
	var pgDaemonDSN string
	if noPG != "" {
		pgNotMeasured("BenchmarkIngest", noPG)
	} else {
		ingestDSN, err := pgc.Database("ingest")
		if err != nil {
			b.Fatal(err)
		}
		pgDaemonDSN, err = pgc.Database("daemon")
		if err != nil {
			b.Fatal(err)
		}
		pim := metrics.New(metrics.Options{Version: "bench", Gateways: []string{"test"}, RejectReasons: public.RejectReasons})
		pgDir := b.TempDir()
		pgDaemon, pgAdmin := benchServe(b, pgDir, writeBenchConfig(b, pgDir, pgDaemonDSN, extra))
		pgIdle := benchIdle(b, "pgdaemon", pgAdmin)
		servers = append(servers, server{"pgingest", pgIngestServer(b, ingestDSN, gw, pim), nil, nil}, server{"pgdaemon", pgDaemon, nil, pgIdle})
		fmt.Printf("postgres: a throwaway cluster on this machine (%s), server defaults (fsync, synchronous_commit on)\n", pgVersion(pgc.DSN()))
	}
	const rounds = 3
	for i := 0; i < b.N; i++ {
		fmt.Printf("\ningest: %d rounds of %s per server and client count, servers taking turns; %d-byte signed notifications, GOMAXPROCS=%d\n",
			rounds, d, len(benchBody("1")), runtimeProcs())
		fmt.Printf("%-8s %-8s %10s %10s %10s %7s %7s   %s\n", "clients", "server", "req/s", "p50", "p99", "errors", "ratio", "group commits")
		for _, c := range []int{1, 16, 64} {
			res := make([]loadResult, len(servers))
			drained := make([]time.Duration, len(servers)) // a daemon's time to finish its backlog after each run
			commits, secs, records := make([]float64, len(servers)), make([]float64, len(servers)), make([]float64, len(servers))
			for r := range rounds {
				for k := range servers {
					k := (k + r) % len(servers) // rotate who goes first
					srv := servers[k]
					var c0, s0, r0 float64
					if srv.stats != nil {
						c0, s0, r0 = srv.stats()
					}
					res[k] = res[k].add(load(srv.url, key, c, d, fmt.Sprintf("%s-%d-%d-%d-", srv.name, i, c, r)))
					if srv.idle != nil {
						t0 := time.Now()
						srv.idle()
						drained[k] += time.Since(t0)
					}
					if srv.stats != nil {
						c1, s1, r1 := srv.stats()
						commits[k] += c1 - c0
						secs[k] += s1 - s0
						records[k] += r1 - r0
					}
				}
			}
			for k, srv := range servers {
				r := res[k]
				fmt.Printf("%-8d %-8s %10.0f %10s %10s %7d", c, srv.name, r.rate(),
					r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.errors)
				if k == 0 {
					fmt.Println()
					continue
				}
				if srv.stats != nil {
					n := max(commits[k], 1)
					fmt.Printf(" %7.2f   %.0f, %.1f records, %s each\n", r.rate()/res[0].rate(),
						commits[k], records[k]/n, time.Duration(secs[k]/n*float64(time.Second)).Round(time.Microsecond))
				} else {
					fmt.Printf(" %7.2f   -\n", r.rate()/res[0].rate())
				}
				if srv.idle != nil {
					fmt.Printf("%-8d %-8s %10.0f notifications/s received, applied and mailed (backlog finished %s after the runs)\n",
						c, "", float64(r.reqs)/(r.elapsed+drained[k]).Seconds(), drained[k].Round(time.Millisecond))
				}
				b.ReportMetric(r.rate()/res[0].rate(), fmt.Sprintf("%s-ratio@%d", srv.name, c))
				b.ReportMetric(float64(r.p99.Microseconds())/1000, fmt.Sprintf("%s-p99-ms@%d", srv.name, c))
			}
		}
	}
	b.StopTimer()
	if noPG != "" {
		pgNotMeasured("BenchmarkIngest", noPG)
	}
	stop()
	db, err := store.Open(filepath.Join(dir, "ipnd.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	st, _ := db.Stats()
	fmt.Printf("daemon store: %d notifications, %d bytes (%.0f bytes/notification, with orders, outbox and history)\n",
		st.LastID, st.SizeBytes, float64(st.SizeBytes)/float64(max(st.LastID, 1)))
	printSpace(db)
	if pgDaemonDSN != "" {
		if ns, size, err := pgSize(pgDaemonDSN); err != nil {
			fmt.Println("pgdaemon database:", err)
		} else {
			fmt.Printf("pgdaemon database: %d notifications, %d bytes (%.0f bytes/notification, with orders, outbox, history, indexes and dead rows; pg_database_size less an empty database's)\n",
				ns, size, float64(size)/float64(max(ns, 1)))
		}
	}
}

// benchServe starts run serve on cfg (in dir) until the benchmark ends
// and returns its receiver's URL (gateway "test") and its admin address.
func benchServe(b *testing.B, dir, cfg string) (string, []byte) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
	b.Cleanup(func() { cancel(); <-done })
	var addr, adminAddr []byte
	waitForTB(b, "ipnd listening", 30*time.Second, func() bool {
		addr, _ = os.ReadFile(filepath.Join(dir, "public.addr"))
		adminAddr, _ = os.ReadFile(filepath.Join(dir, "admin.addr"))
		return len(addr) > 0 && len(adminAddr) > 0
	})
	return "http://" + strings.TrimSpace(string(addr)) + "/ipn/test", adminAddr
}

// benchIdle returns a function that waits until the daemon at adminAddr
// has processed and mailed all it received (gateway "test").
func benchIdle(b *testing.B, name string, adminAddr []byte) func() {
	return func() {
		var lag, pending string
		for end := time.Now().Add(5 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			m := adminGet(adminAddr, "/metrics")
			_, lag, _ = strings.Cut(m, "\nipnd_pipeline_lag_seconds{gateway=\"test\"} ")
			lag, _, _ = strings.Cut(lag, "\n")
			pending = adminGet(adminAddr, "/api/outbox?state=pending")
			if lag == "0" && strings.Contains(strings.Join(strings.Fields(pending), ""), `"items":[]`) {
				return
			}
		}
		b.Fatalf("the %s did not finish its backlog in 5 minutes: lag %q, pending outbox %.200q", name, lag, pending)
	}
}

// printSpace prints the bytes per notification of each bucket (pages
// allocated, and the share of them in use).
func printSpace(db *store.DB) {
	sp, err := db.Space()
	if err != nil {
		fmt.Println("space:", err)
		return
	}
	fmt.Printf("%-14s %10s %12s %8s %10s\n", "bucket", "keys", "bytes", "in use", "bytes/ntf")
	var sum float64
	for _, b := range sp.Buckets {
		fill := 0.0
		if b.Bytes > 0 {
			fill = float64(b.InUse) / float64(b.Bytes)
		}
		fmt.Printf("%-14s %10d %12d %7.0f%% %10.0f\n", b.Name, b.Keys, b.Bytes, 100*fill, b.PerNotification)
		sum += b.PerNotification
	}
	fmt.Printf("%-14s %10s %12d %8s %10.0f (buckets); file %.0f/notification, %d bytes free pages, journal %d bytes\n",
		"total", "", sp.FileBytes, "", sum, sp.PerNotification, sp.FreeBytes, sp.JournalBytes)
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkPayPal posts IPNs to a PayPal gateway whose postbacks go to a
// local verifier answering VERIFIED, and reports the ingest rate and the
// end-to-end rate (received -> verified -> applied).
func BenchmarkPayPal(b *testing.B) {
	secs := 3.0
	if s, err := strconv.ParseFloat(os.Getenv("IPND_BENCH_SECONDS"), 64); err == nil && s > 0 {
		secs = s
	}
	verifier := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "VERIFIED")
	}))
	defer verifier.Close()
	dir := b.TempDir()
	cfg := writeTestConfig(b, dir, fmt.Sprintf(`[log]
level = "warn"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
`, verifier.URL))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	var addr, adminAddr []byte
	for (len(addr) == 0 || len(adminAddr) == 0) && time.Now().Before(deadline) {
		addr, _ = os.ReadFile(filepath.Join(dir, "public.addr"))
		adminAddr, _ = os.ReadFile(filepath.Join(dir, "admin.addr"))
		time.Sleep(10 * time.Millisecond)
	}
	url := "http://" + strings.TrimSpace(string(addr)) + "/ipn/paypal"
	applied := func() float64 {
		for _, l := range strings.Split(adminGet(adminAddr, "/metrics"), "\n") {
			if v, ok := strings.CutPrefix(l, `ipnd_notifications_processed_total{gateway="paypal",result="applied"} `); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	for i := 0; i < b.N; i++ {
		const clients = 16
		var seq, oks atomic.Int64
		var wg sync.WaitGroup
		tr := &http.Transport{MaxIdleConnsPerHost: clients}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		before := applied()
		start := time.Now()
		stop := start.Add(time.Duration(secs * float64(time.Second)))
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					n := seq.Add(1)
					body := fmt.Sprintf("txn_type=web_accept&payment_status=Completed&txn_id=T%d-%d&ipn_track_id=trk-%d-%d&mc_gross=19.95&mc_currency=USD&invoice=ORDER-%d&payer_email=buyer%%40example.com&first_name=Jos%%E9&charset=windows-1252", i, n, i, n, n)
					resp, err := client.Post(url, "application/x-www-form-urlencoded", strings.NewReader(body))
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						oks.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		ingest := time.Since(start)
		tr.CloseIdleConnections()
		want := float64(oks.Load())
		for applied()-before < want && time.Since(start) < 5*time.Minute {
			time.Sleep(20 * time.Millisecond)
		}
		total := time.Since(start)
		fmt.Printf("\npaypal, %d clients, postback to a local verifier:\n", clients)
		fmt.Printf("  ingest      %8.0f req/s (%d stored in %s)\n", want/ingest.Seconds(), oks.Load(), ingest.Round(time.Millisecond))
		fmt.Printf("  end to end  %8.0f notifications/s received -> applied (%s for all)\n", want/total.Seconds(), total.Round(time.Millisecond))
		b.ReportMetric(want/total.Seconds(), "applied/s")
	}
}

// fsyncP50 measures what one durable write costs on the disk under dir, so
// that the durable numbers can be read against it.
func fsyncP50(tb testing.TB, dir string) time.Duration {
	f, err := os.CreateTemp(dir, "fsync-probe")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	f.Truncate(4 << 20)
	f.Sync()
	page := make([]byte, 4096)
	var ds []time.Duration
	for i := 0; i < 300; i++ {
		t0 := time.Now()
		f.WriteAt(page, int64(i%1024)*4096)
		f.Sync()
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	return ds[len(ds)/2].Round(time.Microsecond)
}
