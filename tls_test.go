package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tlsTestGateway is the one gateway a config needs.
const tlsTestGateway = "[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \"" + acmeTestSecret + "\"\n"

// selfSigned makes a certificate for ipnd.test and 127.0.0.1, PEM
// encoded, and its key.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tpl := &x509.Certificate{SerialNumber: serial.SetBit(serial, 63, 1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		DNSNames: []string{"ipnd.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// writeFileAtomic replaces path by rename, as certbot does.
func writeFileAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// presented is the CommonName of the certificate a new TLS connection to
// addr gets (no verification: the test compares names).
func presented(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "ipnd.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestCertificateFilesReloaded: certificate files replaced on disk are
// presented by the next handshake, while a connection opened before keeps
// working; a broken pair is refused and the previous certificate kept.
func TestCertificateFilesReloaded(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c1, k1 := selfSigned(t, "first")
	writeFileAtomic(t, certFile, c1)
	writeFileAtomic(t, keyFile, k1)
	cfg := writeTestConfig(t, dir, "[log]\nformat = \"json\"\n"+tlsTestGateway)
	body, _ := os.ReadFile(cfg)
	body = []byte(strings.Replace(string(body), "[server]\n", fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile), 1))
	os.WriteFile(cfg, body, 0o600)
	d := runIpnd(t, dir, cfg)
	addr := d.addr("public")
	if got := presented(t, addr); got != "first" {
		t.Fatalf("presented %q, want first", got)
	}

	// A connection opened now, kept across the change.
	old, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldReader := bufio.NewReader(old)
	get := func() int {
		fmt.Fprintf(old, "GET /healthz HTTP/1.1\r\nHost: ipnd.test\r\n\r\n")
		resp, err := http.ReadResponse(oldReader, nil)
		if err != nil {
			t.Fatalf("request on the connection opened before the change: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get() != 200 {
		t.Fatal("healthz on the old connection")
	}

	c2, k2 := selfSigned(t, "second")
	writeFileAtomic(t, keyFile, k2)
	writeFileAtomic(t, certFile, c2)
	waitFor(t, "the new certificate", 10*time.Second, func() bool { return presented(t, addr) == "second" })
	if get() != 200 {
		t.Error("the connection opened before the change was dropped")
	}
	if n := d.metric(`ipnd_tls_certificate_updates_total{result="ok",source="files"}`); n != 2 {
		t.Errorf("certificate loads counted: %v, want 2", n)
	}

	// A key that does not match: refused, logged, counted; "second" stays.
	_, k3 := selfSigned(t, "third")
	writeFileAtomic(t, keyFile, k3)
	waitFor(t, "the failed reload counted", 10*time.Second, func() bool {
		presented(t, addr) // a handshake looks at the files
		return d.metric(`ipnd_tls_certificate_updates_total{result="error",source="files"}`) >= 1
	})
	if got := presented(t, addr); got != "second" {
		t.Errorf("after a broken pair: presented %q, want the previous certificate", got)
	}
	if !strings.Contains(d.log(), "certificate files do not load") {
		t.Errorf("no log line for the broken pair:\n%s", d.log())
	}
}

// TestCertificateFilesSIGHUP: SIGHUP re-reads the files even when nothing
// a poll looks at changed (same inode, size and modification time).
func TestCertificateFilesSIGHUP(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c1, k1 := selfSigned(t, "first")
	var c2, k2 []byte
	for c2 == nil || len(c2) != len(c1) || len(k2) != len(k1) { // ECDSA signatures vary in length
		c2, k2 = selfSigned(t, "later")
	}
	os.WriteFile(certFile, c1, 0o600)
	os.WriteFile(keyFile, k1, 0o600)
	cfg := writeTestConfig(t, dir, tlsTestGateway)
	body, _ := os.ReadFile(cfg)
	body = []byte(strings.Replace(string(body), "[server]\n", fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile), 1))
	os.WriteFile(cfg, body, 0o600)
	cmd, _ := startChild(t, dir, cfg)
	b, _ := os.ReadFile(filepath.Join(dir, "public.addr"))
	addr := strings.TrimSpace(string(b))
	if got := presented(t, addr); got != "first" {
		t.Fatalf("presented %q, want first", got)
	}
	// Overwrite in place and put the modification times back.
	stC, _ := os.Stat(certFile)
	stK, _ := os.Stat(keyFile)
	for _, f := range []struct {
		path string
		data []byte
		st   os.FileInfo
	}{{certFile, c2, stC}, {keyFile, k2, stK}} {
		fh, err := os.OpenFile(f.path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteAt(f.data, 0)
		fh.Close()
		os.Chtimes(f.path, f.st.ModTime(), f.st.ModTime())
	}
	if got := presented(t, addr); got != "first" {
		t.Fatalf("before SIGHUP: presented %q, want first (the change should be invisible to the poll)", got)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the certificate re-read on SIGHUP", 10*time.Second, func() bool { return presented(t, addr) == "later" })
}

// TestTLSConfigRefusesInconsistentSettings: each inconsistent TLS setting
// is refused by ipnd check (as by serve) with the key named.
func TestTLSConfigRefusesInconsistentSettings(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"[server]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\nacme_domains = [\"shop.example.com\"]",
			`server.acme_domains = ["shop.example.com"]: give tls_cert/tls_key or acme_domains, not both`},
		{"[server]\nacme_email = \"ops@example.com\"", `server.acme_email = "ops@example.com": ACME needs server.acme_domains`},
		{"[server]\nacme_ca_file = \"/ca.pem\"", `server.acme_ca_file = "/ca.pem": ACME needs server.acme_domains`},
		{"[server]\nacme_domains = [\"localhost\"]", `server.acme_domains = "localhost": must be a lowercase DNS name with at least one dot`},
		{"[server]\nacme_domains = [\"*.example.com\"]", `server.acme_domains = "*.example.com"`},
		{"[server]\nacme_domains = [\"shop.example.com\"]\nacme_directory = \"http://ca.example/dir\"", `server.acme_directory = "http://ca.example/dir": must be the https URL`},
		{"[server]\nlisten = \":443\"\nacme_domains = [\"shop.example.com\"]\nhttp_listen = \"0.0.0.0:443\"", `server.http_listen = "0.0.0.0:443": must differ from server.listen`},
		{"[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\nhttp_listen = \"127.0.0.1:8443\"", `server.http_listen = "127.0.0.1:8443": must differ`},
		{"[server]\nhttp_listen = \":80\"", `server.http_listen = ":80": the plain HTTP listener redirects to https: it needs tls_cert/tls_key or acme_domains`},
		{"[server]\ntls_cert = \"/c.pem\"", "tls_cert and tls_key go together"},
		{"[admin]\nlisten = \"0.0.0.0:8081\"", `admin.listen = "0.0.0.0:8081": not a loopback address, so the admin API (token, backups) needs TLS: set server.tls_cert and server.tls_key, or server.acme_domains`},
		{"[admin]\nlisten = \":8081\"", `admin.listen = ":8081": not a loopback address`},
	} {
		_, err := runCmd(t, envFunc(), "check", "-config", writeConfig(t, tc.body+"\n"+tlsTestGateway))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: err = %v, want it to contain %q", tc.body, err, tc.want)
		}
	}
}

// TestCheckShowsTLSMode: ipnd check says off, files or ACME with the
// domains, and the defaults ACME brings (http_listen :80, Let's Encrypt).
func TestCheckShowsTLSMode(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c, k := selfSigned(t, "x")
	os.WriteFile(certFile, c, 0o600)
	os.WriteFile(keyFile, k, 0o600)
	for _, tc := range []struct{ body, want string }{
		{"[server]\nlisten = \"127.0.0.1:8080\"", "# TLS: off (plain HTTP on 127.0.0.1:8080"},
		{fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n[admin]\nlisten = \"10.0.0.5:8081\"", certFile, keyFile),
			"# TLS: certificate files " + certFile + " and " + keyFile},
		{"[server]\nlisten = \":443\"\nacme_domains = [\"shop.example.com\", \"pay.example.com\"]",
			"# TLS: ACME for shop.example.com, pay.example.com from https://acme-v02.api.letsencrypt.org/directory; TLS-ALPN-01 on :443, HTTP-01 on :80"},
	} {
		out, err := runCmd(t, envFunc(), "check", "-config", writeConfig(t, tc.body+"\n"+tlsTestGateway+"[store]\npath = \""+filepath.Join(dir, "ipnd.db")+"\"\n"))
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("config %q: err %v, output:\n%s\nwant it to contain %q", tc.body, err, out, tc.want)
		}
	}
	// A pair that does not load fails check, as it would fail serve.
	os.WriteFile(keyFile, []byte("not a key"), 0o600)
	_, err := runCmd(t, envFunc(), "check", "-config", writeConfig(t, fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n%s", certFile, keyFile, tlsTestGateway)))
	if err == nil || !strings.Contains(err.Error(), "server.tls_cert") {
		t.Errorf("check with a broken key: %v, want an error naming server.tls_cert", err)
	}
}

// TestAdminOffLoopbackSpeaksTLS: an admin listener that is not on
// loopback uses the public listener's certificate.
func TestAdminOffLoopbackSpeaksTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c, k := selfSigned(t, "admin")
	os.WriteFile(certFile, c, 0o600)
	os.WriteFile(keyFile, k, 0o600)
	cfg := writeTestConfig(t, dir, tlsTestGateway)
	body, _ := os.ReadFile(cfg)
	s := strings.Replace(string(body), "[server]\n", fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile), 1)
	s = strings.Replace(s, "[admin]\nlisten = \"127.0.0.1:0\"", "[admin]\nlisten = \"0.0.0.0:0\"", 1)
	os.WriteFile(cfg, []byte(s), 0o600)
	d := runIpnd(t, dir, cfg)
	_, port, _ := net.SplitHostPort(d.addr("admin"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", "https://127.0.0.1:"+port+"/healthz", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("admin over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("admin over TLS: %d %v", resp.StatusCode, resp.TLS)
	}
	// TLS 1.1 is refused.
	if _, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("a TLS 1.1 handshake succeeded, want TLS 1.2 minimum")
	}
}
