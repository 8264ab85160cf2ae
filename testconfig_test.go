package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/internal/pgtest"
)

// writeTestConfig writes dir/ipnd.toml: both listeners on loopback port
// 0, no rate limit, admin token "t", the database in dir, then extra
// (more sections and [[gateway]] tables). It returns the file's path.
//
// With IPND_TEST_BACKEND=postgres the store is a PostgreSQL database
// instead, one per dir (the same one for every config written into dir),
// on the cluster the test binary shares (testDSN); the data directory
// is still dir.
func writeTestConfig(tb testing.TB, dir, extra string) string {
	tb.Helper()
	if onPG() {
		return writePGTestConfig(tb, dir, "dsn = "+strconv.Quote(testDSN(tb, dir))+"\n", extra)
	}
	cfg := filepath.Join(dir, "ipnd.toml")
	body := "[server]\nlisten = \"127.0.0.1:0\"\nrate_limit = 0\n" +
		"[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n" +
		"[store]\npath = \"" + filepath.Join(dir, "ipnd.db") + "\"\n" + extra
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// onPG reports whether this run's store is PostgreSQL
// (IPND_TEST_BACKEND=postgres, the Makefile's second pass).
func onPG() bool { return os.Getenv("IPND_TEST_BACKEND") == "postgres" }

// testStore is the [store] section of a test's config whose data
// directory is dir: the bbolt file dir/ipnd.db, or with
// IPND_TEST_BACKEND=postgres dir's database on the shared cluster. For
// the tests that write their config themselves.
func testStore(tb testing.TB, dir string) string {
	tb.Helper()
	s := "[store]\npath = " + strconv.Quote(filepath.Join(dir, "ipnd.db")) + "\n"
	if onPG() {
		s += "backend = \"postgres\"\ndsn = " + strconv.Quote(testDSN(tb, dir)) + "\n"
	}
	return s
}

// testStoreEnv is testStore as environment variables (name, value, ...),
// for the tests that configure ipnd through its environment.
func testStoreEnv(tb testing.TB, dir string) []string {
	tb.Helper()
	env := []string{"IPND_STORE_PATH", filepath.Join(dir, "ipnd.db")}
	if onPG() {
		env = append(env, "IPND_STORE_BACKEND", "postgres", "IPND_STORE_DSN", testDSN(tb, dir))
	}
	return env
}

// testStoreEnviron is testStoreEnv as NAME=value entries of a child's
// environment.
func testStoreEnviron(tb testing.TB, dir string) []string {
	tb.Helper()
	kv := testStoreEnv(tb, dir)
	var env []string
	for i := 0; i+1 < len(kv); i += 2 {
		env = append(env, kv[i]+"="+kv[i+1])
	}
	return env
}

// openTestStore opens the store of the config file cfg ("": none) and
// the environment env (name, value, ...) the way serve does (bbolt's
// file or the PostgreSQL database), for a test to read what a stopped
// (or killed) ipnd left; it is closed when the test ends.
func openTestStore(t *testing.T, cfg string, env ...string) Store {
	t.Helper()
	c, err := loadConfig(cfg, envFunc(env...))
	if err != nil {
		t.Fatal(err)
	}
	s, err := openStore(context.Background(), c, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("open the store of %s: %v", cfg, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// bboltOnly skips t on the PostgreSQL pass (IPND_TEST_BACKEND=postgres)
// because it tests what only the bbolt backend has (its files, its
// journal, its backup/restore/recover); why says what. Such a test is
// not a pass on PostgreSQL: when IPND_TEST_BBOLT_ONLY names a file, the
// name and why are appended to it, and the Makefile lists them.
func bboltOnly(t *testing.T, why string) {
	t.Helper()
	if !onPG() {
		return
	}
	if f := os.Getenv("IPND_TEST_BBOLT_ONLY"); f != "" {
		if w, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(w, "%s: %s\n", t.Name(), why)
			w.Close()
		}
	}
	t.Skip("bbolt only: " + why)
}

// writePGTestConfig is writeTestConfig on PostgreSQL: store holds the
// [store] keys naming the database (dsn or dsn_file).
func writePGTestConfig(tb testing.TB, dir, store, extra string) string {
	tb.Helper()
	cfg := filepath.Join(dir, "ipnd.toml")
	body := "[server]\nlisten = \"127.0.0.1:0\"\nrate_limit = 0\n" +
		"[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n" +
		"[store]\nbackend = \"postgres\"\npath = " + strconv.Quote(filepath.Join(dir, "ipnd.db")) + "\n" + store + extra
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// sharedPG is the PostgreSQL cluster the test binary shares, started by
// the first testDSN and stopped by TestMain; each key (a test's data
// directory) gets a database of its own.
var sharedPG struct {
	mu   sync.Mutex
	c    *pgtest.Cluster
	stop func()
	err  error
	dbs  map[string]string
	used map[string]bool // the tests (top level) that made a database
}

// testDSN returns the URL of key's database on the shared cluster,
// created the first time.
func testDSN(tb testing.TB, key string) string {
	tb.Helper()
	sharedPG.mu.Lock()
	defer sharedPG.mu.Unlock()
	if sharedPG.c == nil && sharedPG.err == nil {
		sharedPG.c, sharedPG.stop, sharedPG.err = pgtest.StartShared()
		sharedPG.dbs = map[string]string{}
		sharedPG.used = map[string]bool{}
	}
	if sharedPG.err != nil {
		tb.Fatalf("the shared PostgreSQL cluster: %v", sharedPG.err)
	}
	sharedPG.used[strings.SplitN(tb.Name(), "/", 2)[0]] = true
	if dsn, ok := sharedPG.dbs[key]; ok {
		return dsn
	}
	dsn, err := sharedPG.c.Database(fmt.Sprintf("t%d", len(sharedPG.dbs)+1))
	if err != nil {
		tb.Fatal(err)
	}
	sharedPG.dbs[key] = dsn
	return dsn
}

// stopSharedPG stops the shared cluster, if a test started it, and says
// how many tests ran ipnd on it.
func stopSharedPG() {
	sharedPG.mu.Lock()
	defer sharedPG.mu.Unlock()
	if len(sharedPG.used) > 0 {
		fmt.Printf("PostgreSQL: %d tests ran ipnd on databases of the shared cluster\n", len(sharedPG.used))
	}
	if sharedPG.stop != nil {
		sharedPG.stop()
		sharedPG.stop = nil
	}
}

// startChild runs "ipnd serve -config cfg" as a child process (the test
// binary, see TestMain) and waits until it listens. The channel closes
// when the child exits; the test's cleanup kills it.
func startChild(t *testing.T, dir, cfg string) (*exec.Cmd, chan struct{}) {
	t.Helper()
	return startChildTo(t, dir, cfg, nil)
}

// startChildTo is startChild with the child's stderr (its log) written
// to stderr.
func startChildTo(t *testing.T, dir, cfg string, stderr io.Writer) (*exec.Cmd, chan struct{}) {
	t.Helper()
	// A killed child leaves its address files behind: wait for new ones.
	os.Remove(filepath.Join(dir, "public.addr"))
	os.Remove(filepath.Join(dir, "admin.addr"))
	cmd := exec.Command(os.Args[0], "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), "IPND_TEST_CHILD=1")
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	waitFor(t, "child listening", 20*time.Second, func() bool {
		_, err1 := os.Stat(filepath.Join(dir, "public.addr"))
		_, err2 := os.Stat(filepath.Join(dir, "admin.addr"))
		return err1 == nil && err2 == nil
	})
	return cmd, exited
}
