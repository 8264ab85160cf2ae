package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// This file is HTTPS: certificate files re-read when they change, or
// certificates obtained and renewed with ACME (golang.org/x/crypto's
// autocert), the plain-HTTP listener beside them, and the TLS settings of
// both listeners.

// letsEncryptDirectory is the default server.acme_directory; the README
// names the staging one for trials.
const letsEncryptDirectory = autocert.DefaultACMEDirectory

// acmeRenewBefore is how long before expiry an ACME certificate is renewed
// (autocert's RenewBefore). Let's Encrypt certificates live 90 days, so
// renewal starts at 60 and a failing renewal has a month of retries before
// the certificate runs out; deploy/alerts.yml warns at 21 days left. Tests
// shorten it.
var acmeRenewBefore = 30 * 24 * time.Hour

// certCheckEvery is how often certificate files are looked at, and how
// often the ACME certificates' expiry is checked, when nothing goes wrong.
const certCheckEvery = 30 * time.Second

// certObserver receives what the certificate holders do (metrics.Metrics).
type certObserver interface {
	// CertUpdate counts a certificate loaded or obtained (result "ok") or
	// a failure to load, obtain or renew one ("error"); source is "files"
	// or "acme".
	CertUpdate(source, result string)
	// CertExpiry records the earliest expiry of the certificates served.
	CertExpiry(time.Time)
}

// tlsMode names how the public listener speaks: "off", "files" or "acme".
func (c *Config) tlsMode() string {
	switch {
	case len(c.Server.AcmeDomains) > 0:
		return "acme"
	case c.Server.TLSCert != "":
		return "files"
	}
	return "off"
}

// adminNeedsTLS reports whether the admin listener is reachable from other
// hosts (anything but loopback), where it must speak TLS.
func (c *Config) adminNeedsTLS() bool { return !isLoopbackListen(c.Admin.Listen) }

// tlsSummary is the line `ipnd check` prints about TLS.
func (c *Config) tlsSummary() string {
	s := c.Server
	var b strings.Builder
	switch c.tlsMode() {
	case "off":
		fmt.Fprintf(&b, "# TLS: off (plain HTTP on %s; put a TLS proxy in front, see README \"Put it on the internet\")", s.Listen)
	case "files":
		fmt.Fprintf(&b, "# TLS: certificate files %s and %s on %s (re-read when they change and on SIGHUP)", s.TLSCert, s.TLSKey, s.Listen)
	case "acme":
		fmt.Fprintf(&b, "# TLS: ACME for %s from %s; TLS-ALPN-01 on %s, HTTP-01 on %s; certificates in %s",
			strings.Join(s.AcmeDomains, ", "), s.AcmeDirectory, s.Listen, s.HTTPListen, filepath.Join(c.dataDir(), "acme"))
	}
	if s.HTTPListen != "" && c.tlsMode() != "off" {
		fmt.Fprintf(&b, "\n# plain HTTP on %s: redirects GET/HEAD to https, refuses POST /ipn/ with 403", s.HTTPListen)
	}
	if c.adminNeedsTLS() {
		fmt.Fprintf(&b, "\n# warning: admin listener %s is not on loopback: it speaks TLS with the same certificate; keep the admin token secret and firewall the port", c.Admin.Listen)
	}
	return b.String() + "\n"
}

// checkTLSFiles loads what serve will load at start: the certificate
// pair, or the ACME CA file.
func (c *Config) checkTLSFiles() error {
	switch c.tlsMode() {
	case "files":
		if _, err := tls.LoadX509KeyPair(c.Server.TLSCert, c.Server.TLSKey); err != nil {
			return fmt.Errorf("config: server.tls_cert = %q, tls_key = %q: %w", c.Server.TLSCert, c.Server.TLSKey, err)
		}
	case "acme":
		if _, err := acmeRoots(c.Server.AcmeCAFile); err != nil {
			return err
		}
	}
	return nil
}

var domainName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validateTLS checks the TLS keys of [server] and that a non-loopback
// admin listener has TLS.
func (c *Config) validateTLS() error {
	s := c.Server
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return configError("server.tls_key", s.TLSKey, "tls_cert and tls_key go together")
	}
	acme := len(s.AcmeDomains) > 0
	if acme && s.TLSCert != "" {
		return configError("server.acme_domains", s.AcmeDomains, "give tls_cert/tls_key or acme_domains, not both")
	}
	if !acme {
		for _, kv := range [][2]string{{"acme_email", s.AcmeEmail}, {"acme_directory", s.AcmeDirectory}, {"acme_ca_file", s.AcmeCAFile}} {
			if kv[1] != "" {
				return configError("server."+kv[0], kv[1], "ACME needs server.acme_domains (the names to get certificates for)")
			}
		}
	}
	for _, d := range s.AcmeDomains {
		if len(d) > 253 || !domainName.MatchString(d) {
			return configError("server.acme_domains", d, "must be a lowercase DNS name with at least one dot (no IP address, port or wildcard), whose A/AAAA record points at this host")
		}
	}
	if acme {
		if u, err := url.Parse(s.AcmeDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
			return configError("server.acme_directory", s.AcmeDirectory, "must be the https URL of an ACME directory")
		}
		if s.AcmeEmail != "" && !strings.Contains(s.AcmeEmail, "@") {
			return configError("server.acme_email", s.AcmeEmail, "must be an email address (the CA writes there about expiring certificates)")
		}
	}
	if s.HTTPListen != "" {
		if err := checkListen("server.http_listen", s.HTTPListen); err != nil {
			return err
		}
		if c.tlsMode() == "off" {
			return configError("server.http_listen", s.HTTPListen, "the plain HTTP listener redirects to https: it needs tls_cert/tls_key or acme_domains")
		}
		if sameListen(s.Listen, s.HTTPListen) {
			return configError("server.http_listen", s.HTTPListen, "must differ from server.listen (the HTTPS listener)")
		}
	}
	if c.adminNeedsTLS() && c.tlsMode() == "off" {
		return configError("admin.listen", c.Admin.Listen, "not a loopback address, so the admin API (token, backups) needs TLS: "+
			"set server.tls_cert and server.tls_key, or server.acme_domains; or listen on 127.0.0.1")
	}
	return nil
}

// isLoopbackListen reports whether host:port only accepts connections
// from this host. An empty host (all interfaces) and names other than
// localhost are not loopback.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// sameListen reports whether two listen addresses would take the same
// port: same port (not 0) and the same host, or one of them on all
// interfaces.
func sameListen(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	any := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || any(ha) || any(hb)
}

// baseTLSConfig is what every TLS listener of ipnd uses: TLS 1.2 or newer,
// Go's default (secure) cipher suites and curves, HTTP/2 and HTTP/1.1.
func baseTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// fileCert serves the certificate of server.tls_cert/tls_key and re-reads
// the files when they change (certbot renewals): checked at most once a
// second on a handshake, every 30 s by Run, and on Reload. A connection
// keeps the certificate it was opened with; the next handshake gets the
// new one. A pair that does not load (a half-written file, a key that does
// not match) is logged and counted, and the previous certificate is kept.
type fileCert struct {
	certPath, keyPath string
	log               *slog.Logger
	obs               certObserver

	cert      atomic.Pointer[tls.Certificate]
	lastCheck atomic.Int64 // unix nanoseconds of the last look at the files

	mu     sync.Mutex // serializes loads
	loaded [2]os.FileInfo
	failed [2]os.FileInfo // the versions that did not load (not retried)
}

// newFileCert loads the pair; an error means serve must not start.
func newFileCert(certPath, keyPath string, log *slog.Logger, obs certObserver) (*fileCert, error) {
	f := &fileCert{certPath: certPath, keyPath: keyPath, log: log, obs: obs}
	if err := f.load(true); err != nil {
		return nil, err
	}
	return f, nil
}

// GetCertificate is the tls.Config hook: the current certificate, after a
// look at the files if the last one is more than a second old.
func (f *fileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	last := f.lastCheck.Load()
	if now-last >= int64(time.Second) && f.lastCheck.CompareAndSwap(last, now) {
		f.load(false)
	}
	return f.cert.Load(), nil
}

// Reload re-reads both files now, whether or not they look changed. On
// error the previous certificate stays in use.
func (f *fileCert) Reload() error { return f.load(true) }

// Run looks at the files every 30 s until ctx is done.
func (f *fileCert) Run(ctx context.Context) {
	t := time.NewTicker(certCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.load(false)
		}
	}
}

// load reads the pair if force, or if either file differs from the
// version loaded last (and from the one that failed last).
func (f *fileCert) load(force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastCheck.Store(time.Now().UnixNano())
	var st [2]os.FileInfo
	for i, p := range []string{f.certPath, f.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			if force || f.cert.Load() == nil {
				return f.fail(fmt.Errorf("config: server.tls_%s = %q: %w", []string{"cert", "key"}[i], p, err))
			}
			return nil // mid-rename: look again later
		}
		st[i] = fi
	}
	if !force && sameFiles(st, f.loaded) || !force && sameFiles(st, f.failed) {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
	if err != nil {
		f.failed = st
		return f.fail(fmt.Errorf("config: server.tls_cert = %q, tls_key = %q: %w", f.certPath, f.keyPath, err))
	}
	f.loaded, f.failed = st, [2]os.FileInfo{}
	old := f.cert.Swap(&pair)
	f.obs.CertExpiry(pair.Leaf.NotAfter)
	f.obs.CertUpdate("files", "ok")
	if old != nil && !bytes.Equal(old.Certificate[0], pair.Certificate[0]) {
		f.log.Info("certificate files re-read: new certificate in use", "cert", f.certPath,
			"subject", pair.Leaf.Subject.CommonName, "not_after", pair.Leaf.NotAfter.UTC())
	}
	return nil
}

func (f *fileCert) fail(err error) error {
	f.obs.CertUpdate("files", "error")
	if f.cert.Load() != nil {
		f.log.Error("certificate files do not load; the previous certificate stays in use", "error", err)
	}
	return err
}

func sameFiles(a, b [2]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

// acmeCert gets and renews certificates for server.acme_domains with
// autocert. Certificates and the account key live in <data dir>/acme
// (0700, files 0600) and are reused across restarts. autocert issues on
// the first handshake for a name and renews acmeRenewBefore before
// expiry, retrying a failed renewal every 30 to 60 minutes. Run obtains
// the certificates at start (with exponential backoff while that fails),
// records their expiry and reports a renewal that is overdue; every
// certificate stored is logged and counted, and so are the CA's refusals
// (acmeTransport).
type acmeCert struct {
	m           *autocert.Manager
	domains     []string
	renewBefore time.Duration
	log         *slog.Logger
	obs         certObserver

	mu     sync.Mutex
	expiry map[string]time.Time // domain -> NotAfter of the certificate in use
}

// newACMECert sets up the autocert manager; an error (the CA file) means
// serve must not start. Nothing is requested before Run or a handshake.
func newACMECert(cfg *Config, log *slog.Logger, obs certObserver) (*acmeCert, error) {
	s := cfg.Server
	roots, err := acmeRoots(s.AcmeCAFile)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.dataDir(), "acme")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme cache: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme cache: %w", err)
	}
	a := &acmeCert{domains: s.AcmeDomains, renewBefore: acmeRenewBefore, log: log, obs: obs, expiry: map[string]time.Time{}}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	a.m = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       observedCache{DirCache: autocert.DirCache(dir), onCert: a.stored},
		HostPolicy:  a.allowed,
		RenewBefore: a.renewBefore,
		Email:       s.AcmeEmail,
		Client: &acme.Client{DirectoryURL: s.AcmeDirectory, UserAgent: "ipnd/" + version,
			HTTPClient: &http.Client{Transport: acmeTransport{base: transport, log: log}}},
	}
	return a, nil
}

// acmeRoots is the system's roots plus those of server.acme_ca_file.
func acmeRoots(caFile string) (*x509.CertPool, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caFile == "" {
		return roots, nil
	}
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("config: server.acme_ca_file = %q: %w", caFile, err)
	}
	if !roots.AppendCertsFromPEM(pemData) {
		return nil, configError("server.acme_ca_file", caFile, "holds no PEM certificate")
	}
	return roots, nil
}

// allowed is the host policy: only the configured names (a port, as in an
// HTTP-01 request's Host, is ignored).
func (a *acmeCert) allowed(_ context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if slices.Contains(a.domains, strings.TrimSuffix(strings.ToLower(host), ".")) {
		return nil
	}
	return fmt.Errorf("acme: %q is not in server.acme_domains", host)
}

// GetCertificate is the tls.Config hook. A handshake without a server
// name (a client that dialled the IP address) gets the first domain's
// certificate.
func (a *acmeCert) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		h := *hello
		h.ServerName = a.domains[0]
		hello = &h
	}
	return a.m.GetCertificate(hello)
}

// HTTPHandler answers HTTP-01 challenges and passes the rest to next.
func (a *acmeCert) HTTPHandler(next http.Handler) http.Handler { return a.m.HTTPHandler(next) }

// stored is called when autocert has put a certificate into the cache:
// a first certificate or a renewal.
func (a *acmeCert) stored(name string, leaf *x509.Certificate) {
	domain := strings.TrimSuffix(name, "+rsa")
	a.mu.Lock()
	prev, renewed := a.expiry[domain]
	a.expiry[domain] = leaf.NotAfter
	a.mu.Unlock()
	a.obs.CertUpdate("acme", "ok")
	a.publishExpiry()
	if renewed {
		a.log.Info("acme: certificate renewed", "domain", domain, "rsa", name != domain, "not_after", leaf.NotAfter.UTC(),
			"previous_not_after", prev.UTC())
		return
	}
	a.log.Info("acme: certificate obtained", "domain", domain, "rsa", name != domain, "not_after", leaf.NotAfter.UTC())
}

func (a *acmeCert) publishExpiry() {
	a.mu.Lock()
	defer a.mu.Unlock()
	var first time.Time
	for _, t := range a.expiry {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	a.obs.CertExpiry(first)
}

// Run obtains (or loads from the cache) each domain's certificate, then
// checks them every 30 s, until ctx is done. A check that fails (no
// certificate could be obtained, or a renewal is overdue) is logged and counted, and retried after 1 minute, doubling
// to an hour.
func (a *acmeCert) Run(ctx context.Context) {
	const base, maxWait = time.Minute, time.Hour
	backoff := base
	for {
		wait := certCheckEvery
		if err := a.check(ctx); err != nil {
			a.obs.CertUpdate("acme", "error")
			a.log.Error("acme: certificate not obtained or not renewed; retrying", "error", err, "retry_in", backoff)
			wait, backoff = backoff, min(2*backoff, maxWait)
		} else {
			backoff = base
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// check asks autocert for each domain's certificate (from memory, the
// cache, or the CA) and records its expiry.
func (a *acmeCert) check(ctx context.Context) error {
	var errs []error
	for _, d := range a.domains {
		leaf, err := a.current(ctx, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
			continue
		}
		a.mu.Lock()
		_, known := a.expiry[d]
		a.expiry[d] = leaf.NotAfter
		a.mu.Unlock()
		if !known {
			a.log.Info("acme: certificate in use", "domain", d, "not_after", leaf.NotAfter.UTC())
		}
		// autocert renews within min(RenewBefore/10, 1h) after the
		// renewal time; twice that, and the renewal has failed.
		slack := 2 * min(a.renewBefore/10, time.Hour)
		if left := time.Until(leaf.NotAfter); left < a.renewBefore-slack {
			errs = append(errs, fmt.Errorf("%s: renewal overdue: certificate expires %s (in %s)", d,
				leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Minute)))
		}
	}
	a.publishExpiry()
	return errors.Join(errs...)
}

// current is the ECDSA certificate autocert serves for domain. autocert
// bounds an issuance to 5 minutes itself; a stop does not wait for it.
func (a *acmeCert) current(ctx context.Context, domain string) (*x509.Certificate, error) {
	type result struct {
		c   *tls.Certificate
		err error
	}
	done := make(chan result, 1)
	go func() {
		// A hello that supports ECDSA, as every current client does: the
		// certificate the gateways will get.
		c, err := a.m.GetCertificate(&tls.ClientHelloInfo{ServerName: domain,
			CipherSuites:     []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:  []tls.CurveID{tls.CurveP256}})
		done <- result{c, err}
	}()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		if r.c.Leaf != nil {
			return r.c.Leaf, nil
		}
		return x509.ParseCertificate(r.c.Certificate[0])
	}
}

// observedCache is autocert's directory cache that reports each
// certificate written (not the account key, nor challenge tokens).
type observedCache struct {
	autocert.DirCache
	onCert func(name string, leaf *x509.Certificate)
}

// Put writes the entry, then reports it when it holds a certificate.
func (c observedCache) Put(ctx context.Context, name string, data []byte) error {
	if err := c.DirCache.Put(ctx, name, data); err != nil {
		return err
	}
	if name == "acme_account+key" || strings.Contains(strings.TrimSuffix(name, "+rsa"), "+") {
		return nil
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil
		}
		if b.Type == "CERTIFICATE" {
			if leaf, err := x509.ParseCertificate(b.Bytes); err == nil {
				c.onCert(name, leaf)
			}
			return nil
		}
	}
}

// acmeTransport logs the ACME server's refusals (problem documents) and
// failed requests, so that a failing renewal says why. Bad-nonce answers,
// which the client retries itself, are not logged.
type acmeTransport struct {
	base http.RoundTripper
	log  *slog.Logger
}

// RoundTrip forwards req and logs a refusal; the response is unchanged.
func (t acmeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.log.Warn("acme: request failed", "host", req.URL.Host, "path", req.URL.Path, "error", err)
		return nil, err
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); resp.StatusCode < 400 || ct != "application/problem+json" {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, nil
	}
	var p struct{ Type, Detail string }
	json.Unmarshal(body, &p)
	if !strings.HasSuffix(p.Type, ":badNonce") {
		t.log.Warn("acme: the CA refused a request", "status", resp.StatusCode, "type", p.Type, "detail", p.Detail, "path", req.URL.Path)
	}
	return resp, nil
}

// plainHTTPHandler is the http_listen handler: ACME HTTP-01 challenges
// (when acme is set), /healthz, GET and HEAD redirected to https, and 403
// for everything else, so that a gateway configured with an http:// URL
// fails visibly in its dashboard (and retries once the URL is fixed)
// instead of sending notifications in clear text.
func plainHTTPHandler(httpsPort string, acme *acmeCert) http.Handler {
	var domains []string
	if acme != nil {
		domains = acme.domains
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "ok\n")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "https only: use the https:// URL for this endpoint\n")
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if len(domains) > 0 && !slices.Contains(domains, strings.ToLower(host)) {
			host = domains[0] // redirect only to names this server has a certificate for
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if httpsPort != "443" {
			host += ":" + httpsPort
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
	if acme != nil {
		return acme.HTTPHandler(h)
	}
	return h
}

// tlsService is the TLS side of serve: the certificate holder, the
// plain-HTTP listener, and their goroutines.
type tlsService struct {
	cfg   *Config
	log   *slog.Logger
	files *fileCert
	acme  *acmeCert

	plain   *http.Server
	plainLn net.Listener
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped sync.Once
}

// newTLSService loads the certificate files or sets up ACME; with TLS off
// it returns a service that does nothing. An error means serve must not
// start.
func newTLSService(cfg *Config, log *slog.Logger, obs certObserver) (*tlsService, error) {
	t := &tlsService{cfg: cfg, log: log}
	var err error
	switch cfg.tlsMode() {
	case "files":
		t.files, err = newFileCert(cfg.Server.TLSCert, cfg.Server.TLSKey, log, obs)
	case "acme":
		t.acme, err = newACMECert(cfg, log, obs)
	}
	return t, err
}

func (t *tlsService) getCertificate() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	switch {
	case t.files != nil:
		return t.files.GetCertificate
	case t.acme != nil:
		return t.acme.GetCertificate
	}
	return nil
}

// configure sets the TLS config of the public server, and of the admin
// server when it is not on loopback (validate refused that without TLS).
// It reports whether each then speaks TLS.
func (t *tlsService) configure(pub, adm *http.Server) (pubTLS, admTLS bool) {
	get := t.getCertificate()
	if get == nil {
		return false, false
	}
	pub.TLSConfig = baseTLSConfig(get)
	if t.acme != nil {
		pub.TLSConfig.NextProtos = append(pub.TLSConfig.NextProtos, acme.ALPNProto) // TLS-ALPN-01
	}
	if t.cfg.adminNeedsTLS() {
		adm.TLSConfig = baseTLSConfig(get)
	}
	return true, adm.TLSConfig != nil
}

// listen opens server.http_listen, if set (synchronously, so that a port
// in use fails the start).
func (t *tlsService) listen() error {
	if t.cfg.Server.HTTPListen == "" {
		return nil
	}
	ln, err := listenTCP(t.cfg.Server.HTTPListen)
	if err != nil {
		return fmt.Errorf("server.http_listen: %w", err)
	}
	t.plainLn = ln
	return writeAddrFile(t.cfg, "http", ln.Addr().String())
}

// start serves the plain listener and runs the certificate watchers
// until stop. publicAddr is the bound
// public listener, whose port the redirects name.
func (t *tlsService) start(publicAddr string, errorLog *log.Logger, errc chan<- error) {
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	if t.plainLn != nil {
		_, port, _ := net.SplitHostPort(publicAddr)
		t.plain = &http.Server{
			Handler:           plainHTTPHandler(port, t.acme),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          errorLog,
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			if err := t.plain.Serve(t.plainLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server.http_listen: %w", err)
			}
		}()
	}
	switch {
	case t.files != nil:
		t.wg.Add(1)
		go func() { defer t.wg.Done(); t.files.Run(ctx) }()
	case t.acme != nil:
		t.wg.Add(1)
		go func() { defer t.wg.Done(); t.acme.Run(ctx) }()
	}
}

// reload re-reads the certificate files (SIGHUP; serve's loop calls it).
// A pair that does not load is logged and counted, and the previous
// certificate stays in use.
func (t *tlsService) reload() {
	if t.files == nil {
		return
	}
	if err := t.files.Reload(); err == nil {
		t.log.Info("SIGHUP: certificate files re-read")
	}
}

// stop shuts the plain listener down (bounded) and stops the watchers.
// Calls after the first do nothing.
func (t *tlsService) stop() { t.stopped.Do(t.doStop) }

func (t *tlsService) doStop() {
	if t.plain != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := t.plain.Shutdown(sctx); err != nil {
			t.plain.Close()
		}
		cancel()
	} else if t.plainLn != nil {
		t.plainLn.Close()
	}
	if t.cancel != nil {
		t.cancel()
	}
	t.wg.Wait()
	os.Remove(addrFile(t.cfg, "http"))
}
