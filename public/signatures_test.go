package public_test

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/public"
)

// A request that repeats an identifying header is refused (400): the
// signature covers one value, and which one names the message would be
// the reader's guess.
func TestRepeatedSignatureHeadersRefused(t *testing.T) {
	r := newRig(t, nil)
	now := time.Now().Unix()
	body := `{"type":"payment.completed","data":{"order_id":"O1","amount":"5.00","currency":"EUR"}}`
	h := jsonHeader(webhookHeader(swSecret, "msg_1", now, body))
	h.Add("Webhook-Id", "msg_other")
	resp, text := r.do(t, "POST", "/ipn/test", h, body)
	if resp.StatusCode != http.StatusBadRequest || r.obs.get("rejected/test/malformed") != 1 {
		t.Errorf("two webhook-id headers: HTTP %d %q, rejected/malformed %d; want 400 counted", resp.StatusCode, text, r.obs.get("rejected/test/malformed"))
	}
	if st, _ := r.db.Stats(); st.LastID != 0 {
		t.Errorf("last id %d, want nothing stored", st.LastID)
	}
	h = jsonHeader(webhookHeader(swSecret, "msg_1", now, body))
	if resp, _ := r.do(t, "POST", "/ipn/test", h, body); resp.StatusCode != 200 {
		t.Errorf("one webhook-id header: HTTP %d", resp.StatusCode)
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
	unsafe := gateway.Config{Name: "shop", Kind: "hmac", Secrets: []string{secret}, Tolerance: time.Minute,
		HMAC: gateway.HMACOptions{Header: "X-Sig", Timestamp: "header:X-Ts", DedupKey: "header:X-Id"}}
	if g, err := gateway.New(unsafe); err == nil {
		clk := &clock{now: signedAt.Add(10 * time.Minute)}
		r := newRig(t, func(o *public.ReceiverOptions) { o.Gateways = []gateway.Gateway{g}; o.Now = clk.Now })
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
	r := newRig(t, func(o *public.ReceiverOptions) { o.Gateways = []gateway.Gateway{g}; o.Now = clk.Now })
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
