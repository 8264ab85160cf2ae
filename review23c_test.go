package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
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
