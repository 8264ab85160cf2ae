package gateway_test

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v84/webhook"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

func mustGateway(t testing.TB, cfg gateway.Config) gateway.Gateway {
	t.Helper()
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Public vectors from GATEWAYS.md §4.5 (Standard Webhooks python and rust tests).
func TestStandardWebhooksVectors(t *testing.T) {
	for _, v := range []struct{ secret, id, ts, body, want string }{
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
			`{"test": 2432232314}`, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
		{"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", "1649367553",
			`{"email":"test@example.com","username":"test_user"}`, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="},
	} {
		key, err := gateway.DecodeWebhookSecret(v.secret)
		if err != nil {
			t.Fatal(err)
		}
		ts, _ := strconv.ParseInt(v.ts, 10, 64)
		if got := gateway.SignWebhook(key, v.id, ts, []byte(v.body)); got != v.want {
			t.Errorf("SignWebhook(%s) = %s, want %s", v.id, got, v.want)
		}
		g := mustGateway(t, gateway.Config{Name: "sw", Kind: "standard-webhooks", Secrets: []string{v.secret}})
		for _, prefix := range []string{"Webhook-", "Svix-"} {
			h := http.Header{}
			h.Set(prefix+"Id", v.id)
			h.Set(prefix+"Timestamp", v.ts)
			// The real one among an unknown version and a wrong v1 (negative vector).
			h.Set(prefix+"Signature", "v2,abc v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "+v.want)
			key, err := g.Check(&gateway.Inbound{Header: h, Body: []byte(v.body), MediaType: "application/json", Now: time.Unix(ts+10, 0)})
			if err != nil || key != v.id {
				t.Errorf("%s headers: Check = %q, %v; want %q, nil", prefix, key, err, v.id)
			}
		}
	}
}

// Self-computed vector from GATEWAYS.md §9.
func TestStripeVector(t *testing.T) {
	body := `{"id":"evt_test_webhook","object":"event","type":"checkout.session.completed"}`
	got := hex.EncodeToString(gateway.StripeSignature("whsec_test_secret", 1700000000, []byte(body)))
	if want := "1fa73ff7286785daa8168695a709e92ce31d02a9202648cb27a1c5f2e233f517"; got != want {
		t.Errorf("StripeSignature = %s, want %s", got, want)
	}
}

// Signatures made by stripe-go's own test helper verify.
func TestStripeGoHelperSignaturesVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","amount":1999,"currency":"usd"}}}`)
	now := time.Now()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: "whsec_live_abc", Timestamp: now})
	g := mustGateway(t, gateway.Config{Name: "s", Kind: "stripe", Secrets: []string{"whsec_old", "whsec_live_abc"}})
	h := http.Header{"Stripe-Signature": {sp.Header}}
	key, err := g.Check(&gateway.Inbound{Header: h, Body: body, MediaType: "application/json", Now: now})
	if err != nil || key != "evt_1" {
		t.Fatalf("Check(stripe-go header %q) = %q, %v", sp.Header, key, err)
	}
	// And stripe-go accepts what ipnd computes.
	ours := "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=" + hex.EncodeToString(gateway.StripeSignature("whsec_live_abc", now.Unix(), body))
	if err := webhook.ValidatePayload(body, ours, "whsec_live_abc"); err != nil {
		t.Errorf("stripe-go rejects ipnd's signature: %v", err)
	}
}

type signedCase struct {
	name    string
	header  http.Header
	body    string
	wantErr error
}

func stripeHeader(secret string, ts int64, body string, extra ...string) http.Header {
	sig := hex.EncodeToString(gateway.StripeSignature(secret, ts, []byte(body)))
	v := "t=" + strconv.FormatInt(ts, 10) + "," + strings.Join(append(extra, "v1="+sig), ",")
	return http.Header{"Stripe-Signature": {v}}
}

func webhookHeader(secret, id string, ts int64, body string, extra ...string) http.Header {
	key, _ := gateway.DecodeWebhookSecret(secret)
	h := http.Header{}
	h.Set("Webhook-Id", id)
	h.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	h.Set("Webhook-Signature", strings.Join(append(extra, gateway.SignWebhook(key, id, ts, []byte(body))), " "))
	return h
}

const (
	swSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	swSecret2 = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

func TestCheckRejections(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ts := now.Unix()
	body := `{"id":"evt_1","object":"event","type":"charge.refunded"}`
	wbody := `{"type":"payment.completed","data":{}}`
	stripeG := mustGateway(t, gateway.Config{Name: "s", Kind: "stripe", Secrets: []string{"whsec_a", "whsec_b"}})
	swG := mustGateway(t, gateway.Config{Name: "w", Kind: "standard-webhooks", Secrets: []string{swSecret, swSecret2}})
	cases := []struct {
		g gateway.Gateway
		signedCase
		secretsNotShown []string // expected signatures that must never appear in the error
	}{
		{stripeG, signedCase{"stripe ok", stripeHeader("whsec_a", ts, body), body, nil}, nil},
		{stripeG, signedCase{"stripe second secret", stripeHeader("whsec_b", ts, body), body, nil}, nil},
		{stripeG, signedCase{"stripe two v1, one good", stripeHeader("whsec_a", ts, body, "v1=00ff", "v0=zz"), body, nil}, nil},
		{stripeG, signedCase{"stripe stale", stripeHeader("whsec_a", ts-301, body), body, ipn.ErrStaleTimestamp}, nil},
		{stripeG, signedCase{"stripe future", stripeHeader("whsec_a", ts+301, body), body, ipn.ErrStaleTimestamp}, nil},
		{stripeG, signedCase{"stripe tampered", stripeHeader("whsec_a", ts, body), strings.Replace(body, "evt_1", "evt_2", 1), ipn.ErrBadSignature}, nil},
		{stripeG, signedCase{"stripe wrong secret", stripeHeader("whsec_c", ts, body), body, ipn.ErrBadSignature}, nil},
		{stripeG, signedCase{"stripe missing", http.Header{}, body, ipn.ErrBadSignature}, nil},
		{stripeG, signedCase{"stripe garbled", http.Header{"Stripe-Signature": {"t=1,v1"}}, body, ipn.ErrBadSignature}, nil},
		{stripeG, signedCase{"stripe bad t", http.Header{"Stripe-Signature": {"t=x,v1=00"}}, body, ipn.ErrBadSignature}, nil},
		{stripeG, signedCase{"stripe not json", stripeHeader("whsec_a", ts, "nope"), "nope", ipn.ErrMalformed}, nil},
		{swG, signedCase{"webhooks ok", webhookHeader(swSecret, "m1", ts, wbody), wbody, nil}, nil},
		{swG, signedCase{"webhooks rotated", webhookHeader(swSecret2, "m1", ts, wbody), wbody, nil}, nil},
		{swG, signedCase{"webhooks stale", webhookHeader(swSecret, "m1", ts-301, wbody), wbody, ipn.ErrStaleTimestamp}, nil},
		{swG, signedCase{"webhooks tampered", webhookHeader(swSecret, "m1", ts, wbody), wbody + " ", ipn.ErrBadSignature}, nil},
		{swG, signedCase{"webhooks wrong secret", webhookHeader("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "m1", ts, wbody), wbody, ipn.ErrBadSignature}, nil},
		{swG, signedCase{"webhooks missing", http.Header{}, wbody, ipn.ErrBadSignature}, nil},
		{swG, signedCase{"webhooks partial", http.Header{"Webhook-Id": {"m"}, "Webhook-Timestamp": {"1"}, "Webhook-Signature": {"v1,"}}, wbody, ipn.ErrBadSignature}, nil},
		{swG, signedCase{"webhooks garbled ts", http.Header{"Webhook-Id": {"m"}, "Webhook-Timestamp": {"soon"}, "Webhook-Signature": {"v1,AA=="}}, wbody, ipn.ErrBadSignature}, nil},
		{swG, signedCase{"webhooks not json", webhookHeader(swSecret, "m1", ts, "[1]"), "[1]", ipn.ErrMalformed}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.g.Check(&gateway.Inbound{Header: tc.header, Body: []byte(tc.body), MediaType: "application/json", Now: now})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				return
			}
			// The error never reveals an expected signature, in any encoding.
			for _, s := range []string{"whsec_a", "whsec_b"} {
				mac := gateway.StripeSignature(s, ts, []byte(tc.body))
				for _, enc := range []string{hex.EncodeToString(mac), base64.StdEncoding.EncodeToString(mac), s} {
					if strings.Contains(err.Error(), enc) {
						t.Errorf("error %q reveals %q", err, enc)
					}
				}
			}
			for _, s := range []string{swSecret, swSecret2} {
				key, _ := gateway.DecodeWebhookSecret(s)
				want := gateway.SignWebhook(key, "m1", ts, []byte(tc.body))
				if strings.Contains(err.Error(), want[3:]) || strings.Contains(err.Error(), s) {
					t.Errorf("error %q reveals the expected signature or secret", err)
				}
			}
		})
	}
}

func TestGatewayConfigErrors(t *testing.T) {
	for _, cfg := range []gateway.Config{
		{Name: "s", Kind: "stripe"},
		{Name: "w", Kind: "standard-webhooks"},
		{Name: "w", Kind: "standard-webhooks", Secrets: []string{"whsec_***"}},
		{Name: "w", Kind: "standard-webhooks", Secrets: []string{" "}},
		{Name: "x", Kind: "carrier-pigeon", Secrets: []string{"k"}},
	} {
		if _, err := gateway.New(cfg); !errors.Is(err, ipn.ErrConfig) {
			t.Errorf("NewGateway(%+v) err = %v, want ErrConfig", cfg, err)
		}
	}
}

func TestNormalizeWebhookEvent(t *testing.T) {
	for _, tc := range []struct {
		body string
		want ipn.Event
	}{
		{`{"type":"payment.completed","data":{"txn_id":"T1","order_id":"O1","amount":"19.9","currency":"usd","customer_email":"a@b.c"}}`,
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "payment.completed", TxnID: "T1", OrderID: "O1", Amount: "19.90", Currency: "USD", CustomerEmail: "a@b.c", EventID: "m"}},
		{`{"type":"payment.refunded","data":{"amount":1999,"currency":"JPY"}}`,
			ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, GatewayStatus: "payment.refunded", Amount: "1999", Currency: "JPY", EventID: "m"}},
		{`{"type":"payment.completed","data":{"amount":"0.00012","currency":"BTC"}}`,
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "payment.completed", Amount: "0.00012000", Currency: "BTC", EventID: "m"}},
		{`{"type":"subscription.canceled","data":{"subscription_id":"S"}}`,
			ipn.Event{Type: ipn.TypeSubscriptionCanceled, Status: ipn.StatusCanceled, GatewayStatus: "subscription.canceled", SubscriptionID: "S", EventID: "m"}},
		{`{"type":"invoice.sent","data":{}}`, ipn.Event{Type: ipn.TypeOther, GatewayStatus: "invoice.sent", EventID: "m"}},
	} {
		got, err := gateway.ParseWebhookEvent([]byte(tc.body), "m")
		if err != nil || *got != tc.want {
			t.Errorf("ParseWebhookEvent(%s) = %+v, %v\nwant %+v", tc.body, got, err, tc.want)
		}
	}
	for _, bad := range []string{`{"type":"payment.completed","data":{"amount":"1e3","currency":"USD"}}`,
		`{"type":"payment.completed","data":{"amount":"1.234","currency":"USD"}}`, `{"data":5}`, `nope`} {
		if _, err := gateway.ParseWebhookEvent([]byte(bad), "m"); !errors.Is(err, ipn.ErrMalformed) {
			t.Errorf("ParseWebhookEvent(%s) err = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestNormalizeStripe(t *testing.T) {
	g := mustGateway(t, gateway.Config{Name: "s", Kind: "stripe", Secrets: []string{"whsec_a"}})
	body := `{"id":"evt_9","object":"event","type":"checkout.session.completed","livemode":true,"data":{"object":{"id":"cs_1","client_reference_id":"ORDER-7","amount_total":1999,"currency":"usd","payment_status":"paid","customer_details":{"email":"x@y.z","name":"Ann"}}}}`
	ev, err := g.Normalize(&ipn.Notification{Body: []byte(body)})
	want := ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "checkout.session.completed",
		EventID: "evt_9", TxnID: "cs_1", OrderID: "ORDER-7", Amount: "19.99", Currency: "USD", CustomerEmail: "x@y.z", CustomerName: "Ann"}
	if err != nil || *ev != want {
		t.Errorf("Normalize = %+v, %v\nwant %+v", ev, err, want)
	}
}

func FuzzParseStripeSignature(f *testing.F) {
	f.Add("t=1495999758,v1=abc,v1=def,v0=ghi")
	f.Add("t=1,v1=" + strings.Repeat("ab", 32))
	f.Add(",,=")
	f.Fuzz(func(t *testing.T, h string) {
		_, sigs, err := gateway.ParseStripeSignature(h)
		if err == nil && (len(sigs) == 0 || !strings.Contains(h, "t=") || !strings.Contains(h, "v1=")) {
			t.Fatalf("accepted %q without a timestamp or a v1 signature", h)
		}
	})
}

func FuzzParseWebhookSignatures(f *testing.F) {
	f.Add("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v2,x")
	f.Add("v1,")
	f.Fuzz(func(t *testing.T, h string) {
		sigs, err := gateway.ParseWebhookSignatures(h)
		if err == nil && len(sigs) == 0 {
			t.Fatal("no error and no signature")
		}
	})
}

func FuzzNormalize(f *testing.F) {
	f.Add(`{"type":"payment.completed","data":{"amount":"1.00","currency":"USD"}}`)
	f.Add(`{"id":"evt","type":"charge.refunded","data":{"object":{"amount_refunded":5,"currency":"jpy"}}}`)
	sw := mustGateway(f, gateway.Config{Name: "w", Kind: "standard-webhooks", Secrets: []string{swSecret}})
	st := mustGateway(f, gateway.Config{Name: "s", Kind: "stripe", Secrets: []string{"whsec_a"}})
	f.Fuzz(func(t *testing.T, body string) {
		for _, g := range []gateway.Gateway{sw, st} {
			ev, err := g.Normalize(&ipn.Notification{Body: []byte(body), Headers: http.Header{}})
			if err == nil && ev.Amount != "" {
				if _, err := ipn.NormalizeAmount(ev.Amount, ev.Currency); err != nil {
					t.Fatalf("normalized amount %q is not canonical: %v", ev.Amount, err)
				}
			}
		}
	})
}

// A lost Stripe dispute reverses the order without a second merchant email.
func TestStripeDisputeLifecycle(t *testing.T) {
	g := mustGateway(t, gateway.Config{Name: "s", Kind: "stripe", Secrets: []string{"whsec_a"}})
	norm := func(body string) *ipn.Event {
		ev, err := g.Normalize(&ipn.Notification{Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var o *ipn.Order
	var effects []ipn.Effect
	for i, body := range []string{
		`{"id":"evt_1","type":"payment_intent.succeeded","livemode":true,"data":{"object":{"id":"pi_1","amount":1000,"currency":"eur","metadata":{"order_id":"D-1"}}}}`,
		`{"id":"evt_2","type":"charge.dispute.created","livemode":true,"data":{"object":{"id":"dp_1","charge":"ch_1","amount":1000,"currency":"eur","metadata":{"order_id":"D-1"}}}}`,
		`{"id":"evt_3","type":"charge.dispute.closed","livemode":true,"data":{"object":{"id":"dp_1","charge":"ch_1","status":"lost","amount":1000,"currency":"eur","metadata":{"order_id":"D-1"}}}}`,
	} {
		ev := norm(body)
		next, eff := ipn.Apply(o, ev, ipn.ApplyContext{Now: now, Notification: uint64(i + 1), Gateway: "s", EventKey: ipn.EventKey("s", ev)})
		o, effects = &next, append(effects, eff...)
		if i == 1 && o.Status != ipn.OrderDisputed {
			t.Errorf("after dispute.created: %s, want disputed", o.Status)
		}
	}
	if o.Status != ipn.OrderReversed {
		t.Errorf("after a lost dispute: %s, want reversed", o.Status)
	}
	n := 0
	for _, e := range effects {
		if e.Template == ipn.TemplateDisputeOpened {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d dispute_opened emails, want 1", n)
	}
}
