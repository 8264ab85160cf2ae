package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/metrics"
	"ipnd/notify"
	"ipnd/pipeline"
	"ipnd/public"
	"ipnd/store"
)

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// SIGHUP from here on is a reload, never the default (which would end
	// the process without a word): one that comes during the start is
	// handled once ipnd runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fs := newCmdline("serve", getenv, stdout)
	if err := fs.parseConfigArg(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, getenv, newLogger(cfg.Log, stderr), hup)
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
			k, _ := gateway.Lookup(g.Kind)
			gen[g.SecretFile] = k.NewSecret
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
func buildGateways(cfg *Config) ([]gateway.Gateway, error) {
	var out []gateway.Gateway
	for i, g := range cfg.Gateways {
		key := fmt.Sprintf("gateway[%d]", i)
		secrets, err := gatewaySecrets(key, g)
		if err != nil {
			return nil, err
		}
		gw, err := gateway.New(cfg.gatewayOptions(g, secrets))
		if err != nil {
			return nil, fmt.Errorf("config: %s (%q): %w", key, g.Name, err)
		}
		out = append(out, gw)
	}
	return out, nil
}

// gatewayOptions copies a [[gateway]] table into the adapter's options.
func (c *Config) gatewayOptions(g GatewayConfig, secrets []string) gateway.Config {
	f := g.Fields
	return gateway.Config{Name: g.Name, Kind: g.Kind, Secrets: secrets,
		Tolerance: time.Duration(g.Tolerance), Sandbox: g.Sandbox, VerifyURL: g.VerifyURL, Receivers: c.receivers(g),
		MerchantID: g.MerchantID, URL: g.URL,
		HMAC: gateway.HMACOptions{Header: g.Header, Parser: g.Parser, Prefix: g.Prefix, PairSeparator: g.PairSeparator,
			SignatureKey: g.SignatureKey, TimestampKey: g.TimestampKey, Algorithm: g.Algorithm, Encoding: g.Encoding,
			KeyFormat: g.KeyFormat, KeyPrefix: g.KeyPrefix, SignedContent: g.SignedContent, Timestamp: g.Timestamp,
			ID: g.ID, DedupKey: g.DedupKey, Canonicalize: g.Canonicalize, Body: g.Body, RequiredFields: g.RequiredFields,
			Fields: gateway.HMACFields{TxnID: f.TxnID, ParentTxnID: f.ParentTxnID, SubscriptionID: f.SubscriptionID,
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
// listener, workers, store last. SIGHUP reloads the config (reload).
func serve(ctx context.Context, cfg *Config, getenv func(string) string, log *slog.Logger, hup <-chan os.Signal) error {
	a, err := newApp(cfg, getenv, log)
	if err != nil {
		return err
	}
	return a.run(ctx, hup)
}

// app is one running ipnd: the store, the metrics, the receiver, the
// pipeline and the outbox worker, and the parts of them a reload replaces.
type app struct {
	getenv func(string) string
	log    *slog.Logger
	procs  int
	db     *store.DB
	m      *metrics.Metrics
	rcv    *public.Receiver
	pipe   *pipeline.Pipeline
	cfg    atomic.Pointer[Config]
	admin  swapHandler

	mu           sync.Mutex // guards outbox (replaced by a reload)
	outbox       *workerRun
	outboxWorker atomic.Pointer[notify.Worker] // the worker outbox runs
	pipeW        *workerRun
}

// workerRun is one worker goroutine: started by startWorker, stopped
// (cancelled and waited for) by stop.
type workerRun struct {
	cancel  context.CancelFunc
	done    chan struct{}
	stopped atomic.Bool // Run returned by itself (an error), not by stop
}

// startWorker runs run in a goroutine until stop; an error it returns is
// logged as the worker stopping.
func startWorker(name string, log *slog.Logger, run func(context.Context) error) *workerRun {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		if err := run(ctx); err != nil && ctx.Err() == nil {
			log.Error(name+" stopped", "error", err)
			w.stopped.Store(true)
		}
	}()
	return w
}

// stop cancels the worker and waits until it has returned.
func (w *workerRun) stop() { w.cancel(); <-w.done }

// swapHandler is an http.Handler a reload replaces whole.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}
func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

// newApp opens the store and builds every part from cfg; nothing runs yet.
func newApp(cfg *Config, getenv func(string) string, log *slog.Logger) (*app, error) {
	if err := ensureGenerated(cfg, log); err != nil {
		return nil, err
	}
	a := &app{getenv: getenv, log: log, procs: tuneProcs()}
	gateways, err := buildGateways(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := cfg.adminToken(); err != nil {
		return nil, err
	}
	a.db, err = store.Open(cfg.Store.Path, store.Options{EffectKinds: effectKinds(cfg), OnCommit: func(d time.Duration, n int) {
		if a.m != nil {
			a.m.Committed(d, n)
		}
	}})
	if err != nil {
		return nil, err
	}
	if n := a.db.Recovered(); n > 0 {
		log.Warn("unclean stop: notifications taken from the journal into the database", "count", n)
	}
	a.m = a.newMetrics(gateways)
	trusted, _ := parsePrefixes("server.trusted_proxies", cfg.Server.TrustedProxies)
	a.rcv = public.NewReceiver(public.ReceiverOptions{
		Gateways: gateways, Store: a.db, Observer: a.m, Logger: log.With("component", "receiver"),
		MaxBodyBytes: cfg.Server.MaxBodyBytes, RateLimit: cfg.Server.RateLimit, RateBurst: cfg.Server.RateBurst,
		TrustedProxies: trusted, AllowIPs: allowIPs(cfg),
	})
	sandbox, receivers := orderRules(cfg)
	pl := cfg.Pipeline
	a.pipe = pipeline.New(pipeline.Options{
		Journal: a.db, Gateways: gateways, Sandbox: sandbox, Receivers: receivers,
		RequireRegistered: cfg.Orders.RequireRegistered, Workers: pl.Workers,
		VerifyTimeout: time.Duration(pl.VerifyTimeout), RetryBase: time.Duration(pl.RetryBase),
		RetryCap: time.Duration(pl.RetryCap), RetryFor: time.Duration(pl.RetryFor),
		Observer: a.m, Logger: log.With("component", "pipeline"),
	})
	worker, err := newOutboxWorker(cfg, a.db, a.m, log.With("component", "outbox"))
	if err != nil {
		a.db.Close()
		return nil, err
	}
	if err := a.setAdmin(cfg, gateways); err != nil {
		a.db.Close()
		return nil, err
	}
	a.cfg.Store(cfg)
	a.m.ConfigLoaded(configHash(cfg), time.Now())
	a.pipeW = startWorker("pipeline", log, a.pipe.Run)
	a.outbox = startWorker("outbox worker", log, worker.Run)
	a.outboxWorker.Store(worker)
	return a, nil
}

// run serves both listeners until ctx is done or one fails, reloading the
// config on SIGHUP, then stops everything in reverse order.
func (a *app) run(ctx context.Context, hup <-chan os.Signal) error {
	cfg, log, db := a.cfg.Load(), a.log, a.db
	// Workers, then the store: once, on every way out.
	stopAll := sync.OnceValue(func() error {
		a.pipeW.stop()
		a.mu.Lock()
		a.outbox.stop()
		a.mu.Unlock()
		return db.Close()
	})
	defer func() {
		if err := stopAll(); err != nil {
			log.Error("closing the store", "error", err)
		}
	}()
	tlsSvc, err := newTLSService(cfg, log.With("component", "tls"), a.m)
	if err != nil {
		return err
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
	if err := tlsSvc.listen(); err != nil {
		pubLn.Close()
		admLn.Close()
		return err
	}
	defer tlsSvc.stop()
	errLog := slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)
	pub := &http.Server{
		Handler:           a.rcv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       time.Duration(cfg.Server.ReadTimeout),
		WriteTimeout:      time.Duration(cfg.Server.WriteTimeout),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	adm := &http.Server{
		Handler:           &a.admin,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}
	pubTLS, admTLS := tlsSvc.configure(pub, adm)
	if err := writeAddrFiles(cfg, pubLn.Addr().String(), admLn.Addr().String()); err != nil {
		// A full disk must not keep ipnd down (it answers 503 and says why
		// on /healthz); only the CLI's port-0 discovery needs the files.
		log.Error("cannot record the listeners' addresses", "error", err)
	}
	if keep := time.Duration(cfg.Store.RawRetention); keep > 0 {
		ret := startWorker("retention", log, func(ctx context.Context) error {
			return purgeLoop(ctx, db, a.m, log.With("component", "retention"), keep, time.Now)
		})
		defer ret.stop()
	}
	watch := startWorker("store watch", log, func(ctx context.Context) error {
		watchStore(ctx, db, log.With("component", "store"), time.Second, time.Minute)
		return nil
	})
	defer watch.stop()
	errc := make(chan error, 3)
	serveOn := func(s *http.Server, ln net.Listener, withTLS bool) {
		if withTLS {
			errc <- s.ServeTLS(ln, "", "") // the certificate comes from s.TLSConfig
		} else {
			errc <- s.Serve(ln)
		}
	}
	go serveOn(pub, pubLn, pubTLS)
	go serveOn(adm, admLn, admTLS)
	tlsSvc.start(pubLn.Addr().String(), errLog, errc)
	log.Info("ipnd serving", "version", version, "public", pubLn.Addr().String(), "admin", admLn.Addr().String(),
		"tls", cfg.tlsMode(), "store", cfg.Store.Path, "gateways", strings.Join(gatewayNames(cfg), ","), "procs", a.procs)

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			break loop
		case runErr = <-errc:
			log.Error("listener failed", "error", runErr)
			break loop
		case <-hup:
			a.reload()
			tlsSvc.reload()
		}
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
	tlsSvc.stop()
	shutdown(adm, "admin")
	watch.stop()
	removeAddrFiles(cfg)
	if err := stopAll(); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("stopped")
	return runErr
}

// reload reads the config file and every secret file again (SIGHUP). The
// new config is validated and every part built from it before anything
// changes: if any of that fails, ipnd keeps running on the old config and
// logs one line saying why. Otherwise the gateways (secrets, sources,
// sandbox, receivers), the order rules, the admin token, the templates,
// SMTP and the shop take effect at once; requests in flight finish with
// what they started with. Settings only a restart changes are named in
// the log line when they differ.
func (a *app) reload() {
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
	if err := ensureGenerated(cfg, a.log); err != nil {
		fail(err)
		return
	}
	gateways, err := buildGateways(cfg)
	if err != nil {
		fail(err)
		return
	}
	worker, err := newOutboxWorker(cfg, a.db, a.m, a.log.With("component", "outbox"))
	if err != nil {
		fail(err)
		return
	}
	if err := a.setAdmin(cfg, gateways); err != nil {
		fail(err)
		return
	}
	a.m.SetGateways(gatewayNames(cfg))
	// The pipeline first: the first notification of a gateway just added
	// must find it there.
	sandbox, receivers := orderRules(cfg)
	a.pipe.Reconfigure(gateways, sandbox, receivers, cfg.Orders.RequireRegistered)
	a.rcv.SetGateways(gateways, allowIPs(cfg))
	a.db.SetEffectKinds(effectKinds(cfg))
	if deliveryChanged(old, cfg) {
		// A delivery in flight is cut short and made again by the new
		// worker (as after a crash): only when delivery settings changed.
		a.mu.Lock()
		a.outbox.stop()
		a.outbox = startWorker("outbox worker", a.log, worker.Run)
		a.outboxWorker.Store(worker)
		a.mu.Unlock()
	}
	a.cfg.Store(cfg)
	hash := configHash(cfg)
	a.m.Reloaded(true)
	a.m.ConfigLoaded(hash, time.Now())
	attrs := []any{"config_sha256", hash, "gateways", strings.Join(gatewayNames(cfg), ",")}
	if fixed := restartOnly(old, cfg); len(fixed) > 0 {
		attrs = append(attrs, "needs_restart", strings.Join(fixed, ","))
	}
	a.log.Info("config reloaded", attrs...)
}

// setAdmin builds the admin API for cfg (token, gateways) and puts it in
// place.
func (a *app) setAdmin(cfg *Config, gateways []gateway.Gateway) error {
	token, err := cfg.adminToken()
	if err != nil {
		return err
	}
	a.admin.set(admin.Handler(admin.Options{Store: a.db, Token: token, OpenMetrics: cfg.Admin.OpenMetrics,
		Metrics: a.m.Handler(), Gateways: gateways, Rejections: a.rcv.Rejections, Healthy: a.healthy,
		Logger: a.log.With("component", "admin")}))
	return nil
}

// healthy is /healthz on the admin listener: nil while the store takes
// notifications and the workers make progress.
func (a *app) healthy() error {
	if err := a.db.Writable(); err != nil {
		return fmt.Errorf("ingest answers 503: %w", err)
	}
	if err := a.db.ApplyErr(); err != nil {
		return fmt.Errorf("journal not being applied (notifications are safe in it, but not yet visible): %w", err)
	}
	if a.pipeW.stopped.Load() {
		return errors.New("pipeline worker has stopped")
	}
	a.mu.Lock()
	stopped := a.outbox.stopped.Load()
	a.mu.Unlock()
	if stopped {
		return errors.New("outbox worker has stopped")
	}
	// The workers retry a failing store by themselves: degraded until it
	// works again.
	if err := a.pipe.Degraded(); err != nil {
		return err
	}
	return a.outboxWorker.Load().Degraded()
}

// newMetrics builds the metrics, reading the store at scrape time.
func (a *app) newMetrics(gateways []gateway.Gateway) *metrics.Metrics {
	db := a.db
	var names []string
	for _, g := range gateways {
		names = append(names, g.Name())
	}
	return metrics.New(metrics.Options{Version: version, Gateways: names, RejectReasons: public.RejectReasons,
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
			if a.pipe != nil && a.pipe.Degraded() != nil {
				out["pipeline"] = 1
			}
			if w := a.outboxWorker.Load(); w != nil && w.Degraded() != nil {
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
}

// effectKinds are the effects the store queues under cfg: no shop
// callback without shop.url, no script without shop.command.
func effectKinds(cfg *Config) map[string]bool {
	return map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectEmailMerchant: true,
		ipn.EffectShopCallback: cfg.Shop.URL != "", ipn.EffectShopScript: len(cfg.Shop.Command) > 0}
}

// allowIPs are the sources each gateway accepts (validated already).
func allowIPs(cfg *Config) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for i, g := range cfg.Gateways {
		p, _ := parsePrefixes(fmt.Sprintf("gateway[%d].allow_ips", i), g.AllowIPs)
		out[g.Name] = p
	}
	return out
}

// orderRules are the per-gateway sandbox flags and receivers.
func orderRules(cfg *Config) (sandbox map[string]bool, receivers map[string][]string) {
	sandbox, receivers = map[string]bool{}, map[string][]string{}
	for _, g := range cfg.Gateways {
		sandbox[g.Name] = g.Sandbox
		receivers[g.Name] = cfg.receivers(g)
	}
	return sandbox, receivers
}

func gatewayNames(cfg *Config) []string {
	var out []string
	for _, g := range cfg.Gateways {
		out = append(out, g.Name)
	}
	return out
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
		EmailConnections: cfg.Email.Connections,
		RetryBase:        time.Duration(cfg.Pipeline.OutboxRetryBase), RetryCap: time.Duration(cfg.Pipeline.OutboxRetryCap),
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
		if err := writeAddrFile(cfg, which, a); err != nil {
			return err
		}
	}
	return nil
}

// writeAddrFile writes then renames, so that a reader never sees a
// half-written file.
func writeAddrFile(cfg *Config, which, addr string) error {
	tmp := addrFile(cfg, which) + ".tmp"
	if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o600); err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	if err := os.Rename(tmp, addrFile(cfg, which)); err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	return nil
}

func removeAddrFiles(cfg *Config) {
	os.Remove(addrFile(cfg, "public"))
	os.Remove(addrFile(cfg, "admin"))
}

// purgeLoop applies store.raw_retention (keep) until ctx ends: every
// keep/10 (at least a second, at most 10 minutes) it purges what grew
// older than keep, in transactions of 200 records with a pause between
// them, so that ingest never waits long behind it. Store errors are
// logged and tried again next time.
func purgeLoop(ctx context.Context, db *store.DB, m *metrics.Metrics, log *slog.Logger, keep time.Duration, now func() time.Time) error {
	every := min(max(keep/10, time.Second), 10*time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for {
			p, err := db.Purge(now().Add(-keep), 200)
			if err != nil {
				if !errors.Is(err, store.ErrClosed) {
					log.Warn("retention purge failed; trying again later", "error", err)
				}
				break
			}
			m.Purged(p.Notifications, p.OutboxItems, p.Orders)
			if p.Notifications+p.OutboxItems+p.Orders > 0 {
				log.Info("retention purged", "notifications", p.Notifications, "outbox_items", p.OutboxItems, "orders", p.Orders)
			}
			if !p.More {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
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
			log.Error("store still not taking notifications", "error", err, "for_seconds", time.Since(since).Seconds(),
				"refused", db.Refused()-refused)
		case err == nil && !since.IsZero():
			log.Warn("store takes notifications again", "after_seconds", time.Since(since).Seconds(),
				"refused", db.Refused()-refused)
			since = time.Time{}
		}
	}
}
