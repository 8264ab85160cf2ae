package public_test

import (
	"crypto/hmac"
	"encoding/hex"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn/gateway"
)

const (
	swSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	swSecret2 = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	jsonMT    = "application/json"
)

func mustGateway(t testing.TB, cfg gateway.Config) gateway.Gateway {
	t.Helper()
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func webhookHeader(secret, id string, ts int64, body string, extra ...string) http.Header {
	key, _ := gateway.DecodeWebhookSecret(secret)
	h := http.Header{}
	h.Set("Webhook-Id", id)
	h.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	h.Set("Webhook-Signature", strings.Join(append(extra, gateway.SignWebhook(key, id, ts, []byte(body))), " "))
	return h
}

func hmacHex(h func() hash.Hash, key, content string) string {
	m := hmac.New(h, []byte(key))
	m.Write([]byte(content))
	return hex.EncodeToString(m.Sum(nil))
}

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
