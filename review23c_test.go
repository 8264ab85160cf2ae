package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"ipnd/ipn"
)

// coinPaymentsDaemon starts ipnd with a CoinPayments gateway ("cp",
// merchant M1) and email through smtpd; post sends a signed IPN.
func coinPaymentsDaemon(t *testing.T, smtpd *fakeSMTP) (*daemon, func(form url.Values) int) {
	t.Helper()
	dir := t.TempDir()
	const secret = "ipnsecret"
	cfg := writeTestConfig(t, dir, mailConfig(smtpd.port(), `[log]
level = "warn"
[[gateway]]
name = "cp"
kind = "coinpayments"
secret = "ipnsecret"
merchant_id = "M1"
`))
	d := startDaemon(t, dir, cfg)
	return d, func(form url.Values) int {
		form.Set("ipn_version", "1.0")
		form.Set("ipn_mode", "hmac")
		form.Set("merchant", "M1")
		body := []byte(form.Encode())
		m := hmac.New(sha512.New, []byte(secret))
		m.Write(body)
		req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/cp", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("HMAC", hex.EncodeToString(m.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
}

// A CoinPayments IPN whose received_confirms does not fit 32 bits (the
// gateway takes any int) is acknowledged and applied: its outbox items
// are written in the binary layout (schema 9), which must read them
// back. Before the fix they were written and then refused as damaged:
// the customer's email was never sent and the outbox showed nothing.
func TestReview23cLargeConfirmationsDelivered(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	d, post := coinPaymentsDaemon(t, smtpd)
	for i, confirms := range []string{"2147483648", "9223372036854775807"} {
		order := fmt.Sprintf("CP-ORDER-%d", i)
		email := fmt.Sprintf("buyer%d@example.com", i)
		if code := post(url.Values{"ipn_type": {"api"}, "ipn_id": {fmt.Sprintf("ipn-%d", i)}, "txn_id": {fmt.Sprintf("CPTX%d", i)},
			"status": {"100"}, "amount1": {"19.99"}, "currency1": {"USD"}, "invoice": {order}, "email": {email},
			"received_confirms": {confirms}}); code != 200 {
			t.Fatalf("IPN with received_confirms=%s: %d", confirms, code)
		}
		waitFor(t, "the payment email to "+email, 10*time.Second, func() bool { return len(smtpd.to(email)) == 1 })
		var list struct{ Items []ipn.OutboxItem }
		if code := d.api("GET", "/api/outbox", nil, &list); code != 200 {
			t.Fatalf("outbox: %d", code)
		}
		found := false
		for _, it := range list.Items {
			if it.Effect.OrderID == order && it.Effect.Event != nil && fmt.Sprint(it.Effect.Event.Confirmations) == confirms {
				found = true
			}
		}
		if !found {
			t.Errorf("outbox of %s does not show the event's %s confirmations: %+v", order, confirms, list.Items)
		}
	}
}

var dashRowID = regexp.MustCompile(`<tr><td><a href="/notifications/(\d+)">`)
var dashNextBefore = regexp.MustCompile(`name="before" value="(\d+)"`)

// The dashboard's search (through the identifier index) pages through
// every match once, newest first, and a forged page start (before=) in
// the dashboard or the API never answers 500: above every id, at the
// largest ids, negative, not a number.
func TestReview23cSearchPagesAndForgedCursors(t *testing.T) {
	d, post := webhookDaemon(t, "")
	const n = 120
	for i := 1; i <= n; i++ {
		email := "ann@example.com"
		if i%3 == 0 {
			email = fmt.Sprintf("other%d@example.com", i)
		}
		if code := post(fmt.Sprintf("m-%d", i), "payment.completed", map[string]any{"order_id": fmt.Sprintf("O-%d", i%7),
			"txn_id": fmt.Sprintf("T-%d", i), "amount": "1.00", "currency": "EUR", "customer_email": email}); code != 200 {
			t.Fatalf("post %d: %d", i, code)
		}
	}
	d.drained(n)
	b := signInDash(t, d)
	var want []string
	for i := n; i >= 1; i-- {
		if i%3 != 0 {
			want = append(want, strconv.Itoa(i))
		}
	}
	var got []string
	form := url.Values{"q": {"ANN@example.com"}}
	for pages := 0; pages < 10; pages++ {
		resp, page := b.post("/notifications", form)
		if resp.StatusCode != 200 {
			t.Fatalf("search page %d: %d", pages, resp.StatusCode)
		}
		for _, m := range dashRowID.FindAllStringSubmatch(page, -1) {
			got = append(got, m[1])
		}
		m := dashNextBefore.FindStringSubmatch(page)
		if m == nil {
			break
		}
		form.Set("before", m[1])
	}
	if !slices.Equal(got, want) {
		t.Errorf("search pages: %d rows %v, want %d %v", len(got), got, len(want), want)
	}
	for _, before := range []string{"0", "1", "2", strconv.Itoa(n + 1), "65536", "65537", "281474976710655", "281474976710656",
		"281474976710657", "18446744073709551615", "18446744073709551616", "-1", "x", ""} {
		resp, page := b.post("/notifications", url.Values{"q": {"ann@example.com"}, "before": {before}})
		if resp.StatusCode != 200 {
			t.Errorf("search before=%q: %d", before, resp.StatusCode)
		}
		rows := dashRowID.FindAllStringSubmatch(page, -1)
		if v, err := strconv.ParseUint(before, 10, 64); err == nil && v > 0 && v <= n {
			for _, m := range rows {
				if id, _ := strconv.ParseUint(m[1], 10, 64); id >= v {
					t.Errorf("search before=%s shows %d", before, id)
				}
			}
		}
		for _, q := range []string{"/notifications?before=", "/notifications?order=O-1&before="} {
			if resp, _ := b.get(q + url.QueryEscape(before)); resp.StatusCode != 200 {
				t.Errorf("GET %s%s: %d", q, before, resp.StatusCode)
			}
		}
		var list struct{ Notifications []struct{ ID uint64 } }
		code := d.api("GET", "/api/notifications?order=O-1&before="+url.QueryEscape(before), nil, &list)
		if code != 200 && code != 400 {
			t.Errorf("API before=%q: %d", before, code)
		}
	}
}
