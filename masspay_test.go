package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
)

// TestPayPalMassPayIsOther: a Mass Pay IPN reports the merchant's own
// payouts; it names the payees (receiver_email_1, ...) and no receiver
// of the merchant's, so it must be stored as type other with nothing
// queued and nothing counted invalid (issue 19 point 8: it ended
// "invalid: receiver_mismatch" and alerted). The variables are those
// PayPal's IPN reference lists for txn_type masspay.
func TestPayPalMassPayIsOther(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	v := url.Values{}
	for _, kv := range [][2]string{
		{"txn_type", "masspay"}, {"payment_status", "Processed"}, {"payment_date", "10:00:00 Nov 24, 2026 PST"},
		{"payer_id", "MERCHANTID1"}, {"payer_email", "shop@example.com"}, {"payer_status", "verified"},
		{"payer_business_name", "Example Shop"}, {"first_name", "Shop"}, {"last_name", "Owner"},
		{"residence_country", "US"}, {"notify_version", "3.9"}, {"charset", "windows-1252"},
		{"verify_sign", "AFcWxV21C7fd0v3bYYYRCpSSRl31A1zq5ZyQ8Ywb4-9RzAHAjwSkb0Ah"}, {"ipn_track_id", "mp1track"},
		{"masspay_txn_id_1", "MP-TXN-1"}, {"receiver_email_1", "affiliate1@example.org"},
		{"mc_gross_1", "25.00"}, {"mc_fee_1", "0.50"}, {"mc_currency_1", "USD"}, {"payment_gross_1", "25.00"},
		{"status_1", "Completed"}, {"unique_id_1", "payout-0001"},
		{"masspay_txn_id_2", "MP-TXN-2"}, {"receiver_email_2", "affiliate2@example.org"},
		{"mc_gross_2", "12.34"}, {"mc_fee_2", "0.25"}, {"mc_currency_2", "USD"}, {"payment_gross_2", "12.34"},
		{"status_2", "Completed"}, {"unique_id_2", "payout-0002"},
	} {
		v.Add(kv[0], kv[1])
	}
	body := []byte(v.Encode())
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != http.StatusOK {
		t.Fatalf("masspay IPN: HTTP %d", code)
	}
	var n admin.Notification
	waitFor(t, "masspay processed", 15*time.Second, func() bool {
		n = admin.Notification{}
		d.api("GET", "/api/notifications/1", nil, &n)
		return n.State.Final()
	})
	if n.State != ipn.StateApplied || n.Event == nil || n.Event.Type != ipn.TypeOther {
		t.Errorf("masspay IPN: state %s, event %+v, history %+v; want applied, type other", n.State, n.Event, n.History)
	}
	var queued struct{ Items []struct{ ID uint64 } }
	if d.api("GET", "/api/outbox?notification=1", nil, &queued); len(queued.Items) != 0 {
		t.Errorf("masspay IPN queued %d outbox items, want none", len(queued.Items))
	}
	// The counter follows the commit: wait for it, then it must say applied.
	var m string
	waitFor(t, "the masspay IPN counted", 15*time.Second, func() bool {
		_, m = adminStatus(t, d, "/metrics")
		return strings.Contains(m, `ipnd_notifications_processed_total{gateway="paypal",result="applied"} 1`) ||
			strings.Contains(m, `ipnd_notifications_processed_total{gateway="paypal",result="invalid"} 1`)
	})
	if !strings.Contains(m, `ipnd_notifications_processed_total{gateway="paypal",result="applied"} 1`) {
		t.Errorf("metrics: want the masspay IPN counted applied, not invalid")
	}
}
