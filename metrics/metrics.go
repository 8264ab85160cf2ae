// Package metrics holds ipnd's Prometheus collectors on an explicit
// registry. It imports nothing of ipnd's: main passes the configured
// gateway names (the only label values besides fixed enums) and functions
// for the gauges read at scrape time.
package metrics

import (
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Unknown is the gateway label for requests that named no configured
// gateway; any label value not passed to New is recorded under it.
const Unknown = "_unknown"

// Options configure New.
type Options struct {
	Version       string
	Gateways      []string // configured gateway names
	RejectReasons []string // the fixed reason enum
	// StoreSize, when set, is read at scrape time for ipnd_store_size_bytes.
	StoreSize func() float64
	// StoreWritable, when set, is read at scrape time for
	// ipnd_store_writable (1 while ingest can store, 0 while it answers 503).
	StoreWritable func() float64
	// Leader, when set (a store several ipnd share: PostgreSQL), is read
	// at scrape time for ipnd_leader: 1 while this process holds the
	// lease and runs the pipeline and the outbox, else 0.
	Leader func() float64
	// StoreDamaged, when set, is read at scrape time for
	// ipnd_store_damaged_records_total (records that did not decode and
	// were set aside since the start).
	StoreDamaged func() float64
	// LiveDropped, when set, is read at scrape time for
	// ipnd_events_dropped_total: followers of GET /api/events dropped for
	// falling behind (their stream ended; ingest never waits for them).
	LiveDropped func() float64
	// LiveFollowers and LiveRefused, when set, are read at scrape time
	// for ipnd_events_followers (open follows of the live stream) and
	// ipnd_events_refused_total (followers refused past store.MaxFollowers).
	LiveFollowers, LiveRefused func() float64
	// StoreDropped, when set, is read at scrape time for
	// ipnd_store_dropped_unacknowledged (ids of torn journal tails dropped
	// at a start, which may have been acknowledged, not yet acknowledged
	// by the operator).
	StoreDropped func() float64
	// Parked, when set, is read at scrape time for ipnd_parked_events
	// (events waiting for the payment that names their order).
	Parked func() float64
	// PipelineLag, when set, is read at scrape time for
	// ipnd_pipeline_lag_seconds{gateway}: per gateway, the age of its
	// oldest unprocessed notification. A series exists for each configured
	// gateway (0 when none waits); a gateway no longer configured counts
	// under Unknown.
	PipelineLag func() map[string]float64
	// OrderStatuses and OrderCounts, when set, give
	// ipnd_orders{status,test} at scrape time: two series per status in
	// the (fixed) list, test="false" for real orders (what counts for
	// the business and the alerts) and test="true" for test orders.
	OrderStatuses []string
	OrderCounts   func() (real, test map[string]int)
	// OutboxKinds and OutboxCounts, when set, give ipnd_outbox_pending{kind},
	// ipnd_outbox_dead{kind}, ipnd_outbox_skipped{kind} and
	// ipnd_outbox_discarded{kind} at scrape time
	// (state -> kind -> count).
	OutboxKinds  []string
	OutboxCounts func() map[string]map[string]int
	// Workers and Degraded, when set, give ipnd_worker_degraded{worker} at
	// scrape time: 1 while that worker retries a failing store, else 0.
	Workers  []string
	Degraded func() map[string]int
	// Templates lists the email templates (label values of
	// ipnd_email_attempts_total).
	Templates []string
}

// funcGaugeVec is a gauge vector whose values are read at scrape time.
type funcGaugeVec struct {
	desc   *prometheus.Desc
	labels []string
	read   func() map[string]int
}

func (c funcGaugeVec) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c funcGaugeVec) Collect(ch chan<- prometheus.Metric) {
	values := c.read()
	for _, l := range c.labels {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(values[l]), l)
	}
}

// outboxGauges is ipnd_outbox_{pending,dead,skipped,discarded}{kind}: one
// collector for the four, so a scrape reads the store's outbox counts once
// (on PostgreSQL a query) instead of once per state.
type outboxGauges struct {
	states []string
	descs  []*prometheus.Desc
	kinds  []string
	read   func() map[string]map[string]int
}

func (c outboxGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c outboxGauges) Collect(ch chan<- prometheus.Metric) {
	counts := c.read()
	for i, state := range c.states {
		for _, k := range c.kinds {
			ch <- prometheus.MustNewConstMetric(c.descs[i], prometheus.GaugeValue, float64(counts[state][k]), k)
		}
	}
}

// lagGauge is ipnd_pipeline_lag_seconds{gateway}, read at scrape time:
// one series per configured gateway, and Unknown for the notifications of
// gateways no longer configured.
type lagGauge struct {
	m    *Metrics
	read func() map[string]float64
	desc *prometheus.Desc
}

func (c lagGauge) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c lagGauge) Collect(ch chan<- prometheus.Metric) {
	lag := map[string]float64{}
	c.m.gwMu.RLock()
	for g := range c.m.gateways {
		lag[g] = 0
	}
	c.m.gwMu.RUnlock()
	for g, v := range c.read() {
		g = c.m.gw(g)
		lag[g] = max(lag[g], v)
	}
	for g, v := range lag {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, g)
	}
}

// orderGauge is ipnd_orders{status,test}, read at scrape time.
type orderGauge struct {
	desc     *prometheus.Desc
	statuses []string
	read     func() (real, test map[string]int)
}

func (c orderGauge) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c orderGauge) Collect(ch chan<- prometheus.Metric) {
	real, test := c.read()
	for _, s := range c.statuses {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(real[s]), s, "false")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(test[s]), s, "true")
	}
}

// Metrics are typed handles on every collector. Methods are safe for
// concurrent use and never fail.
type Metrics struct {
	fulfil fulfilMetrics // fulfil.go

	reg       *prometheus.Registry
	gwMu      sync.RWMutex // guards gateways (SetGateways on a config reload)
	gateways  map[string]bool
	reasons   map[string]bool
	received  *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	duplicate *prometheus.CounterVec
	ingest    *prometheus.HistogramVec
	commit    prometheus.Histogram
	batch     prometheus.Histogram
	processed *prometheus.CounterVec
	verify    *prometheus.HistogramVec
	emails    *prometheus.CounterVec
	callbacks *prometheus.CounterVec
	templates map[string]bool
	purged    *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	authFails *prometheus.CounterVec
	reloadOK  prometheus.Gauge
	reloadAt  prometheus.Gauge
	config    *prometheus.GaugeVec
	certs     *prometheus.CounterVec
	certExp   prometheus.Gauge
}

// ReloadResults are the values of the result label of
// ipnd_config_reloads_total.
var ReloadResults = []string{"success", "failure"}

// CertSources and CertResults are the label values of
// ipnd_tls_certificate_updates_total.
var (
	CertSources = []string{"files", "acme"}
	CertResults = []string{"ok", "error"}
)

// DeliveryResults are the values of the result label of
// ipnd_email_attempts_total and ipnd_callback_attempts_total: the attempt
// was accepted (sent), failed and will be retried (failed), or failed for
// good (dead).
var DeliveryResults = []string{"sent", "failed", "dead"}

// ProcessResults are the values of the result label of
// ipnd_notifications_processed_total.
var ProcessResults = []string{"applied", "invalid", "failed", "duplicate"}

// New registers every collector on a fresh registry and pre-creates the
// series for each configured gateway, so that they read 0 before the first
// request.
func New(o Options) *Metrics {
	m := &Metrics{
		reg:      prometheus.NewRegistry(),
		gateways: map[string]bool{Unknown: true},
		reasons:  map[string]bool{},
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipnd_notifications_received_total",
			Help: "Notifications appended to the log (answered 200 as new).",
		}, []string{"gateway"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipnd_notifications_rejected_total",
			Help: "Requests to /ipn/ refused, by reason.",
		}, []string{"gateway", "reason"}),
		duplicate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipnd_notifications_duplicate_total",
			Help: "Notifications answered 200 because they were already stored.",
		}, []string{"gateway"}),
		ingest: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ipnd_ingest_duration_seconds",
			Help:    "Time from reading a request to its durable commit.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"gateway"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ipnd_store_commit_duration_seconds",
			Help:    "Duration of one group commit of notifications (bbolt: one journal write and fdatasync; PostgreSQL: the INSERT transaction; the 200s wait for it).",
			Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .5},
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ipnd_store_commit_records",
			Help:    "Notifications written by one group commit (bbolt: to the journal; PostgreSQL: one INSERT transaction).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipnd_notifications_processed_total",
			Help: "Notifications the pipeline finished, by result.",
		}, []string{"gateway", "result"}),
		emails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipnd_email_attempts_total",
			Help: "Email delivery attempts by template and result: sent (accepted by the SMTP server), failed (retried later), dead (given up).",
		}, []string{"template", "result"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipnd_callback_attempts_total",
			Help: "Shop callback and notification script attempts by result: sent (2xx or exit 0), failed (retried later), dead (given up).",
		}, []string{"result"}),
		templates: map[string]bool{},
		certs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipnd_tls_certificate_updates_total",
			Help: "Certificates loaded from tls_cert/tls_key or obtained with ACME (result ok), and failures to load, obtain or renew one (result error).",
		}, []string{"source", "result"}),
		certExp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ipnd_tls_certificate_expiry_timestamp_seconds",
			Help: "Unix time at which the first of the certificates served expires (0: no TLS, or none obtained yet).",
		}),
		verify: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ipnd_verify_duration_seconds",
			Help:    "Duration of one asynchronous verification (postback).",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"gateway"}),
	}
	for _, r := range o.RejectReasons {
		m.reasons[r] = true
	}
	m.SetGateways(o.Gateways)
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ipnd_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(o.Version, runtime.Version()).Set(1)
	for _, t := range o.Templates {
		m.templates[t] = true
	}
	m.purged = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ipnd_retention_purged_total",
		Help: "Records whose raw or personal data store.raw_retention removed, by what (notifications, outbox_items, orders).",
	}, []string{"what"})
	for _, w := range []string{"notifications", "outbox_items", "orders"} {
		m.purged.WithLabelValues(w)
	}
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ipnd_config_reloads_total",
		Help: "Config reloads (SIGHUP) by result: success, or failure (the running config is kept).",
	}, []string{"result"})
	for _, r := range ReloadResults {
		m.reloads.WithLabelValues(r)
	}
	m.authFails = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ipnd_admin_auth_failures_total",
		Help: "Admin API requests refused for their bearer token, by result: wrong_token (401), or limited (429: the client sent too many wrong tokens).",
	}, []string{"result"})
	for _, r := range []string{"wrong_token", "limited"} {
		m.authFails.WithLabelValues(r)
	}
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ipnd_config_last_reload_successful",
		Help: "1 when the last reload (or the start) loaded the config, 0 when it was refused.",
	})
	m.reloadOK.Set(1)
	m.reloadAt = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ipnd_config_last_reload_success_timestamp_seconds",
		Help: "When the running config was loaded (start or reload), in Unix seconds.",
	})
	m.config = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ipnd_config_info",
		Help: "The running config: sha256 is the first 12 hex digits of the hash of the config file and every secret file it names; always 1.",
	}, []string{"sha256"})
	for _, src := range CertSources {
		for _, r := range CertResults {
			m.certs.WithLabelValues(src, r)
		}
	}
	m.reg.MustRegister(m.received, m.rejected, m.duplicate, m.ingest, m.commit, m.batch, m.processed, m.verify,
		m.emails, m.callbacks, buildInfo, m.purged, m.reloads, m.authFails, m.reloadOK, m.reloadAt, m.config,
		m.certs, m.certExp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Read at scrape time; a series whose function is not set is not
	// registered.
	for _, g := range []struct {
		name, help string
		read       func() float64
		counter    bool
	}{
		{"ipnd_store_size_bytes", "Bytes on disk: the database file plus the journal segments.", o.StoreSize, false},
		{"ipnd_store_writable", "1 while the store takes notifications; 0 while ingest answers 503 (disk full, files deleted, backlog).", o.StoreWritable, false},
		{"ipnd_leader", "1 while this ipnd leads (holds the lease of the shared database and runs the pipeline and the outbox), 0 while another process does; absent on bbolt.", o.Leader, false},
		{"ipnd_parked_events", "Events waiting for their order: a refund, dispute or payment naming only references no payment has brought yet.", o.Parked, false},
		{"ipnd_store_dropped_unacknowledged", "Notifications dropped at a start as the journal's torn tail that may have been acknowledged, until the operator acknowledges them (POST /api/journal/dropped/ack).", o.StoreDropped, false},
		{"ipnd_store_damaged_records_total", "Records that did not decode (a damaged order, state or outbox item): the notification failed or the item went dead, saying so, and the rest went on.", o.StoreDamaged, true},
		{"ipnd_events_dropped_total", "Followers of the live event stream (GET /api/events: ipnd tail, the dashboard) dropped for falling behind; they reconnect.", o.LiveDropped, true},
		{"ipnd_events_followers", "Followers of the live event stream now (GET /api/events and the dashboard's /events).", o.LiveFollowers, false},
		{"ipnd_events_refused_total", "Followers of the live event stream refused (503) because the most allowed at once were following.", o.LiveRefused, true},
	} {
		switch {
		case g.read == nil:
		case g.counter:
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: g.name, Help: g.help}, g.read))
		default:
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help}, g.read))
		}
	}
	if o.PipelineLag != nil {
		m.reg.MustRegister(lagGauge{m: m, read: o.PipelineLag, desc: prometheus.NewDesc("ipnd_pipeline_lag_seconds",
			"Age of the oldest notification not yet processed, by gateway (0 when none): the gateway that holds things up.",
			[]string{"gateway"}, nil)})
	}
	if o.OrderCounts != nil {
		m.reg.MustRegister(orderGauge{
			desc: prometheus.NewDesc("ipnd_orders",
				"Orders by status; test=\"true\" counts test orders (sandbox payments, ipnd simulate) apart.", []string{"status", "test"}, nil),
			statuses: o.OrderStatuses,
			read:     o.OrderCounts,
		})
	}
	if o.OutboxCounts != nil {
		g := outboxGauges{kinds: o.OutboxKinds, read: o.OutboxCounts}
		for _, state := range []string{"pending", "dead", "skipped", "discarded"} {
			g.states = append(g.states, state)
			g.descs = append(g.descs, prometheus.NewDesc("ipnd_outbox_"+state, "Outbox items "+state+", by kind.", []string{"kind"}, nil))
		}
		m.reg.MustRegister(g)
	}
	if o.Degraded != nil {
		m.reg.MustRegister(funcGaugeVec{
			desc: prometheus.NewDesc("ipnd_worker_degraded",
				"1 while the worker cannot make progress because the store fails (it retries with capped backoff), else 0.",
				[]string{"worker"}, nil),
			labels: o.Workers,
			read:   o.Degraded,
		})
	}
	return m
}

// Processed counts a notification the pipeline finished; results outside
// ProcessResults are ignored.
func (m *Metrics) Processed(gateway, result string) {
	for _, r := range ProcessResults {
		if r == result {
			m.processed.WithLabelValues(m.gw(gateway), r).Inc()
			return
		}
	}
}

// EmailSent counts one email delivery attempt; unknown templates and
// results are ignored.
func (m *Metrics) EmailSent(template, result string) {
	if m.templates[template] && slices.Contains(DeliveryResults, result) {
		m.emails.WithLabelValues(template, result).Inc()
	}
}

// Callback counts one shop callback or script attempt.
func (m *Metrics) Callback(result string) {
	if slices.Contains(DeliveryResults, result) {
		m.callbacks.WithLabelValues(result).Inc()
	}
}

// CertUpdate counts a certificate loaded or obtained, or a failure to;
// sources and results outside CertSources and CertResults are ignored.
func (m *Metrics) CertUpdate(source, result string) {
	if slices.Contains(CertSources, source) && slices.Contains(CertResults, result) {
		m.certs.WithLabelValues(source, result).Inc()
	}
}

// CertExpiry records when the first of the served certificates expires;
// the zero time records 0.
func (m *Metrics) CertExpiry(t time.Time) {
	if t.IsZero() {
		m.certExp.Set(0)
		return
	}
	m.certExp.Set(float64(t.Unix()))
}

// Verified observes one asynchronous verification.
func (m *Metrics) Verified(gateway string, took time.Duration) {
	m.verify.WithLabelValues(m.gw(gateway)).Observe(took.Seconds())
}

func (m *Metrics) gw(g string) string {
	m.gwMu.RLock()
	defer m.gwMu.RUnlock()
	if m.gateways[g] {
		return g
	}
	return Unknown
}

// SetGateways makes names the configured gateways (at start and on a
// reload): their series exist from then on, at 0 until the first event;
// a removed gateway's series keep their last values.
func (m *Metrics) SetGateways(names []string) {
	m.gwMu.Lock()
	defer m.gwMu.Unlock()
	m.gateways = map[string]bool{Unknown: true}
	for _, g := range names {
		m.gateways[g] = true
		m.received.WithLabelValues(g)
		m.duplicate.WithLabelValues(g)
		for r := range m.reasons { // every series exists from the start, so increase() sees the first
			if r != "unknown_gateway" {
				m.rejected.WithLabelValues(g, r)
			}
		}
		for _, r := range ProcessResults {
			m.processed.WithLabelValues(g, r)
		}
	}
}

// Purged counts records retention purged.
func (m *Metrics) Purged(notifications, outboxItems, orders int) {
	m.purged.WithLabelValues("notifications").Add(float64(notifications))
	m.purged.WithLabelValues("outbox_items").Add(float64(outboxItems))
	m.purged.WithLabelValues("orders").Add(float64(orders))
}

// ConfigLoaded records the running config: its hash and when it was
// loaded (at start and after each successful reload).
func (m *Metrics) ConfigLoaded(hash string, at time.Time) {
	m.config.Reset()
	m.config.WithLabelValues(hash).Set(1)
	m.reloadAt.Set(float64(at.UnixNano()) / 1e9)
}

// AdminAuthFailed counts an admin API request refused for its token:
// limited when the client was past its limit of wrong tokens (429).
func (m *Metrics) AdminAuthFailed(limited bool) {
	if limited {
		m.authFails.WithLabelValues("limited").Inc()
		return
	}
	m.authFails.WithLabelValues("wrong_token").Inc()
}

// Reloaded counts a reload attempt; a failed one keeps the running config.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.reloadOK.Set(1)
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
	m.reloadOK.Set(0)
}

// Received counts a newly stored notification and its ingest latency.
func (m *Metrics) Received(gateway string, ingest time.Duration) {
	g := m.gw(gateway)
	m.received.WithLabelValues(g).Inc()
	m.ingest.WithLabelValues(g).Observe(ingest.Seconds())
}

// Duplicate counts a notification that was already stored.
func (m *Metrics) Duplicate(gateway string) { m.duplicate.WithLabelValues(m.gw(gateway)).Inc() }

// Rejected counts a refused request. Reasons outside the enum given to New
// are counted as "malformed".
func (m *Metrics) Rejected(gateway, reason string) {
	if !m.reasons[reason] {
		reason = "malformed"
	}
	m.rejected.WithLabelValues(m.gw(gateway), reason).Inc()
}

// Committed observes one group commit.
func (m *Metrics) Committed(took time.Duration, records int) {
	m.commit.Observe(took.Seconds())
	m.batch.Observe(float64(records))
}

// Registry is the explicit registry (for tests and extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
