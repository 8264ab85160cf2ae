package main

import (
	"net/http"
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
