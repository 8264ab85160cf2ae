package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/store"
)

// TestMain lets the test binary double as the ipnd binary for tests that
// need a real child process (kill -9).
func TestMain(m *testing.M) {
	if os.Getenv("IPND_TEST_CHILD") == "1" {
		// The child is ipnd, which refuses IPND_ variables that are no
		// config key: the harness's backend choice is the test binary's.
		os.Unsetenv("IPND_TEST_BACKEND")
		os.Unsetenv("IPND_TEST_BBOLT_ONLY")
		main()
		os.Exit(0)
	}
	code := m.Run()
	stopSharedPG() // testconfig_test.go
	os.Exit(code)
}

func envFunc(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runCmd(t *testing.T, getenv func(string) string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, getenv, &out, &errOut)
	return out.String() + errOut.String(), err
}

// startServe runs "ipnd serve" through run() until the test ends and
// waits until both listeners have recorded their addresses.
func startServe(t *testing.T, getenv func(string) string, dataDir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, append([]string{"serve"}, args...), getenv, io.Discard, &syncWriter{w: &logs})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15s of cancel")
		}
	})
	waitFor(t, "listeners", 10*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v", err)
		default:
		}
		_, e1 := os.Stat(filepath.Join(dataDir, "admin.addr"))
		_, e2 := os.Stat(filepath.Join(dataDir, "public.addr"))
		return e1 == nil && e2 == nil
	})
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestNewUserFlow is the README's quick start: ipnd serve on embedded
// defaults, ipnd simulate test, ipnd ls lists it, show and backup work,
// and a second serve on the same database refuses quickly.
func TestNewUserFlow(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	// Embedded defaults, but on free ports (8080 may be taken on a CI box).
	env := []string{"IPND_SERVER_LISTEN", "127.0.0.1:0", "IPND_ADMIN_LISTEN", "127.0.0.1:0"}
	if onPG() { // the defaults but the store
		env = append(env, testStoreEnv(t, filepath.Join(dir, "ipnd-data"))...)
	}
	getenv := envFunc(env...)
	startServe(t, getenv, "ipnd-data")

	for _, f := range []string{"ipnd-data/admin.token", "ipnd-data/gateway-test.secret"} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want a 0600 file", f, err, st.Mode().Perm())
		}
	}
	out, err := runCmd(t, getenv, "simulate", "test", "-order", "ORDER-42", "-amount", "12.5", "-currency", "EUR")
	if err != nil || !strings.Contains(out, "200 OK") {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	out, err = runCmd(t, getenv, "ls")
	if err != nil || !strings.Contains(out, "ORDER-42") || !strings.Contains(out, "12.50 EUR") || !strings.Contains(out, "payment/completed") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	// The pipeline takes it from received to applied.
	waitFor(t, "notification 1 applied", 10*time.Second, func() bool {
		out, _ := runCmd(t, getenv, "ls", "-state", "applied")
		return strings.Contains(out, "ORDER-42")
	})
	out, err = runCmd(t, getenv, "show", "1")
	if err != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	var n struct {
		ID      uint64
		State   string
		Body    string
		Event   ipn.Event
		History []ipn.HistoryEntry
	}
	if err := json.Unmarshal([]byte(out), &n); err != nil || n.ID != 1 || n.State != "applied" ||
		n.Event.OrderID != "ORDER-42" || !strings.Contains(n.Body, "ORDER-42") ||
		len(n.History) != 2 || n.History[0].State != "received" || n.History[1].State != "applied" {
		t.Errorf("show 1 = %+v, %v\n%s", n, err, out)
	}
	// The embedded "test" gateway is a sandbox one: simulate makes a test
	// order there, which the merchant can delete.
	out, err = runCmd(t, getenv, "orders", "ORDER-42")
	if err != nil || !strings.Contains(out, `"test": true`) {
		t.Errorf("orders ORDER-42: want a test order: %v\n%s", err, out)
	}
	if out, err := runCmd(t, getenv, "show", "99"); err == nil || !strings.Contains(out+err.Error(), "404") {
		t.Errorf("show 99: want a 404 error, got %v %s", err, out)
	}

	backup := filepath.Join(dir, "copy.db")
	if onPG() {
		// PostgreSQL is backed up with its own tools; a second ipnd on
		// the same database is a follower (TestPGTwoProcessesTakeover).
		if out, err := runCmd(t, getenv, "backup", backup); err == nil || !strings.Contains(out+err.Error(), "pg_dump") {
			t.Errorf("backup on PostgreSQL: %v, %s; want an error naming pg_dump", err, out)
		}
		return
	}
	if out, err := runCmd(t, getenv, "backup", backup); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	db, err := store.Open(backup, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Check(); err != nil {
		t.Error(err)
	}
	if got, _, err := db.Get(1); err != nil || got.DedupKey == "" {
		t.Errorf("backup lacks notification 1: %v", err)
	}
	db.Close()

	start := time.Now()
	out, err = runCmd(t, getenv, "serve")
	if err == nil || !strings.Contains(err.Error(), "in use by another ipnd (pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second serve: err %v, want 'in use by another ipnd (pid N)'\n%s", err, out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second serve took %s to give up", d)
	}
}

func TestAdminAPIAuthAndMetrics(t *testing.T) {
	dir := t.TempDir()
	getenv := envFunc(append([]string{"IPND_SERVER_LISTEN", "127.0.0.1:0", "IPND_ADMIN_LISTEN", "127.0.0.1:0",
		"IPND_ADMIN_TOKEN", "s3cret-token"}, testStoreEnv(t, dir)...)...)
	startServe(t, getenv, dir)
	addr, _ := os.ReadFile(filepath.Join(dir, "admin.addr"))
	base := "http://" + strings.TrimSpace(string(addr))
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/api/notifications", "/api/backup", "/metrics", "/healthz"} {
		if code, body := get(p, ""); code != 401 || !strings.Contains(body, `"error"`) {
			t.Errorf("GET %s without token = %d %s, want 401 JSON error", p, code, body)
		}
		if code, _ := get(p, "s3cret-tokeN"); code != 401 {
			t.Errorf("GET %s with wrong token = %d, want 401", p, code)
		}
	}
	if out, err := runCmd(t, getenv, "simulate", "test"); err != nil {
		t.Fatalf("simulate: %v %s", err, out)
	}
	code, body := get("/metrics", "s3cret-token")
	if code != 200 || !strings.Contains(body, `ipnd_notifications_received_total{gateway="test"} 1`) ||
		!strings.Contains(body, "ipnd_build_info{") || !strings.Contains(body, "ipnd_store_commit_duration_seconds_count 1") {
		t.Errorf("metrics = %d\n%s", code, body)
	}
	if code, body := get("/healthz", "s3cret-token"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("healthz = %d %s", code, body)
	}
	if code, body := get("/api/notifications?state=bogus", "s3cret-token"); code != 400 || !strings.Contains(body, "state") {
		t.Errorf("bad state filter = %d %s", code, body)
	}
	waitFor(t, "notification applied", 10*time.Second, func() bool {
		code, body := get("/api/notifications?gateway=test&state=applied&limit=1", "s3cret-token")
		return code == 200 && strings.Contains(body, `"id": 1`)
	})
	if code, body = get("/metrics", "s3cret-token"); code != 200 || !strings.Contains(body, `ipnd_notifications_processed_total{gateway="test",result="applied"} 1`) ||
		!strings.Contains(body, `ipnd_pipeline_lag_seconds{gateway="test"} 0`) {
		t.Errorf("pipeline metrics missing:\n%s", body)
	}
	if code, body := get("/api/notifications/abc", "s3cret-token"); code != 400 || !strings.Contains(body, `"error"`) {
		t.Errorf("bad id = %d %s", code, body)
	}
}

// TestKill9Durability starts ipnd as a child process, posts from 32
// concurrent clients, SIGKILLs it mid-load, and checks that every
// notification that got a 200 is in the reopened store, which passes
// bbolt's consistency check.
func TestKill9Durability(t *testing.T) {
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfgPath := writeTestConfig(t, dir, fmt.Sprintf(`[[gateway]]
name = "test"
kind = "standard-webhooks"
secret = %q
`, secret))
	cmd, exited := startChild(t, dir, cfgPath)
	addr, _ := os.ReadFile(filepath.Join(dir, "public.addr"))
	url := "http://" + strings.TrimSpace(string(addr)) + "/ipn/test"
	key, _ := gateway.DecodeWebhookSecret(secret)

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		oks   atomic.Int64
		seq   atomic.Int64
		wg    sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for c := 0; c < 32; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id := fmt.Sprintf("msg_%d", seq.Add(1))
				body := []byte(fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":%q,"amount":"1.00","currency":"USD"}}`, id))
				ts := time.Now().Unix()
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Webhook-Id", id)
				req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
				req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, id, ts, body))
				resp, err := client.Do(req)
				if err != nil {
					return // the server is gone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
					oks.Add(1)
				}
			}
		}()
	}
	waitFor(t, "500 acknowledged notifications", 30*time.Second, func() bool { return oks.Load() >= 500 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	wg.Wait()

	if !onPG() {
		db, err := store.Open(filepath.Join(dir, "ipnd.db"), store.Options{})
		if err != nil {
			t.Fatalf("reopen after kill -9: %v", err)
		}
		if err := db.Check(); err != nil {
			t.Fatalf("consistency check after kill -9: %v", err)
		}
		t.Logf("%d notifications were only in the journal at the kill", db.Recovered())
		db.Close()
	}
	db := openTestStore(t, cfgPath)
	stored := map[string]bool{}
	var before uint64
	for {
		items, err := db.Find(store.Query{Before: before, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			stored[it.Notification.DedupKey] = true
		}
		if len(items) < 1000 {
			break
		}
		before = items[len(items)-1].Notification.ID
	}
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for id := range acked {
		if !stored[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged notifications lost after kill -9", missing, len(acked))
	}
	t.Logf("killed after %d acknowledged; store holds %d (all acknowledged present)", len(acked), len(stored))
}

// TestChildLifecycle: a second "ipnd serve" on the same database exits 1
// with a clear message within seconds; SIGTERM stops the first cleanly
// (exit 0) and what it acknowledged is in the store.
func TestChildLifecycle(t *testing.T) {
	dir := t.TempDir()
	getenv := append([]string{"IPND_TEST_CHILD=1", "IPND_SERVER_LISTEN=127.0.0.1:0", "IPND_ADMIN_LISTEN=127.0.0.1:0",
		"IPND_CONFIG="}, testStoreEnviron(t, dir)...)
	first := exec.Command(os.Args[0], "serve")
	first.Env = append(os.Environ(), getenv...)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	t.Cleanup(func() { first.Process.Kill() })
	waitFor(t, "first ipnd", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "public.addr"))
		return err == nil
	})
	env := envFunc(append([]string{"IPND_SERVER_LISTEN", "127.0.0.1:0", "IPND_ADMIN_LISTEN", "127.0.0.1:0"},
		testStoreEnv(t, dir)...)...)
	if out, err := runCmd(t, env, "simulate", "test", "-order", "ORDER-TERM"); err != nil {
		t.Fatalf("simulate: %v %s", err, out)
	}

	// On PostgreSQL several ipnd share one database by design
	// (TestPGTwoProcessesTakeover): only bbolt's file refuses a second.
	if !onPG() {
		second := exec.Command(os.Args[0], "serve")
		second.Env = first.Env
		var stderr bytes.Buffer
		second.Stderr = &stderr
		start := time.Now()
		err := second.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("second serve: %v, want exit status 1", err)
		}
		if want := fmt.Sprintf("database is in use by another ipnd (pid %d)", first.Process.Pid); !strings.Contains(stderr.String(), want) {
			t.Errorf("second serve said %q, want it to contain %q", stderr.String(), want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("second serve took %s", d)
		}
	}

	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ipnd did not stop within 15s of SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(dir, "ipnd.db.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left behind after a clean stop: %v", err)
	}
	db := openTestStore(t, "", testStoreEnv(t, dir)...)
	items, err := db.Find(store.Query{})
	if err != nil || len(items) != 1 || !bytes.Contains(items[0].Notification.Body, []byte("ORDER-TERM")) {
		t.Errorf("after SIGTERM the store holds %d items, %v", len(items), err)
	}
}
