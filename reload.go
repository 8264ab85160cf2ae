package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"ipnd/notify"
)

// reload reads the config file and every secret file again (SIGHUP). The
// new config is validated and every part built from it before anything
// changes: if any of that fails, ipnd keeps running on the old config and
// logs one line saying why. Otherwise the gateways (secrets, sources,
// sandbox, receivers), the order rules, the admin token, the templates,
// SMTP and the shop take effect at once; requests in flight finish with
// what they started with, and so do the outbox deliveries under way (the
// worker with the new delivery settings starts once they are recorded).
// Settings only a restart changes are named in the log line when they
// differ.
func (a *app) reload(ctx context.Context) {
	old := a.cfg.Load()
	fail := func(err error) {
		a.m.Reloaded(false)
		a.log.Error("config reload refused: still running on the previous config", "error", err)
	}
	cfg, err := loadConfig(old.file, a.getenv)
	if err != nil {
		fail(err)
		return
	}
	// A term of leadership neither starts nor ends during the reload: the
	// current one gets the new settings, the next one starts with them.
	a.termMu.Lock()
	defer a.termMu.Unlock()
	t := a.term.Load()
	if err := ensureGenerated(cfg, a.log); err != nil {
		fail(err)
		return
	}
	gateways, err := buildGateways(cfg)
	if err != nil {
		fail(err)
		return
	}
	// The outbox worker runs on the store itself (a localStore), or on the
	// term's outbox while this process leads; else it is built only to
	// check the settings.
	var ob notify.Outbox
	if ls, ok := a.db.(localStore); ok {
		ob = ls
	} else if t != nil {
		ob = t.outbox
	}
	worker, err := newOutboxWorker(cfg, ob, a.m, a.log.With("component", "outbox"))
	if err != nil {
		fail(err)
		return
	}
	if err := a.setAdmin(cfg, gateways); err != nil {
		fail(err)
		return
	}
	if err := a.setFulfilment(cfg); err != nil {
		fail(err)
		return
	}
	a.m.SetGateways(gatewayNames(cfg))
	// The pipeline first: the first notification of a gateway just added
	// must find it there.
	sandbox, receivers := orderRules(cfg)
	if p := a.pipe.Load(); p != nil {
		p.Reconfigure(gateways, sandbox, receivers, cfg.Orders.RequireRegistered)
	}
	a.db.SetParkFor(time.Duration(cfg.Orders.ParkFor))
	a.rcv.SetGateways(gateways, allowIPs(cfg))
	a.db.SetEffectKinds(effectKinds(cfg))
	if deliveryChanged(old, cfg) && ob != nil {
		// The running worker takes no new item and lets the deliveries
		// under way finish and be recorded (each within its timeout; an
		// email burst stops after the message being sent); then the new
		// settings take over. Nothing is cut short, so nothing is sent
		// twice (but past drainOutbox's bound).
		a.drainOutbox(ctx, old)
		if t != nil {
			t.ws.start("outbox worker", worker.Run) // replaces the drained one
		} else {
			a.workers.start("outbox worker", worker.Run) // replaces the drained one
		}
		a.outbox.Store(worker)
	}
	a.cfg.Store(cfg)
	hash := configHash(cfg)
	a.m.Reloaded(true)
	a.m.ConfigLoaded(hash, time.Now())
	attrs := []any{"config_sha256", hash, "gateways", strings.Join(gatewayNames(cfg), ",")}
	fixed := restartOnly(old, cfg)
	if ps, ok := a.db.(*pgStore); ok && cfg.postgres() && !slices.Contains(fixed, "store.backend") && !ps.sameDSN(cfg) {
		fixed = append(fixed, "store.dsn_file (the DSN in it)")
	}
	if len(fixed) > 0 {
		attrs = append(attrs, "needs_restart", strings.Join(fixed, ","))
	}
	a.log.Info("config reloaded", attrs...)
}

// drainSlack is what drainOutbox allows beyond the longest delivery
// timeout: recording the results, a script's pipes.
const drainSlack = 10 * time.Second

// drainOutbox drains the running outbox worker (see notify.Worker.Drain)
// and logs how long that took. It waits at most the longest delivery
// of cfg (the config the deliveries started with) plus drainSlack: a
// callback or script run takes at most shop.timeout, an email up to four
// smtp.timeouts (go-mail applies it to the connect, the greeting, the
// login and the message each), or until ctx ends (shutdown): past that (a store that
// cannot record results, say) the worker is stopped the hard way by its
// replacement, and the deliveries cut short are made again, as after a
// crash; the log says so.
func (a *app) drainOutbox(ctx context.Context, cfg *Config) {
	began := time.Now()
	drained := make(chan struct{})
	w := a.outbox.Load()
	go func() { w.Drain(); close(drained) }()
	limit := max(time.Duration(cfg.Shop.Timeout), 4*time.Duration(cfg.SMTP.Timeout)) + drainSlack
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-drained:
		a.log.Info("outbox deliveries under way finished for the reload", "seconds", time.Since(began).Seconds())
	case <-t.C:
		a.log.Warn("outbox deliveries under way did not finish in time for the reload: cut short, they will be made again",
			"seconds", time.Since(began).Seconds())
	case <-ctx.Done():
	}
}

// deliveryChanged reports whether the outbox worker must be rebuilt: the
// SMTP, email or shop settings, or a file they read (templates, secrets),
// differ.
func deliveryChanged(old, cfg *Config) bool {
	if !reflect.DeepEqual(old.SMTP, cfg.SMTP) || !reflect.DeepEqual(old.Email, cfg.Email) || !reflect.DeepEqual(old.Shop, cfg.Shop) ||
		!reflect.DeepEqual([2]Duration{old.Pipeline.OutboxRetryBase, old.Pipeline.OutboxRetryCap},
			[2]Duration{cfg.Pipeline.OutboxRetryBase, cfg.Pipeline.OutboxRetryCap}) {
		return true
	}
	return deliveryFilesHash(old) != deliveryFilesHash(cfg)
}

// deliveryFilesHash hashes the files the outbox worker reads: the
// templates directory's files, the SMTP password and shop secret files.
func deliveryFilesHash(cfg *Config) string {
	h := sha256.New()
	files := []string{cfg.SMTP.PasswordFile, cfg.Shop.SecretFile}
	if d := cfg.Email.TemplatesDir; d != "" {
		if entries, err := os.ReadDir(d); err == nil {
			for _, e := range entries {
				files = append(files, filepath.Join(d, e.Name()))
			}
		}
	}
	hashFiles(h, files)
	return hex.EncodeToString(h.Sum(nil))
}

// hashFiles writes each named file's path and SHA-256 to h ("" skipped;
// an unreadable file hashes as empty).
func hashFiles(h io.Writer, paths []string) {
	for _, p := range paths {
		if p != "" {
			b, _ := os.ReadFile(p)
			fmt.Fprintf(h, "%s\x00%x\n", p, sha256.Sum256(b))
		}
	}
}

// restartOnly names the settings that differ between old and cfg but take
// effect only when ipnd restarts.
func restartOnly(old, cfg *Config) []string {
	var out []string
	for _, c := range []struct {
		key  string
		same bool
	}{
		{"server.listen", old.Server.Listen == cfg.Server.Listen},
		{"admin.listen", old.Admin.Listen == cfg.Admin.Listen},
		{"store.path", old.Store.Path == cfg.Store.Path},
		{"store.backend", old.Store.Backend == cfg.Store.Backend && old.Store.DSN == cfg.Store.DSN && old.Store.DSNFile == cfg.Store.DSNFile},
		{"server.max_body_bytes", old.Server.MaxBodyBytes == cfg.Server.MaxBodyBytes},
		{"server.read_timeout", old.Server.ReadTimeout == cfg.Server.ReadTimeout},
		{"server.write_timeout", old.Server.WriteTimeout == cfg.Server.WriteTimeout},
		{"server.rate_limit", old.Server.RateLimit == cfg.Server.RateLimit && old.Server.RateBurst == cfg.Server.RateBurst},
		{"server.trusted_proxies", slices.Equal(old.Server.TrustedProxies, cfg.Server.TrustedProxies)},
		{"server.tls_cert", old.Server.TLSCert == cfg.Server.TLSCert && old.Server.TLSKey == cfg.Server.TLSKey},
		{"server.acme_domains", slices.Equal(old.Server.AcmeDomains, cfg.Server.AcmeDomains) && old.Server.AcmeEmail == cfg.Server.AcmeEmail &&
			old.Server.AcmeDirectory == cfg.Server.AcmeDirectory && old.Server.AcmeCAFile == cfg.Server.AcmeCAFile},
		{"server.http_listen", old.Server.HTTPListen == cfg.Server.HTTPListen},
		{"log", old.Log == cfg.Log},
		{"store.raw_retention", old.Store.RawRetention == cfg.Store.RawRetention},
		{"pipeline (but outbox_retry_*)", reflect.DeepEqual(
			PipelineConfig{Workers: old.Pipeline.Workers, VerifyTimeout: old.Pipeline.VerifyTimeout, RetryBase: old.Pipeline.RetryBase,
				RetryCap: old.Pipeline.RetryCap, RetryFor: old.Pipeline.RetryFor},
			PipelineConfig{Workers: cfg.Pipeline.Workers, VerifyTimeout: cfg.Pipeline.VerifyTimeout, RetryBase: cfg.Pipeline.RetryBase,
				RetryCap: cfg.Pipeline.RetryCap, RetryFor: cfg.Pipeline.RetryFor})},
	} {
		if !c.same {
			out = append(out, c.key)
		}
	}
	return out
}

// configHash identifies the running config: the first 12 hex digits of
// the SHA-256 of the config as loaded (file and environment, secrets
// included) and the contents of every secret file it names. It reveals
// nothing of the secrets.
func configHash(cfg *Config) string {
	h := sha256.New()
	fmt.Fprintf(h, "%#v\n", *cfg)
	hashFiles(h, cfg.secretFiles())
	return hex.EncodeToString(h.Sum(nil))[:12]
}
