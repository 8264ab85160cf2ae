package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn/gateway"
)

const acmeTestSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// acmeConfig writes an ipnd config that gets certificates for ipnd.test
// from p, listening where Pebble validates: TLS-ALPN-01 on the public
// listener (tlsPort), HTTP-01 on http_listen (httpPort).
func acmeConfig(t testing.TB, dir string, p *pebble, tlsPort, httpPort int) string {
	t.Helper()
	cfg := filepath.Join(dir, "ipnd.toml")
	body := fmt.Sprintf(`[server]
listen = "127.0.0.1:%d"
http_listen = "127.0.0.1:%d"
rate_limit = 0
acme_domains = ["ipnd.test"]
acme_email = "ops@ipnd.test"
acme_directory = %q
acme_ca_file = %q
[admin]
listen = "127.0.0.1:0"
token = "t"
%s[log]
format = "json"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, tlsPort, httpPort, p.directory, p.caFile, testStore(t, dir), acmeTestSecret)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ipndRun is an in-process "ipnd serve" whose log the test reads.
type ipndRun struct {
	t      *testing.T
	dir    string
	cancel context.CancelFunc
	done   chan error
	logBuf bytes.Buffer
	logs   *syncWriter
}

func runIpnd(t *testing.T, dir, cfg string) *ipndRun {
	t.Helper()
	for _, f := range []string{"public.addr", "admin.addr", "http.addr"} {
		os.Remove(filepath.Join(dir, f))
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &ipndRun{t: t, dir: dir, cancel: cancel, done: make(chan error, 1)}
	r.logs = &syncWriter{w: &r.logBuf}
	go func() { r.done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, r.logs) }()
	t.Cleanup(r.stop)
	waitFor(t, "ipnd listening", 20*time.Second, func() bool {
		select {
		case err := <-r.done:
			r.cancel = nil
			t.Fatalf("serve exited early: %v\n%s", err, r.log())
		default:
		}
		_, err := os.Stat(filepath.Join(dir, "admin.addr"))
		return err == nil
	})
	return r
}

func (r *ipndRun) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("serve returned %v", err)
		}
	case <-time.After(20 * time.Second):
		r.t.Error("serve did not stop within 20s")
	}
}

func (r *ipndRun) log() string {
	r.logs.mu.Lock()
	defer r.logs.mu.Unlock()
	return r.logBuf.String()
}

func (r *ipndRun) addr(which string) string {
	b, err := os.ReadFile(filepath.Join(r.dir, which+".addr"))
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// metric reads one sample of the admin listener's /metrics.
func (r *ipndRun) metric(series string) float64 {
	r.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.addr("admin")+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				r.t.Fatalf("%s: %v", line, err)
			}
			return v
		}
	}
	r.t.Fatalf("no series %s in /metrics", series)
	return 0
}

// postShop sends a signed standard-webhooks notification to /ipn/shop.
func postShop(t *testing.T, c *http.Client, base, msgID string) (*http.Response, string) {
	t.Helper()
	key, _ := gateway.DecodeWebhookSecret(acmeTestSecret)
	body, _ := json.Marshal(map[string]any{"type": "payment.completed", "data": map[string]any{
		"txn_id": "T-" + msgID, "order_id": "O-" + msgID, "amount": "19.99", "currency": "USD", "customer_email": "b@example.com"}})
	ts := time.Now().Unix()
	req, _ := http.NewRequest("POST", base+"/ipn/shop", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Webhook-Id", msgID)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, msgID, ts, body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s/ipn/shop: %v", base, err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	return resp, string(reply)
}

// servedLeaf is the certificate the public listener presents for
// ipnd.test, verified against Pebble's root (nil and the error if the
// handshake fails).
func servedLeaf(c *http.Client, port int) (*x509.Certificate, string, error) {
	resp, err := c.Get(fmt.Sprintf("https://ipnd.test:%d/healthz", port))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.TLS.PeerCertificates[0], resp.Proto, nil
}

// TestACMEWithPebble gets a certificate from a real ACME server (Pebble)
// through TLS-ALPN-01, takes a signed notification over HTTPS verified
// against Pebble's root, answers plain HTTP with redirects and 403s, and
// after a restart serves the cached certificate without a second order.
func TestACMEWithPebble(t *testing.T) {
	tlsPort, httpPort := freePort(t), freePort(t)
	p := startPebble(t, pebbleOptions{tlsPort: tlsPort, httpPort: httpPort})
	dir := t.TempDir()
	cfg := acmeConfig(t, dir, p, tlsPort, httpPort)

	out, err := runCmd(t, envFunc(), "check", "-config", cfg)
	if err != nil || !strings.Contains(out, "# TLS: ACME for ipnd.test from "+p.directory) {
		t.Fatalf("ipnd check: %v\n%s", err, out)
	}

	start := time.Now()
	d := runIpnd(t, dir, cfg)
	c := p.httpsClient(tlsPort)
	var leaf *x509.Certificate
	var proto string
	waitFor(t, "a certificate from pebble", 60*time.Second, func() bool {
		leaf, proto, err = servedLeaf(c, tlsPort)
		return err == nil
	})
	t.Logf("certificate issued by pebble %s after start (serial %x)", time.Since(start).Round(time.Millisecond), leaf.SerialNumber)
	if proto != "HTTP/2.0" {
		t.Errorf("protocol over TLS = %s, want HTTP/2.0", proto)
	}
	if got := leaf.DNSNames; len(got) != 1 || got[0] != "ipnd.test" {
		t.Errorf("certificate names %v, want [ipnd.test]", got)
	}
	if n := p.orders(); n != 1 {
		t.Errorf("pebble has %d orders, want 1", n)
	}

	resp, reply := postShop(t, c, fmt.Sprintf("https://ipnd.test:%d", tlsPort), "msg_acme_1")
	if resp.StatusCode != 200 || strings.TrimSpace(reply) != "OK" {
		t.Fatalf("POST over HTTPS: %d %q, want 200 OK", resp.StatusCode, reply)
	}

	// The plain HTTP listener.
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	httpBase := "http://" + d.addr("http")
	resp, reply = postShop(t, plain, httpBase, "msg_acme_plain")
	if resp.StatusCode != 403 || !strings.Contains(reply, "https") {
		t.Errorf("POST /ipn/shop over plain HTTP: %d %q, want 403 naming https", resp.StatusCode, reply)
	}
	req, _ := http.NewRequest("GET", httpBase+"/ipn/shop?x=1", nil)
	req.Host = "ipnd.test"
	resp, err = plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("https://ipnd.test:%d/ipn/shop?x=1", tlsPort); resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("GET over plain HTTP: %d Location %q, want 308 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	resp, err = plain.Get(httpBase + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz over plain HTTP: %d, want 200", resp.StatusCode)
	}

	// The cache: under the data directory, private.
	cacheDir := filepath.Join(dir, "acme")
	st, err := os.Stat(cacheDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory %s: %v %v, want mode 0700", cacheDir, st, err)
	}
	entries, _ := os.ReadDir(cacheDir)
	var names []string
	for _, e := range entries {
		fi, _ := e.Info()
		names = append(names, e.Name())
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("cache file %s has mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if !strings.Contains(strings.Join(names, " "), "acme_account+key") || !strings.Contains(strings.Join(names, " "), "ipnd.test") {
		t.Errorf("cache holds %v, want the account key and the ipnd.test certificate", names)
	}

	waitFor(t, "expiry metric", 10*time.Second, func() bool {
		return d.metric("ipnd_tls_certificate_expiry_timestamp_seconds") == float64(leaf.NotAfter.Unix())
	})
	if n := d.metric(`ipnd_tls_certificate_updates_total{result="ok",source="acme"}`); n != 1 {
		t.Errorf("certificates obtained: %v, want 1", n)
	}
	if !strings.Contains(d.log(), `"msg":"acme: certificate obtained"`) {
		t.Errorf("no log line for the certificate obtained:\n%s", d.log())
	}

	// Restart: the cached certificate is served, Pebble gets no second order.
	d.stop()
	d = runIpnd(t, dir, cfg)
	c = p.httpsClient(tlsPort) // no connection reuse
	leaf2, _, err := servedLeaf(c, tlsPort)
	if err != nil {
		t.Fatalf("after restart: %v\n%s", err, d.log())
	}
	if leaf2.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after restart the certificate has serial %x, want the cached %x", leaf2.SerialNumber, leaf.SerialNumber)
	}
	resp, reply = postShop(t, c, fmt.Sprintf("https://ipnd.test:%d", tlsPort), "msg_acme_2")
	if resp.StatusCode != 200 {
		t.Errorf("POST over HTTPS after restart: %d %q", resp.StatusCode, reply)
	}
	waitFor(t, "the certificate-in-use log line", 10*time.Second, func() bool {
		return strings.Contains(d.log(), `"msg":"acme: certificate in use"`)
	})
	if n := p.orders(); n != 1 {
		t.Errorf("after restart pebble has %d orders, want still 1", n)
	}
}

// TestACMERenewsByItself: with certificates that live 2 minutes and
// renewal 100 s before expiry, ipnd renews without a request asking for
// it, logs and counts the renewal, serves the new certificate and
// publishes its expiry.
func TestACMERenewsByItself(t *testing.T) {
	old := acmeRenewBefore
	acmeRenewBefore = 100 * time.Second
	t.Cleanup(func() { acmeRenewBefore = old })
	tlsPort, httpPort := freePort(t), freePort(t)
	p := startPebble(t, pebbleOptions{tlsPort: tlsPort, httpPort: httpPort, validity: 2 * time.Minute})
	dir := t.TempDir()
	d := runIpnd(t, dir, acmeConfig(t, dir, p, tlsPort, httpPort))
	c := p.httpsClient(tlsPort)
	var first *x509.Certificate
	waitFor(t, "a certificate from pebble", 60*time.Second, func() bool {
		var err error
		first, _, err = servedLeaf(c, tlsPort)
		return err == nil
	})
	// Renewal is due 20 s after issuance (plus up to 10 s of jitter).
	waitFor(t, "the renewal", 90*time.Second, func() bool {
		return strings.Contains(d.log(), `"msg":"acme: certificate renewed"`)
	})
	c = p.httpsClient(tlsPort)
	second, _, err := servedLeaf(c, tlsPort)
	if err != nil {
		t.Fatal(err)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || !second.NotAfter.After(first.NotAfter) {
		t.Errorf("after renewal: serial %x expiring %s, want a new certificate (was %x, %s)",
			second.SerialNumber, second.NotAfter, first.SerialNumber, first.NotAfter)
	}
	if n := d.metric(`ipnd_tls_certificate_updates_total{result="ok",source="acme"}`); n < 2 {
		t.Errorf("certificates obtained: %v, want at least 2", n)
	}
	if n := p.orders(); n < 2 {
		t.Errorf("pebble has %d orders, want at least 2", n)
	}
	waitFor(t, "expiry metric of the renewed certificate", 10*time.Second, func() bool {
		return d.metric("ipnd_tls_certificate_expiry_timestamp_seconds") >= float64(second.NotAfter.Unix())
	})
}

// TestACMEHTTP01: when TLS-ALPN-01 cannot succeed (Pebble validates it on
// a port where nothing listens), the certificate comes through HTTP-01 on
// http_listen.
func TestACMEHTTP01(t *testing.T) {
	tlsPort, httpPort, deadPort := freePort(t), freePort(t), freePort(t)
	p := startPebble(t, pebbleOptions{tlsPort: deadPort, httpPort: httpPort})
	dir := t.TempDir()
	d := runIpnd(t, dir, acmeConfig(t, dir, p, tlsPort, httpPort))
	c := p.httpsClient(tlsPort)
	waitFor(t, "a certificate from pebble", 90*time.Second, func() bool {
		_, _, err := servedLeaf(c, tlsPort)
		return err == nil
	})
	if resp, reply := postShop(t, c, fmt.Sprintf("https://ipnd.test:%d", tlsPort), "msg_http01"); resp.StatusCode != 200 {
		t.Errorf("POST over HTTPS: %d %q", resp.StatusCode, reply)
	}
	p.logs.mu.Lock()
	plog := p.logBuf.String()
	p.logs.mu.Unlock()
	if !strings.Contains(plog, "Attempting to validate w/ HTTP: http://ipnd.test:"+strconv.Itoa(httpPort)+"/.well-known/acme-challenge/") {
		t.Errorf("pebble's log shows no http-01 validation:\n%s\nipnd:\n%s", plog, d.log())
	}
}
