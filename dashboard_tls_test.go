package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDashboardOverTLS: with TLS, the dashboard's session cookie is
// Secure and the overview shows the certificate's expiry.
func TestDashboardOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c, k := selfSigned(t, "dash")
	writeFileAtomic(t, certFile, c)
	writeFileAtomic(t, keyFile, k)
	cfg := writeTestConfig(t, dir, "[log]\nformat = \"json\"\n"+tlsTestGateway)
	body, _ := os.ReadFile(cfg)
	body = []byte(strings.Replace(string(body), "[server]\n", fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile), 1))
	// Off loopback, the admin listener gets TLS (the public certificate).
	body = []byte(strings.Replace(string(body), "[admin]\nlisten = \"127.0.0.1:0\"", "[admin]\nlisten = \"0.0.0.0:0\"", 1))
	os.WriteFile(cfg, body, 0o600)
	runIpnd(t, dir, cfg)
	addr, _ := os.ReadFile(filepath.Join(dir, "admin.addr"))
	_, port, _ := net.SplitHostPort(strings.TrimSpace(string(addr)))
	base := "https://127.0.0.1:" + port
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm(base+"/login", url.Values{"token": {"t"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var secure bool
	for _, ck := range resp.Cookies() {
		if ck.Name == "ipnd_session" {
			secure = ck.Secure && ck.HttpOnly && ck.SameSite == http.SameSiteStrictMode
		}
	}
	if resp.StatusCode != http.StatusSeeOther || !secure {
		t.Fatalf("sign in over TLS: %d, cookies %v; want 303 and a Secure, HttpOnly, SameSite=Strict session cookie", resp.StatusCode, resp.Cookies())
	}
	resp, err = client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "TLS certificate expires") {
		t.Errorf("overview over TLS: %d, want the certificate's expiry\n%s", resp.StatusCode, page)
	}
}
