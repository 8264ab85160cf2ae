package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ipnd/admin"
)

// metrics returns the admin listener's /metrics text.
func (d *daemon) metrics() string {
	d.t.Helper()
	req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// scrape returns the value of one series on the daemon's /metrics (-1
// when it is missing).
func (d *daemon) scrape(series string) float64 {
	d.t.Helper()
	for _, line := range strings.Split(d.metrics(), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				d.t.Fatalf("%s: %v", line, err)
			}
			return v
		}
	}
	return -1
}

// healthz returns the admin /healthz status and body (with the token).
func (d *daemon) healthz() (int, string) {
	d.t.Helper()
	req, _ := http.NewRequest("GET", d.addr("admin")+"/healthz", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestHangingPayPalStallsNoOtherGateway (issue 20 point 1): PayPal's
// verify URL accepts and never answers while PayPal IPNs arrive at 5/s and
// another gateway's notifications at 20/s. Every other notification is
// processed while PayPal hangs; the lag metric and /healthz name paypal;
// once the verify URL answers again every PayPal IPN is applied, each
// verified once.
func TestHangingPayPalStallsNoOtherGateway(t *testing.T) {
	fake := newFakePayPal(t)
	var hanging atomic.Bool
	hanging.Store(true)
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) }) // runs before the fake closes: hung requests end
	fake.setAnswer(func(string, int) (int, string, time.Duration) {
		if hanging.Load() {
			<-ended // never answers while the test runs; ipnd gives up at verify_timeout
		}
		return 200, "VERIFIED", 0
	})
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "error"
[pipeline]
verify_timeout = "15s"
retry_base = "500ms"
retry_cap = "2s"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, fake.srv.URL+"/cgi-bin/webscr", secret))
	d := startDaemon(t, dir, cfg)
	postShop := signedPoster(t, func() string { return d.addr("public") }, secret)

	// 20 s of traffic: 100 PayPal IPNs (5/s) and 400 others (20/s).
	const seconds, paypalRate, otherRate = 20, 5, 20
	const paypalN, otherN = seconds * paypalRate, seconds * otherRate
	var wg sync.WaitGroup
	paced := func(n, perSecond int, send func(i int)) {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for i := range n {
			<-tick.C
			send(i)
		}
	}
	var refused atomic.Int64
	wg.Add(2)
	go paced(paypalN, paypalRate, func(i int) {
		txn := fmt.Sprintf("HANG-%d", i)
		body := ipnBody("txn_id", txn, "ipn_track_id", "track-"+txn, "invoice", "PP-"+txn)
		fake.remember(body)
		resp, err := http.Post(d.addr("public")+"/ipn/paypal", "application/x-www-form-urlencoded", strings.NewReader(string(body)))
		if err != nil || resp.StatusCode != 200 {
			refused.Add(1)
		}
		if err == nil {
			resp.Body.Close()
		}
	})
	go paced(otherN, otherRate, func(i int) {
		id := fmt.Sprintf("other-%d", i)
		if postShop(id, "payment.completed", map[string]any{"order_id": "O-" + id, "txn_id": "T-" + id,
			"amount": "5.00", "currency": "EUR"}) != 200 {
			refused.Add(1)
		}
	})
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d notifications were not acknowledged", n)
	}
	// Today's main had processed 285 of them when the sending ended, and
	// no more until the first postbacks timed out (verify_timeout).
	waitFor(t, fmt.Sprintf("all %d other notifications processed while PayPal hangs", otherN), 15*time.Second, func() bool {
		return d.scrape(`ipnd_notifications_processed_total{gateway="shop",result="applied"}`) == otherN
	})
	if got := d.scrape(`ipnd_notifications_processed_total{gateway="paypal",result="applied"}`); got > 0 {
		t.Errorf("%v PayPal IPNs applied while its verify URL never answered", got)
	}
	// The lag names paypal, not the gateway that is up to date.
	if lag := d.scrape(`ipnd_pipeline_lag_seconds{gateway="paypal"}`); lag <= 0 {
		t.Errorf(`ipnd_pipeline_lag_seconds{gateway="paypal"} = %v, want > 0 while its IPNs wait`, lag)
	}
	if lag := d.scrape(`ipnd_pipeline_lag_seconds{gateway="shop"}`); lag != 0 {
		t.Errorf(`ipnd_pipeline_lag_seconds{gateway="shop"} = %v, want 0: all its notifications are processed`, lag)
	}
	// (Once the first postbacks have timed out.)
	waitFor(t, "/healthz naming paypal", 40*time.Second, func() bool {
		code, body := d.healthz()
		return code == 503 && strings.Contains(body, "paypal")
	})

	// PayPal answers again: every IPN is verified once and applied.
	hanging.Store(false)
	waitFor(t, fmt.Sprintf("all %d PayPal IPNs applied once PayPal answers", paypalN), 90*time.Second, func() bool {
		return d.scrape(`ipnd_notifications_processed_total{gateway="paypal",result="applied"}`) == paypalN
	})
	for i := range paypalN {
		if v := fake.count(fake.verified, fmt.Sprintf("HANG-%d", i)); v != 1 {
			t.Errorf("HANG-%d verified %d times, want 1", i, v)
		}
	}
	if got := d.scrape(`ipnd_notifications_processed_total{gateway="shop",result="applied"}`); got != otherN {
		t.Errorf("other notifications applied %v times, want %d", got, otherN)
	}
	waitFor(t, "/healthz ok again", 30*time.Second, func() bool { code, _ := d.healthz(); return code == 200 })
	if lag := d.scrape(`ipnd_pipeline_lag_seconds{gateway="paypal"}`); lag != 0 {
		t.Errorf(`ipnd_pipeline_lag_seconds{gateway="paypal"} = %v after every IPN was applied, want 0`, lag)
	}
	if fake.mismatch.Load() != 0 {
		t.Errorf("%d postbacks were not byte-exact", fake.mismatch.Load())
	}
}

// TestRemovedGatewayWaitsForReload (issue 19 point 8): a reload that
// removes a gateway whose notifications are still in the pipeline (its
// PayPal verify URL hangs) leaves them received, saying why, without
// failing them, emailing the merchant or holding up the other gateway's
// notifications; a later reload that adds the gateway back processes
// them.
func TestRemovedGatewayWaitsForReload(t *testing.T) {
	fake := newFakePayPal(t)
	var hanging atomic.Bool
	hanging.Store(true)
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	fake.setAnswer(func(string, int) (int, string, time.Duration) {
		if hanging.Load() {
			<-ended
		}
		return 200, "VERIFIED", 0
	})
	smtpSrv := newFakeSMTP(t, "127.0.0.1:0")
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	shop := fmt.Sprintf("[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = %q\n", secret)
	paypal := fmt.Sprintf("[[gateway]]\nname = \"paypal\"\nkind = \"paypal\"\nverify_url = %q\nreceivers = [\"shop@example.com\"]\n",
		fake.srv.URL+"/cgi-bin/webscr")
	base := "[log]\nlevel = \"info\"\n" +
		mailConfig(smtpSrv.port(), "verify_timeout = \"2s\"\nretry_base = \"200ms\"\nretry_cap = \"1s\"\n")
	cfg := writeTestConfig(t, dir, base+shop+paypal)
	var logs strings.Builder
	logw := &syncWriter{w: &logs}
	cmd, _ := startChildTo(t, dir, cfg, logw)
	d := &daemon{t: t, dir: dir}
	reloads := func() float64 { return d.scrape(`ipnd_config_reloads_total{result="success"}`) }
	hup := func(config string, want float64) {
		t.Helper()
		writeTestConfig(t, dir, config)
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("reload %v", want), 10*time.Second, func() bool { return reloads() == want })
	}
	postShop := signedPoster(t, func() string { return d.addr("public") }, secret)

	const paypalN = 12
	for i := range paypalN {
		txn := fmt.Sprintf("RM-%d", i)
		body := ipnBody("txn_id", txn, "ipn_track_id", "track-"+txn, "invoice", "PP-"+txn)
		fake.remember(body)
		if code := d.postIPN("paypal", body); code != 200 {
			t.Fatalf("%s: status %d", txn, code)
		}
	}
	waitFor(t, "postbacks under way", 10*time.Second, func() bool { return fake.count(fake.attempts, "RM-0") > 0 })
	hup(base+shop, 1) // paypal removed
	const otherN = 30
	for i := range otherN {
		id := fmt.Sprintf("rm-other-%d", i)
		if code := postShop(id, "payment.completed", map[string]any{"order_id": "O-" + id, "txn_id": "T-" + id,
			"amount": "5.00", "currency": "EUR"}); code != 200 {
			t.Fatalf("%s: status %d", id, code)
		}
	}
	waitFor(t, "every other notification processed", 20*time.Second, func() bool {
		return d.scrape(`ipnd_notifications_processed_total{gateway="shop",result="applied"}`) == otherN
	})
	// Each PayPal IPN waits, received, and says why (the ones whose
	// postback was under way at the reload once that postback has ended).
	for id := uint64(1); id <= paypalN; id++ {
		waitFor(t, fmt.Sprintf("notification %d waiting for its gateway", id), 20*time.Second, func() bool {
			n := d.notification(id)
			return n.State == "received" && len(n.History) > 0 &&
				strings.Contains(n.History[len(n.History)-1].Detail, `gateway "paypal" is not configured`)
		})
	}
	if code, body := d.healthz(); code != 503 || !strings.Contains(body, "paypal") {
		t.Errorf("healthz = %d %s, want 503 naming paypal", code, body)
	}
	for _, m := range smtpSrv.messages() {
		if strings.Contains(m.Header.Get("Subject"), "verification") {
			t.Errorf("merchant emailed about a notification whose gateway was removed: %q", m.Header.Get("Subject"))
		}
	}

	// The gateway comes back (PayPal answers again): every IPN is applied.
	hanging.Store(false)
	hup(base+shop+paypal, 2)
	waitFor(t, fmt.Sprintf("all %d PayPal IPNs applied after the gateway is back", paypalN), 60*time.Second, func() bool {
		return d.scrape(`ipnd_notifications_processed_total{gateway="paypal",result="applied"}`) == paypalN
	})
	for i := range paypalN {
		if v := fake.count(fake.verified, fmt.Sprintf("RM-%d", i)); v != 1 {
			t.Errorf("RM-%d verified %d times, want 1", i, v)
		}
	}
	if got := d.scrape(`ipnd_notifications_processed_total{gateway="paypal",result="failed"}`); got > 0 {
		t.Errorf("%v PayPal IPNs failed", got)
	}
	logw.mu.Lock()
	out := logs.String()
	logw.mu.Unlock()
	if strings.Contains(out, "no longer configured") {
		t.Errorf("a notification failed because its gateway was removed:\n%s", out)
	}
}

// TestHangingPayPalKill9: ipnd is killed (SIGKILL) while PayPal's verify
// URL hangs and the cursor has passed IPNs still waiting for a postback
// (every other notification processed). After a restart, with PayPal
// answering, each waiting IPN is verified once and applied once.
func TestHangingPayPalKill9(t *testing.T) {
	fake := newFakePayPal(t)
	var hanging atomic.Bool
	hanging.Store(true)
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	fake.setAnswer(func(string, int) (int, string, time.Duration) {
		if hanging.Load() {
			<-ended
		}
		return 200, "VERIFIED", 0
	})
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[pipeline]
verify_timeout = "30s"
retry_base = "200ms"
retry_cap = "1s"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, fake.srv.URL+"/cgi-bin/webscr", secret))
	cmd, exited := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	postShop := signedPoster(t, func() string { return d.addr("public") }, secret)
	const n = 20 // PayPal IPNs (odd ids) and other notifications (even ids)
	for i := range n {
		txn := fmt.Sprintf("K9-%d", i)
		body := ipnBody("txn_id", txn, "ipn_track_id", "track-"+txn, "invoice", "PP-"+txn)
		fake.remember(body)
		if code := d.postIPN("paypal", body); code != 200 {
			t.Fatalf("%s: status %d", txn, code)
		}
		id := fmt.Sprintf("k9-other-%d", i)
		if code := postShop(id, "payment.completed", map[string]any{"order_id": "O-" + id, "txn_id": "T-" + id,
			"amount": "5.00", "currency": "EUR"}); code != 200 {
			t.Fatalf("%s: status %d", id, code)
		}
	}
	for i := range n {
		id := uint64(2*i + 2)
		var nt admin.Notification
		ok := false
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !ok; time.Sleep(10 * time.Millisecond) {
			nt = d.notification(id)
			ok = nt.State == "applied"
		}
		if !ok {
			t.Fatalf("notification %d: %s %+v\n%+v", id, nt.State, nt.History, d.notification(id-1).History)
		}
	}
	// Every PayPal IPN waits, recorded as such (the cursor passed it).
	for i := range n {
		id := uint64(2*i + 1)
		waitFor(t, fmt.Sprintf("notification %d recorded as waiting", id), 10*time.Second, func() bool {
			nt := d.notification(id)
			return nt.State == "received" && len(nt.History) >= 2 && strings.Contains(nt.History[len(nt.History)-1].Detail, "waiting")
		})
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	hanging.Store(false)
	startChild(t, dir, cfg)
	for id := uint64(1); id <= 2*n; id++ {
		waitFor(t, fmt.Sprintf("notification %d applied", id), 30*time.Second, func() bool {
			nt := d.notification(id)
			if nt.State != "applied" {
				t.Logf("%d: %s %+v", id, nt.State, nt.History)
			}
			return nt.State == "applied"
		})
	}
	for i := range n {
		if v := fake.count(fake.verified, fmt.Sprintf("K9-%d", i)); v != 1 {
			t.Errorf("K9-%d verified %d times, want 1", i, v)
		}
	}
	var orders struct {
		Orders []struct {
			ID     string
			Status string
		}
	}
	d.api("GET", "/api/orders?limit=1000", nil, &orders)
	if len(orders.Orders) != 2*n {
		t.Errorf("%d orders, want %d", len(orders.Orders), 2*n)
	}
	for _, o := range orders.Orders {
		if o.Status != "paid" {
			t.Errorf("order %s is %s, want paid", o.ID, o.Status)
		}
	}
}

// TestHeldIPNsFailAfterRetryFor: the IPNs that wait behind a hanging
// PayPal (one postback at a time) still end failed once they have waited
// retry_for, as those whose own postbacks kept failing do, each saying
// why; none is applied.
func TestHeldIPNsFailAfterRetryFor(t *testing.T) {
	fake := newFakePayPal(t)
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	fake.setAnswer(func(string, int) (int, string, time.Duration) {
		<-ended
		return 200, "VERIFIED", 0
	})
	dir := t.TempDir()
	d := startDaemon(t, dir, writeTestConfig(t, dir, fmt.Sprintf(`[pipeline]
workers = 2
verify_timeout = "1s"
retry_base = "100ms"
retry_cap = "200ms"
retry_for = "4s"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
`, fake.srv.URL+"/cgi-bin/webscr")))
	const n = 60 // one at a time, a second each, would take a minute
	for i := range n {
		txn := fmt.Sprintf("RF-%d", i)
		body := ipnBody("txn_id", txn, "ipn_track_id", "track-"+txn, "invoice", "PP-"+txn)
		fake.remember(body)
		if code := d.postIPN("paypal", body); code != 200 {
			t.Fatalf("%s: status %d", txn, code)
		}
	}
	waitFor(t, fmt.Sprintf("all %d failed after retry_for", n), 30*time.Second, func() bool {
		return d.scrape(`ipnd_notifications_processed_total{gateway="paypal",result="failed"}`) == n
	})
	for id := uint64(1); id <= n; id++ {
		if h := d.notification(id).History; !strings.Contains(h[len(h)-1].Detail, "verification failed for 4s") {
			t.Errorf("notification %d: history %+v", id, h)
		}
	}
}
