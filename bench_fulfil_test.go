package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ipnd/ipn"
)

// BenchmarkFulfil measures the delivery routes on a running ipnd, each
// next to a bare baseline in the same run: downloads/s of a 10 MB file
// through /dl/<token> (lookup, http.ServeContent, the completed
// download counted in bbolt) against a plain http.ServeContent server,
// and License API validations/s against a handler that answers a fixed
// JSON. make bench runs it; IPND_BENCH_SECONDS sets each run's length.
func BenchmarkFulfil(b *testing.B) {
	secs := 3.0
	if s, err := strconv.ParseFloat(os.Getenv("IPND_BENCH_SECONDS"), 64); err == nil && s > 0 {
		secs = s
	}
	dur := time.Duration(secs * float64(time.Second))
	dir := b.TempDir()
	file := writeProductFile(b, dir, "big.bin", 10<<20)
	smtpd := newFakeSMTP(b, "127.0.0.1:0")
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(b, dir, mailConfig(smtpd.port(), "")+fmt.Sprintf(`[log]
level = "warn"
[fulfilment]
files_dir = %q
[[product]]
id = "big"
file = "big.bin"
download_limit = 100000000
license = "generated"
license_activations = 1000
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, filepath.Join(dir, "files"), secret))
	// public_url in [server], which writeTestConfig opened first.
	raw, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(raw, []byte("[server]\n"), []byte("[server]\npublic_url = \"https://dl.example.com\"\n"), 1), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
	defer func() { cancel(); <-done }()
	waitForTB(b, "ipnd listening", 10*time.Second, func() bool {
		_, err1 := os.Stat(filepath.Join(dir, "public.addr"))
		_, err2 := os.Stat(filepath.Join(dir, "admin.addr"))
		return err1 == nil && err2 == nil
	})
	addr := func(which string) string {
		a, _ := os.ReadFile(filepath.Join(dir, which+".addr"))
		return "http://" + strings.TrimSpace(string(a))
	}
	post := signedPoster(b, func() string { return addr("public") }, secret)
	if code := post("m-1", "payment.completed", map[string]any{"order_id": "B-1", "txn_id": "T-1", "amount": "1.00", "currency": "USD",
		"customer_email": "bench@example.com", "items": []map[string]any{{"product": "big"}}}); code != 200 {
		b.Fatalf("post = %d", code)
	}
	var link, key string
	waitForTB(b, "the delivery", 10*time.Second, func() bool {
		req, _ := http.NewRequest("POST", addr("admin")+"/api/orders/B-1/deliveries/reissue", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var out struct{ Deliveries []ipn.Delivered }
		json.NewDecoder(resp.Body).Decode(&out)
		if len(out.Deliveries) != 1 {
			return false
		}
		link = addr("public") + strings.TrimPrefix(out.Deliveries[0].DownloadURL, "https://dl.example.com")
		key = out.Deliveries[0].LicenseKey
		return true
	})

	bare := bareFulfilServer(b, filepath.Join(dir, "files", "big.bin"))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	download := func(url string) func() bool {
		return func() bool {
			resp, err := client.Get(url)
			if err != nil {
				return false
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == 200 && n == int64(len(file))
		}
	}
	body, _ := json.Marshal(map[string]string{"license_key": key})
	validate := func(url string) func() bool {
		return func() bool {
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				return false
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == 200
		}
	}
	b.ResetTimer()
	for range b.N {
		for _, run := range []struct {
			name    string
			clients int
			ipnd    func() bool
			bare    func() bool
		}{
			{"downloads", 4, download(link), download(bare + "/file")},
			{"validations", 16, validate(addr("public") + "/v1/licenses/validate"), validate(bare + "/v1/licenses/validate")},
		} {
			got, errs := hammer(run.clients, dur, run.ipnd)
			base, _ := hammer(run.clients, dur, run.bare)
			if errs > 0 {
				b.Errorf("%s: %d failed requests", run.name, errs)
			}
			b.ReportMetric(got, run.name+"/s")
			b.ReportMetric(base, "bare-"+run.name+"/s")
			fmt.Fprintf(os.Stderr, "fulfil %s: ipnd %.0f/s, bare %.0f/s (%.0f%%), %d clients\n", run.name, got, base, 100*got/base, run.clients)
		}
	}
}

// hammer runs f from clients goroutines for d and returns the
// successful calls per second and the failures.
func hammer(clients int, d time.Duration, f func() bool) (float64, int64) {
	var ok, bad atomic.Int64
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if f() {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(ok.Load()) / time.Since(start).Seconds(), bad.Load()
}

// bareFulfilServer serves the same file with http.ServeContent and
// answers validations with a fixed JSON: what the routes cost without
// ipnd's lookups and bookkeeping.
func bareFulfilServer(tb testing.TB, path string) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("Content-Disposition", "attachment; filename=big.bin")
		http.ServeContent(w, r, "big.bin", st.ModTime(), f)
	})
	mux.HandleFunc("POST /v1/licenses/validate", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]string
		json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"valid":true,"error":null,"license_key":{"status":"inactive"}}`)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// waitForTB is waitFor for benchmarks.
func waitForTB(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
