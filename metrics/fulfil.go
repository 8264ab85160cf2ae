package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DownloadResults are the values of the result label of
// ipnd_downloads_total.
var DownloadResults = []string{"ok", "partial", "unknown", "limit", "expired", "revoked", "removed", "busy", "rate_limited", "error"}

// LicenseActions and LicenseResults are the labels of
// ipnd_license_requests_total.
var (
	LicenseActions = []string{"activate", "validate", "deactivate"}
	LicenseResults = []string{"ok", "bad_request", "unknown_key", "refused", "rate_limited", "error"}
)

type fulfilMetrics struct {
	once      sync.Once
	downloads *prometheus.CounterVec
	licenses  *prometheus.CounterVec
}

// Fulfilment registers the delivery metrics (SPEC §11):
// ipnd_downloads_total{result}, ipnd_license_requests_total{action,result}
// and ipnd_license_pool_remaining{product} (read from poolRemaining at
// each scrape). Call it once, before serving.
func (m *Metrics) Fulfilment(poolRemaining func() map[string]int) {
	m.fulfil.once.Do(func() {
		m.fulfil.downloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipnd_downloads_total",
			Help: "Download requests by result (ok: a complete download, counted against the link's limit)."}, []string{"result"})
		m.fulfil.licenses = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipnd_license_requests_total",
			Help: "License API requests by action and result."}, []string{"action", "result"})
		for _, r := range DownloadResults {
			m.fulfil.downloads.WithLabelValues(r)
		}
		for _, a := range LicenseActions {
			for _, r := range LicenseResults {
				m.fulfil.licenses.WithLabelValues(a, r)
			}
		}
		m.reg.MustRegister(m.fulfil.downloads, m.fulfil.licenses, poolGauge{
			desc: prometheus.NewDesc("ipnd_license_pool_remaining", "License keys left in each pool product's pool.", []string{"product"}, nil),
			read: poolRemaining,
		})
	})
}

// Download counts a download request (result: one of DownloadResults).
func (m *Metrics) Download(result string) {
	if m.fulfil.downloads != nil {
		m.fulfil.downloads.WithLabelValues(result).Inc()
	}
}

// LicenseRequest counts a License API request.
func (m *Metrics) LicenseRequest(action, result string) {
	if m.fulfil.licenses != nil {
		m.fulfil.licenses.WithLabelValues(action, result).Inc()
	}
}

// poolGauge is ipnd_license_pool_remaining{product}: one series per
// pool product of the config.
type poolGauge struct {
	desc *prometheus.Desc
	read func() map[string]int
}

func (c poolGauge) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c poolGauge) Collect(ch chan<- prometheus.Metric) {
	for p, n := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), p)
	}
}
