package main

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// textPart returns the text/plain part of a raw email, decoded.
func textPart(t *testing.T, raw []byte) string {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var find func(h func(string) string, body io.Reader) string
	find = func(h func(string) string, body io.Reader) string {
		mt, params, _ := mime.ParseMediaType(h("Content-Type"))
		if strings.HasPrefix(mt, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				p, err := mr.NextRawPart()
				if err != nil {
					return ""
				}
				if s := find(p.Header.Get, p); s != "" {
					return s
				}
			}
		}
		if mt != "text/plain" {
			return ""
		}
		if strings.EqualFold(h("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		b, _ := io.ReadAll(body)
		return string(b)
	}
	return find(m.Header.Get, m.Body)
}

// TestReviewEmailSaysWhatTheMerchantNeeds: for a 49.95 order paid 1.99
// the review email said "Amount: 1.99 USD / Paid: 1.99 USD / Status:
// completed" (the payment's status), without the expected amount or the
// gateway (issue 19 point 7). It must say what was expected, what
// arrived, through which gateway, why the order is in review, its
// status, and what the merchant can do; and the From header carries
// email.merchant_name as its display name.
func TestReviewEmailSaysWhatTheMerchantNeeds(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	d, post := webhookDaemon(t, fmt.Sprintf(`[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "orders@example.com"
timeout = "2s"
[email]
merchant_to = "owner@example.com"
merchant_name = "Example Shop"
[pipeline]
outbox_retry_base = "20ms"
outbox_retry_cap = "100ms"
`, smtpd.port()))
	d.api("POST", "/api/orders", map[string]any{"id": "R-49", "amount": "49.95", "currency": "USD", "customer_email": "ann@example.com"}, nil)
	if st := post("msg_r49", "payment.completed", map[string]any{"txn_id": "TX-199", "order_id": "R-49", "amount": "1.99",
		"currency": "USD", "status": "completed", "customer_email": "ann@example.com"}); st != 200 {
		t.Fatalf("post: %d", st)
	}
	waitOrder(t, d, "R-49", ipn.OrderReview)
	var raw []byte
	var from string
	waitFor(t, "the review email", 15*time.Second, func() bool {
		smtpd.mu.Lock()
		defer smtpd.mu.Unlock()
		for i, m := range smtpd.got {
			if strings.Contains(m.Header.Get("To"), "owner@example.com") && strings.Contains(m.Header.Get("Subject"), "review") {
				raw, from = smtpd.raw[i], m.Header.Get("From")
				return true
			}
		}
		return false
	})
	if a, err := mail.ParseAddress(from); err != nil || a.Name != "Example Shop" || a.Address != "orders@example.com" {
		t.Errorf("From %q (%v): want the display name Example Shop <orders@example.com>", from, err)
	}
	text := textPart(t, raw)
	for _, want := range []string{
		"Expected:  49.95 USD",             // what was expected
		"Received:  1.99 USD",              // what arrived
		`gateway "shop"`,                   // from which gateway
		"TX-199",                           // which payment
		"Order status: review",             // the order's status, not the payment's
		"differs from the amount expected", // why, in words
		"amount_mismatch",                  // and as recorded
		"/api/orders/R-49/approve",         // what the merchant can do
		"/api/orders/R-49/cancel",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("review email lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Status:    completed") {
		t.Errorf("review email still shows the payment's status as the status:\n%s", text)
	}
}
