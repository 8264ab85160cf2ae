package main

// Black-box tests of operator-facing behaviour (issue 14).

import (
	"fmt"
	"testing"
	"time"
)

// Replaying an applied PayPal notification while PayPal cannot be reached
// re-applies it (nothing twice) instead of moving it back to received:
// PayPal confirmed it once, and the answer cannot change.
func TestReplayOfVerifiedPayPalNeedsNoPostback(t *testing.T) {
	fake, up := newDownPayPal(t)
	up.Store(true)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	body := ipnBody("txn_id", "T-REPLAY", "invoice", "RP-1")
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	d.waitState(1, "applied")
	up.Store(false) // PayPal unreachable from now on
	before := fake.count(fake.attempts, "T-REPLAY")
	var resp struct{ State string }
	if code := d.api("POST", "/api/notifications/1/replay", nil, &resp); code/100 != 2 {
		t.Fatalf("replay: HTTP %d", code)
	}
	waitFor(t, "the replay processed", 10*time.Second, func() bool {
		n := d.notification(1)
		last := n.History[len(n.History)-1]
		return len(n.History) >= 4 && last.State != "received"
	})
	n := d.notification(1)
	if n.State != "applied" {
		t.Errorf("after a replay with PayPal down: %s, want applied\n%+v", n.State, n.History)
	}
	if got := fake.count(fake.attempts, "T-REPLAY"); got != before {
		t.Errorf("%d postbacks for the replay, want none", got-before)
	}
	var o struct {
		Paid    string
		History []any
	}
	d.api("GET", "/api/orders/RP-1", nil, &o)
	if o.Paid != "19.95" || len(o.History) != 1 {
		t.Errorf("order after replay: paid %s, %d history entries (%s); want one payment", o.Paid, len(o.History), fmt.Sprint(o.History))
	}
}
