package gateway_test

import (
	"errors"
	"strings"
	"testing"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// TestHMACUnsignedSourcesRefused: a timestamp, dedup key or event field
// read from something the MAC does not cover is a config error naming
// the key; the same sources covered by signed_content are accepted.
func TestHMACUnsignedSourcesRefused(t *testing.T) {
	base := func(o gateway.HMACOptions) gateway.Config {
		o.Header = "X-Sig"
		return gateway.Config{Name: "h", Kind: "hmac", Secrets: []string{"s3cret"}, HMAC: o}
	}
	for _, tc := range []struct {
		name string
		o    gateway.HMACOptions
		want string // "" = accepted
	}{
		{"timestamp header, body signed", gateway.HMACOptions{Timestamp: "header:X-Ts"}, `timestamp = "header:X-Ts" is not covered by the signature`},
		{"timestamp header in {ts}", gateway.HMACOptions{Timestamp: "header:X-Ts", SignedContent: "{ts}.{body}"}, ""},
		{"timestamp header as {header:}", gateway.HMACOptions{Timestamp: "header:x-ts", SignedContent: "{header:X-Ts}.{body}"}, ""},
		{"kv timestamp not signed", gateway.HMACOptions{Parser: "kv", SignatureKey: "v1", TimestampKey: "t", Timestamp: "kv"},
			`timestamp = "kv" is not covered by the signature (signed_content has no {ts})`},
		{"kv timestamp signed", gateway.HMACOptions{Parser: "kv", SignatureKey: "v1", TimestampKey: "t", Timestamp: "kv", SignedContent: "{ts}.{body}"}, ""},
		{"body timestamp", gateway.HMACOptions{Timestamp: "json:created"}, ""},
		{"dedup header", gateway.HMACOptions{DedupKey: "header:X-Event-Id"}, `dedup_key = "header:X-Event-Id" is not covered by the signature`},
		{"dedup header signed", gateway.HMACOptions{DedupKey: "header:X-Event-Id", SignedContent: "{header:X-Event-Id}{body}"}, ""},
		{"id not in the template", gateway.HMACOptions{ID: "header:X-Id"}, `id = "header:X-Id" is not covered by the signature (signed_content has no {header:X-Id} or {id})`},
		{"id signed", gateway.HMACOptions{ID: "header:X-Id", SignedContent: "{id}.{body}"}, ""},
		{"dedup from the ts header", gateway.HMACOptions{Timestamp: "header:X-Ts", SignedContent: "{ts}.{body}", DedupKey: "header:X-Ts"}, ""},
		{"dedup nested under top-level canonical form", gateway.HMACOptions{Canonicalize: "json-sorted", DedupKey: "json:fee.id"},
			`dedup_key = "json:fee.id" is not covered by the signature (with canonicalize json-sorted the signature may cover only top-level fields)`},
		{"dedup nested, recursive canonical form", gateway.HMACOptions{Canonicalize: "json-sorted-recursive", DedupKey: "json:fee.id"}, ""},
		{"status from a header", gateway.HMACOptions{Fields: gateway.HMACFields{Status: "header:X-Event-Name"}}, `fields.status = "header:X-Event-Name" is not covered`},
		{"amount from a header", gateway.HMACOptions{Fields: gateway.HMACFields{Amount: "header:X-Amount"}}, `fields.amount = "header:X-Amount" is not covered`},
		{"required header", gateway.HMACOptions{RequiredFields: map[string]string{"header:X-Mode": "live"}}, `required_fields = "header:X-Mode" is not covered`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gateway.New(base(tc.o))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("NewGateway = %v, want it accepted (the source is signed)", err)
			case tc.want != "" && (!errors.Is(err, ipn.ErrConfig) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("NewGateway = %v\nwant ErrConfig containing %q", err, tc.want)
			}
		})
	}
}

// TestHMACFieldAlternativesAndSubscriptionKinds: "|" alternatives pick
// the first source with a value; statuses may name subscription events;
// a bad alternative or kind is a config error.
func TestHMACFieldAlternativesAndSubscriptionKinds(t *testing.T) {
	g := mustGateway(t, gateway.Config{Name: "h", Kind: "hmac", Secrets: []string{"s"}, HMAC: gateway.HMACOptions{Header: "X-Sig",
		Fields: gateway.HMACFields{Status: "json:ev", TxnID: "json:r.id|json:p.id", ParentTxnID: "json:r.pay", Amount: "json:r.amt|json:p.amt",
			Currency: "json:p.cur", SubscriptionID: "json:p.sub", Statuses: map[string]string{"r": "refunded", "s": "subscription_started",
				"c": "subscription_canceled", "f": "subscription_payment_failed"}}}})
	for _, tc := range []struct {
		body string
		want ipn.Event
	}{
		{`{"ev":"r","r":{"id":"R1","pay":"P1","amt":"1.50"},"p":{"id":"P1","amt":"9.00","cur":"eur"}}`,
			ipn.Event{Type: ipn.TypeRefund, Status: ipn.StatusRefunded, GatewayStatus: "r", TxnID: "R1", ParentTxnID: "P1", Amount: "1.50", Currency: "EUR"}},
		{`{"ev":"s","p":{"id":"S1","cur":"eur"}}`, // the object is the subscription
			ipn.Event{Type: ipn.TypeSubscriptionStarted, Status: ipn.StatusCompleted, GatewayStatus: "s", TxnID: "S1", SubscriptionID: "S1", Currency: "EUR"}},
		{`{"ev":"f","p":{"id":"T9","sub":"S1","amt":"9.00","cur":"eur"}}`,
			ipn.Event{Type: ipn.TypeSubscriptionPayment, Status: ipn.StatusFailed, GatewayStatus: "f", TxnID: "T9", SubscriptionID: "S1", Amount: "9.00", Currency: "EUR"}},
	} {
		ev, err := g.Normalize(&ipn.Notification{Body: []byte(tc.body)})
		if err != nil || *ev != tc.want {
			t.Errorf("Normalize(%s) = %+v, %v\nwant %+v", tc.body, ev, err, tc.want)
		}
	}
	for _, f := range []gateway.HMACFields{
		{TxnID: "json:a||json:b"},
		{TxnID: "json:a|form:b"},
		{Status: "json:s", Statuses: map[string]string{"x": "subscription_paused"}},
		{TxnID: "json:a|header:X-Txn"}, // an unsigned alternative
	} {
		if _, err := gateway.New(gateway.Config{Name: "h", Kind: "hmac", Secrets: []string{"s"},
			HMAC: gateway.HMACOptions{Header: "X-Sig", Fields: f}}); !errors.Is(err, ipn.ErrConfig) {
			t.Errorf("fields %+v: NewGateway = %v, want ErrConfig", f, err)
		}
	}
}
