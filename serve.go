package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/metrics"
	"ipnd/notify"
	"ipnd/store"
)

func cmdServe(ctx context.Context, args []string, getenv func(string) string, _, stderr io.Writer) error {
	fs, path := commandFlags("serve", getenv, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, getenv)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, newLogger(cfg.Log, stderr))
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	text := c.Format == "text"
	if c.Format == "auto" {
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				text = true
			}
		}
	}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ensureGenerated creates the secret files that the embedded defaults
// point at (the test gateway's secret, the admin token) when they do not
// exist yet: random, 0600, in the data directory.
func ensureGenerated(cfg *Config, log *slog.Logger) error {
	dir := cfg.dataDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	gen := map[string]func() string{}
	if cfg.Admin.Token == "" && filepath.Dir(cfg.Admin.TokenFile) == dir {
		gen[cfg.Admin.TokenFile] = func() string { return hex.EncodeToString(randomBytes(32)) }
	}
	for _, g := range cfg.Gateways {
		if cfg.generatedSecret(g) {
			gen[g.SecretFile] = func() string { return "whsec_" + base64.StdEncoding.EncodeToString(randomBytes(32)) }
		}
	}
	for path, make := range gen {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("generate %s: %w", path, err)
		}
		_, err = f.WriteString(make() + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("generate %s: %w", path, err)
		}
		log.Info("generated secret file", "path", path)
	}
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// buildGateways turns the [[gateway]] tables into adapters.
func buildGateways(cfg *Config) ([]ipn.Gateway, error) {
	var out []ipn.Gateway
	for i, g := range cfg.Gateways {
		key := fmt.Sprintf("gateway[%d]", i)
		secrets, err := gatewaySecrets(key, g)
		if err != nil {
			return nil, err
		}
		gw, err := ipn.NewGateway(gatewayOptions(g, secrets))
		if err != nil {
			return nil, fmt.Errorf("config: %s (%q): %w", key, g.Name, err)
		}
		out = append(out, gw)
	}
	return out, nil
}

// gatewayOptions copies a [[gateway]] table into the adapter's options.
func gatewayOptions(g GatewayConfig, secrets []string) ipn.GatewayConfig {
	f := g.Fields
	return ipn.GatewayConfig{Name: g.Name, Kind: g.Kind, Secrets: secrets,
		Tolerance: time.Duration(g.Tolerance), Sandbox: g.Sandbox, VerifyURL: g.VerifyURL, Receivers: g.Receivers,
		MerchantID: g.MerchantID, URL: g.URL,
		HMAC: ipn.HMACOptions{Header: g.Header, Parser: g.Parser, Prefix: g.Prefix, PairSeparator: g.PairSeparator,
			SignatureKey: g.SignatureKey, TimestampKey: g.TimestampKey, Algorithm: g.Algorithm, Encoding: g.Encoding,
			KeyFormat: g.KeyFormat, KeyPrefix: g.KeyPrefix, SignedContent: g.SignedContent, Timestamp: g.Timestamp,
			ID: g.ID, DedupKey: g.DedupKey, Canonicalize: g.Canonicalize, Body: g.Body, RequiredFields: g.RequiredFields,
			Fields: ipn.HMACFields{TxnID: f.TxnID, ParentTxnID: f.ParentTxnID, SubscriptionID: f.SubscriptionID,
				OrderID: f.OrderID, Amount: f.Amount, Currency: f.Currency,
				Status: f.Status, Email: f.Email, Name: f.Name, AmountMinor: f.AmountMinor, Statuses: f.Statuses}}}
}

// startProcs is GOMAXPROCS as the runtime chose it at start: the CPUs
// this process may use.
var startProcs = runtime.GOMAXPROCS(0)

// tuneProcs gives the scheduler one P more than there are CPUs, unless
// GOMAXPROCS is set. The journal's group-commit leader, the applier, the
// pipeline and the outbox spend much of their time blocked in fdatasync,
// and a goroutine in a syscall keeps its P until the runtime takes it
// back; meanwhile the HTTP handlers wait. Measured with make bench on 2
// CPUs, GOMAXPROCS=3 instead of 2: the daemon took 0.29 of the bare rate at
// 64 clients instead of 0.15, and finished 3,800 notifications/s end to
// end instead of 2,600.
func tuneProcs() int {
	if os.Getenv("GOMAXPROCS") == "" { // the runtime reads the process environment, so does this
		runtime.GOMAXPROCS(startProcs + 1)
	}
	return runtime.GOMAXPROCS(0)
}

// serve runs the appliance until ctx is done, then shuts down in reverse:
// public listener (in-flight requests finish their commits), admin
// listener, pipeline worker, store last.
func serve(ctx context.Context, cfg *Config, log *slog.Logger) error {
	if err := ensureGenerated(cfg, log); err != nil {
		return err
	}
	procs := tuneProcs()
	gateways, err := buildGateways(cfg)
	if err != nil {
		return err
	}
	token, err := cfg.adminToken()
	if err != nil {
		return err
	}
	var names []string
	for _, g := range gateways {
		names = append(names, g.Name())
	}
	var m *metrics.Metrics
	var pipe *ipn.Pipeline
	var worker *notify.Worker
	kinds := map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectEmailMerchant: true,
		ipn.EffectShopCallback: cfg.Shop.URL != "", ipn.EffectShopScript: len(cfg.Shop.Command) > 0}
	db, err := store.Open(cfg.Store.Path, store.Options{EffectKinds: kinds, OnCommit: func(d time.Duration, n int) {
		if m != nil {
			m.Committed(d, n)
		}
	}})
	if err != nil {
		return err
	}
	defer func() {
		if err := db.Close(); err != nil {
			log.Error("closing the store", "error", err)
		}
	}()
	if n := db.Recovered(); n > 0 {
		log.Warn("unclean stop: notifications taken from the journal into the database", "count", n)
	}
	m = metrics.New(metrics.Options{Version: version, Gateways: names, RejectReasons: ipn.RejectReasons,
		StoreSize: func() float64 {
			s, err := db.Stats()
			if err != nil {
				return 0
			}
			return float64(s.SizeBytes + s.JournalBytes)
		},
		StoreWritable: func() float64 {
			if db.Writable() != nil {
				return 0
			}
			return 1
		},
		PipelineLag: func() float64 {
			if at, ok := db.OldestPending(); ok {
				return time.Since(at).Seconds()
			}
			return 0
		},
		Workers: []string{"pipeline", "outbox"},
		Degraded: func() map[string]int {
			out := map[string]int{}
			if pipe != nil && pipe.Degraded() != nil {
				out["pipeline"] = 1
			}
			if worker != nil && worker.Degraded() != nil {
				out["outbox"] = 1
			}
			return out
		},
		OrderStatuses: orderStatuses(),
		OutboxKinds:   []string{ipn.EffectEmailCustomer, ipn.EffectEmailMerchant, ipn.EffectShopCallback, ipn.EffectShopScript},
		OutboxCounts: func() map[string]map[string]int {
			c, _ := db.OutboxCounts()
			return c
		},
		Templates: []string{ipn.TemplatePaymentReceived, ipn.TemplatePaymentPending, ipn.TemplateRefundIssued,
			ipn.TemplatePaymentFailed, ipn.TemplateSubscriptionStarted, ipn.TemplateSubscriptionCanceled,
			ipn.TemplateOrderReview, ipn.TemplateDisputeOpened, ipn.TemplateVerificationFailed},
		OrderCounts: func() map[string]int {
			counts, _ := db.OrderCounts()
			out := make(map[string]int, len(counts))
			for st, n := range counts {
				out[string(st)] = n
			}
			return out
		}})
	trusted, _ := parsePrefixes("server.trusted_proxies", cfg.Server.TrustedProxies)
	allowIPs := map[string][]netip.Prefix{}
	for i, g := range cfg.Gateways {
		p, _ := parsePrefixes(fmt.Sprintf("gateway[%d].allow_ips", i), g.AllowIPs)
		allowIPs[g.Name] = p
	}
	rcv := ipn.NewReceiver(ipn.ReceiverOptions{
		Gateways: gateways, Store: db, Observer: m, Logger: log.With("component", "receiver"),
		MaxBodyBytes: cfg.Server.MaxBodyBytes, RateLimit: cfg.Server.RateLimit, RateBurst: cfg.Server.RateBurst,
		TrustedProxies: trusted, AllowIPs: allowIPs,
	})

	sandbox, receivers := map[string]bool{}, map[string][]string{}
	for _, g := range cfg.Gateways {
		sandbox[g.Name] = g.Sandbox
		receivers[g.Name] = append(append([]string(nil), g.Receivers...), cfg.Orders.Receivers...)
	}
	pl := cfg.Pipeline
	pipe = ipn.NewPipeline(ipn.PipelineOptions{
		Journal: db, Gateways: gateways, Sandbox: sandbox, Receivers: receivers,
		RequireRegistered: cfg.Orders.RequireRegistered, Workers: pl.Workers,
		VerifyTimeout: time.Duration(pl.VerifyTimeout), RetryBase: time.Duration(pl.RetryBase),
		RetryCap: time.Duration(pl.RetryCap), RetryFor: time.Duration(pl.RetryFor),
		Observer: m, Logger: log.With("component", "pipeline"),
	})
	var pipeStopped atomic.Bool
	pipeCtx, pipeCancel := context.WithCancel(context.Background())
	pipeDone := make(chan struct{})
	go func() {
		defer close(pipeDone)
		if err := pipe.Run(pipeCtx); err != nil {
			log.Error("pipeline stopped", "error", err)
		}
		pipeStopped.Store(true)
	}()
	stopPipeline := func() { pipeCancel(); <-pipeDone }
	defer stopPipeline()

	worker, err = newOutboxWorker(cfg, db, m, log.With("component", "outbox"))
	if err != nil {
		return err
	}
	var workerStopped atomic.Bool
	workerCtx, workerCancel := context.WithCancel(context.Background())
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		if err := worker.Run(workerCtx); err != nil {
			log.Error("outbox worker stopped", "error", err)
		}
		workerStopped.Store(true)
	}()
	stopWorker := func() { workerCancel(); <-workerDone }
	defer stopWorker()
	healthy := func() error {
		if err := db.Writable(); err != nil {
			return fmt.Errorf("ingest answers 503: %w", err)
		}
		if err := db.ApplyErr(); err != nil {
			return fmt.Errorf("journal not being applied (notifications are safe in it, but not yet visible): %w", err)
		}
		if pipeStopped.Load() && pipeCtx.Err() == nil {
			return errors.New("pipeline worker has stopped")
		}
		if workerStopped.Load() && workerCtx.Err() == nil {
			return errors.New("outbox worker has stopped")
		}
		// The workers retry a failing store by themselves: degraded
		// until it works again.
		if err := pipe.Degraded(); err != nil {
			return err
		}
		return worker.Degraded()
	}

	pubLn, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	admLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		pubLn.Close()
		return fmt.Errorf("admin.listen: %w", err)
	}
	errLog := slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)
	pub := &http.Server{
		Handler:           rcv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       time.Duration(cfg.Server.ReadTimeout),
		WriteTimeout:      time.Duration(cfg.Server.WriteTimeout),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	adm := &http.Server{
		Handler: admin.Handler(admin.Options{Store: db, Token: token, OpenMetrics: cfg.Admin.OpenMetrics,
			Metrics: m.Handler(), Gateways: gateways, Rejections: rcv.Rejections, Healthy: healthy,
			Logger: log.With("component", "admin")}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}
	if err := writeAddrFiles(cfg, pubLn.Addr().String(), admLn.Addr().String()); err != nil {
		// A full disk must not keep ipnd down (it answers 503 and says why
		// on /healthz); only the CLI's port-0 discovery needs the files.
		log.Error("cannot record the listeners' addresses", "error", err)
	}
	watchCtx, watchCancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		watchStore(watchCtx, db, log.With("component", "store"), time.Second, time.Minute)
	}()
	defer func() { watchCancel(); <-watchDone }()
	errc := make(chan error, 2)
	go func() {
		if cfg.Server.TLSCert != "" {
			errc <- pub.ServeTLS(pubLn, cfg.Server.TLSCert, cfg.Server.TLSKey)
		} else {
			errc <- pub.Serve(pubLn)
		}
	}()
	go func() { errc <- adm.Serve(admLn) }()
	log.Info("ipnd serving", "version", version, "public", pubLn.Addr().String(), "admin", admLn.Addr().String(),
		"store", cfg.Store.Path, "gateways", strings.Join(names, ","), "procs", procs)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("listener failed", "error", runErr)
	}
	shutdown := func(s *http.Server, name string) {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			// Connections still busy (a stalled backup download): cut them,
			// so that the store can close.
			log.Warn("shutdown: closing busy connections", "listener", name, "error", err)
			s.Close()
		}
	}
	shutdown(pub, "public")
	shutdown(adm, "admin")
	stopPipeline()
	stopWorker()
	removeAddrFiles(cfg)
	if err := db.Close(); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("stopped")
	return runErr
}

// newOutboxWorker builds the delivery of emails (SMTP, or .eml files
// under the data directory when no smtp.host is set), shop callbacks and
// the notification script.
func newOutboxWorker(cfg *Config, db *store.DB, m *metrics.Metrics, log *slog.Logger) (*notify.Worker, error) {
	var mailer notify.Mailer
	if cfg.SMTP.Host == "" {
		mailer = notify.NewFileMailer(filepath.Join(cfg.dataDir(), "mail"))
	} else {
		pw, err := cfg.smtpPassword()
		if err != nil {
			return nil, err
		}
		mailer, err = notify.NewSMTPMailer(notify.SMTPConfig{Host: cfg.SMTP.Host, Port: cfg.SMTP.Port,
			Username: cfg.SMTP.Username, Password: pw, TLS: cfg.SMTP.TLS, Timeout: time.Duration(cfg.SMTP.Timeout)})
		if err != nil {
			return nil, fmt.Errorf("smtp: %w", err)
		}
	}
	tpl, err := notify.LoadTemplates(cfg.Email.TemplatesDir)
	if err != nil {
		return nil, fmt.Errorf("email.templates_dir: %w", err)
	}
	var shop *notify.Shop
	if cfg.Shop.URL != "" || len(cfg.Shop.Command) > 0 {
		key, err := cfg.shopKey()
		if err != nil {
			return nil, err
		}
		shop = &notify.Shop{URL: cfg.Shop.URL, Key: key, Command: cfg.Shop.Command, Timeout: time.Duration(cfg.Shop.Timeout)}
	}
	var enabled map[string]bool
	if len(cfg.Email.Enabled) > 0 {
		enabled = map[string]bool{}
		for _, t := range cfg.Email.Enabled {
			enabled[t] = true
		}
	}
	from := cfg.SMTP.From
	if from == "" {
		from = "ipnd@localhost"
	}
	domain := "localhost"
	if _, d, ok := strings.Cut(from, "@"); ok {
		domain = strings.Trim(d, "> ")
	}
	return notify.NewWorker(notify.WorkerOptions{Outbox: db, Mailer: mailer, Templates: tpl, From: from,
		ReplyTo: cfg.Email.ReplyTo, MerchantTo: cfg.Email.MerchantTo, MerchantName: cfg.Email.MerchantName,
		Domain: domain, Enabled: enabled, Shop: shop, EmailMax: cfg.Email.MaxAttempts, ShopMax: cfg.Shop.MaxAttempts,
		RetryBase: time.Duration(cfg.Pipeline.OutboxRetryBase), RetryCap: time.Duration(cfg.Pipeline.OutboxRetryCap),
		Observer: m, Logger: log}), nil
}

func orderStatuses() []string {
	out := make([]string, len(ipn.OrderStatuses))
	for i, s := range ipn.OrderStatuses {
		out[i] = string(s)
	}
	return out
}

func addrFile(cfg *Config, which string) string { return filepath.Join(cfg.dataDir(), which+".addr") }

// writeAddrFiles records the bound addresses so that the CLI finds a
// server that listens on port 0.
func writeAddrFiles(cfg *Config, public, adminAddr string) error {
	for which, a := range map[string]string{"public": public, "admin": adminAddr} {
		// Write then rename, so that a reader never sees a half-written file.
		tmp := addrFile(cfg, which) + ".tmp"
		if err := os.WriteFile(tmp, []byte(a+"\n"), 0o600); err != nil {
			return fmt.Errorf("write address file: %w", err)
		}
		if err := os.Rename(tmp, addrFile(cfg, which)); err != nil {
			return fmt.Errorf("write address file: %w", err)
		}
	}
	return nil
}

func removeAddrFiles(cfg *Config) {
	os.Remove(addrFile(cfg, "public"))
	os.Remove(addrFile(cfg, "admin"))
}

// watchStore logs, at ERROR, when the store stops taking notifications
// (ingest answers 503) and why, then once every repeat while that lasts
// with the count of requests refused meanwhile, and at WARN when it takes
// them again: a few lines for an outage, not one per request.
func watchStore(ctx context.Context, db *store.DB, log *slog.Logger, every, repeat time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var (
		since, told time.Time
		refused     int64
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := db.Writable()
		switch {
		case err != nil && errors.Is(err, store.ErrClosed):
			return
		case err != nil && since.IsZero():
			since, told, refused = time.Now(), time.Now(), db.Refused()
			log.Error("store is not taking notifications: ingest answers 503 until this is fixed", "error", err)
		case err != nil && time.Since(told) >= repeat:
			told = time.Now()
			log.Error("store still not taking notifications", "error", err, "for", time.Since(since).Round(time.Second),
				"refused", db.Refused()-refused)
		case err == nil && !since.IsZero():
			log.Warn("store takes notifications again", "after", time.Since(since).Round(time.Millisecond),
				"refused", db.Refused()-refused)
			since = time.Time{}
		}
	}
}
