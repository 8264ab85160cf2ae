package gateway_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"net/http"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

const (
	jsonMT = "application/json"
	formMT = "application/x-www-form-urlencoded"
)

func hmacHex(h func() hash.Hash, key, content string) string {
	m := hmac.New(h, []byte(key))
	m.Write([]byte(content))
	return hex.EncodeToString(m.Sum(nil))
}

func check(g gateway.Gateway, h http.Header, body, mt string, now time.Time) (string, error) {
	return g.Check(&gateway.Inbound{Header: h, Body: []byte(body), MediaType: mt, Now: now})
}

// assertNoLeak fails when err's text contains any of the given strings (an
// expected MAC in any encoding, or a secret).
func assertNoLeak(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(s)) {
			t.Errorf("error %q reveals %q", err, s)
		}
	}
}

// macEncodings returns the hex and base64 forms of the HMAC of content.
func macEncodings(h func() hash.Hash, key, content string) []string {
	m := hmac.New(h, []byte(key))
	m.Write([]byte(content))
	sum := m.Sum(nil)
	return []string{hex.EncodeToString(sum), base64.StdEncoding.EncodeToString(sum), base64.RawURLEncoding.EncodeToString(sum)}
}

// Public vector, GATEWAYS.md §5.6 (coinbase-commerce-node test/testWebhook.spec.js).
const (
	coinbaseSecret  = "30291a20-0bd1-4267-9b0f-e6e7b123c0bf"
	coinbasePayload = `{"id":1,"scheduled_for":"2017-01-31T20:50:02Z","attempt_number":1,"event":{"id":"24934862-d980-46cb-9402-43c81b0cdba6","type":"charge:created","api_version":"2018-03-22","created_at":"2017-01-31T20:49:02Z","data":{"code":"66BEOV2A","name":"The Sovereign Individual","description":"Mastering the Transition to the Information Age","hosted_url":"https://commerce.coinbase.com/charges/66BEOV2A","created_at":"2017-01-31T20:49:02Z","expires_at":"2017-01-31T21:04:02Z","timeline":[{"time":"2017-01-31T20:49:02Z","status":"NEW"}],"metadata":{},"pricing_type":"no_price","payments":[],"addresses":{"bitcoin":"0000000000000000000000000000000000","ethereum":"0x0000000000000000000000000000000000000000","litecoin":"3000000000000000000000000000000000","bitcoincash":"bitcoincash:000000000000000000000000000000000000000000"}}}}`
	coinbaseSig     = "8be7742c7d372f08a6a3224edadf18a22b65fa9e28f3f2de97376cdaa092590d"
)

// Self-computed vectors, GATEWAYS.md §9.
const (
	btcpaySecret = "HelloWorld"
	btcpayBody   = "{\n  \"deliveryId\": \"d1\",\n  \"type\": \"InvoiceSettled\",\n  \"invoiceId\": \"INV1\"\n}"
	btcpaySig    = "sha256=a7fd11f4d08da539b1ad3b67e529cc1c6ddef1340697a7759e19a91bbfd08317"

	cpSecret = "ipnsecret"
	cpBody   = "ipn_version=1.0&ipn_type=button&ipn_mode=hmac&ipn_id=abc123&merchant=M1&txn_id=CP1&status=100&amount1=10.00&currency1=USD&invoice=ORDER-1"
	cpSig    = "7658e039ed5b854867dbbbf207751bc33bce2fcc2cc6dab659e15e1377a4d6d82c29a9477cd0db38a7e8ae8a620bec098cb163f5d2f36f6dbb8a35949de8c0c2"

	npSecret = "npsecret"
	npBody   = `{"payment_id":5077125051,"payment_status":"finished","pay_address":"bc1qexample","price_amount":10,"price_currency":"usd","pay_amount":0.00017,"actually_paid":0.00017,"pay_currency":"btc","order_id":"ORDER-1","order_description":"test","purchase_id":"6084744717","outcome_amount":0.000165,"outcome_currency":"btc","fee":{"currency":"btc","depositFee":0,"withdrawalFee":0,"serviceFee":0}}`
	npSigTop = "dbf871e0e6a511612e673f6d9fd3c2f5c5833eef6cddc7cd8f959f5689f33e433b811caeb4e6f6ec3a6a8f9bbf5dd03502d226d69e3e02e0abd542f9412d7cc8"
	npSigRec = "6827d498eca4f9fe3623c752788efca82aee2f343c5d6d40657edfe8fcd85833ddd8cf460dba6710227a4086df0650c74213af00140dc1adde4fdf170d1c412a"
)

var testNow = time.Unix(1_800_000_000, 0)

func TestCoinbaseCommerceVector(t *testing.T) {
	if got := hmacHex(sha256.New, coinbaseSecret, coinbasePayload); got != coinbaseSig {
		t.Fatalf("HMAC of the public vector = %s, want %s", got, coinbaseSig)
	}
	g := mustGateway(t, gateway.Config{Name: "cb", Kind: "coinbase-commerce", Secrets: []string{"old-secret", coinbaseSecret}})
	for _, sig := range []string{coinbaseSig, strings.ToUpper(coinbaseSig)} {
		key, err := check(g, http.Header{"X-Cc-Webhook-Signature": {sig}}, coinbasePayload, jsonMT, testNow)
		if err != nil || key != "24934862-d980-46cb-9402-43c81b0cdba6" {
			t.Errorf("Check(public vector, sig %s) = %q, %v; want the event id", sig[:8], key, err)
		}
	}
	// The PHP example trims the body: a trailing newline still verifies.
	if _, err := check(g, http.Header{"X-Cc-Webhook-Signature": {coinbaseSig}}, coinbasePayload+"\n", jsonMT, testNow); err != nil {
		t.Errorf("Check(body + newline) = %v, want nil", err)
	}
	// Negative vector: secret ...c0bg.
	bad := mustGateway(t, gateway.Config{Name: "cb", Kind: "coinbase-commerce", Secrets: []string{"30291a20-0bd1-4267-9b0f-e6e7b123c0bg"}})
	_, err := check(bad, http.Header{"X-Cc-Webhook-Signature": {coinbaseSig}}, coinbasePayload, jsonMT, testNow)
	if !errors.Is(err, ipn.ErrBadSignature) {
		t.Errorf("Check with secret ...c0bg = %v, want ErrBadSignature", err)
	}
	assertNoLeak(t, err, coinbaseSig, hmacHex(sha256.New, "30291a20-0bd1-4267-9b0f-e6e7b123c0bg", coinbasePayload), "30291a20")
}

func TestBTCPayVector(t *testing.T) {
	if got := "sha256=" + hmacHex(sha256.New, btcpaySecret, btcpayBody); got != btcpaySig {
		t.Fatalf("HMAC of the §9 vector = %s, want %s", got, btcpaySig)
	}
	g := mustGateway(t, gateway.Config{Name: "btc", Kind: "btcpay", Secrets: []string{btcpaySecret}})
	key, err := check(g, http.Header{"Btcpay-Sig": {btcpaySig}}, btcpayBody, jsonMT, testNow)
	if err != nil || key != "d1" {
		t.Errorf("Check(§9 vector) = %q, %v; want d1", key, err)
	}
	// A redelivery dedups on the original delivery.
	redelivery := `{"deliveryId":"d2","originalDeliveryId":"d1","isRedelivery":true,"type":"InvoiceSettled","invoiceId":"INV1"}`
	h := http.Header{"Btcpay-Sig": {"SHA256=" + strings.ToUpper(hmacHex(sha256.New, btcpaySecret, redelivery))}}
	if key, err := check(g, h, redelivery, jsonMT, testNow); err != nil || key != "d1" {
		t.Errorf("Check(redelivery) = %q, %v; want d1", key, err)
	}
	if sig, err := gateway.ParseBTCPaySig(btcpaySig); err != nil || hex.EncodeToString(sig) != btcpaySig[7:] {
		t.Errorf("ParseBTCPaySig = %x, %v", sig, err)
	}
}

func TestCoinPaymentsVector(t *testing.T) {
	if got := hmacHex(sha512.New, cpSecret, cpBody); got != cpSig {
		t.Fatalf("HMAC of the §9 vector = %s, want %s", got, cpSig)
	}
	g := mustGateway(t, gateway.Config{Name: "cp", Kind: "coinpayments", Secrets: []string{cpSecret}, MerchantID: "M1"})
	key, err := check(g, http.Header{"Hmac": {cpSig}}, cpBody, formMT, testNow)
	if err != nil || key != "abc123" {
		t.Errorf("Check(§9 vector) = %q, %v; want abc123", key, err)
	}
	ev, err := g.Normalize(&ipn.Notification{Body: []byte(cpBody)})
	want := ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "100", EventID: "abc123",
		TxnID: "CP1", OrderID: "ORDER-1", Amount: "10.00", Currency: "USD", Receiver: "M1"}
	if err != nil || *ev != want {
		t.Errorf("Normalize(§9 vector) = %+v, %v\nwant %+v", ev, err, want)
	}
}

func TestNOWPaymentsVectors(t *testing.T) {
	wantTop := `{"actually_paid":0.00017,"fee":{},"order_description":"test","order_id":"ORDER-1","outcome_amount":0.000165,"outcome_currency":"btc","pay_address":"bc1qexample","pay_amount":0.00017,"pay_currency":"btc","payment_id":5077125051,"payment_status":"finished","price_amount":10,"price_currency":"usd","purchase_id":"6084744717"}`
	wantRec := strings.Replace(wantTop, `"fee":{}`, `"fee":{"currency":"btc","depositFee":0,"serviceFee":0,"withdrawalFee":0}`, 1)
	for _, tc := range []struct {
		recursive      bool
		canonical, mac string
	}{{false, wantTop, npSigTop}, {true, wantRec, npSigRec}} {
		got, err := gateway.SortedJSON([]byte(npBody), tc.recursive)
		if err != nil || string(got) != tc.canonical {
			t.Errorf("SortedJSON(recursive=%v) = %s, %v\nwant %s", tc.recursive, got, err, tc.canonical)
		}
		if mac := hmacHex(sha512.New, npSecret, string(got)); mac != tc.mac {
			t.Errorf("HMAC of the canonical form (recursive=%v) = %s, want §9's %s", tc.recursive, mac, tc.mac)
		}
	}
	g := mustGateway(t, gateway.Config{Name: "np", Kind: "nowpayments", Secrets: []string{npSecret}})
	// The same message, indented and reordered, verifies with either form's signature.
	reordered := "{\n \"fee\": {\"serviceFee\":0,\"withdrawalFee\":0,\"depositFee\":0,\"currency\":\"btc\"},\n" + strings.TrimPrefix(npBody, "{")
	reordered = strings.Replace(reordered, `,"fee":{"currency":"btc","depositFee":0,"withdrawalFee":0,"serviceFee":0}`, "", 1)
	for _, body := range []string{npBody, reordered} {
		for _, sig := range []string{npSigTop, npSigRec, strings.ToUpper(npSigRec)} {
			key, err := check(g, http.Header{"X-Nowpayments-Sig": {sig}}, body, jsonMT, testNow)
			if err != nil || key != "5077125051:finished" {
				t.Errorf("Check(sig %s…) = %q, %v; want 5077125051:finished\nbody %s", sig[:8], key, err, body)
			}
		}
	}
	ev, err := g.Normalize(&ipn.Notification{Body: []byte(npBody)})
	want := ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "finished", EventID: "5077125051:finished",
		TxnID: "5077125051", OrderID: "ORDER-1", Amount: "10.00", Currency: "USD", PaidAmount: "0.00017000", PaidCurrency: "BTC"}
	if err != nil || *ev != want {
		t.Errorf("Normalize(§9 vector) = %+v, %v\nwant %+v", ev, err, want)
	}
}

// JavaScript's JSON.stringify rules that the canonical forms must follow.
func TestSortedJSONMatchesJavaScript(t *testing.T) {
	for _, tc := range []struct{ in, top, rec string }{
		{`{"b":1,"a":{"b":2,"c":3}}`, `{"a":{"b":2},"b":1}`, `{"a":{"b":2,"c":3},"b":1}`},
		{`{"x":[{"x":1,"y":2},3,"s",null,true]}`, `{"x":[{"x":1},3,"s",null,true]}`, `{"x":[{"x":1,"y":2},3,"s",null,true]}`},
		// Numbers: shortest round-trip, JS exponent rules, -0 → 0, overflow → null.
		{`{"a":1.0,"b":1e-7,"c":0.000001,"d":1e21,"e":123456789012345680000,"f":-0,"g":1E400,"h":2.50,"i":0.1e1}`,
			`{"a":1,"b":1e-7,"c":0.000001,"d":1e+21,"e":123456789012345680000,"f":0,"g":null,"h":2.5,"i":1}`, ""},
		// Strings: only '"', '\\' and controls escaped; U+2028 and <>& raw.
		{`{"s":"a\"b\\c\/d\b\f\n\r\t\u0001\u001f\u2028<>&é😀"}`, "{\"s\":\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001f\u2028<>&é😀\"}", ""},
		// Keys sort by UTF-16 code units: U+1F600 (surrogates D83D…) sorts before U+FF21.
		{`{"Ａ":1,"😀":2,"a":3,"B":4}`, `{"B":4,"a":3,"😀":2,"Ａ":1}`, ""},
		// A duplicated key keeps its last value.
		{`{"a":1,"a":2}`, `{"a":2}`, ""},
		{` { } `, `{}`, ""},
	} {
		for _, rec := range []bool{false, true} {
			want := tc.top
			if rec && tc.rec != "" {
				want = tc.rec
			}
			got, err := gateway.SortedJSON([]byte(tc.in), rec)
			if err != nil || string(got) != want {
				t.Errorf("SortedJSON(%s, recursive=%v) = %s, %v; want %s", tc.in, rec, got, err, want)
			}
		}
	}
	for _, bad := range []string{``, `[]`, `null`, `"s"`, `{}{}`, `{"a":}`, `{} x`} {
		if got, err := gateway.SortedJSON([]byte(bad), false); !errors.Is(err, ipn.ErrMalformed) {
			t.Errorf("SortedJSON(%q) = %s, %v; want ErrMalformed", bad, got, err)
		}
	}
}

func TestCryptoCheckRejections(t *testing.T) {
	cb := mustGateway(t, gateway.Config{Name: "cb", Kind: "coinbase-commerce", Secrets: []string{coinbaseSecret}})
	btc := mustGateway(t, gateway.Config{Name: "btc", Kind: "btcpay", Secrets: []string{btcpaySecret}})
	cp := mustGateway(t, gateway.Config{Name: "cp", Kind: "coinpayments", Secrets: []string{cpSecret}, MerchantID: "M1"})
	np := mustGateway(t, gateway.Config{Name: "np", Kind: "nowpayments", Secrets: []string{npSecret}})

	cpSigned := func(body string) http.Header { return http.Header{"Hmac": {hmacHex(sha512.New, cpSecret, body)}} }
	cbSigned := func(body string) http.Header {
		return http.Header{"X-Cc-Webhook-Signature": {hmacHex(sha256.New, coinbaseSecret, body)}}
	}
	npTop, _ := gateway.SortedJSON([]byte(npBody), false)
	tamperedNP := strings.Replace(npBody, `"price_amount":10`, `"price_amount":1`, 1)
	tamperedNPTop, _ := gateway.SortedJSON([]byte(tamperedNP), false)
	tamperedNPRec, _ := gateway.SortedJSON([]byte(tamperedNP), true)

	cases := []struct {
		name    string
		g       gateway.Gateway
		header  http.Header
		body    string
		mt      string
		wantErr error
		// what must never show in the error: expected MACs and secrets
		leak []string
	}{
		{"coinbase ok", cb, http.Header{"X-Cc-Webhook-Signature": {coinbaseSig}}, coinbasePayload, jsonMT, nil, nil},
		{"coinbase missing header", cb, http.Header{}, coinbasePayload, jsonMT, ipn.ErrBadSignature, []string{coinbaseSig}},
		{"coinbase garbled header", cb, http.Header{"X-Cc-Webhook-Signature": {"zz" + coinbaseSig[2:]}}, coinbasePayload, jsonMT, ipn.ErrBadSignature, []string{coinbaseSig}},
		{"coinbase short header", cb, http.Header{"X-Cc-Webhook-Signature": {coinbaseSig[:62]}}, coinbasePayload, jsonMT, ipn.ErrBadSignature, []string{coinbaseSig}},
		{"coinbase tampered", cb, http.Header{"X-Cc-Webhook-Signature": {coinbaseSig}}, strings.Replace(coinbasePayload, "charge:created", "charge:confirmed", 1), jsonMT,
			ipn.ErrBadSignature, macEncodings(sha256.New, coinbaseSecret, strings.Replace(coinbasePayload, "charge:created", "charge:confirmed", 1))},
		{"coinbase wrong secret", cb, http.Header{"X-Cc-Webhook-Signature": {hmacHex(sha256.New, "guess", coinbasePayload)}}, coinbasePayload, jsonMT, ipn.ErrBadSignature, []string{coinbaseSig, coinbaseSecret}},
		{"coinbase form body", cb, http.Header{"X-Cc-Webhook-Signature": {coinbaseSig}}, coinbasePayload, formMT, ipn.ErrUnsupportedMedia, []string{coinbaseSig}},
		{"coinbase no event", cb, cbSigned(`{"id":1}`), `{"id":1}`, jsonMT, ipn.ErrMalformed, nil},
		{"coinbase not json", cb, cbSigned(`nope`), `nope`, jsonMT, ipn.ErrMalformed, nil},

		{"btcpay ok", btc, http.Header{"Btcpay-Sig": {btcpaySig}}, btcpayBody, jsonMT, nil, nil},
		{"btcpay missing", btc, http.Header{}, btcpayBody, jsonMT, ipn.ErrBadSignature, []string{btcpaySig[7:]}},
		{"btcpay no prefix", btc, http.Header{"Btcpay-Sig": {btcpaySig[7:]}}, btcpayBody, jsonMT, ipn.ErrBadSignature, nil},
		{"btcpay sha1 prefix", btc, http.Header{"Btcpay-Sig": {"sha1=" + btcpaySig[7:]}}, btcpayBody, jsonMT, ipn.ErrBadSignature, nil},
		{"btcpay re-serialised body", btc, http.Header{"Btcpay-Sig": {btcpaySig}}, `{"deliveryId":"d1","type":"InvoiceSettled","invoiceId":"INV1"}`, jsonMT,
			ipn.ErrBadSignature, macEncodings(sha256.New, btcpaySecret, `{"deliveryId":"d1","type":"InvoiceSettled","invoiceId":"INV1"}`)},
		{"btcpay wrong secret", btc, http.Header{"Btcpay-Sig": {"sha256=" + hmacHex(sha256.New, "helloworld", btcpayBody)}}, btcpayBody, jsonMT, ipn.ErrBadSignature, []string{btcpaySig[7:], btcpaySecret}},
		{"btcpay no delivery id", btc, http.Header{"Btcpay-Sig": {"sha256=" + hmacHex(sha256.New, btcpaySecret, `{"type":"x"}`)}}, `{"type":"x"}`, jsonMT, ipn.ErrMalformed, nil},

		{"coinpayments ok", cp, http.Header{"Hmac": {cpSig}}, cpBody, formMT, nil, nil},
		{"coinpayments json", cp, http.Header{"Hmac": {cpSig}}, cpBody, jsonMT, ipn.ErrUnsupportedMedia, []string{cpSig}},
		{"coinpayments missing", cp, http.Header{}, cpBody, formMT, ipn.ErrBadSignature, []string{cpSig}},
		{"coinpayments sha256 length", cp, http.Header{"Hmac": {cpSig[:64]}}, cpBody, formMT, ipn.ErrBadSignature, []string{cpSig}},
		{"coinpayments tampered", cp, http.Header{"Hmac": {cpSig}}, strings.Replace(cpBody, "status=100", "status=101", 1), formMT,
			ipn.ErrBadSignature, macEncodings(sha512.New, cpSecret, strings.Replace(cpBody, "status=100", "status=101", 1))},
		{"coinpayments wrong secret", cp, http.Header{"Hmac": {hmacHex(sha512.New, "IPNSECRET", cpBody)}}, cpBody, formMT, ipn.ErrBadSignature, []string{cpSig, cpSecret}},
		{"coinpayments other merchant", cp, cpSigned(strings.Replace(cpBody, "merchant=M1", "merchant=M2", 1)), strings.Replace(cpBody, "merchant=M1", "merchant=M2", 1), formMT, ipn.ErrBadSignature, []string{cpSecret}},
		{"coinpayments no merchant", cp, cpSigned(strings.Replace(cpBody, "&merchant=M1", "", 1)), strings.Replace(cpBody, "&merchant=M1", "", 1), formMT, ipn.ErrBadSignature, nil},
		{"coinpayments httpauth mode", cp, cpSigned(strings.Replace(cpBody, "ipn_mode=hmac", "ipn_mode=httpauth", 1)), strings.Replace(cpBody, "ipn_mode=hmac", "ipn_mode=httpauth", 1), formMT, ipn.ErrBadSignature, nil},
		{"coinpayments no ipn_id", cp, cpSigned(strings.Replace(cpBody, "ipn_id=abc123&", "", 1)), strings.Replace(cpBody, "ipn_id=abc123&", "", 1), formMT, ipn.ErrMalformed, nil},
		{"coinpayments bad escape", cp, cpSigned(cpBody + "&x=%zz"), cpBody + "&x=%zz", formMT, ipn.ErrMalformed, nil},

		{"nowpayments ok", np, http.Header{"X-Nowpayments-Sig": {npSigTop}}, npBody, jsonMT, nil, nil},
		{"nowpayments missing", np, http.Header{}, npBody, jsonMT, ipn.ErrBadSignature, []string{npSigTop, npSigRec}},
		{"nowpayments form", np, http.Header{"X-Nowpayments-Sig": {npSigTop}}, npBody, formMT, ipn.ErrUnsupportedMedia, nil},
		{"nowpayments raw-body mac", np, http.Header{"X-Nowpayments-Sig": {hmacHex(sha512.New, npSecret, npBody)}}, npBody, jsonMT, ipn.ErrBadSignature, []string{npSigTop, npSigRec}},
		{"nowpayments tampered amount", np, http.Header{"X-Nowpayments-Sig": {npSigTop}}, tamperedNP, jsonMT, ipn.ErrBadSignature,
			append(macEncodings(sha512.New, npSecret, string(tamperedNPTop)), macEncodings(sha512.New, npSecret, string(tamperedNPRec))...)},
		{"nowpayments wrong secret", np, http.Header{"X-Nowpayments-Sig": {hmacHex(sha512.New, "npsecret2", string(npTop))}}, npBody, jsonMT, ipn.ErrBadSignature, []string{npSigTop, npSigRec, npSecret}},
		{"nowpayments not an object", np, http.Header{"X-Nowpayments-Sig": {npSigTop}}, `[1]`, jsonMT, ipn.ErrMalformed, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := check(tc.g, tc.header, tc.body, tc.mt, testNow)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tc.wantErr)
			}
			assertNoLeak(t, err, tc.leak...)
		})
	}
}

func TestCryptoConfigErrors(t *testing.T) {
	for _, cfg := range []gateway.Config{
		{Name: "a", Kind: "coinbase-commerce"},
		{Name: "a", Kind: "btcpay"},
		{Name: "a", Kind: "btcpay", Secrets: []string{""}},
		{Name: "a", Kind: "coinpayments", MerchantID: "M1"},
		{Name: "a", Kind: "coinpayments", Secrets: []string{"s"}},
		{Name: "a", Kind: "nowpayments", Secrets: []string{" "}},
	} {
		if _, err := gateway.New(cfg); !errors.Is(err, ipn.ErrConfig) {
			t.Errorf("NewGateway(%+v) err = %v, want ErrConfig", cfg, err)
		}
	}
	for _, k := range []string{"coinbase-commerce", "btcpay", "coinpayments", "nowpayments", "hmac"} {
		found := false
		for _, known := range gateway.Kinds() {
			found = found || known == k
		}
		if !found {
			t.Errorf("Kinds() = %v lacks %s", gateway.Kinds(), k)
		}
	}
}

func TestCryptoAccepts(t *testing.T) {
	for _, tc := range []struct {
		cfg  gateway.Config
		yes  string
		nots []string
	}{
		{gateway.Config{Kind: "coinbase-commerce", Secrets: []string{"s"}}, jsonMT, []string{formMT, "text/plain", ""}},
		{gateway.Config{Kind: "btcpay", Secrets: []string{"s"}}, jsonMT, []string{formMT, ""}},
		{gateway.Config{Kind: "nowpayments", Secrets: []string{"s"}}, jsonMT, []string{formMT, ""}},
		{gateway.Config{Kind: "coinpayments", Secrets: []string{"s"}, MerchantID: "M"}, formMT, []string{jsonMT, "multipart/form-data", ""}},
	} {
		g := mustGateway(t, tc.cfg)
		if !g.Accepts(tc.yes) {
			t.Errorf("%s: Accepts(%q) = false", tc.cfg.Kind, tc.yes)
		}
		for _, mt := range tc.nots {
			if g.Accepts(mt) {
				t.Errorf("%s: Accepts(%q) = true", tc.cfg.Kind, mt)
			}
		}
	}
}

func TestNormalizeCoinbase(t *testing.T) {
	g := mustGateway(t, gateway.Config{Name: "cb", Kind: "coinbase-commerce", Secrets: []string{"s"}})
	body := func(typ, timeline string, extra string) string {
		return `{"id":"d","event":{"id":"E1","type":"` + typ + `","data":{"id":"C1","code":"ABC","metadata":{"order_id":"O1","email":"a@b.c","name":"Ann","n":5},` +
			`"pricing":{"local":{"amount":"19.9","currency":"usd"},"settlement":{"amount":"19.9","currency":"USDC"}},"timeline":[{"status":"NEW"}` + timeline + `]` + extra + `}}}`
	}
	base := ipn.Event{EventID: "E1", TxnID: "C1", OrderID: "O1", CustomerEmail: "a@b.c", CustomerName: "Ann", Amount: "19.90", Currency: "USD"}
	ev := func(typ ipn.EventType, st ipn.EventStatus, gs, flags string) ipn.Event {
		e := base
		e.Type, e.Status, e.GatewayStatus, e.Flags = typ, st, gs, flags
		return e
	}
	payment := `,"payments":[{"status":"CONFIRMED","value":{"local":{"amount":"19.9","currency":"USD"},"crypto":{"amount":"0.00031","currency":"BTC"}}}]`
	for _, tc := range []struct {
		name, body string
		want       ipn.Event
	}{
		{"created", body("charge:created", "", ""), ev(ipn.TypePayment, ipn.StatusPending, "charge:created", "")},
		{"pending counts as paid", body("charge:pending", `,{"status":"PENDING"}`, ""), ev(ipn.TypePayment, ipn.StatusCompleted, "charge:pending", "")},
		{"confirmed", body("charge:confirmed", `,{"status":"COMPLETED"}`, ""), ev(ipn.TypePayment, ipn.StatusCompleted, "charge:confirmed", "")},
		{"failed", body("charge:failed", `,{"status":"FAILED"}`, ""), ev(ipn.TypePayment, ipn.StatusFailed, "charge:failed", "")},
		{"failed expired", body("charge:failed", `,{"status":"EXPIRED"}`, ""), ev(ipn.TypePayment, ipn.StatusExpired, "charge:failed", "")},
		{"failed canceled", body("charge:failed", `,{"status":"CANCELED"}`, ""), ev(ipn.TypePayment, ipn.StatusCanceled, "charge:failed", "")},
		{"underpaid", body("charge:failed", `,{"status":"UNRESOLVED","context":"UNDERPAID"}`, ""), ev(ipn.TypePayment, ipn.StatusPending, "charge:failed", "underpaid")},
		{"overpaid", body("charge:failed", `,{"status":"UNRESOLVED","context":"OVERPAID"}`, ""), ev(ipn.TypePayment, ipn.StatusCompleted, "charge:failed", "overpaid")},
		{"delayed event", body("charge:delayed", `,{"status":"UNRESOLVED","context":"DELAYED"}`, ""), ev(ipn.TypePayment, ipn.StatusPending, "charge:delayed", "paid_late")},
		{"multiple", body("charge:pending", `,{"status":"UNRESOLVED","context":"MULTIPLE"}`, ""), ev(ipn.TypePayment, ipn.StatusPending, "charge:pending", "multiple")},
		{"manual", body("charge:failed", `,{"status":"UNRESOLVED","context":"MANUAL"}`, ""), ev(ipn.TypePayment, ipn.StatusPending, "charge:failed", "manual")},
		{"other context", body("charge:failed", `,{"status":"UNRESOLVED","context":"OTHER"}`, ""), ev(ipn.TypePayment, ipn.StatusPending, "charge:failed", "")},
		{"resolved after unresolved", body("charge:resolved", `,{"status":"UNRESOLVED","context":"UNDERPAID"}`, ""), ev(ipn.TypePayment, ipn.StatusCompleted, "charge:resolved", "")},
		{"unknown type", body("charge:teleported", "", ""), ev(ipn.TypeOther, "", "charge:teleported", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := g.Normalize(&ipn.Notification{Body: []byte(tc.body)})
			if err != nil || *got != tc.want {
				t.Errorf("Normalize = %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
	got, err := g.Normalize(&ipn.Notification{Body: []byte(body("charge:confirmed", "", payment))})
	if err != nil || got.PaidAmount != "0.00031000" || got.PaidCurrency != "BTC" {
		t.Errorf("Normalize(with payment) = %+v, %v; want paid 0.00031000 BTC", got, err)
	}
	// The public vector: a charge without a price.
	got, err = g.Normalize(&ipn.Notification{Body: []byte(coinbasePayload)})
	if err != nil || got.Type != ipn.TypePayment || got.Status != ipn.StatusPending || got.Amount != "" || got.TxnID != "66BEOV2A" {
		t.Errorf("Normalize(public vector) = %+v, %v", got, err)
	}
	for _, bad := range []string{`nope`, `{"event":{"type":"charge:confirmed","data":{"pricing":{"local":{"amount":"1e5x","currency":"USD"}}}}}`,
		`{"event":{"data":{"metadata":[1]}}}`} {
		if _, err := g.Normalize(&ipn.Notification{Body: []byte(bad)}); !errors.Is(err, ipn.ErrMalformed) {
			t.Errorf("Normalize(%s) err = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestNormalizeBTCPay(t *testing.T) {
	g := mustGateway(t, gateway.Config{Name: "btc", Kind: "btcpay", Secrets: []string{"s"}})
	body := func(typ, extra string) string {
		return `{"deliveryId":"d2","originalDeliveryId":"d1","type":"` + typ + `","invoiceId":"INV1","storeId":"S",` +
			`"metadata":{"orderId":"O1","buyerEmail":"a@b.c","buyerName":"Ann"}` + extra + `}`
	}
	ev := func(typ ipn.EventType, st ipn.EventStatus, gs, flags string) ipn.Event {
		return ipn.Event{Type: typ, Status: st, GatewayStatus: gs, Flags: flags, EventID: "d1", TxnID: "INV1",
			OrderID: "O1", CustomerEmail: "a@b.c", CustomerName: "Ann"}
	}
	for _, tc := range []struct {
		name, body string
		want       ipn.Event
	}{
		{"created", body("InvoiceCreated", ""), ev(ipn.TypePayment, ipn.StatusPending, "InvoiceCreated", "")},
		{"processing", body("InvoiceProcessing", `,"overPaid":false`), ev(ipn.TypePayment, ipn.StatusPending, "InvoiceProcessing", "")},
		{"processing overpaid", body("InvoiceProcessing", `,"overPaid":true`), ev(ipn.TypePayment, ipn.StatusPending, "InvoiceProcessing", "overpaid")},
		{"settled", body("InvoiceSettled", `,"manuallyMarked":false,"overPaid":false`), ev(ipn.TypePayment, ipn.StatusCompleted, "InvoiceSettled", "")},
		{"settled overpaid", body("InvoiceSettled", `,"overPaid":true`), ev(ipn.TypePayment, ipn.StatusCompleted, "InvoiceSettled", "overpaid")},
		{"settled by hand", body("InvoiceSettled", `,"manuallyMarked":true`), ev(ipn.TypePayment, ipn.StatusCompleted, "InvoiceSettled", "manual")},
		{"expired", body("InvoiceExpired", `,"partiallyPaid":false`), ev(ipn.TypePayment, ipn.StatusExpired, "InvoiceExpired", "")},
		{"expired partially paid", body("InvoiceExpired", `,"partiallyPaid":true`), ev(ipn.TypePayment, ipn.StatusPending, "InvoiceExpired", "underpaid")},
		{"expired paid partial", body("InvoiceExpiredPaidPartial", ""), ev(ipn.TypePayment, ipn.StatusPending, "InvoiceExpiredPaidPartial", "underpaid")},
		{"paid after expiration", body("InvoicePaidAfterExpiration", ""), ev(ipn.TypePayment, ipn.StatusPending, "InvoicePaidAfterExpiration", "paid_late")},
		{"invalid", body("InvoiceInvalid", `,"manuallyMarked":true`), ev(ipn.TypePayment, ipn.StatusFailed, "InvoiceInvalid", "manual")},
		{"refund", body("InvoiceRefund", `,"pullPaymentId":"pp"`), ev(ipn.TypeOther, "", "InvoiceRefund", "")},
		{"payout", body("PayoutCreated", ""), ev(ipn.TypeOther, "", "PayoutCreated", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := g.Normalize(&ipn.Notification{Body: []byte(tc.body)})
			if err != nil || *got != tc.want {
				t.Errorf("Normalize = %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ extra, amount, cur, flags string }{
		{`,"afterExpiration":false,"paymentMethodId":"BTC-CHAIN","payment":{"id":"p","value":"0.0001","status":"Processing"}`, "0.00010000", "BTC", ""},
		{`,"afterExpiration":true,"paymentMethodId":"BTC-LN","payment":{"value":"0.00000000001"}`, "0.00000000001", "BTC", "paid_late"},
		{`,"paymentMethod":"LTC","payment":{"value":"2.5"}`, "2.50000000", "LTC", ""},
	} {
		got, err := g.Normalize(&ipn.Notification{Body: []byte(body("InvoiceReceivedPayment", tc.extra))})
		if err != nil || got.PaidAmount != tc.amount || got.PaidCurrency != tc.cur || got.Flags != tc.flags || got.Status != ipn.StatusPending {
			t.Errorf("Normalize(received payment %s) = %+v, %v; want %s %s flags %q", tc.extra, got, err, tc.amount, tc.cur, tc.flags)
		}
	}
	// The §9 vector: no originalDeliveryId.
	got, err := g.Normalize(&ipn.Notification{Body: []byte(btcpayBody)})
	if err != nil || got.EventID != "d1" || got.Status != ipn.StatusCompleted || got.Amount != "" {
		t.Errorf("Normalize(§9 vector) = %+v, %v", got, err)
	}
}

func TestNormalizeCoinPayments(t *testing.T) {
	g := mustGateway(t, gateway.Config{Name: "cp", Kind: "coinpayments", Secrets: []string{"s"}, MerchantID: "M1"})
	for _, tc := range []struct {
		status string
		typ    ipn.EventType
		st     ipn.EventStatus
	}{
		{"100", ipn.TypePayment, ipn.StatusCompleted},
		{"101", ipn.TypePayment, ipn.StatusCompleted},
		{"2", ipn.TypePayment, ipn.StatusCompleted},
		{"0", ipn.TypePayment, ipn.StatusPending},
		{"1", ipn.TypePayment, ipn.StatusPending},
		{"3", ipn.TypePayment, ipn.StatusPending},
		{"99", ipn.TypePayment, ipn.StatusPending},
		{"-1", ipn.TypePayment, ipn.StatusCanceled},
		{"-2", ipn.TypeReversal, ipn.StatusReversed},
		{"-3", ipn.TypePayment, ipn.StatusFailed},
		{"soon", ipn.TypeOther, ""},
	} {
		body := "ipn_mode=hmac&ipn_type=api&ipn_id=I&merchant=M1&txn_id=T&status=" + tc.status + "&status_text=x"
		got, err := g.Normalize(&ipn.Notification{Body: []byte(body)})
		if err != nil || got.Type != tc.typ || got.Status != tc.st || got.GatewayStatus != tc.status+" x" {
			t.Errorf("Normalize(status %s) = %+v, %v; want %s %s", tc.status, got, err, tc.typ, tc.st)
		}
	}
	for _, tc := range []struct {
		name, body string
		want       ipn.Event
	}{
		{"underpaid pending", "ipn_type=button&ipn_id=I&merchant=M1&txn_id=T&status=0&status_text=Waiting&amount1=10&currency1=usd&amount2=0.001&currency2=BTC" +
			"&received_amount=0.0005&received_confirms=1&invoice=O1&custom=C&email=a%40b.c&first_name=Ann&last_name=Lee",
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusPending, GatewayStatus: "0 Waiting", EventID: "I", TxnID: "T", OrderID: "O1",
				Amount: "10.00", Currency: "USD", PaidAmount: "0.00050000", PaidCurrency: "BTC", Confirmations: 1, Flags: "underpaid",
				CustomerEmail: "a@b.c", CustomerName: "Ann Lee", Receiver: "M1"}},
		{"overpaid complete", "ipn_type=simple&ipn_id=I&merchant=M1&txn_id=T&status=100&amount1=10&currency1=USD&amount2=0.001&currency2=BTC&received_amount=0.002&custom=C",
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "100", EventID: "I", TxnID: "T", OrderID: "C",
				Amount: "10.00", Currency: "USD", PaidAmount: "0.00200000", PaidCurrency: "BTC", Flags: "overpaid", Receiver: "M1"}},
		{"unknown coin keeps digits", "ipn_type=api&ipn_id=I&merchant=M1&txn_id=T&status=1&amount1=12.123456&currency1=USDT.TRC20",
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusPending, GatewayStatus: "1", EventID: "I", TxnID: "T",
				Amount: "12.123456", Currency: "USDT.TRC20", Receiver: "M1"}},
		{"deposit", "ipn_type=deposit&ipn_id=I&merchant=M1&txn_id=HASH&deposit_id=D9&status=100&amount=0.5&currency=LTC&confirms=6",
			ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, GatewayStatus: "100", EventID: "I", TxnID: "D9",
				Amount: "0.50000000", Currency: "LTC", Confirmations: 6, Receiver: "M1"}},
		{"withdrawal", "ipn_type=withdrawal&ipn_id=I&merchant=M1&id=W&status=2&amount=1&currency=BTC",
			// Not a payment; and only deposits read amount/currency.
			ipn.Event{Type: ipn.TypeOther, GatewayStatus: "2", EventID: "I", Receiver: "M1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := g.Normalize(&ipn.Notification{Body: []byte(tc.body)})
			if err != nil || *got != tc.want {
				t.Errorf("Normalize = %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"status=100&ipn_type=api&amount1=1.2.3&currency1=USD", "a=%zz", "ipn_type=api&amount1=-&currency1=USD&status=100"} {
		if _, err := g.Normalize(&ipn.Notification{Body: []byte(bad)}); !errors.Is(err, ipn.ErrMalformed) {
			t.Errorf("Normalize(%s) err = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestNormalizeNOWPayments(t *testing.T) {
	g := mustGateway(t, gateway.Config{Name: "np", Kind: "nowpayments", Secrets: []string{"s"}})
	body := func(status, paid string) string {
		return `{"payment_id":42,"parent_payment_id":null,"payment_status":"` + status + `","price_amount":19.9,"price_currency":"eur",` +
			`"pay_amount":0.002,"actually_paid":` + paid + `,"pay_currency":"btc","order_id":"O1"}`
	}
	for _, tc := range []struct {
		status, paid string
		typ          ipn.EventType
		st           ipn.EventStatus
		flags        string
	}{
		{"waiting", "0", ipn.TypePayment, ipn.StatusPending, ""},
		{"confirming", "0.002", ipn.TypePayment, ipn.StatusPending, ""},
		{"confirmed", "0.002", ipn.TypePayment, ipn.StatusPending, ""},
		{"sending", "0.002", ipn.TypePayment, ipn.StatusPending, ""},
		{"partially_paid", "0.001", ipn.TypePayment, ipn.StatusPending, "underpaid"},
		{"finished", "0.002", ipn.TypePayment, ipn.StatusCompleted, ""},
		{"finished", "0.0021", ipn.TypePayment, ipn.StatusCompleted, "overpaid"},
		{"failed", "0", ipn.TypePayment, ipn.StatusFailed, ""},
		{"refunded", "0.002", ipn.TypeRefund, ipn.StatusRefunded, ""},
		{"expired", "0", ipn.TypePayment, ipn.StatusExpired, ""},
		{"cancelled", "0", ipn.TypePayment, ipn.StatusCanceled, ""},
		{"teleported", "0", ipn.TypeOther, "", ""},
	} {
		got, err := g.Normalize(&ipn.Notification{Body: []byte(body(tc.status, tc.paid))})
		paid, _ := map[string]string{"0": "0.00000000", "0.002": "0.00200000", "0.001": "0.00100000", "0.0021": "0.00210000"}[tc.paid]
		want := ipn.Event{Type: tc.typ, Status: tc.st, GatewayStatus: tc.status, Flags: tc.flags, EventID: "42:" + tc.status, TxnID: "42",
			OrderID: "O1", Amount: "19.90", Currency: "EUR", PaidAmount: paid, PaidCurrency: "BTC"}
		if err != nil || *got != want {
			t.Errorf("Normalize(%s, paid %s) = %+v, %v\nwant %+v", tc.status, tc.paid, got, err, want)
		}
	}
	// Exponents are expanded digit for digit; amounts are never floats.
	got, err := g.Normalize(&ipn.Notification{Body: []byte(`{"payment_id":"7","payment_status":"finished","price_amount":1e2,"price_currency":"JPY","actually_paid":1.5e-7,"pay_currency":"BTC"}`)})
	if err != nil || got.Amount != "100" || got.PaidAmount != "0.00000015" || got.TxnID != "7" {
		t.Errorf("Normalize(exponents) = %+v, %v", got, err)
	}
	// Keys match exactly: a differently cased key is not payment_status.
	got, err = g.Normalize(&ipn.Notification{Body: []byte(`{"payment_id":1,"PAYMENT_STATUS":"finished"}`)})
	if err != nil || got.Type != ipn.TypeOther {
		t.Errorf("Normalize(PAYMENT_STATUS) = %+v, %v; want type other", got, err)
	}
	for _, bad := range []string{`nope`, `{"payment_status":"finished","price_amount":"ten","price_currency":"USD"}`} {
		if _, err := g.Normalize(&ipn.Notification{Body: []byte(bad)}); !errors.Is(err, ipn.ErrMalformed) {
			t.Errorf("Normalize(%s) err = %v, want ErrMalformed", bad, err)
		}
	}
}

// checkNormalized fails when a normalized event breaks an invariant.
func checkNormalized(t *testing.T, ev *ipn.Event) {
	t.Helper()
	if ev.Status != "" && !ipn.ValidStatus(ev.Status) {
		t.Fatalf("invalid status %q", ev.Status)
	}
	if ev.Type == "" {
		t.Fatal("empty type")
	}
	for _, a := range []string{ev.Amount, ev.PaidAmount} {
		if a != "" && strings.Trim(a, "-0123456789.") != "" {
			t.Fatalf("amount %q is not a plain decimal", a)
		}
	}
}

func FuzzCoinPaymentsForm(f *testing.F) {
	f.Add(cpBody)
	f.Add("ipn_mode=hmac&merchant=M1&ipn_id=1&ipn_type=deposit&status=-2&amount=1e5&currency=BTC&confirms=x")
	f.Add("ipn_mode=hmac&merchant=M1&ipn_id=%zz")
	f.Add("ipn_mode=hmac;merchant=M1")
	g := mustGateway(f, gateway.Config{Name: "cp", Kind: "coinpayments", Secrets: []string{cpSecret}, MerchantID: "M1"})
	f.Fuzz(func(t *testing.T, body string) {
		h := http.Header{"Hmac": {hmacHex(sha512.New, cpSecret, body)}}
		key, err := check(g, h, body, formMT, testNow)
		if err != nil {
			if !errors.Is(err, ipn.ErrMalformed) && !errors.Is(err, ipn.ErrBadSignature) {
				t.Fatalf("Check(%q) = %v: unexpected error kind", body, err)
			}
			return
		}
		if key == "" {
			t.Fatalf("Check(%q) accepted without an ipn_id", body)
		}
		ev, err := g.Normalize(&ipn.Notification{Body: []byte(body)})
		if err == nil {
			checkNormalized(t, ev)
		} else if !errors.Is(err, ipn.ErrMalformed) {
			t.Fatalf("Normalize(%q) = %v", body, err)
		}
	})
}

func FuzzNowPaymentsCanonical(f *testing.F) {
	f.Add(npBody)
	f.Add(`{"a":[{"a":1e400,"b":-0}],"\u2028":"\u0000","😀":1}`)
	f.Add(`{"x":0.1e-6,"y":123456789012345678901234567890}`)
	g := mustGateway(f, gateway.Config{Name: "np", Kind: "nowpayments", Secrets: []string{npSecret}})
	f.Fuzz(func(t *testing.T, body string) {
		for _, rec := range []bool{false, true} {
			c, err := gateway.SortedJSON([]byte(body), rec)
			if err != nil {
				if !errors.Is(err, ipn.ErrMalformed) {
					t.Fatalf("SortedJSON(%q) = %v", body, err)
				}
				return
			}
			if !json.Valid(c) {
				t.Fatalf("SortedJSON(%q, %v) = %q: not JSON", body, rec, c)
			}
			again, err := gateway.SortedJSON(c, rec)
			if err != nil || string(again) != string(c) {
				t.Fatalf("SortedJSON is not idempotent:\n%s\n%s (%v)", c, again, err)
			}
			// A message signed over its canonical form verifies.
			h := http.Header{"X-Nowpayments-Sig": {hmacHex(sha512.New, npSecret, string(c))}}
			if _, err := check(g, h, body, jsonMT, testNow); err != nil {
				t.Fatalf("Check(%q) signed over the canonical form = %v", body, err)
			}
		}
		if ev, err := g.Normalize(&ipn.Notification{Body: []byte(body)}); err == nil {
			checkNormalized(t, ev)
		}
	})
}

func FuzzParseBTCPaySig(f *testing.F) {
	f.Add(btcpaySig)
	f.Add("sha256=")
	f.Add("SHA256=" + strings.Repeat("A", 64))
	f.Fuzz(func(t *testing.T, h string) {
		sig, err := gateway.ParseBTCPaySig(h)
		if err == nil && (len(sig) != sha256.Size || !strings.EqualFold(strings.TrimSpace(h)[:7], "sha256=")) {
			t.Fatalf("ParseBTCPaySig(%q) = %x without error", h, sig)
		}
	})
}

func FuzzCryptoNormalize(f *testing.F) {
	f.Add(coinbasePayload)
	f.Add(btcpayBody)
	f.Add(npBody)
	f.Add(`{"event":{"type":"charge:failed","data":{"timeline":[{"status":"UNRESOLVED","context":"OVERPAID"}],"pricing":{"local":{"amount":1e-9,"currency":"BTC"}}}}}`)
	var gs []gateway.Gateway
	for _, k := range []string{"coinbase-commerce", "btcpay", "nowpayments"} {
		gs = append(gs, mustGateway(f, gateway.Config{Name: "x", Kind: k, Secrets: []string{"s"}}))
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, g := range gs {
			ev, err := g.Normalize(&ipn.Notification{Body: []byte(body), Headers: http.Header{}})
			if err == nil {
				checkNormalized(t, ev)
			} else if !errors.Is(err, ipn.ErrMalformed) {
				t.Fatalf("%s Normalize(%q) = %v, want nil or ErrMalformed", g.Kind(), body, err)
			}
		}
	})
}
