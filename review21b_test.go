package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestBulkReplayOfAppliedSendsNothingAgain: a bulk replay (POST
// /api/replay) of applied notifications processes them again, and each
// ends applied again, but the customer gets no second email and the shop
// no second callback: the effects are idempotent across a replay.
func TestBulkReplayOfAppliedSendsNothingAgain(t *testing.T) {
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr", ""))
	body := ipnBody("txn_id", "T1", "invoice", "R-1")
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != 200 {
		t.Fatalf("IPN = %d", code)
	}
	waitOrder(t, d, "R-1", ipn.OrderPaid)
	waitFor(t, "the payment email and callback", 10*time.Second, func() bool {
		return len(mailPlain(t, smtpd, "buyer@example.com")) == 1 && len(shop.forOrder("R-1")) >= 1
	})
	callbacks := len(shop.forOrder("R-1"))
	outboxOf := func() (n int, pending int) {
		var ob struct {
			Items []struct {
				State  string
				Effect ipn.Effect
			}
		}
		d.api("GET", "/api/outbox?limit=1000", nil, &ob)
		for _, it := range ob.Items {
			if it.Effect.OrderID == "R-1" {
				n++
				if it.State == "pending" {
					pending++
				}
			}
		}
		return
	}
	before, _ := outboxOf()

	for round := 1; round <= 2; round++ {
		var res struct{ Replayed []uint64 }
		if st := d.api("POST", "/api/replay", map[string]any{"state": "applied"}, &res); st != http.StatusAccepted || len(res.Replayed) != 1 {
			t.Fatalf("POST /api/replay: %d %+v", st, res)
		}
		waitFor(t, "the replayed notification applied again", 10*time.Second, func() bool {
			n := d.notification(1)
			h := n.History
			replays := 0
			for _, e := range h {
				if e.Detail == "replay requested" {
					replays++
				}
			}
			return replays == round && n.State == ipn.StateApplied && h[len(h)-1].State == ipn.StateApplied
		})
	}
	after, pending := outboxOf()
	if after != before || pending != 0 {
		t.Fatalf("outbox items of R-1: %d before the replays, %d after (%d pending): a replay queued effects again", before, after, pending)
	}
	if n := len(mailPlain(t, smtpd, "buyer@example.com")); n != 1 {
		t.Errorf("customer emails after two replays: %d, want 1", n)
	}
	if n := len(shop.forOrder("R-1")); n != callbacks {
		t.Errorf("shop callbacks after two replays: %d, want %d", n, callbacks)
	}
}

// TestDashboardForgedCursorsAndDates: forged page cursors and bad dates
// on the dashboard and the admin API answer 400 or an error on the page,
// never a 500.
func TestDashboardForgedCursorsAndDates(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	body := ipnBody("txn_id", "T-1", "invoice", "ORDER-1")
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != 200 {
		t.Fatalf("IPN: %d", code)
	}
	d.waitState(1, "applied")
	b := signInDash(t, d)
	for _, p := range []string{
		"/orders?before=%25%25%25", "/orders?before=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/orders?before=____", "/orders?status=paid&before=%FF%FE",
		"/orders?status=paid&before=AAAA", "/notifications?before=18446744073709551615", "/notifications?before=99999999999999999999999",
		"/notifications?from=2026-13-45", "/notifications?from=9999-12-31&to=9999-12-31", "/notifications?to=0000-01-01",
		"/notifications?from=2099-01-01", "/notifications?from=2026-01-02&to=2026-01-01", "/notifications?state=%00",
		"/notifications-replay?gateway=%00", "/notifications?order=" + strings.Repeat("x", 5000),
	} {
		resp, page := b.get(p)
		if resp.StatusCode >= 500 {
			t.Errorf("GET %s: %d\n%s", p, resp.StatusCode, page)
		}
		if strings.HasPrefix(p, "/notifications?from=2099") && strings.Contains(page, "/notifications/1\"") {
			t.Errorf("GET %s lists notification 1 (received before)", p)
		}
	}
	for _, p := range []string{"/api/orders?before=%25%25", "/api/orders?status=paid&before=AAAA", "/api/notifications?before=abc",
		"/api/notifications?before=99999999999999999999999"} {
		if st := d.api("GET", p, nil, nil); st >= 500 {
			t.Errorf("GET %s: %d", p, st)
		}
	}
}
