package metrics

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLabelsComeFromConfigOnly(t *testing.T) {
	m := New(Options{Version: "v1", Gateways: []string{"stripe"}, RejectReasons: []string{"bad_signature", "malformed"}})
	m.Received("stripe", time.Millisecond)
	m.Duplicate("stripe")
	m.Rejected("stripe", "bad_signature")
	for i := 0; i < 1000; i++ {
		// Names and reasons from request data never become label values.
		m.Rejected(fmt.Sprintf("random-%d", i), fmt.Sprintf("reason-%d", i))
		m.Received(fmt.Sprintf("random-%d", i), time.Millisecond)
	}
	m.Committed(time.Millisecond, 3)
	if n := testutil.CollectAndCount(m.rejected); n != 3 {
		t.Errorf("rejected has %d series, want 3 (stripe × 2 reasons, _unknown/malformed)", n)
	}
	if n := testutil.CollectAndCount(m.received); n != 2 {
		t.Errorf("received has %d series, want 2 (stripe, _unknown)", n)
	}
	want := `
# HELP ipnd_notifications_rejected_total Requests to /ipn/ refused, by reason.
# TYPE ipnd_notifications_rejected_total counter
ipnd_notifications_rejected_total{gateway="_unknown",reason="malformed"} 1000
ipnd_notifications_rejected_total{gateway="stripe",reason="bad_signature"} 1
ipnd_notifications_rejected_total{gateway="stripe",reason="malformed"} 0
`
	if err := testutil.CollectAndCompare(m.rejected, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// ipnd_worker_degraded has one series per configured worker, 1 while it
// is degraded; ipnd_outbox_skipped one per kind.
func TestDegradedAndSkippedGauges(t *testing.T) {
	degraded := map[string]int{}
	m := New(Options{Workers: []string{"pipeline", "outbox"}, Degraded: func() map[string]int { return degraded },
		OutboxKinds: []string{"email_merchant"},
		OutboxCounts: func() map[string]map[string]int {
			return map[string]map[string]int{"skipped": {"email_merchant": 3}}
		}})
	degraded["outbox"] = 1
	want := `
# HELP ipnd_worker_degraded 1 while the worker cannot make progress because the store fails (it retries with capped backoff), else 0.
# TYPE ipnd_worker_degraded gauge
ipnd_worker_degraded{worker="outbox"} 1
ipnd_worker_degraded{worker="pipeline"} 0
# HELP ipnd_outbox_skipped Outbox items skipped, by kind.
# TYPE ipnd_outbox_skipped gauge
ipnd_outbox_skipped{kind="email_merchant"} 3
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "ipnd_worker_degraded", "ipnd_outbox_skipped"); err != nil {
		t.Error(err)
	}
}

// A scrape reads the outbox counts once for the four ipnd_outbox_* gauges
// (on PostgreSQL each read is a query), with the same series as before.
func TestOutboxCountsReadOncePerScrape(t *testing.T) {
	var reads atomic.Int64
	m := New(Options{OutboxKinds: []string{"email_customer", "shop_callback"},
		OutboxCounts: func() map[string]map[string]int {
			reads.Add(1)
			return map[string]map[string]int{"pending": {"shop_callback": 2}, "dead": {"email_customer": 1}, "discarded": {"shop_callback": 4}}
		}})
	want := `
# HELP ipnd_outbox_dead Outbox items dead, by kind.
# TYPE ipnd_outbox_dead gauge
ipnd_outbox_dead{kind="email_customer"} 1
ipnd_outbox_dead{kind="shop_callback"} 0
# HELP ipnd_outbox_discarded Outbox items discarded, by kind.
# TYPE ipnd_outbox_discarded gauge
ipnd_outbox_discarded{kind="email_customer"} 0
ipnd_outbox_discarded{kind="shop_callback"} 4
# HELP ipnd_outbox_pending Outbox items pending, by kind.
# TYPE ipnd_outbox_pending gauge
ipnd_outbox_pending{kind="email_customer"} 0
ipnd_outbox_pending{kind="shop_callback"} 2
# HELP ipnd_outbox_skipped Outbox items skipped, by kind.
# TYPE ipnd_outbox_skipped gauge
ipnd_outbox_skipped{kind="email_customer"} 0
ipnd_outbox_skipped{kind="shop_callback"} 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"ipnd_outbox_pending", "ipnd_outbox_dead", "ipnd_outbox_skipped", "ipnd_outbox_discarded"); err != nil {
		t.Error(err)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("one scrape read the outbox counts %d times, want 1", n)
	}
}
