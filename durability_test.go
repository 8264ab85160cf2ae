package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// defaultsEnv is the environment of a child "ipnd serve" on the embedded
// defaults with its database (and so its data directory) in dir.
func defaultsEnv(dir string) []string {
	return append(os.Environ(), "IPND_TEST_CHILD=1", "IPND_SERVER_LISTEN=127.0.0.1:0", "IPND_ADMIN_LISTEN=127.0.0.1:0",
		"IPND_STORE_PATH="+filepath.Join(dir, "ipnd.db"), "IPND_CONFIG=", "IPND_LOG_FORMAT=text")
}

// TestEmptyGeneratedSecretsRecreated (issue 20 point 4): a power cut right
// after the first start left admin.token (and the test gateway's secret)
// empty and ipnd refused to start ("file holds no secret"). A real child
// "ipnd serve" on the embedded defaults over empty generated files
// starts, says so at WARN, and the files hold new secrets.
func TestEmptyGeneratedSecretsRecreated(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"admin.token", "gateway-test.secret"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "serve")
	cmd.Env = defaultsEnv(dir)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "public.addr")); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ipnd serve exited (%v) over empty generated secret files:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipnd serve did not start:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"admin.token", "gateway-test.secret"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || strings.TrimSpace(string(data)) == "" {
			t.Errorf("%s after start: %q, %v; want a new secret", name, data, err)
		}
		var warned bool
		for _, l := range strings.Split(stderr.String(), "\n") {
			warned = warned || strings.Contains(l, "level=WARN") && strings.Contains(l, name) && strings.Contains(l, "empty")
		}
		if !warned {
			t.Errorf("no WARN naming the empty %s:\n%s", name, stderr.String())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
	exited <- nil
}

// TestEmptyMerchantSecretFileRefused: a secret file the merchant gave
// (outside the data directory) that is empty is still a configuration
// error; only files ipnd generated itself are made again.
func TestEmptyMerchantSecretFileRefused(t *testing.T) {
	dir := t.TempDir()
	secrets := t.TempDir()
	for _, c := range []struct{ extra, key string }{
		{"[admin]\ntoken_file = \"" + filepath.Join(secrets, "admin.token") + "\"\n[[gateway]]\nname = \"pp\"\nkind = \"paypal\"\nreceivers = [\"shop@example.com\"]\n", "admin.token_file"},
		{"[[gateway]]\nname = \"sw\"\nkind = \"standard-webhooks\"\nsecret_file = \"" + filepath.Join(secrets, "sw.secret") + "\"\n", "secret_file"},
	} {
		for _, name := range []string{"admin.token", "sw.secret"} {
			if err := os.WriteFile(filepath.Join(secrets, name), []byte("\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg := filepath.Join(dir, "ipnd.toml")
		body := "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"" + filepath.Join(dir, "ipnd.db") + "\"\n" + c.extra
		if strings.HasPrefix(c.extra, "[[") {
			body = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n" + body
		} else {
			body = strings.Replace(body, "[admin]\n", "[admin]\nlisten = \"127.0.0.1:0\"\n", 1)
		}
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "serve", "-config", cfg)
		cmd.Env = append(os.Environ(), "IPND_TEST_CHILD=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), c.key) || !strings.Contains(stderr.String(), "holds no secret") {
			t.Errorf("serve with an empty %s: %v, %q; want exit 1 naming the key and \"holds no secret\"", c.key, err, stderr.String())
		}
	}
}
