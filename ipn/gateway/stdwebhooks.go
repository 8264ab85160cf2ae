package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"ipnd/ipn"
)

// stdWebhooksTolerance is the reference libraries' tolerance, both ways.
const stdWebhooksTolerance = 5 * time.Minute

type stdWebhooksGateway struct {
	name      string
	keys      [][]byte // base64-decoded secrets
	tolerance time.Duration
}

func newStdWebhooks(cfg Config) (Gateway, error) {
	g := &stdWebhooksGateway{name: cfg.Name, tolerance: cfg.Tolerance}
	if g.tolerance <= 0 {
		g.tolerance = stdWebhooksTolerance
	}
	for i, s := range cfg.Secrets {
		k, err := DecodeWebhookSecret(s)
		if err != nil {
			return nil, fmt.Errorf("%w: gateway %q: secret #%d: %v", ipn.ErrConfig, cfg.Name, i+1, err)
		}
		g.keys = append(g.keys, k)
	}
	return g, nil
}

// DecodeWebhookSecret turns a Standard Webhooks secret ("whsec_" + base64,
// or the base64 alone) into the HMAC key bytes.
func DecodeWebhookSecret(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
	if err != nil {
		return nil, fmt.Errorf("not base64 after the whsec_ prefix")
	}
	if len(k) == 0 {
		return nil, fmt.Errorf("empty key")
	}
	return k, nil
}

// SignWebhook returns the Standard Webhooks v1 signature of body for
// message id and unix timestamp ts: "v1," + base64(HMAC-SHA256(key,
// id.ts.body)).
func SignWebhook(key []byte, id string, ts int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(webhookMAC(key, id, ts, body))
}

func webhookMAC(key []byte, id string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func (g *stdWebhooksGateway) Name() string { return g.name }
func (g *stdWebhooksGateway) Kind() string { return "standard-webhooks" }
func (g *stdWebhooksGateway) Accepts(mediaType string) bool {
	return acceptsMedia(mediaAnyJSON, mediaType)
}
func (g *stdWebhooksGateway) KeepHeaders() []string {
	return []string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature",
		"Svix-Id", "Svix-Timestamp", "Svix-Signature", "User-Agent"}
}

// WebhookHeaders are the three Standard Webhooks headers of one request,
// taken from the webhook-* names or, when absent, the svix-* aliases.
type WebhookHeaders struct {
	ID, Timestamp, Signature string
}

func webhookHeaders(get func(string) string) WebhookHeaders {
	h := WebhookHeaders{get("Webhook-Id"), get("Webhook-Timestamp"), get("Webhook-Signature")}
	if h.ID == "" && h.Timestamp == "" && h.Signature == "" {
		h = WebhookHeaders{get("Svix-Id"), get("Svix-Timestamp"), get("Svix-Signature")}
	}
	return h
}

// ParseWebhookSignatures parses a space-separated webhook-signature list
// ("v1,<b64> v1,<b64> v2,...") and returns the decoded v1 signatures.
// Entries of other versions and entries that do not decode are skipped; no
// usable v1 entry is an error.
func ParseWebhookSignatures(header string) ([][]byte, error) {
	if strings.TrimSpace(header) == "" {
		return nil, fmt.Errorf("%w: missing webhook-signature header", ipn.ErrBadSignature)
	}
	var sigs [][]byte
	for _, entry := range strings.Fields(header) {
		ver, sig, ok := strings.Cut(entry, ",")
		if !ok || ver != "v1" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && len(b) == sha256.Size {
			sigs = append(sigs, b)
		}
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: no usable v1 signature in webhook-signature header", ipn.ErrBadSignature)
	}
	return sigs, nil
}

func (g *stdWebhooksGateway) Check(in *Inbound) (string, error) {
	if err := singleHeaders(in.Header, "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature",
		"Svix-Id", "Svix-Timestamp", "Svix-Signature"); err != nil {
		return "", err
	}
	h := webhookHeaders(in.Header.Get)
	if h.ID == "" || h.Timestamp == "" {
		return "", fmt.Errorf("%w: missing webhook-id or webhook-timestamp header", ipn.ErrBadSignature)
	}
	if strings.Contains(h.ID, ".") || len(h.ID) > 256 {
		return "", fmt.Errorf("%w: garbled webhook-id header", ipn.ErrBadSignature)
	}
	ts, err := strconv.ParseInt(h.Timestamp, 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: garbled webhook-timestamp header", ipn.ErrBadSignature)
	}
	sigs, err := ParseWebhookSignatures(h.Signature)
	if err != nil {
		return "", err
	}
	if !anyHMACMatches(g.keys, sigs, func(key []byte) []byte {
		return webhookMAC(key, h.ID, ts, in.Body)
	}) {
		return "", fmt.Errorf("%w: no signature matched", ipn.ErrBadSignature)
	}
	if !withinTolerance(time.Unix(ts, 0), in.Now, g.tolerance) {
		return "", fmt.Errorf("%w: signed at %d, tolerance %s", ipn.ErrStaleTimestamp, ts, g.tolerance)
	}
	if !json.Valid(in.Body) || len(bytes.TrimSpace(in.Body)) == 0 || bytes.TrimSpace(in.Body)[0] != '{' {
		return "", fmt.Errorf("%w: body is not a JSON object", ipn.ErrMalformed)
	}
	return h.ID, nil
}

// WebhookEnvelope is ipnd's own event carried in a Standard Webhooks
// message: {"type": "payment.completed", "timestamp": "...", "data": {...}}.
type WebhookEnvelope struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// webhookData is the event payload; amount may be a JSON string or number
// and is kept exact either way.
type webhookData struct {
	TxnID          string      `json:"txn_id"`
	ParentTxnID    string      `json:"parent_txn_id"`
	OrderID        string      `json:"order_id"`
	Amount         json.Number `json:"amount"`
	RefundedTotal  json.Number `json:"refunded_total"`
	Currency       string      `json:"currency"`
	Status         string      `json:"status"`
	CustomerEmail  string      `json:"customer_email"`
	CustomerName   string      `json:"customer_name"`
	Receiver       string      `json:"receiver"`
	SubscriptionID string      `json:"subscription_id"`
	Test           bool        `json:"test"`
	// Items: what was bought, [{"product": "...", "quantity": n}] (SPEC §11).
	Items json.RawMessage `json:"items"`
	// PeriodEnd: the end of the period a subscription payment pays (RFC 3339).
	PeriodEnd string `json:"period_end"`
}

func (g *stdWebhooksGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	return ParseWebhookEvent(n.Body, webhookHeaders(http.Header(n.Headers).Get).ID)
}

// ParseWebhookEvent normalizes an ipnd event envelope. Types ipnd does not
// act on become TypeOther; a body that is not such an envelope, or an
// amount that is not an exact decimal, is ErrMalformed.
func ParseWebhookEvent(body []byte, eventID string) (*ipn.Event, error) {
	var env WebhookEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: %v", ipn.ErrMalformed, err)
	}
	ev := &ipn.Event{Type: ipn.TypeOther, GatewayStatus: env.Type, EventID: eventID}
	var d webhookData
	if len(env.Data) > 0 && string(env.Data) != "null" {
		dec := json.NewDecoder(bytes.NewReader(env.Data))
		dec.UseNumber()
		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("%w: data: %v", ipn.ErrMalformed, err)
		}
	}
	ev.TxnID, ev.ParentTxnID, ev.OrderID = d.TxnID, d.ParentTxnID, d.OrderID
	ev.Currency = strings.ToUpper(d.Currency)
	ev.CustomerEmail, ev.CustomerName = d.CustomerEmail, d.CustomerName
	ev.Receiver, ev.SubscriptionID, ev.Test = d.Receiver, d.SubscriptionID, d.Test
	ev.Items, ev.PeriodEnd = jsonItems(d.Items), periodEnd(d.PeriodEnd)
	if d.Amount != "" {
		amt, err := ipn.NormalizeAmount(d.Amount.String(), ev.Currency)
		if err != nil {
			return nil, err
		}
		ev.Amount = amt
	}
	if d.RefundedTotal != "" {
		amt, err := ipn.NormalizeAmount(d.RefundedTotal.String(), ev.Currency)
		if err != nil {
			return nil, err
		}
		ev.RefundedTotal = amt
	}
	kind, sub, _ := strings.Cut(env.Type, ".")
	switch kind {
	case "payment":
		st := ipn.EventStatus(sub)
		if !ipn.ValidStatus(st) {
			return ev, nil
		}
		ev.Status = st
		switch st {
		case ipn.StatusRefunded:
			ev.Type = ipn.TypeRefund
		case ipn.StatusReversed:
			ev.Type = ipn.TypeReversal
		default:
			ev.Type = ipn.TypePayment
		}
	case "subscription":
		switch sub {
		case "started":
			ev.Type, ev.Status = ipn.TypeSubscriptionStarted, ipn.StatusCompleted
		case "payment":
			ev.Type, ev.Status = ipn.TypeSubscriptionPayment, ipn.StatusCompleted
		case "canceled":
			ev.Type, ev.Status = ipn.TypeSubscriptionCanceled, ipn.StatusCanceled
		case "expired":
			ev.Type, ev.Status = ipn.TypeSubscriptionExpired, ipn.StatusExpired
		}
	}
	if ev.Type != ipn.TypeRefund {
		ev.RefundedTotal = ""
	}
	ev.Unsign()
	return ev, nil
}

// singleHeaders refuses a request that repeats one of the named headers:
// the signature covers one value and the store would keep both, so which
// one identifies the message would be the reader's guess.
func singleHeaders(h http.Header, names ...string) error {
	for _, n := range names {
		if len(h.Values(n)) > 1 {
			return fmt.Errorf("%w: repeated %s header", ipn.ErrMalformed, strings.ToLower(n))
		}
	}
	return nil
}

// newWebhookSecret is a fresh Standard Webhooks secret: "whsec_" and 32
// random bytes in base64.
func newWebhookSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// sampleWebhook is a payment event in ipnd's own envelope (SPEC §5),
// signed with the first secret.
func sampleWebhook(s Sample, secrets []string) (*SignedSample, error) {
	id := "msg_sim_" + randomHex(8)
	out := &SignedSample{Marker: "SIM-" + randomHex(6), What: "payment." + s.Status}
	out.Body, _ = json.Marshal(map[string]any{
		"type":      "payment." + s.Status,
		"timestamp": s.Now.UTC().Format(time.RFC3339),
		"data": map[string]any{"txn_id": out.Marker, "order_id": s.Order,
			"amount": s.Amount, "currency": s.Currency, "status": s.Status, "customer_email": s.Email, "test": true},
	})
	key, err := DecodeWebhookSecret(secrets[0])
	if err != nil {
		return nil, fmt.Errorf("gateway secret: %w", err)
	}
	out.Header = http.Header{"Content-Type": {"application/json"}}
	out.Header.Set("Webhook-Id", id)
	out.Header.Set("Webhook-Timestamp", strconv.FormatInt(s.Now.Unix(), 10))
	out.Header.Set("Webhook-Signature", SignWebhook(key, id, s.Now.Unix(), out.Body))
	return out, nil
}
