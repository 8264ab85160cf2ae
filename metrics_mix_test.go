package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"ipnd/ipn/gateway"
)

// TestMetricsScriptedMix drives a known mix of requests and outcomes
// through a real ipnd and checks each counter's exact value on /metrics,
// then lints the exposition.
func TestMetricsScriptedMix(t *testing.T) {
	fake := newFakePayPal(t)
	fake.setAnswer(func(txn string, _ int) (int, string, time.Duration) {
		if txn == "BAD" {
			return 200, "INVALID", 0
		}
		return 200, "VERIFIED", 0
	})
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	smtpd.answer = func(rcpt string, _ int) *smtp.SMTPError {
		if strings.HasPrefix(rcpt, "bounce") {
			return &smtp.SMTPError{Code: 550, Message: "no such user"}
		}
		return nil
	}
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", fmt.Sprintf(`
[[gateway]]
name = "test"
kind = "standard-webhooks"
secret = %q
`, secret))
	// Mail, a rate limit keyed on X-Forwarded-For, a small body limit.
	b, _ := os.ReadFile(cfg)
	conf := strings.Replace(string(b), "rate_limit = 0", "rate_limit = 0.001\nrate_burst = 2\nmax_body_bytes = 2048\ntrusted_proxies = [\"127.0.0.1\"]", 1)
	conf = strings.Replace(conf, "[pipeline]", mailConfig(smtpd.port(), "")[:strings.Index(mailConfig(smtpd.port(), ""), "[pipeline]")]+"[pipeline]", 1)
	os.WriteFile(cfg, []byte(conf), 0o600)
	d := startDaemon(t, dir, cfg)
	key, _ := gateway.DecodeWebhookSecret(secret)

	client := &http.Client{Timeout: 10 * time.Second}
	ip := 0
	send := func(method, path, ctype string, h http.Header, body []byte, from string) int {
		req, _ := http.NewRequest(method, d.addr("public")+path, bytes.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if from == "" {
			ip++
			from = fmt.Sprintf("198.51.100.%d", ip)
		}
		req.Header.Set("X-Forwarded-For", from)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	signed := func(id string, ts int64, body string) http.Header {
		h := http.Header{}
		h.Set("Webhook-Id", id)
		h.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
		h.Set("Webhook-Signature", gateway.SignWebhook(key, id, ts, []byte(body)))
		return h
	}
	now := time.Now().Unix()
	event := func(order, email string) string {
		return fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":%q,"txn_id":"T-%s","amount":"5.00","currency":"USD","customer_email":%q}}`, order, order, email)
	}
	expect := func(code, want int, what string) {
		t.Helper()
		if code != want {
			t.Errorf("%s: status %d, want %d", what, code, want)
		}
	}
	// 3 accepted (one will bounce), 1 duplicate.
	expect(send("POST", "/ipn/test", "application/json", signed("a1", now, event("M-1", "a@example.com")), []byte(event("M-1", "a@example.com")), ""), 200, "accepted 1")
	expect(send("POST", "/ipn/test", "application/json", signed("a2", now, event("M-2", "b@example.com")), []byte(event("M-2", "b@example.com")), ""), 200, "accepted 2")
	expect(send("POST", "/ipn/test", "application/json", signed("a3", now, event("M-3", "bounce@example.com")), []byte(event("M-3", "bounce@example.com")), ""), 200, "accepted 3")
	expect(send("POST", "/ipn/test", "application/json", signed("a1", now, event("M-1", "a@example.com")), []byte(event("M-1", "a@example.com")), ""), 200, "duplicate")
	// One rejection for each reason the daemon can produce from outside.
	expect(send("POST", "/ipn/nope", "application/json", nil, []byte("{}"), ""), 404, "unknown gateway")
	expect(send("GET", "/ipn/test", "", nil, nil, ""), 405, "method")
	big := `{"type":"payment.completed","pad":"` + strings.Repeat("x", 4096) + `"}`
	expect(send("POST", "/ipn/test", "application/json", signed("big", now, big), []byte(big), ""), 413, "too large")
	expect(send("POST", "/ipn/test", "text/plain", signed("tp", now, "{}"), []byte("{}"), ""), 415, "media type")
	expect(send("POST", "/ipn/test", "application/json", signed("forged", now, "{}"), []byte(`{"x":1}`), ""), 401, "bad signature")
	expect(send("POST", "/ipn/test", "application/json", signed("old", now-3600, "{}"), []byte("{}"), ""), 401, "stale")
	expect(send("POST", "/ipn/test", "application/json", signed("bad", now, "[1]"), []byte("[1]"), ""), 400, "malformed")
	for i := 0; i < 3; i++ { // burst 2: the third from one address is limited
		send("POST", "/ipn/test", "text/plain", nil, nil, "203.0.113.9")
	}
	// PayPal: one VERIFIED and applied, one INVALID.
	for _, txn := range []string{"GOOD", "BAD"} {
		body := ipnBody("txn_id", txn, "ipn_track_id", "trk-"+txn, "invoice", "PP-"+txn, "payer_email", "pp@example.com")
		fake.remember(body)
		expect(send("POST", "/ipn/paypal", "application/x-www-form-urlencoded", nil, body, ""), 200, "paypal "+txn)
	}
	d.drained(5)
	var metrics string
	waitFor(t, "emails settled", 10*time.Second, func() bool {
		req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		// Counted at delivery, recorded in the outbox just after: wait for both.
		return strings.Contains(metrics, `ipnd_email_attempts_total{result="dead",template="payment_received"} 1`) &&
			strings.Contains(metrics, `ipnd_email_attempts_total{result="sent",template="payment_received"} 3`) &&
			strings.Contains(metrics, `ipnd_outbox_pending{kind="email_customer"} 0`+"\n")
	})
	for _, want := range []string{
		`ipnd_notifications_received_total{gateway="test"} 3`,
		`ipnd_notifications_received_total{gateway="paypal"} 2`,
		`ipnd_notifications_duplicate_total{gateway="test"} 1`,
		`ipnd_notifications_rejected_total{gateway="_unknown",reason="unknown_gateway"} 1`,
		`ipnd_notifications_rejected_total{gateway="test",reason="method"} 1`,
		`ipnd_notifications_rejected_total{gateway="test",reason="too_large"} 1`,
		`ipnd_notifications_rejected_total{gateway="test",reason="unsupported_media_type"} 3`, // 1 + 2 let through by the limiter
		`ipnd_notifications_rejected_total{gateway="test",reason="bad_signature"} 1`,
		`ipnd_notifications_rejected_total{gateway="test",reason="stale_timestamp"} 1`,
		`ipnd_notifications_rejected_total{gateway="test",reason="malformed"} 1`,
		`ipnd_notifications_rejected_total{gateway="test",reason="rate_limited"} 1`,
		`ipnd_notifications_processed_total{gateway="test",result="applied"} 3`,
		`ipnd_notifications_processed_total{gateway="paypal",result="applied"} 1`,
		`ipnd_notifications_processed_total{gateway="paypal",result="invalid"} 1`,
		`ipnd_verify_duration_seconds_count{gateway="paypal"} 2`,
		`ipnd_email_attempts_total{result="sent",template="payment_received"} 3`,
		`ipnd_email_attempts_total{result="dead",template="payment_received"} 1`,
		`ipnd_outbox_dead{kind="email_customer"} 1`,
		`ipnd_outbox_pending{kind="email_customer"} 0`,
		`ipnd_orders{status="paid",test="false"} 4`,
		`ipnd_pipeline_lag_seconds{gateway="test"} 0`,
		`ipnd_pipeline_lag_seconds{gateway="paypal"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(metrics)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "ipnd_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", metrics)
	}
}

// TestMetricsSeriesBounded: 1,000 random gateway names and 1,000 random
// paths add no more than a handful of series.
func TestMetricsSeriesBounded(t *testing.T) {
	d, _ := webhookDaemon(t, "")
	series := func() int {
		req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "ipnd_") {
				n++
			}
		}
		return n
	}
	before := series()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for i := 0; i < 1000; i++ {
		for _, path := range []string{fmt.Sprintf("/ipn/gw-%d-%x", i, i*7919), fmt.Sprintf("/random/%d/x%x", i, i*104729)} {
			resp, err := client.Post(d.addr("public")+path, "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if after := series(); after-before > 3 {
		t.Errorf("series went from %d to %d after 2,000 requests to random names and paths", before, after)
	}
}
