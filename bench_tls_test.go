package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn/gateway"
)

// BenchmarkTLS measures what HTTPS costs: how long ipnd takes to get its
// first certificate from Pebble, then durable ingest over HTTPS (that
// certificate, verified) against the same daemon setup on plain HTTP, in
// the same run: with keep-alive connections (encryption only) and with a
// new connection per request (a full handshake each).
func BenchmarkTLS(b *testing.B) {
	secs := 3.0
	if s, err := strconv.ParseFloat(os.Getenv("IPND_BENCH_SECONDS"), 64); err == nil && s > 0 {
		secs = s
	}
	d := time.Duration(secs * float64(time.Second))
	key, _ := gateway.DecodeWebhookSecret(acmeTestSecret)
	tlsPort, httpPort := freePort(b), freePort(b)
	p := startPebble(b, pebbleOptions{tlsPort: tlsPort, httpPort: httpPort})

	daemon := func(dir, cfg string) string {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
		b.Cleanup(func() { cancel(); <-done })
		var addr []byte
		pollUntil(b, "ipnd listening", 20*time.Second, func() bool {
			addr, _ = os.ReadFile(filepath.Join(dir, "public.addr"))
			return len(addr) > 0
		})
		return strings.TrimSpace(string(addr))
	}
	quiet := func(cfg string) {
		body, _ := os.ReadFile(cfg)
		os.WriteFile(cfg, []byte(strings.Replace(string(body), "[log]\nformat = \"json\"", "[log]\nlevel = \"warn\"", 1)), 0o600)
	}
	tlsDir := b.TempDir()
	tlsCfg := acmeConfig(b, tlsDir, p, tlsPort, httpPort)
	quiet(tlsCfg)
	start := time.Now()
	daemon(tlsDir, tlsCfg)
	newClient := func(keepAlive bool, clients int) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: clients, DisableCompression: true,
			TLSClientConfig: &tls.Config{RootCAs: p.roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(tlsPort))
			}}}
	}
	pollUntil(b, "a certificate from pebble", 60*time.Second, func() bool {
		resp, err := newClient(false, 1).Get(fmt.Sprintf("https://ipnd.test:%d/healthz", tlsPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	issued := time.Since(start)

	plainDir := b.TempDir()
	plainCfg := writeTestConfig(b, plainDir, fmt.Sprintf("[log]\nlevel = \"warn\"\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = %q\n", acmeTestSecret))
	plainURL := "http://" + daemon(plainDir, plainCfg) + "/ipn/shop"
	tlsURL := fmt.Sprintf("https://ipnd.test:%d/ipn/shop", tlsPort)

	for i := 0; i < b.N; i++ {
		fmt.Printf("\ntls: first certificate from pebble (account, order, TLS-ALPN-01, finalize) %s after start\n", issued.Round(time.Millisecond))
		fmt.Printf("tls: durable ingest, HTTP/1.1, %s per server and mode, servers taking turns, 3 rounds, GOMAXPROCS=%d\n", d, runtimeProcs())
		fmt.Printf("%-8s %-22s %10s %10s %10s %7s %7s\n", "clients", "connections", "plain/s", "https/s", "https p50", "errors", "ratio")
		for _, c := range []int{1, 16} {
			for _, keep := range []bool{true, false} {
				var plain, secure loadResult
				for r := range 3 {
					prefix := fmt.Sprintf("tls%d-%d-%v-%d-", i, c, keep, r)
					pc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: !keep, MaxIdleConnsPerHost: c, DisableCompression: true}}
					sc := newClient(keep, c)
					if r%2 == 0 {
						plain = plain.add(loadWith(pc, plainURL, key, c, d, "p"+prefix))
						secure = secure.add(loadWith(sc, tlsURL, key, c, d, "s"+prefix))
					} else {
						secure = secure.add(loadWith(sc, tlsURL, key, c, d, "s"+prefix))
						plain = plain.add(loadWith(pc, plainURL, key, c, d, "p"+prefix))
					}
					pc.CloseIdleConnections()
					sc.CloseIdleConnections()
				}
				mode := "keep-alive"
				if !keep {
					mode = "new per request"
				}
				fmt.Printf("%-8d %-22s %10.0f %10.0f %10s %7d %7.2f\n", c, mode, plain.rate(), secure.rate(),
					secure.p50.Round(10*time.Microsecond), plain.errors+secure.errors, secure.rate()/plain.rate())
			}
		}
	}
}
