package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestCallbacksKeepConnections: 200 callbacks go over at most
// shop.connections keep-alive connections to the shop (net/http's default
// of 2 idle connections per host made 4 callback slots open and close a
// connection for most callbacks).
func TestCallbacksKeepConnections(t *testing.T) {
	var opened, answered atomic.Int64
	shop := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answered.Add(1)
	}))
	shop.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	shop.Start()
	defer shop.Close()
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, fmt.Sprintf("[log]\nlevel = \"warn\"\n[shop]\nurl = %q\nsecret = %q\nconnections = 4\n"+
		"[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = %q\n", shop.URL, shopSecret, secret))
	d := startDaemon(t, dir, cfg)
	const n = 200
	postAll(t, signedPoster(t, func() string { return d.addr("public") }, secret), "C", n, nil)
	waitFor(t, "every callback answered", 60*time.Second, func() bool { return answered.Load() >= n })
	if c := opened.Load(); c > 4 {
		t.Errorf("%d callbacks opened %d connections to the shop, want at most 4 (shop.connections)", n, c)
	}
}
