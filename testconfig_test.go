package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// writeTestConfig writes dir/ipnd.toml: both listeners on loopback port
// 0, no rate limit, admin token "t", the database in dir, then extra
// (more sections and [[gateway]] tables). It returns the file's path.
func writeTestConfig(tb testing.TB, dir, extra string) string {
	tb.Helper()
	cfg := filepath.Join(dir, "ipnd.toml")
	body := "[server]\nlisten = \"127.0.0.1:0\"\nrate_limit = 0\n" +
		"[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n" +
		"[store]\npath = \"" + filepath.Join(dir, "ipnd.db") + "\"\n" + extra
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return cfg
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
