package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ipnd/admin"
	"ipnd/admin/ui"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/metrics"
	"ipnd/notify"
	"ipnd/pipeline"
	"ipnd/public"
)

// app is one ipnd: the store, the metrics, the receiver, the pipeline
// and the outbox worker, and the parts of them a reload replaces. Its
// life is newApp (build: nothing runs), start, then stop; run does the
// three around serving.
type app struct {
	getenv func(string) string
	log    *slog.Logger
	procs  int
	db     Store
	m      *metrics.Metrics
	rcv    *public.Receiver
	pipe   atomic.Pointer[pipeline.Pipeline] // nil while another process leads (PostgreSQL)
	cfg    atomic.Pointer[Config]
	admin  swapHandler
	outbox atomic.Pointer[notify.Worker] // the outbox worker (a reload may replace it); nil as pipe
	// termMu orders a reload against the start and the end of a term of
	// leadership (a sharedStore): term is the current one (nil: this
	// process does not lead), and a term starts with the config a.cfg
	// holds under it.
	termMu sync.Mutex
	term   atomic.Pointer[term]
	// guesses limits wrong admin tokens per client; kept across reloads.
	guesses *public.ClientLimiter
	// sessions are the dashboard's signed-in browsers; kept across reloads.
	sessions *ui.Sessions
	// certExpiry is the served certificate's expiry (unix ns; 0: no TLS),
	// for the dashboard.
	certExpiry atomic.Int64

	// What start started, for stop.
	workers  workers
	tls      *tlsService // nil until the listeners are open
	pub, adm *listener   // nil until the listeners are open
	served   *Config     // the config the listeners serve (its data directory holds the address files); nil before
}

// Wrong admin tokens a client may send: 10 at once, then one per 6 s
// (past them its requests are answered 429 without being compared).
const (
	adminGuessBurst       = 10
	adminGuessesPerSecond = 1.0 / 6
)

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
func newApp(ctx context.Context, cfg *Config, getenv func(string) string, log *slog.Logger) (*app, error) {
	if err := ensureGenerated(cfg, log); err != nil {
		return nil, err
	}
	a := &app{getenv: getenv, log: log, procs: tuneProcs(), workers: workers{log: log},
		guesses: public.NewClientLimiter(adminGuessesPerSecond, adminGuessBurst, 0), sessions: ui.NewSessions(0)}
	gateways, err := buildGateways(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := cfg.adminToken(); err != nil {
		return nil, err
	}
	a.db, err = openStore(ctx, cfg, log, func(d time.Duration, n int) {
		if a.m != nil {
			a.m.Committed(d, n)
		}
	})
	if err != nil {
		return nil, err
	}
	if n := a.db.Recovered(); n > 0 {
		log.Warn("unclean stop: notifications taken from the journal into the database", "count", n)
	}
	for _, d := range a.db.TornGroups() {
		log.Error("journal: notifications at the end of the journal do not read back and were dropped; they may have been acknowledged "+
			"(a crash within their write, or damage to the newest write after its fsync); their ids are not given again. "+
			"Ask the gateways to resend, then acknowledge with POST /api/journal/dropped/ack",
			"segment", d.Segment, "offset", d.Offset, "first_id", d.First, "last_id", d.Last, "reason", d.Reason)
	}
	a.m = a.newMetrics(gateways)
	trusted, _ := parsePrefixes("server.trusted_proxies", cfg.Server.TrustedProxies)
	a.rcv = public.NewReceiver(public.ReceiverOptions{
		Gateways: gateways, Store: a.db, Observer: a.m, Logger: log.With("component", "receiver"),
		MaxBodyBytes: cfg.Server.MaxBodyBytes, RateLimit: cfg.Server.RateLimit, RateBurst: cfg.Server.RateBurst,
		TrustedProxies: trusted, AllowIPs: allowIPs(cfg),
		Ready: a.db.Writable,
	})
	a.m.Fulfilment(a.db.PoolRemaining)
	if err := a.setFulfilment(cfg); err != nil {
		a.db.Close()
		return nil, err
	}
	a.db.SetParkFor(time.Duration(cfg.Orders.ParkFor))
	// On a localStore the pipeline and the outbox worker are built now and
	// run for the life of the process; on a sharedStore each term of
	// leadership builds its own (lead), and this only checks the
	// delivery settings.
	var ob notify.Outbox
	if ls, ok := a.db.(localStore); ok {
		a.pipe.Store(a.newPipeline(cfg, gateways, ls))
		ob = ls
	}
	worker, err := newOutboxWorker(cfg, ob, a.m, log.With("component", "outbox"))
	if err != nil {
		a.db.Close()
		return nil, err
	}
	if err := a.setAdmin(cfg, gateways); err != nil {
		a.db.Close()
		return nil, err
	}
	a.cfg.Store(cfg)
	if ob != nil {
		a.outbox.Store(worker)
	}
	a.m.ConfigLoaded(configHash(cfg), time.Now())
	return a, nil
}

// run starts the app and serves until ctx is done or a listener fails,
// reloading the config on SIGHUP; then it stops everything (stop).
func (a *app) run(ctx context.Context, hup <-chan os.Signal) error {
	errc := make(chan error, 3) // the public, admin and plain-HTTP listeners
	if err := a.start(errc); err != nil {
		if cerr := a.stop(); cerr != nil {
			a.log.Error("closing the store", "error", cerr)
		}
		return err
	}
	runErr := a.wait(ctx, errc, hup)
	err := a.stop()
	a.log.Info("stopped")
	if err != nil {
		a.log.Error("closing the store", "error", err)
		if runErr == nil {
			runErr = err
		}
	}
	return runErr
}

// start runs the workers that the listeners feed (the outbox worker,
// then the pipeline), opens the listeners, runs retention and the store
// watch, and serves. On an error, what it started is for stop to end.
func (a *app) start(errc chan<- error) error {
	cfg, log, db := a.cfg.Load(), a.log, a.db
	if shared, ok := db.(sharedStore); ok {
		a.workers.start("leader", func(ctx context.Context) error {
			shared.Lead(ctx, a.lead)
			return nil
		})
	} else {
		a.workers.start("outbox worker", a.outbox.Load().Run)
		a.workers.start("pipeline", a.pipe.Load().Run)
	}
	tlsSvc, err := newTLSService(cfg, log.With("component", "tls"), expiryKeeper{certObserver: a.m, at: &a.certExpiry})
	if err != nil {
		return err
	}
	errLog := slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)
	pub, adm, err := a.listen(cfg, tlsSvc, errLog)
	if err != nil {
		return err
	}
	a.tls, a.pub, a.adm, a.served = tlsSvc, pub, adm, cfg
	if err := writeAddrFiles(cfg, pub.addr(), adm.addr()); err != nil {
		// A full disk must not keep ipnd down (it answers 503 and says why
		// on /healthz); only the CLI's port-0 discovery needs the files.
		log.Error("cannot record the listeners' addresses", "error", err)
	}
	if keep := time.Duration(cfg.Store.RawRetention); keep > 0 {
		a.workers.start("retention", func(ctx context.Context) error {
			return purgeLoop(ctx, db, a.m, log.With("component", "retention"), keep, time.Now)
		})
	}
	a.workers.start("store watch", func(ctx context.Context) error {
		watchStore(ctx, db, log.With("component", "store"), time.Second, time.Minute)
		return nil
	})
	pub.serve(errc)
	adm.serve(errc)
	tlsSvc.start(pub.addr(), errLog, errc)
	log.Info("ipnd serving", "version", version, "public", pub.addr(), "admin", adm.addr(),
		"tls", cfg.tlsMode(), "store", storeName(cfg), "gateways", strings.Join(gatewayNames(cfg), ","), "procs", a.procs)
	return nil
}

// listen opens the public and admin listeners and server.http_listen
// (synchronously, so that a port in use fails the start) and sets up the
// public and admin servers on them.
func (a *app) listen(cfg *Config, tlsSvc *tlsService, errLog *log.Logger) (pub, adm *listener, err error) {
	pubLn, err := listenTCP(cfg.Server.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("server.listen: %w", err)
	}
	admLn, err := listenTCP(cfg.Admin.Listen)
	if err != nil {
		pubLn.Close()
		return nil, nil, fmt.Errorf("admin.listen: %w", err)
	}
	if err := tlsSvc.listen(); err != nil {
		pubLn.Close()
		admLn.Close()
		return nil, nil, err
	}
	pub = &listener{name: "public", ln: pubLn, srv: &http.Server{
		Handler:           a.rcv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       time.Duration(cfg.Server.ReadTimeout),
		WriteTimeout:      time.Duration(cfg.Server.WriteTimeout),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}}
	adm = &listener{name: "admin", ln: admLn, srv: &http.Server{
		Handler:           &a.admin,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}}
	adm.srv.RegisterOnShutdown(a.db.EndLive) // the event streams end, not hold the shutdown up
	pub.tls, adm.tls = tlsSvc.configure(pub.srv, adm.srv)
	return pub, adm, nil
}

// wait serves until ctx is done (nil) or a listener fails (its error).
// SIGHUP reloads the config and re-reads the certificate files.
func (a *app) wait(ctx context.Context, errc <-chan error, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			a.log.Info("shutting down")
			return nil
		case err := <-errc:
			a.log.Error("listener failed", "error", err)
			return err
		case <-hup:
			a.reload(ctx)
			a.tls.reload()
		}
	}
}

// stop ends what start started, in reverse: the public listener
// (requests in flight finish their commits), the plain-HTTP listener and
// certificate watchers, the admin listener, the workers, and the store
// last, whose close error it returns. It works on an app whose start
// failed part way.
func (a *app) stop() error {
	if a.pub != nil {
		a.pub.shutdown(a.log)
		a.tls.stop()
		a.adm.shutdown(a.log)
		removeAddrFiles(a.served)
	}
	a.workers.stopAll()
	return a.db.Close()
}

// listener is one of the app's HTTP servers on its bound listener.
type listener struct {
	name string // for the log: "public", "admin"
	srv  *http.Server
	ln   net.Listener
	tls  bool // serve TLS (the certificate comes from srv.TLSConfig)
}

func (l *listener) addr() string { return l.ln.Addr().String() }

// serve serves in a goroutine; errc gets what Serve returns (after
// shutdown: http.ErrServerClosed, which nobody reads).
func (l *listener) serve(errc chan<- error) {
	go func() {
		if l.tls {
			errc <- l.srv.ServeTLS(l.ln, "", "")
		} else {
			errc <- l.srv.Serve(l.ln)
		}
	}()
}

// shutdown stops taking connections and lets the requests in flight
// finish, for 10 s at most; then it cuts the connections still busy (a
// stalled backup download), so that the store can close.
func (l *listener) shutdown(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown: closing busy connections", "listener", l.name, "error", err)
		l.srv.Close()
	}
}

// setAdmin builds the admin API for cfg (token, gateways) and puts it in
// place.
func (a *app) setAdmin(cfg *Config, gateways []gateway.Gateway) error {
	token, err := cfg.adminToken()
	if err != nil {
		return err
	}
	proxies, _ := parsePrefixes("admin.trusted_proxies", cfg.Admin.TrustedProxies) // checked by validate
	var leadership func() admin.Leadership
	if shared, ok := a.db.(sharedStore); ok {
		leadership = shared.Leadership
	}
	a.admin.set(admin.Handler(admin.Options{Store: a.db, Token: token, OpenMetrics: cfg.Admin.OpenMetrics,
		Metrics: a.m.Handler(), Gateways: gateways, Rejections: a.rcv.Rejections, Healthy: a.healthy, Leadership: leadership,
		Logger: a.log.With("component", "admin"), AuthFailed: a.m.AdminAuthFailed, Guesses: a.guesses,
		Sessions: a.sessions, CertExpiry: a.certExpiryTime, TrustedProxies: proxies}))
	return nil
}

// expiryKeeper passes certificate events on to the metrics and keeps
// the expiry for the dashboard.
type expiryKeeper struct {
	certObserver
	at *atomic.Int64
}

func (k expiryKeeper) CertExpiry(t time.Time) {
	k.at.Store(t.UnixNano())
	k.certObserver.CertExpiry(t)
}

// certExpiryTime is the served certificate's expiry (zero: no TLS).
func (a *app) certExpiryTime() time.Time {
	if ns := a.certExpiry.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
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
	if drops, ids, err := a.db.Unacknowledged(); err == nil && len(drops) > 0 {
		d := drops[0]
		return fmt.Errorf("journal tail dropped at start: %d notifications that may have been acknowledged (ids %d-%d in %s, %d ranges); "+
			"acknowledge with POST /api/journal/dropped/ack", ids, d.First, d.Last, d.Segment, len(drops))
	}
	if a.workerFailed("pipeline") {
		return errors.New("pipeline worker has stopped")
	}
	if a.workerFailed("outbox worker") {
		return errors.New("outbox worker has stopped")
	}
	// The workers retry a failing store by themselves: degraded until it
	// works again. While another process leads (a sharedStore), this one
	// runs neither and answers for its ingest alone.
	if p := a.pipe.Load(); p != nil {
		if err := p.Degraded(); err != nil {
			return err
		}
	}
	if err := a.heldUp(); err != nil {
		return err
	}
	if w := a.outbox.Load(); w != nil {
		return w.Degraded()
	}
	return nil
}

// heldUp names the gateways that hold up their notifications: their
// verification postbacks fail, or they are no longer configured while
// notifications of theirs wait (nil: none).
func (a *app) heldUp() error {
	now := time.Now()
	oldest := a.db.OldestPendingByGateway(now)
	var names, parts []string
	age := func(gw string) string {
		if at, ok := oldest[gw]; ok {
			return fmt.Sprintf("; the oldest of its notifications waiting was received %s ago", now.Sub(at).Round(time.Second))
		}
		return ""
	}
	var holdups []pipeline.Holdup
	if p := a.pipe.Load(); p != nil {
		holdups = p.Holdups()
	}
	for _, h := range holdups {
		if _, waiting := oldest[h.Gateway]; !waiting {
			continue // nothing of its waits: it holds nothing up
		}
		names = append(names, h.Gateway)
		parts = append(parts, fmt.Sprintf("%s: %s%s", h.Gateway, h.Reason, age(h.Gateway)))
	}
	configured := gatewayNames(a.cfg.Load())
	for _, gw := range slices.Sorted(maps.Keys(oldest)) {
		if !slices.Contains(configured, gw) {
			names = append(names, gw)
			parts = append(parts, fmt.Sprintf("%s is not configured: its notifications wait (received) until a reload adds it%s", gw, age(gw)))
		}
	}
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("pipeline held up by gateway %s: %s", strings.Join(names, ", "), strings.Join(parts, "; "))
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
		Leader:        leaderGauge(db),
		StoreDamaged:  func() float64 { return float64(db.DamagedSeen()) },
		LiveDropped:   func() float64 { return float64(db.LiveDropped()) },
		LiveFollowers: func() float64 { return float64(db.LiveFollowers()) },
		LiveRefused:   func() float64 { return float64(db.LiveRefused()) },
		StoreDropped: func() float64 {
			_, ids, _ := db.Unacknowledged()
			return float64(ids)
		},
		Parked: func() float64 {
			n, _ := db.Parked()
			return float64(n)
		},
		PipelineLag: func() map[string]float64 {
			now := time.Now()
			out := map[string]float64{}
			for gw, at := range db.OldestPendingByGateway(now) {
				out[gw] = max(now.Sub(at).Seconds(), 0)
			}
			return out
		},
		Workers: []string{"pipeline", "outbox"},
		Degraded: func() map[string]int {
			out := map[string]int{}
			if p := a.pipe.Load(); p != nil && p.Degraded() != nil {
				out["pipeline"] = 1
			}
			if w := a.outbox.Load(); w != nil && w.Degraded() != nil {
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
		OrderCounts: func() (real, test map[string]int) {
			all, _ := db.OrderCounts()
			tests, _ := db.TestOrderCounts()
			real, test = make(map[string]int, len(all)), make(map[string]int, len(tests))
			for st, n := range all {
				real[string(st)] = max(n-tests[st], 0)
			}
			for st, n := range tests {
				test[string(st)] = n
			}
			return real, test
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
