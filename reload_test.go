package main

import (
	"bytes"
	"encoding/json"
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

	ipngateway "ipnd/ipn/gateway"
)

// TestSIGHUPReload rotates a gateway's secret file and adds a gateway
// while requests keep coming, then breaks the config: SIGHUP reloads the
// first two (no request failed meanwhile; the old secret is refused
// after the reload, the new one accepted; the new gateway answers) and
// keeps the running config on the third, saying why.
func TestSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	oldSecret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	newSecret := "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	secretFile := filepath.Join(dir, "shop.secret")
	os.WriteFile(secretFile, []byte(oldSecret+"\n"), 0o600)
	gateway := fmt.Sprintf("[log]\nlevel = \"info\"\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret_file = %q\n", secretFile)
	cfg := writeTestConfig(t, dir, gateway)

	var logs bytes.Buffer
	logw := &syncWriter{w: &logs}
	cmd := exec.Command(os.Args[0], "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), "IPND_TEST_CHILD=1")
	cmd.Stderr = logw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	d := &daemon{t: t, dir: dir}
	waitFor(t, "ipnd listening", 20*time.Second, func() bool {
		_, err1 := os.Stat(filepath.Join(dir, "public.addr"))
		_, err2 := os.Stat(filepath.Join(dir, "admin.addr"))
		return err1 == nil && err2 == nil
	})

	keyOld, _ := ipngateway.DecodeWebhookSecret(oldSecret)
	keyNew, _ := ipngateway.DecodeWebhookSecret(newSecret)
	var seq atomic.Int64
	post := func(gw string, keys ...[]byte) int {
		id := fmt.Sprintf("msg_%d", seq.Add(1))
		body, _ := json.Marshal(map[string]any{"type": "payment.completed", "data": map[string]any{
			"order_id": "R-" + id, "txn_id": "T-" + id, "amount": "5.00", "currency": "EUR"}})
		ts := time.Now().Unix()
		var sigs []string
		for _, k := range keys {
			sigs = append(sigs, ipngateway.SignWebhook(k, id, ts, body))
		}
		req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/"+gw, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Webhook-Id", id)
		req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("Webhook-Signature", strings.Join(sigs, " "))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	reloads := func(result string) int {
		req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, `ipnd_config_reloads_total{result="`+result+`"} `); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return -1
	}
	hup := func(result string, want int) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("%d reloads with result %s", want, result), 10*time.Second, func() bool { return reloads(result) == want })
	}

	// Requests signed with both secrets are valid before and after: none
	// may fail while the reloads happen.
	var failed, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code := post("shop", keyOld, keyNew); code != 200 {
					failed.Add(1)
				}
				sent.Add(1)
			}
		}()
	}

	if code := post("shop", keyOld); code != 200 {
		t.Fatalf("old secret before the reload: HTTP %d", code)
	}
	if code := post("shop", keyNew); code != 401 {
		t.Fatalf("new secret before the reload: HTTP %d", code)
	}
	os.WriteFile(secretFile, []byte(newSecret+"\n"), 0o600)
	hup("success", 1)
	if code := post("shop", keyOld); code != 401 {
		t.Errorf("old secret after the reload: HTTP %d, want 401", code)
	}
	if code := post("shop", keyNew); code != 200 {
		t.Errorf("new secret after the reload: HTTP %d, want 200", code)
	}

	// A gateway added.
	if code := post("extra", keyNew); code != 404 {
		t.Errorf("gateway extra before it is configured: HTTP %d", code)
	}
	writeTestConfig(t, dir, gateway+fmt.Sprintf("[[gateway]]\nname = \"extra\"\nkind = \"standard-webhooks\"\nsecret = %q\n", newSecret))
	hup("success", 2)
	if code := post("extra", keyNew); code != 200 {
		t.Errorf("gateway extra after the reload: HTTP %d, want 200", code)
	}

	// A broken config: refused, the running one kept.
	writeTestConfig(t, dir, gateway+"[server\nbroken")
	hup("failure", 1)
	if code := post("extra", keyNew); code != 200 {
		t.Errorf("after a refused reload: HTTP %d, want the previous config still serving", code)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 || sent.Load() < 10 {
		t.Errorf("%d of %d requests failed during the reloads", n, sent.Load())
	}
	logw.mu.Lock()
	out := logs.String()
	logw.mu.Unlock()
	if !strings.Contains(out, "config reload refused") || !strings.Contains(out, "config reloaded") {
		t.Errorf("log lacks the reload lines:\n%s", out)
	}
	// A signal that stops it still stops it cleanly.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
		exited <- err
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
