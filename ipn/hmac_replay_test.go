package ipn_test

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn"
)

// clock is a controlled time source for the receiver.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// TestHMACUnsignedSourcesRefused: a timestamp, dedup key or event field
// read from something the MAC does not cover is a config error naming
// the key; the same sources covered by signed_content are accepted.
func TestHMACUnsignedSourcesRefused(t *testing.T) {
	base := func(o ipn.HMACOptions) ipn.GatewayConfig {
		o.Header = "X-Sig"
		return ipn.GatewayConfig{Name: "h", Kind: "hmac", Secrets: []string{"s3cret"}, HMAC: o}
	}
	for _, tc := range []struct {
		name string
		o    ipn.HMACOptions
		want string // "" = accepted
	}{
		{"timestamp header, body signed", ipn.HMACOptions{Timestamp: "header:X-Ts"}, `timestamp = "header:X-Ts" is not covered by the signature`},
		{"timestamp header in {ts}", ipn.HMACOptions{Timestamp: "header:X-Ts", SignedContent: "{ts}.{body}"}, ""},
		{"timestamp header as {header:}", ipn.HMACOptions{Timestamp: "header:x-ts", SignedContent: "{header:X-Ts}.{body}"}, ""},
		{"kv timestamp not signed", ipn.HMACOptions{Parser: "kv", SignatureKey: "v1", TimestampKey: "t", Timestamp: "kv"},
			`timestamp = "kv" is not covered by the signature (signed_content has no {ts})`},
		{"kv timestamp signed", ipn.HMACOptions{Parser: "kv", SignatureKey: "v1", TimestampKey: "t", Timestamp: "kv", SignedContent: "{ts}.{body}"}, ""},
		{"body timestamp", ipn.HMACOptions{Timestamp: "json:created"}, ""},
		{"dedup header", ipn.HMACOptions{DedupKey: "header:X-Event-Id"}, `dedup_key = "header:X-Event-Id" is not covered by the signature`},
		{"dedup header signed", ipn.HMACOptions{DedupKey: "header:X-Event-Id", SignedContent: "{header:X-Event-Id}{body}"}, ""},
		{"id not in the template", ipn.HMACOptions{ID: "header:X-Id"}, `id = "header:X-Id" is not covered by the signature (signed_content has no {header:X-Id} or {id})`},
		{"id signed", ipn.HMACOptions{ID: "header:X-Id", SignedContent: "{id}.{body}"}, ""},
		{"dedup from the ts header", ipn.HMACOptions{Timestamp: "header:X-Ts", SignedContent: "{ts}.{body}", DedupKey: "header:X-Ts"}, ""},
		{"dedup nested under top-level canonical form", ipn.HMACOptions{Canonicalize: "json-sorted", DedupKey: "json:fee.id"},
			`dedup_key = "json:fee.id" is not covered by the signature (with canonicalize json-sorted the signature may cover only top-level fields)`},
		{"dedup nested, recursive canonical form", ipn.HMACOptions{Canonicalize: "json-sorted-recursive", DedupKey: "json:fee.id"}, ""},
		{"status from a header", ipn.HMACOptions{Fields: ipn.HMACFields{Status: "header:X-Event-Name"}}, `fields.status = "header:X-Event-Name" is not covered`},
		{"amount from a header", ipn.HMACOptions{Fields: ipn.HMACFields{Amount: "header:X-Amount"}}, `fields.amount = "header:X-Amount" is not covered`},
		{"required header", ipn.HMACOptions{RequiredFields: map[string]string{"header:X-Mode": "live"}}, `required_fields = "header:X-Mode" is not covered`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ipn.NewGateway(base(tc.o))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("NewGateway = %v, want it accepted (the source is signed)", err)
			case tc.want != "" && (!errors.Is(err, ipn.ErrConfig) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("NewGateway = %v\nwant ErrConfig containing %q", err, tc.want)
			}
		})
	}
}

// TestHMACCapturedRequestCannotBeReplayed captures one signed request and
// replays it ten minutes later over HTTP into a real store: with the
// timestamp (and the message id) signed, a replay with a fresh X-Ts or a
// new X-Id is refused and only the original is stored. The config that
// signs the body only, which let exactly this replay through, is refused.
func TestHMACCapturedRequestCannotBeReplayed(t *testing.T) {
	const secret = "replay-secret"
	body := `{"type":"payment.completed","data":{"order_id":"O-REPLAY","amount":"25.00","currency":"EUR"}}`
	signedAt := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(signedAt.Unix(), 10)

	// Signing the body only: ipnd used to accept it, and then the replay
	// below with a fresh X-Ts passed the tolerance check.
	unsafe := ipn.GatewayConfig{Name: "shop", Kind: "hmac", Secrets: []string{secret}, Tolerance: time.Minute,
		HMAC: ipn.HMACOptions{Header: "X-Sig", Timestamp: "header:X-Ts", DedupKey: "header:X-Id"}}
	if g, err := ipn.NewGateway(unsafe); err == nil {
		clk := &clock{now: signedAt.Add(10 * time.Minute)}
		r := newRig(t, func(o *ipn.ReceiverOptions) { o.Gateways = []ipn.Gateway{g}; o.Now = clk.Now })
		h := http.Header{"Content-Type": {jsonMT}, "X-Sig": {hmacHex(sha256.New, secret, body)},
			"X-Ts": {strconv.FormatInt(clk.Now().Unix(), 10)}, "X-Id": {"msg_forged"}}
		resp, _ := r.do(t, "POST", "/ipn/shop", h, body)
		t.Fatalf("NewGateway accepted timestamp and dedup_key from unsigned headers; a replay with a fresh X-Ts got %d", resp.StatusCode)
	} else if !errors.Is(err, ipn.ErrConfig) {
		t.Fatalf("NewGateway(unsafe) = %v, want ErrConfig", err)
	}

	safe := unsafe
	safe.HMAC.SignedContent = "{ts}.{header:X-Id}.{body}"
	g := mustGateway(t, safe)
	clk := &clock{now: signedAt.Add(2 * time.Second)}
	r := newRig(t, func(o *ipn.ReceiverOptions) { o.Gateways = []ipn.Gateway{g}; o.Now = clk.Now })
	captured := http.Header{"Content-Type": {jsonMT}, "X-Ts": {ts}, "X-Id": {"msg_1"},
		"X-Sig": {hmacHex(sha256.New, secret, ts+".msg_1."+body)}}
	if resp, got := r.do(t, "POST", "/ipn/shop", captured, body); resp.StatusCode != 200 {
		t.Fatalf("original request: %d %q, want 200", resp.StatusCode, got)
	}

	clk.Set(signedAt.Add(10 * time.Minute))
	fresh := captured.Clone()
	fresh.Set("X-Ts", strconv.FormatInt(clk.Now().Unix(), 10))
	newID := captured.Clone()
	newID.Set("X-Id", "msg_2")
	for _, tc := range []struct {
		name   string
		h      http.Header
		reason string
	}{
		{"as captured", captured, "stale_timestamp"},
		{"fresh X-Ts", fresh, "bad_signature"},
		{"new X-Id", newID, "bad_signature"},
	} {
		before := r.obs.get("rejected/shop/" + tc.reason)
		if resp, got := r.do(t, "POST", "/ipn/shop", tc.h, body); resp.StatusCode != 401 {
			t.Errorf("replay %s: %d %q, want 401", tc.name, resp.StatusCode, got)
		}
		if r.obs.get("rejected/shop/"+tc.reason)-before != 1 {
			t.Errorf("replay %s: not counted as %s (%v)", tc.name, tc.reason, r.obs.counts)
		}
	}
	if s, _ := r.db.Stats(); s.LastID != 1 {
		t.Errorf("store holds %d notifications, want only the original", s.LastID)
	}
}

// TestHMACFieldAlternativesAndSubscriptionKinds: "|" alternatives pick
// the first source with a value; statuses may name subscription events;
// a bad alternative or kind is a config error.
func TestHMACFieldAlternativesAndSubscriptionKinds(t *testing.T) {
	g := mustGateway(t, ipn.GatewayConfig{Name: "h", Kind: "hmac", Secrets: []string{"s"}, HMAC: ipn.HMACOptions{Header: "X-Sig",
		Fields: ipn.HMACFields{Status: "json:ev", TxnID: "json:r.id|json:p.id", ParentTxnID: "json:r.pay", Amount: "json:r.amt|json:p.amt",
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
	for _, f := range []ipn.HMACFields{
		{TxnID: "json:a||json:b"},
		{TxnID: "json:a|form:b"},
		{Status: "json:s", Statuses: map[string]string{"x": "subscription_paused"}},
		{TxnID: "json:a|header:X-Txn"}, // an unsigned alternative
	} {
		if _, err := ipn.NewGateway(ipn.GatewayConfig{Name: "h", Kind: "hmac", Secrets: []string{"s"},
			HMAC: ipn.HMACOptions{Header: "X-Sig", Fields: f}}); !errors.Is(err, ipn.ErrConfig) {
			t.Errorf("fields %+v: NewGateway = %v, want ErrConfig", f, err)
		}
	}
}
