package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Pebble (github.com/letsencrypt/pebble/v2, Let's Encrypt's ACME test
// server) and pebble-challtestsrv (its DNS server, which answers 127.0.0.1
// for every name) are tools of this module (go.mod): the tests build them
// with `go build` from the module cache and run them on 127.0.0.1.

const pebbleModule = "github.com/letsencrypt/pebble/v2"

var pebbleBuild struct {
	once          sync.Once
	bin, mod, err string
}

// pebbleBinaries builds pebble and pebble-challtestsrv once per version
// into the temp directory (kept between runs: a rebuild takes ~10 s) and
// returns that directory and the module's source directory (for its test
// certificates).
func pebbleBinaries(t testing.TB) (bin, mod string) {
	t.Helper()
	b := &pebbleBuild
	b.once.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}} {{.Dir}}", pebbleModule).Output()
		if err != nil {
			b.err = fmt.Sprintf("go list -m %s: %v (run go mod download)", pebbleModule, err)
			return
		}
		version, dir, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
		if dir == "" {
			if out, err := exec.Command("go", "mod", "download", pebbleModule).CombinedOutput(); err != nil {
				b.err = fmt.Sprintf("go mod download %s: %v\n%s", pebbleModule, err, out)
				return
			}
			out, _ = exec.Command("go", "list", "-m", "-f", "{{.Dir}}", pebbleModule).Output()
			dir = strings.TrimSpace(string(out))
		}
		b.mod = dir
		b.bin = filepath.Join(os.TempDir(), fmt.Sprintf("ipnd-pebble-%s-%d", version, os.Getuid()))
		if _, err := os.Stat(filepath.Join(b.bin, "pebble-challtestsrv")); err == nil {
			return
		}
		// Build into a fresh directory, then rename it into place, so that
		// a concurrent run never sees half a binary.
		if err := os.MkdirAll(filepath.Dir(b.bin), 0o755); err != nil {
			b.err = err.Error()
			return
		}
		tmp, err := os.MkdirTemp(filepath.Dir(b.bin), "ipnd-pebble-build-")
		if err != nil {
			b.err = err.Error()
			return
		}
		defer os.RemoveAll(tmp)
		cmd := exec.Command("go", "build", "-o", tmp+string(filepath.Separator),
			pebbleModule+"/cmd/pebble", pebbleModule+"/cmd/pebble-challtestsrv")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Sprintf("go build pebble: %v\n%s", err, out)
			return
		}
		if err := os.Rename(tmp, b.bin); err != nil {
			if _, serr := os.Stat(filepath.Join(b.bin, "pebble-challtestsrv")); serr != nil {
				b.err = err.Error()
			}
		}
	})
	if b.err != "" {
		t.Fatal(b.err)
	}
	return b.bin, b.mod
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// pebble is a running Pebble with its DNS server.
type pebble struct {
	directory string         // ACME directory URL
	caFile    string         // the CA of Pebble's own HTTPS (acme_ca_file)
	roots     *x509.CertPool // Pebble's issuing root: what a gateway would trust
	logs      *syncWriter
	logBuf    *bytes.Buffer
}

// pebbleOptions: the ports where Pebble validates TLS-ALPN-01 and
// HTTP-01 challenges, and the lifetime of the certificates it issues.
type pebbleOptions struct {
	tlsPort, httpPort int
	validity          time.Duration
}

// startPebble runs pebble-challtestsrv (DNS only) and pebble on 127.0.0.1
// until the test ends.
func startPebble(t testing.TB, o pebbleOptions) *pebble {
	t.Helper()
	bin, mod := pebbleBinaries(t)
	dir := t.TempDir()
	dnsPort, acmePort, mgmtPort, chalMgmt := freePort(t), freePort(t), freePort(t), freePort(t)
	if o.validity == 0 {
		o.validity = 90 * 24 * time.Hour
	}
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    filepath.Join(mod, "test/certs/localhost/cert.pem"),
		"privateKey":                     filepath.Join(mod, "test/certs/localhost/key.pem"),
		"httpPort":                       o.httpPort,
		"tlsPort":                        o.tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description": "ipnd tests", "validityPeriod": int(o.validity.Seconds())}},
	}}
	cfgPath := filepath.Join(dir, "pebble.json")
	data, _ := json.Marshal(conf)
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pebble{directory: fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		caFile: filepath.Join(mod, "test/certs/pebble.minica.pem"), logBuf: &bytes.Buffer{}}
	p.logs = &syncWriter{w: p.logBuf}
	start := func(name string, env []string, args ...string) <-chan struct{} {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = p.logs, p.logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		return exited
	}
	chal := start("pebble-challtestsrv", nil, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort), "-http01", "", "-https01", "",
		"-tlsalpn01", "", "-doh", "", "-management", fmt.Sprintf("127.0.0.1:%d", chalMgmt),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	// No sleeps before validation, no nonces refused at random: fast and
	// deterministic. Everything else as Pebble does it.
	peb := start("pebble", []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		"-config", cfgPath, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort))

	caPEM, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pebbleCA := x509.NewCertPool()
	pebbleCA.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pebbleCA}}}
	var rootPEM []byte
	// A deadline, not a speed (a loaded 2-core CI machine once needed
	// more than 20 s); Pebble's log is shown when it passes, or when a
	// process exits first.
	deadline := time.Now().Add(60 * time.Second)
	for !func() bool {
		select {
		case <-chal:
			t.Fatalf("pebble-challtestsrv exited at start:\n%s", p.log())
		case <-peb:
			t.Fatalf("pebble exited at start:\n%s", p.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for pebble up; its log:\n%s", p.log())
		}
		resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		rootPEM, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == 200
	}() {
		time.Sleep(10 * time.Millisecond)
	}
	pollUntil(t, "pebble directory", 20*time.Second, func() bool {
		resp, err := c.Get(p.directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble /roots/0: no certificate in %q", rootPEM)
	}
	return p
}

// orders is how many orders Pebble has created (it logs each one).
func (p *pebble) orders() int {
	return strings.Count(p.log(), "Added order")
}

// httpsClient talks to host (a name Pebble issued for) on 127.0.0.1:port,
// verifying the certificate against Pebble's root.
func (p *pebble) httpsClient(port int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			ForceAttemptHTTP2: true,
			TLSClientConfig:   &tls.Config{RootCAs: p.roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(port))
			},
		}}
}

// pollUntil polls cond every 10 ms until it holds or d passes (waitFor
// for benchmarks too).
func pollUntil(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// log is what Pebble and its DNS server have printed so far.
func (p *pebble) log() string {
	p.logs.mu.Lock()
	defer p.logs.mu.Unlock()
	return p.logBuf.String()
}
