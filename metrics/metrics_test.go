package metrics

import (
	"fmt"
	"strings"
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
