package main

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestPGIngestBytesTextRefuses: a PayPal IPN (PayPal signs nothing: anyone
// can post one) whose txn_id holds bytes PostgreSQL's text refuses (NUL,
// invalid UTF-8), or whose Content-Type parameter does, is stored and
// answered 200 as on bbolt; it does not fail the group commit of the
// requests that share its transaction, nor turn /healthz 503 (a load
// balancer would take every ipnd out for one such request a second).
func TestPGIngestBytesTextRefuses(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	store := "dsn = " + strconv.Quote(testDSN(t, dir)) + "\n"
	cfg := writePGTestConfig(t, dir, store, `[pipeline]
verify_timeout = "1s"
retry_base = "20ms"
retry_cap = "80ms"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = "`+fake.srv.URL+`/cgi-bin/webscr"
receivers = ["shop@example.com"]
`)
	d := startDaemon(t, dir, cfg)
	post := func(ct string, body []byte) int {
		t.Helper()
		resp, err := http.Post(d.addr("public")+"/ipn/paypal", ct, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const form = "application/x-www-form-urlencoded"
	for _, c := range []struct {
		name, ct string
		body     []byte
	}{
		{"NUL in txn_id", form, ipnBody("txn_id", "T-\x00")},
		{"invalid UTF-8 in txn_id", form, ipnBody("txn_id", "T-\xff")},
		{"invalid UTF-8 in ipn_track_id", form, ipnBody("txn_id", "T-3", "ipn_track_id", "\xc3")},
		{"invalid UTF-8 in the Content-Type", form + "; charset=\"\xff\"", ipnBody("txn_id", "T-4")},
	} {
		fake.remember(c.body)
		if code := post(c.ct, c.body); code != 200 {
			t.Errorf("%s: HTTP %d, want 200 (as on bbolt)", c.name, code)
		}
		if code, body := publicHealthz(t, d.addr("public")); code != 200 {
			t.Errorf("after %s: public /healthz %d %q", c.name, code, body)
		}
		// The same again is a duplicate of it, not a second notification.
		if code := post(c.ct, c.body); code != 200 {
			t.Errorf("%s, resent: HTTP %d, want 200", c.name, code)
		}
	}
	var list struct{ Notifications []struct{ ID uint64 } }
	if code := d.api("GET", "/api/notifications", nil, &list); code != 200 || len(list.Notifications) != 4 {
		t.Errorf("notifications: HTTP %d, %d stored, want 4", code, len(list.Notifications))
	}
	waitFor(t, "every notification processed", 20*time.Second, func() bool {
		var l struct{ Notifications []struct{ State string } }
		if d.api("GET", "/api/notifications?state=received", nil, &l) != 200 {
			return false
		}
		return len(l.Notifications) == 0
	})
}
