package gateway_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// Public vector, GATEWAYS.md §8.1 (paddle-go-sdk webhook_verifier_test.go).
const (
	paddleSecret    = "pdl_ntfset_01hsdn8d43dt7mezr1ef2jtbaw_hKkRiCGyyRhbFwIUuqiTBgI7gnWoV0Gr"
	paddleSignature = "ts=1710929255;h1=6c05ef8fa83c44d751be6d259ec955ce5638e2c54095bf128e408e2fce1589c8"
	paddlePayload   = `{"data":{"id":"pri_01hsdn96k2hxjzsq5yerecdj9j","name":null,"status":"active","quantity":{"maximum":999999,"minimum":1},"tax_mode":"account_setting","product_id":"pro_01hsdn8qp7yydry3x1yeg6a9rv","unit_price":{"amount":"1000","currency_code":"USD"},"custom_data":null,"description":"testing","import_meta":null,"trial_period":null,"billing_cycle":{"interval":"month","frequency":1},"unit_price_overrides":[]},"event_id":"evt_01hsdn97563968dy0szkmgjwh3","event_type":"price.created","occurred_at":"2024-03-20T10:07:35.590857Z","notification_id":"ntf_01hsdn977e920kbgzt6r6c9rqc"}`
)

// Self-computed vectors, GATEWAYS.md §9.
const (
	lemonSecret = "lssecret"
	lemonBody   = `{"meta":{"event_name":"order_created","custom_data":{"order_id":"ORDER-1"}},"data":{"id":"1","type":"orders"}}`
	lemonSig    = "1546355f2121282390f87376068b82fddaf36f8833ce02725ac7b17cf8b63f75"

	razorSecret = "rzsecret"
	razorBody   = `{"entity":"event","event":"payment.captured","payload":{}}`
	razorSig    = "08a26174b90a00bd65b590c6d2912347e946995a6eb5719cedba7a3ac90b0709"

	squareKey  = "sqkey"
	squareURL  = "https://example.com/webhooks/square"
	squareBody = `{"merchant_id":"M1","type":"payment.updated","event_id":"e1","data":{}}`
	squareSig  = "EWB9NBL6xT6J5oBzKLhdxcyTm/AZAinZRZzmNOTCkxw="
)

// The presets of config.example.toml, as GatewayConfigs.
func paddleConfig() gateway.Config {
	return gateway.Config{Name: "paddle", Kind: "hmac", Secrets: []string{paddleSecret}, Tolerance: 5 * time.Second,
		HMAC: gateway.HMACOptions{Header: "Paddle-Signature", Parser: "kv", PairSeparator: ";", SignatureKey: "h1", TimestampKey: "ts",
			Timestamp: "kv", SignedContent: "{ts}:{body}", DedupKey: "json:event_id",
			Fields: gateway.HMACFields{Status: "json:event_type", TxnID: "json:data.id", OrderID: "json:data.custom_data.order_id",
				Amount: "json:data.details.totals.total", AmountMinor: true, Currency: "json:data.currency_code",
				Statuses: map[string]string{"transaction.completed": "completed", "transaction.payment_failed": "failed"}}}}
}

func lemonConfig() gateway.Config {
	return gateway.Config{Name: "lemon", Kind: "hmac", Secrets: []string{lemonSecret},
		HMAC: gateway.HMACOptions{Header: "X-Signature",
			Fields: gateway.HMACFields{Status: "json:meta.event_name", OrderID: "json:meta.custom_data.order_id", TxnID: "json:data.id",
				Amount: "json:data.attributes.total", AmountMinor: true, Currency: "json:data.attributes.currency",
				Email: "json:data.attributes.user_email", Name: "json:data.attributes.user_name",
				Statuses: map[string]string{"order_created": "completed", "order_refunded": "refunded"}}}}
}

func razorpayConfig() gateway.Config {
	return gateway.Config{Name: "razorpay", Kind: "hmac", Secrets: []string{"rzold", razorSecret},
		HMAC: gateway.HMACOptions{Header: "X-Razorpay-Signature",
			Fields: gateway.HMACFields{Status: "json:event", TxnID: "json:payload.payment.entity.id",
				OrderID: "json:payload.payment.entity.notes.order_id", Amount: "json:payload.payment.entity.amount", AmountMinor: true,
				Currency: "json:payload.payment.entity.currency", Email: "json:payload.payment.entity.email",
				Statuses: map[string]string{"payment.captured": "completed", "order.paid": "completed", "payment.failed": "failed"}}}}
}

func squareConfig() gateway.Config {
	return gateway.Config{Name: "square", Kind: "hmac", Secrets: []string{squareKey}, URL: squareURL,
		HMAC: gateway.HMACOptions{Header: "X-Square-Hmacsha256-Signature", Encoding: "base64", SignedContent: "{url}{body}", DedupKey: "json:event_id"}}
}

func TestHMACPaddleVector(t *testing.T) {
	g := mustGateway(t, paddleConfig())
	h := http.Header{"Paddle-Signature": {paddleSignature}}
	signed := time.Unix(1710929255, 0)
	key, err := check(g, h, paddlePayload, jsonMT, signed.Add(3*time.Second))
	if err != nil || key != "evt_01hsdn97563968dy0szkmgjwh3" {
		t.Fatalf("Check(public vector) = %q, %v; want the event_id", key, err)
	}
	if _, err := check(g, h, paddlePayload, jsonMT, signed.Add(6*time.Second)); !errors.Is(err, ipn.ErrStaleTimestamp) {
		t.Errorf("Check 6 s late with tolerance 5 s = %v, want ErrStaleTimestamp", err)
	}
	// "invalid payload" and "invalid secret key" of the SDK test.
	if _, err := check(g, h, `{}`, jsonMT, signed); !errors.Is(err, ipn.ErrBadSignature) {
		t.Errorf("Check({}) = %v, want ErrBadSignature", err)
	}
	bad := paddleConfig()
	bad.Secrets = []string{"abc"}
	_, err = check(mustGateway(t, bad), h, paddlePayload, jsonMT, signed)
	if !errors.Is(err, ipn.ErrBadSignature) {
		t.Errorf("Check(secret abc) = %v, want ErrBadSignature", err)
	}
	assertNoLeak(t, err, "6c05ef8fa83c44d7", paddleSecret, hmacHex(sha256.New, "abc", "1710929255:"+paddlePayload))
	// "invalid signature format".
	if _, err := check(g, http.Header{"Paddle-Signature": {"ts=x;h1=y"}}, paddlePayload, jsonMT, signed); !errors.Is(err, ipn.ErrBadSignature) {
		t.Errorf("Check(ts=x;h1=y) = %v, want ErrBadSignature", err)
	}
	ev, err := g.Normalize(&ipn.Notification{Body: []byte(paddlePayload)})
	want := ipn.Event{Type: ipn.TypeOther, GatewayStatus: "price.created", EventID: "evt_01hsdn97563968dy0szkmgjwh3", TxnID: "pri_01hsdn96k2hxjzsq5yerecdj9j"}
	if err != nil || *ev != want {
		t.Errorf("Normalize(public vector) = %+v, %v\nwant %+v", ev, err, want)
	}
}

func TestHMACSelfComputedVectors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     gateway.Config
		header  http.Header
		body    string
		mac     string // what the documented algorithm gives (recomputed here)
		wantKey string
		want    ipn.Event
	}{
		{"lemon squeezy", lemonConfig(), http.Header{"X-Signature": {lemonSig}, "X-Event-Name": {"order_created"}}, lemonBody,
			hmacHex(sha256.New, lemonSecret, lemonBody), "",
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "order_created", OrderID: "ORDER-1", TxnID: "1"}},
		{"razorpay", razorpayConfig(), http.Header{"X-Razorpay-Signature": {razorSig}, "X-Razorpay-Event-Id": {"evt_R1"}}, razorBody,
			hmacHex(sha256.New, razorSecret, razorBody), "", // x-razorpay-event-id is not signed: no dedup key
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "payment.captured"}},
		{"square", squareConfig(), http.Header{"X-Square-Hmacsha256-Signature": {squareSig}}, squareBody,
			func() string {
				m := hmac.New(sha256.New, []byte(squareKey))
				m.Write([]byte(squareURL + squareBody))
				return base64.StdEncoding.EncodeToString(m.Sum(nil))
			}(), "e1",
			// No fields configured and type payment.updated is not an ipnd status: other.
			ipn.Event{Type: ipn.TypeOther, GatewayStatus: "payment.updated", EventID: "e1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if sig := tc.header.Get(tc.cfg.HMAC.Header); sig != tc.mac {
				t.Fatalf("the documented algorithm gives %s, not the §9 vector %s", tc.mac, sig)
			}
			g := mustGateway(t, tc.cfg)
			key, err := check(g, tc.header, tc.body, jsonMT, testNow)
			if err != nil || key != tc.wantKey {
				t.Fatalf("Check(§9 vector) = %q, %v; want %q", key, err, tc.wantKey)
			}
			n := &ipn.Notification{Body: []byte(tc.body), Headers: http.Header{}}
			for _, k := range g.KeepHeaders() {
				if v := tc.header.Values(k); v != nil {
					n.Headers[k] = v
				}
			}
			ev, err := g.Normalize(n)
			if err != nil || *ev != tc.want {
				t.Errorf("Normalize = %+v, %v\nwant %+v", ev, err, tc.want)
			}
		})
	}
}

// The other documented schemes, configured as the generic kind, accept the
// same vectors as their dedicated adapters.
func TestHMACEmulatesOtherKinds(t *testing.T) {
	stdCfg := func(secret string) gateway.Config {
		return gateway.Config{Name: "sw", Kind: "hmac", Secrets: []string{secret},
			HMAC: gateway.HMACOptions{Header: "Webhook-Signature", Parser: "list", Encoding: "base64", KeyFormat: "base64", KeyPrefix: "whsec_",
				SignedContent: "{id}.{ts}.{body}", ID: "header:Webhook-Id", Timestamp: "header:Webhook-Timestamp"}}
	}
	stripeBody := `{"id":"evt_test_webhook","object":"event","type":"checkout.session.completed"}`
	for _, tc := range []struct {
		name    string
		cfg     gateway.Config
		header  http.Header
		body    string
		mt      string
		now     time.Time
		wantKey string
	}{
		{"stripe", gateway.Config{Name: "st", Kind: "hmac", Secrets: []string{"whsec_test_secret"},
			HMAC: gateway.HMACOptions{Header: "Stripe-Signature", Parser: "kv", SignatureKey: "v1", TimestampKey: "t", Timestamp: "kv",
				SignedContent: "{ts}.{body}", DedupKey: "json:id"}},
			http.Header{"Stripe-Signature": {"t=1700000000,v1=00ff,v0=zz,v1=1fa73ff7286785daa8168695a709e92ce31d02a9202648cb27a1c5f2e233f517"}},
			stripeBody, jsonMT, time.Unix(1700000100, 0), "evt_test_webhook"},
		{"standard webhooks 1", stdCfg("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
			http.Header{"Webhook-Id": {"msg_p5jXN8AQM9LWM0D4loKWxJek"}, "Webhook-Timestamp": {"1614265330"},
				"Webhook-Signature": {"v2,abc v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}},
			`{"test": 2432232314}`, jsonMT, time.Unix(1614265330, 0), "msg_p5jXN8AQM9LWM0D4loKWxJek"},
		{"standard webhooks 2", stdCfg("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
			http.Header{"Webhook-Id": {"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"}, "Webhook-Timestamp": {"1649367553"},
				"Webhook-Signature": {"v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="}},
			`{"email":"test@example.com","username":"test_user"}`, jsonMT, time.Unix(1649367553, 0), "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"},
		{"coinbase", gateway.Config{Name: "cb", Kind: "hmac", Secrets: []string{coinbaseSecret},
			HMAC: gateway.HMACOptions{Header: "X-CC-Webhook-Signature", DedupKey: "json:event.id"}},
			http.Header{"X-Cc-Webhook-Signature": {coinbaseSig}}, coinbasePayload, jsonMT, testNow, "24934862-d980-46cb-9402-43c81b0cdba6"},
		{"btcpay", gateway.Config{Name: "btc", Kind: "hmac", Secrets: []string{btcpaySecret},
			HMAC: gateway.HMACOptions{Header: "BTCPay-Sig", Parser: "prefix", Prefix: "sha256=", DedupKey: "json:deliveryId"}},
			http.Header{"Btcpay-Sig": {btcpaySig}}, btcpayBody, jsonMT, testNow, "d1"},
		{"coinpayments", gateway.Config{Name: "cp", Kind: "hmac", Secrets: []string{cpSecret},
			HMAC: gateway.HMACOptions{Header: "HMAC", Algorithm: "sha512", Body: "form", DedupKey: "form:ipn_id",
				RequiredFields: map[string]string{"form:ipn_mode": "hmac", "form:merchant": "M1"}}},
			http.Header{"Hmac": {cpSig}}, cpBody, formMT, testNow, "abc123"},
		{"nowpayments top-level", gateway.Config{Name: "np", Kind: "hmac", Secrets: []string{npSecret},
			HMAC: gateway.HMACOptions{Header: "x-nowpayments-sig", Algorithm: "sha512", Canonicalize: "json-sorted", DedupKey: "json:payment_id"}},
			http.Header{"X-Nowpayments-Sig": {npSigTop}}, npBody, jsonMT, testNow, "5077125051"},
		{"nowpayments recursive", gateway.Config{Name: "np", Kind: "hmac", Secrets: []string{npSecret},
			HMAC: gateway.HMACOptions{Header: "x-nowpayments-sig", Algorithm: "sha512", Canonicalize: "json-sorted-recursive"}},
			http.Header{"X-Nowpayments-Sig": {npSigRec}}, npBody, jsonMT, testNow, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := check(mustGateway(t, tc.cfg), tc.header, tc.body, tc.mt, tc.now)
			if err != nil || key != tc.wantKey {
				t.Errorf("Check = %q, %v; want %q", key, err, tc.wantKey)
			}
		})
	}
}

func TestHMACAlgorithmsAndEncodings(t *testing.T) {
	body := `{"type":"payment.completed","data":{"txn_id":"T1","amount":"5","currency":"eur"}}`
	for _, alg := range []struct {
		name string
		mac  func(key []byte) []byte
	}{
		{"sha1", func(k []byte) []byte { m := hmac.New(sha1.New, k); m.Write([]byte(body)); return m.Sum(nil) }},
		{"sha256", func(k []byte) []byte { m := hmac.New(sha256.New, k); m.Write([]byte(body)); return m.Sum(nil) }},
		{"sha512", func(k []byte) []byte { m := hmac.New(sha512.New, k); m.Write([]byte(body)); return m.Sum(nil) }},
	} {
		for _, kf := range []struct{ format, secret, key string }{
			{"raw", "k€y", "k€y"}, {"hex", "pre_6b6579", "key"}, {"base64", "pre_a2V5", "key"},
		} {
			for _, enc := range []struct {
				name string
				f    func([]byte) string
			}{
				{"hex", hex.EncodeToString}, {"hex", func(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }},
				{"base64", base64.StdEncoding.EncodeToString}, {"base64", base64.RawStdEncoding.EncodeToString},
				{"base64url", base64.URLEncoding.EncodeToString}, {"base64url", base64.RawURLEncoding.EncodeToString},
			} {
				cfg := gateway.Config{Name: "h", Kind: "hmac", Secrets: []string{kf.secret},
					HMAC: gateway.HMACOptions{Header: "X-Sig", Algorithm: alg.name, Encoding: enc.name, KeyFormat: kf.format, KeyPrefix: "pre_"}}
				g := mustGateway(t, cfg)
				sig := enc.f(alg.mac([]byte(kf.key)))
				if _, err := check(g, http.Header{"X-Sig": {sig}}, body, jsonMT, testNow); err != nil {
					t.Errorf("%s/%s/%s: Check = %v", alg.name, kf.format, enc.name, err)
				}
				if _, err := check(g, http.Header{"X-Sig": {sig}}, body+" ", jsonMT, testNow); !errors.Is(err, ipn.ErrBadSignature) {
					t.Errorf("%s/%s/%s: tampered body: Check = %v, want ErrBadSignature", alg.name, kf.format, enc.name, err)
				}
			}
		}
	}
}

func TestHMACCheckRejections(t *testing.T) {
	body := `{"id":"m1","type":"payment.completed","ts":1800000000,"mode":"live"}`
	const secret, secret2 = "s3cr3t-value", "other-s3cr3t"
	sign := func(key, content string) string { return hmacHex(sha256.New, key, content) }
	ts := strconv.FormatInt(testNow.Unix(), 10)
	kv := mustGateway(t, gateway.Config{Name: "kv", Kind: "hmac", Secrets: []string{secret, secret2},
		HMAC: gateway.HMACOptions{Header: "X-Sig", Parser: "kv", SignatureKey: "v1", TimestampKey: "t", Timestamp: "kv",
			SignedContent: "{ts}.{header:X-Shop}.{body}", RequiredFields: map[string]string{"json:mode": "live"}}})
	bodyTS := mustGateway(t, gateway.Config{Name: "bt", Kind: "hmac", Secrets: []string{secret}, Tolerance: time.Minute,
		HMAC: gateway.HMACOptions{Header: "X-Sig", Timestamp: "json:ts", DedupKey: "json:id"}})
	prefix := mustGateway(t, gateway.Config{Name: "p", Kind: "hmac", Secrets: []string{secret},
		HMAC: gateway.HMACOptions{Header: "X-Sig", Parser: "prefix", Prefix: "sha256="}})
	kvHeader := func(key, t string, shop string) http.Header {
		return http.Header{"X-Sig": {"t=" + t + ",v1=" + sign(key, t+"."+shop+"."+body)}, "X-Shop": {shop}}
	}
	leaks := append(macEncodings(sha256.New, secret, ts+".shop1."+body), macEncodings(sha256.New, secret, body)...)
	leaks = append(leaks, secret, secret2)
	cases := []struct {
		name    string
		g       gateway.Gateway
		header  http.Header
		body    string
		mt      string
		wantErr error
	}{
		{"kv ok", kv, kvHeader(secret, ts, "shop1"), body, jsonMT, nil},
		{"kv second secret", kv, kvHeader(secret2, ts, "shop1"), body, jsonMT, nil},
		{"kv header part tampered", kv, func() http.Header { h := kvHeader(secret, ts, "shop1"); h.Set("X-Shop", "shop2"); return h }(), body, jsonMT, ipn.ErrBadSignature},
		{"kv stale", kv, kvHeader(secret, strconv.FormatInt(testNow.Unix()-301, 10), "shop1"), body, jsonMT, ipn.ErrStaleTimestamp},
		{"kv future", kv, kvHeader(secret, strconv.FormatInt(testNow.Unix()+301, 10), "shop1"), body, jsonMT, ipn.ErrStaleTimestamp},
		{"kv tampered", kv, kvHeader(secret, ts, "shop1"), strings.Replace(body, "m1", "m2", 1), jsonMT, ipn.ErrBadSignature},
		{"kv wrong secret", kv, kvHeader("guess", ts, "shop1"), body, jsonMT, ipn.ErrBadSignature},
		{"kv missing", kv, http.Header{}, body, jsonMT, ipn.ErrBadSignature},
		{"kv no timestamp", kv, http.Header{"X-Sig": {"v1=" + sign(secret, "."+body)}}, body, jsonMT, ipn.ErrBadSignature},
		{"kv garbled", kv, http.Header{"X-Sig": {"t=1,v1"}}, body, jsonMT, ipn.ErrBadSignature},
		{"kv form body", kv, kvHeader(secret, ts, "shop1"), body, formMT, ipn.ErrUnsupportedMedia},
		{"kv required field", kv, http.Header{"X-Sig": {"t=" + ts + ",v1=" + sign(secret, ts+".."+strings.Replace(body, "live", "test", 1))}},
			strings.Replace(body, "live", "test", 1), jsonMT, ipn.ErrBadSignature},
		{"body ts ok", bodyTS, http.Header{"X-Sig": {sign(secret, body)}}, body, jsonMT, nil},
		{"body ts stale", bodyTS, http.Header{"X-Sig": {sign(secret, strings.Replace(body, "1800000000", "1799999000", 1))}},
			strings.Replace(body, "1800000000", "1799999000", 1), jsonMT, ipn.ErrStaleTimestamp},
		{"body ts missing", bodyTS, http.Header{"X-Sig": {sign(secret, `{"id":"m1"}`)}}, `{"id":"m1"}`, jsonMT, ipn.ErrBadSignature},
		{"body not json", bodyTS, http.Header{"X-Sig": {sign(secret, `{"id":`)}}, `{"id":`, jsonMT, ipn.ErrMalformed},
		{"prefix ok", prefix, http.Header{"X-Sig": {"SHA256=" + sign(secret, body)}}, body, jsonMT, nil},
		{"prefix missing prefix", prefix, http.Header{"X-Sig": {sign(secret, body)}}, body, jsonMT, ipn.ErrBadSignature},
		{"prefix second header value", prefix, http.Header{"X-Sig": {"sha256=00", "sha256=" + sign(secret, body)}}, body, jsonMT, nil},
		{"prefix truncated", prefix, http.Header{"X-Sig": {"sha256=" + sign(secret, body)[:60]}}, body, jsonMT, ipn.ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := check(tc.g, tc.header, tc.body, tc.mt, testNow)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tc.wantErr)
			}
			assertNoLeak(t, err, append(leaks, macEncodings(sha256.New, secret, tc.body)...)...)
		})
	}
	if keep := kv.KeepHeaders(); !slices.Contains(keep, "X-Sig") || !slices.Contains(keep, "X-Shop") || !slices.Contains(keep, "User-Agent") {
		t.Errorf("KeepHeaders() = %v, want X-Sig, X-Shop and User-Agent", keep)
	}
}

func TestHMACConfigErrors(t *testing.T) {
	ok := gateway.HMACOptions{Header: "X-Sig"}
	with := func(f func(o *gateway.HMACOptions)) gateway.Config {
		o := ok
		f(&o)
		return gateway.Config{Name: "h", Kind: "hmac", Secrets: []string{"c2VjcmV0"}, HMAC: o}
	}
	if _, err := gateway.New(with(func(*gateway.HMACOptions) {})); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	for name, cfg := range map[string]gateway.Config{
		"no secret":          {Name: "h", Kind: "hmac", HMAC: ok},
		"no header":          with(func(o *gateway.HMACOptions) { o.Header = "" }),
		"parser":             with(func(o *gateway.HMACOptions) { o.Parser = "regex" }),
		"prefix without":     with(func(o *gateway.HMACOptions) { o.Parser = "prefix" }),
		"kv without key":     with(func(o *gateway.HMACOptions) { o.Parser = "kv" }),
		"kv separator":       with(func(o *gateway.HMACOptions) { o.Parser, o.SignatureKey, o.PairSeparator = "kv", "v1", "|" }),
		"algorithm":          with(func(o *gateway.HMACOptions) { o.Algorithm = "md5" }),
		"encoding":           with(func(o *gateway.HMACOptions) { o.Encoding = "base32" }),
		"key format":         with(func(o *gateway.HMACOptions) { o.KeyFormat = "pem" }),
		"key not hex":        with(func(o *gateway.HMACOptions) { o.KeyFormat = "hex" }),
		"no {body}":          with(func(o *gateway.HMACOptions) { o.SignedContent = "{url}" }),
		"unknown {x}":        with(func(o *gateway.HMACOptions) { o.SignedContent = "{x}{body}" }),
		"unclosed {":         with(func(o *gateway.HMACOptions) { o.SignedContent = "{body" }),
		"{ts} without ts":    with(func(o *gateway.HMACOptions) { o.SignedContent = "{ts}.{body}" }),
		"{ts} from body":     with(func(o *gateway.HMACOptions) { o.SignedContent, o.Timestamp = "{ts}.{body}", "json:ts" }),
		"{id} without id":    with(func(o *gateway.HMACOptions) { o.SignedContent = "{id}.{body}" }),
		"id from body":       with(func(o *gateway.HMACOptions) { o.ID = "json:id" }),
		"{url} without url":  with(func(o *gateway.HMACOptions) { o.SignedContent = "{url}{body}" }),
		"kv ts without kv":   with(func(o *gateway.HMACOptions) { o.Timestamp = "kv" }),
		"bad source":         with(func(o *gateway.HMACOptions) { o.DedupKey = "X-Id" }),
		"form path for json": with(func(o *gateway.HMACOptions) { o.DedupKey = "form:id" }),
		"body kind":          with(func(o *gateway.HMACOptions) { o.Body = "xml" }),
		"canonicalize":       with(func(o *gateway.HMACOptions) { o.Canonicalize = "json-c14n" }),
		"canonicalize form":  with(func(o *gateway.HMACOptions) { o.Canonicalize, o.Body = "json-sorted", "form" }),
		"required source":    with(func(o *gateway.HMACOptions) { o.RequiredFields = map[string]string{"mode": "live"} }),
		"status value": with(func(o *gateway.HMACOptions) {
			o.Fields = gateway.HMACFields{Status: "json:s", Statuses: map[string]string{"x": "paid"}}
		}),
		"statuses no source": with(func(o *gateway.HMACOptions) {
			o.Fields = gateway.HMACFields{Statuses: map[string]string{"x": "completed"}}
		}),
	} {
		_, err := gateway.New(cfg)
		if !errors.Is(err, ipn.ErrConfig) {
			t.Errorf("%s: NewGateway = %v, want ErrConfig", name, err)
		}
		assertNoLeak(t, err, "c2VjcmV0")
	}
}

func TestHMACNormalize(t *testing.T) {
	// No fields: ipnd's own envelope, as the standard-webhooks kind reads it.
	env := mustGateway(t, gateway.Config{Name: "e", Kind: "hmac", Secrets: []string{"s"},
		HMAC: gateway.HMACOptions{Header: "X-Sig", SignedContent: "{header:X-Id}.{body}", DedupKey: "header:X-Id"}})
	ev, err := env.Normalize(&ipn.Notification{Headers: http.Header{"X-Id": {"m9"}},
		Body: []byte(`{"type":"payment.completed","data":{"txn_id":"T","order_id":"O","amount":"19.9","currency":"usd"}}`)})
	want := ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "payment.completed", EventID: "m9",
		TxnID: "T", OrderID: "O", Amount: "19.90", Currency: "USD"}
	if err != nil || *ev != want {
		t.Errorf("Normalize(envelope) = %+v, %v\nwant %+v", ev, err, want)
	}
	ev, err = env.Normalize(&ipn.Notification{Headers: http.Header{"X-Id": {"m9"}}, Body: []byte(`[1,2]`)})
	if err != nil || *ev != (ipn.Event{Type: ipn.TypeOther, EventID: "m9"}) {
		t.Errorf("Normalize(foreign body) = %+v, %v; want type other with the event id", ev, err)
	}

	// Fields: Lemon Squeezy with amounts in cents, Razorpay in paise.
	lemon := mustGateway(t, lemonConfig())
	ev, err = lemon.Normalize(&ipn.Notification{Body: []byte(`{"meta":{"event_name":"order_refunded","custom_data":{"order_id":"O7"}},` +
		`"data":{"id":"11","attributes":{"total":1999,"currency":"USD","user_email":"a@b.c","user_name":"Ann"}}}`)})
	want = ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, GatewayStatus: "order_refunded", TxnID: "11", OrderID: "O7",
		Amount: "19.99", Currency: "USD", CustomerEmail: "a@b.c", CustomerName: "Ann"}
	if err != nil || *ev != want {
		t.Errorf("Normalize(lemon refund) = %+v, %v\nwant %+v", ev, err, want)
	}
	razor := mustGateway(t, razorpayConfig())
	ev, err = razor.Normalize(&ipn.Notification{Headers: http.Header{"X-Razorpay-Event-Id": {"E"}},
		Body: []byte(`{"event":"payment.failed","payload":{"payment":{"entity":{"id":"pay_1","amount":50000,"currency":"INR","notes":{"order_id":"O8"}}}}}`)})
	want = ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusFailed, GatewayStatus: "payment.failed", TxnID: "pay_1",
		OrderID: "O8", Amount: "500.00", Currency: "INR"}
	if err != nil || *ev != want {
		t.Errorf("Normalize(razorpay) = %+v, %v\nwant %+v", ev, err, want)
	}
	ev, err = razor.Normalize(&ipn.Notification{Body: []byte(`{"event":"refund.speed_changed"}`)})
	if err != nil || ev.Type != ipn.TypeOther || ev.GatewayStatus != "refund.speed_changed" {
		t.Errorf("Normalize(unmapped event) = %+v, %v; want type other", ev, err)
	}
	// Form fields.
	form := mustGateway(t, gateway.Config{Name: "f", Kind: "hmac", Secrets: []string{"s"}, HMAC: gateway.HMACOptions{Header: "X-Sig", Body: "form",
		DedupKey: "form:id", Fields: gateway.HMACFields{Status: "form:st", Amount: "form:amt", Currency: "form:cur", OrderID: "form:o",
			Statuses: map[string]string{"ok": "completed"}}}})
	ev, err = form.Normalize(&ipn.Notification{Body: []byte("id=9&st=ok&amt=0.5&cur=btc&o=O9")})
	want = ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "ok", EventID: "9", OrderID: "O9", Amount: "0.50000000", Currency: "BTC"}
	if err != nil || *ev != want {
		t.Errorf("Normalize(form) = %+v, %v\nwant %+v", ev, err, want)
	}
	for _, bad := range []struct {
		g    gateway.Gateway
		body string
	}{{lemon, `{"meta":{"event_name":"order_created"},"data":{"attributes":{"total":"19.99","currency":"USD"}}}`},
		{lemon, `nope`}, {form, "amt=1x&cur=USD"}, {form, "%zz"}} {
		if _, err := bad.g.Normalize(&ipn.Notification{Body: []byte(bad.body)}); !errors.Is(err, ipn.ErrMalformed) {
			t.Errorf("Normalize(%s) err = %v, want ErrMalformed", bad.body, err)
		}
	}
}

func FuzzHMACHeader(f *testing.F) {
	const secret = "fuzz-secret"
	body := `{"id":"x"}`
	ts := strconv.FormatInt(testNow.Unix(), 10)
	sum := func(content string) []byte {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(content))
		return m.Sum(nil)
	}
	f.Add("t=" + ts + ",v1=" + hex.EncodeToString(sum(ts+"."+body)))
	f.Add("v1," + base64.StdEncoding.EncodeToString(sum(body)) + " v2,x")
	f.Add("sha256=" + hex.EncodeToString(sum(body)))
	f.Add(hex.EncodeToString(sum(body)))
	f.Add(";;=,,")
	gateways := []struct {
		g gateway.Gateway
		// want lists every correct signature encoding: an accepted header must contain one.
		want []string
	}{
		{mustGateway(f, gateway.Config{Name: "a", Kind: "hmac", Secrets: []string{secret}, HMAC: gateway.HMACOptions{Header: "X-Sig"}}),
			[]string{hex.EncodeToString(sum(body))}},
		{mustGateway(f, gateway.Config{Name: "b", Kind: "hmac", Secrets: []string{secret}, HMAC: gateway.HMACOptions{Header: "X-Sig", Parser: "prefix", Prefix: "sha256="}}),
			[]string{hex.EncodeToString(sum(body))}},
		{mustGateway(f, gateway.Config{Name: "c", Kind: "hmac", Secrets: []string{secret}, HMAC: gateway.HMACOptions{Header: "X-Sig", Parser: "kv",
			SignatureKey: "v1", TimestampKey: "t", Timestamp: "kv", SignedContent: "{ts}.{body}"}}), nil},
		{mustGateway(f, gateway.Config{Name: "d", Kind: "hmac", Secrets: []string{secret}, HMAC: gateway.HMACOptions{Header: "X-Sig", Parser: "list",
			Encoding: "base64"}}), []string{base64.StdEncoding.EncodeToString(sum(body)), base64.RawStdEncoding.EncodeToString(sum(body))}},
	}
	f.Fuzz(func(t *testing.T, header string) {
		for _, gw := range gateways {
			_, err := check(gw.g, http.Header{"X-Sig": {header}}, body, jsonMT, testNow)
			if err != nil {
				if !errors.Is(err, ipn.ErrBadSignature) && !errors.Is(err, ipn.ErrStaleTimestamp) {
					t.Fatalf("%s: Check(%q) = %v: unexpected error kind", gw.g.Name(), header, err)
				}
				continue
			}
			found := gw.want == nil
			for _, w := range gw.want {
				found = found || strings.Contains(strings.ToLower(header), strings.ToLower(w))
			}
			if !found {
				t.Fatalf("%s: Check accepted %q, which holds no correct signature", gw.g.Name(), header)
			}
		}
	})
}
