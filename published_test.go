package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestPublishedSignaturesOverHTTP: payloads that SDKs publish with their
// signature and secret (testdata/real, see its manifest), posted byte for
// byte with the published header to a running ipnd, are answered 200,
// stored verbatim and normalized; the same body with one byte changed is
// refused. (The Paddle and Standard Webhooks vectors carry signed
// timestamps of 2024 and 2021, past any tolerance of a running ipnd: the
// gateway tests check them with the clock set to their signing time.)
func TestPublishedSignaturesOverHTTP(t *testing.T) {
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, `[log]
level = "warn"
[[gateway]]
name = "coinbase"
kind = "coinbase-commerce"
secret = "30291a20-0bd1-4267-9b0f-e6e7b123c0bf"
[[gateway]]
name = "razorpay"
kind = "hmac"
secrets = ["key_secret", "123456"]
header = "X-Razorpay-Signature"
fields = { status = "json:event", txn_id = "json:payload.refund.entity.id|json:payload.payment.entity.id", parent_txn_id = "json:payload.refund.entity.payment_id", order_id = "json:payload.payment.entity.notes.order_id", amount = "json:payload.refund.entity.amount|json:payload.payment.entity.amount", amount_minor = true, currency = "json:payload.refund.entity.currency|json:payload.payment.entity.currency", email = "json:payload.payment.entity.email", statuses = { "payment.authorized" = "pending", "payment.captured" = "completed", "order.paid" = "completed", "payment.failed" = "failed", "refund.processed" = "refunded" } }
`)
	startDaemon(t, dir, cfg)
	addr, err := os.ReadFile(filepath.Join(dir, "public.addr"))
	if err != nil {
		t.Fatal(err)
	}
	post := func(gw, header, sig string, body []byte) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+strings.TrimSpace(string(addr))+"/ipn/"+gw, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(header, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, c := range []struct {
		gateway, file, header, sig, txn, status string
	}{
		// coinbase/coinbase-commerce-python tests/test_webhook.py SIG_HEADER.
		{"coinbase", "coinbase/test_webhook.py.PAYLOAD_STR.json", "X-Cc-Webhook-Signature",
			"8be7742c7d372f08a6a3224edadf18a22b65fa9e28f3f2de97376cdaa092590d", "66BEOV2A", "pending"},
		// razorpay/razorpay-python tests/test_client_utility.py test_verify_webhook_signature.
		{"razorpay", "razorpay/fake_payment_authorized_webhook.json", "X-Razorpay-Signature",
			"d60e67fd884556c045e9be7dad57903e33efc7172c17c6e3ef77db42d2b366e9", "pay_6koWN7bvxujzxM", "pending"},
		// razorpay/razorpay-go resources/verify_payment_test.go TestVerifyWebhookSignature (secret 123456).
		{"razorpay", "razorpay/verify_payment_test.go.webhookbody.json", "X-Razorpay-Signature",
			"ea962f3a2a8090aa14ef10fc178306edcb46ee7ccadae8afe2275cda26f3d2a6", "pay_JUEM4c0pSLpFEW", "pending"},
	} {
		body, err := os.ReadFile(filepath.Join("testdata/real", c.file))
		if err != nil {
			t.Fatal(err)
		}
		if code := post(c.gateway, c.header, c.sig, body); code != http.StatusOK {
			t.Fatalf("%s with its published signature: %d, want 200", c.file, code)
		}
		id := strconv.Itoa(i + 1)
		var n struct {
			Body  string
			Event ipn.Event
		}
		waitFor(t, c.file+" normalized", 10*time.Second, func() bool {
			out, _, code := runCode(t, envFunc(), "show", "-config", cfg, id)
			return code == 0 && json.Unmarshal([]byte(out), &n) == nil && n.Event.TxnID != ""
		})
		if n.Body != string(body) || n.Event.TxnID != c.txn || string(n.Event.Status) != c.status {
			t.Errorf("%s stored as %s/%s (body verbatim: %v), want txn %s status %s", c.file, n.Event.TxnID, n.Event.Status, n.Body == string(body), c.txn, c.status)
		}
		bad := bytes.Clone(body)
		bad[len(bad)/2] ^= 0x01
		if code := post(c.gateway, c.header, c.sig, bad); code == http.StatusOK {
			t.Errorf("%s with one byte changed: 200, want a refusal", c.file)
		}
	}
}
