package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/metrics"
	"ipnd/notify"
	"ipnd/store"
)

// app is one running ipnd: the store, the metrics, the receiver, the
// pipeline and the outbox worker, and the parts of them a reload replaces.
type app struct {
	getenv func(string) string
	log    *slog.Logger
	procs  int
	db     *store.DB
	m      *metrics.Metrics
	rcv    *ipn.Receiver
	pipe   *ipn.Pipeline
	cfg    atomic.Pointer[Config]
	admin  swapHandler

	mu           sync.Mutex // guards outbox (replaced by a reload)
	outbox       *workerRun
	outboxWorker atomic.Pointer[notify.Worker] // the worker outbox runs
	pipeW        *workerRun
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
	a.rcv = ipn.NewReceiver(ipn.ReceiverOptions{
		Gateways: gateways, Store: a.db, Observer: a.m, Logger: log.With("component", "receiver"),
		MaxBodyBytes: cfg.Server.MaxBodyBytes, RateLimit: cfg.Server.RateLimit, RateBurst: cfg.Server.RateBurst,
		TrustedProxies: trusted, AllowIPs: allowIPs(cfg),
	})
	sandbox, receivers := orderRules(cfg)
	pl := cfg.Pipeline
	a.pipe = ipn.NewPipeline(ipn.PipelineOptions{
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

// setAdmin builds the admin API for cfg (token, gateways) and puts it in
// place.
func (a *app) setAdmin(cfg *Config, gateways []ipn.Gateway) error {
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
func (a *app) newMetrics(gateways []ipn.Gateway) *metrics.Metrics {
	db := a.db
	var names []string
	for _, g := range gateways {
		names = append(names, g.Name())
	}
	return metrics.New(metrics.Options{Version: version, Gateways: names, RejectReasons: ipn.RejectReasons,
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
