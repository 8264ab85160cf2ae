package gateway

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"

	"ipnd/ipn"
)

// coinbaseGateway is the coinbase-commerce kind (GATEWAYS.md §5): a JSON
// envelope {"id", "attempt_number", "event": {"id", "type", "data":
// <charge>}} signed in X-CC-Webhook-Signature with the lowercase hex
// HMAC-SHA256 of the raw body, keyed with the shared secret as UTF-8 bytes.
// There is no timestamp; replays are caught by deduplicating on event.id.
type coinbaseGateway struct {
	name string
	keys [][]byte
}

func newCoinbase(cfg Config) (Gateway, error) {
	return &coinbaseGateway{name: cfg.Name, keys: rawKeys(cfg.Secrets)}, nil
}

func (g *coinbaseGateway) Name() string                  { return g.name }
func (g *coinbaseGateway) Kind() string                  { return "coinbase-commerce" }
func (g *coinbaseGateway) Accepts(mediaType string) bool { return acceptsMedia(mediaJSON, mediaType) }
func (g *coinbaseGateway) KeepHeaders() []string {
	return []string{"X-CC-Webhook-Signature", "User-Agent"}
}

// Check verifies X-CC-Webhook-Signature over the raw body (and, as the
// official PHP example trims the body first, over the body without
// surrounding whitespace), then returns event.id.
func (g *coinbaseGateway) Check(in *Inbound) (string, error) {
	if !g.Accepts(in.MediaType) {
		return "", fmt.Errorf("%w: coinbase-commerce sends application/json", ipn.ErrUnsupportedMedia)
	}
	sig, err := hexSignature(in.Header.Get("X-CC-Webhook-Signature"), "X-CC-Webhook-Signature", sha256.Size)
	if err != nil {
		return "", err
	}
	contents := [][]byte{in.Body}
	if t := bytes.TrimSpace(in.Body); len(t) != len(in.Body) {
		contents = append(contents, t)
	}
	if !macMatchesAny(sha256.New, g.keys, sig, contents...) {
		return "", fmt.Errorf("%w: no signature matched", ipn.ErrBadSignature)
	}
	var env struct {
		Event *struct {
			ID looseString `json:"id"`
		} `json:"event"`
	}
	if err := json.Unmarshal(in.Body, &env); err != nil {
		return "", fmt.Errorf("%w: body is not a JSON object", ipn.ErrMalformed)
	}
	if env.Event == nil || env.Event.ID == "" {
		return "", fmt.Errorf("%w: no event.id", ipn.ErrMalformed)
	}
	return string(env.Event.ID), nil
}

type coinbaseMoney struct {
	Amount   looseString `json:"amount"`
	Currency string      `json:"currency"`
}

type coinbaseEnvelope struct {
	Event struct {
		ID   looseString `json:"id"`
		Type string      `json:"type"`
		Data struct {
			ID       string         `json:"id"`
			Code     string         `json:"code"`
			Metadata map[string]any `json:"metadata"`
			Pricing  struct {
				Local coinbaseMoney `json:"local"`
			} `json:"pricing"`
			Timeline []struct {
				Status  string `json:"status"`
				Context string `json:"context"`
			} `json:"timeline"`
			Payments []struct {
				Status string `json:"status"`
				Value  struct {
					Crypto coinbaseMoney `json:"crypto"`
				} `json:"value"`
			} `json:"payments"`
		} `json:"data"`
	} `json:"event"`
}

// Normalize maps a Coinbase Commerce event (GATEWAYS.md §5.4):
//
//	charge:created                      payment pending (nothing paid yet)
//	charge:pending                      payment completed: Coinbase's docs say the
//	                                    charge counts as paid once it is pending
//	charge:confirmed, charge:resolved   payment completed
//	charge:delayed                      payment pending, paid_late
//	charge:failed                       payment failed; expired when the timeline
//	                                    ends EXPIRED, canceled when CANCELED
//	anything else                       other
//
// When the last timeline entry is UNRESOLVED (legacy API), its context
// decides instead, for every known type but confirmed and resolved:
// UNDERPAID pending+underpaid, OVERPAID completed+overpaid, DELAYED
// pending+paid_late, MULTIPLE pending+multiple, MANUAL/OTHER pending.
//
// Amount and Currency are the charge's local price (pricing.local); the
// crypto value of the last payment, when there is one, is PaidAmount.
// OrderID is metadata order_id (or orderId); metadata email/customer_email
// and name/customer_name give the customer.
func (g *coinbaseGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	var env coinbaseEnvelope
	if err := decodeUseNumber(n.Body, &env); err != nil {
		return nil, fmt.Errorf("%w: coinbase event: %v", ipn.ErrMalformed, err)
	}
	e, c := env.Event, env.Event.Data
	ev := &ipn.Event{
		Type:          ipn.TypeOther,
		GatewayStatus: e.Type,
		EventID:       string(e.ID),
		TxnID:         cmp.Or(c.ID, c.Code),
		OrderID:       metaText(c.Metadata, "order_id", "orderId"),
		CustomerEmail: metaText(c.Metadata, "email", "customer_email"),
		CustomerName:  metaText(c.Metadata, "name", "customer_name"),
	}
	last, context := "", ""
	if k := len(c.Timeline); k > 0 {
		last, context = strings.ToUpper(c.Timeline[k-1].Status), strings.ToUpper(c.Timeline[k-1].Context)
	}
	switch e.Type {
	case "charge:created":
		ev.Type, ev.Status = ipn.TypePayment, ipn.StatusPending
	case "charge:pending", "charge:confirmed", "charge:resolved":
		ev.Type, ev.Status = ipn.TypePayment, ipn.StatusCompleted
	case "charge:delayed":
		ev.Type, ev.Status, ev.Flags = ipn.TypePayment, ipn.StatusPending, ipn.FlagPaidLate
	case "charge:failed":
		ev.Type, ev.Status = ipn.TypePayment, ipn.StatusFailed
		switch last {
		case "EXPIRED":
			ev.Status = ipn.StatusExpired
		case "CANCELED", "CANCELLED":
			ev.Status = ipn.StatusCanceled
		}
	default:
		if err := g.amounts(ev, c.Pricing.Local, nil); err != nil {
			return nil, err
		}
		return ev, nil
	}
	if last == "UNRESOLVED" && e.Type != "charge:confirmed" && e.Type != "charge:resolved" {
		switch context {
		case "UNDERPAID":
			ev.Status, ev.Flags = ipn.StatusPending, ipn.FlagUnderpaid
		case "OVERPAID":
			ev.Status, ev.Flags = ipn.StatusCompleted, ipn.FlagOverpaid
		case "DELAYED":
			ev.Status, ev.Flags = ipn.StatusPending, ipn.FlagPaidLate
		case "MULTIPLE":
			ev.Status, ev.Flags = ipn.StatusPending, ipn.FlagMultiple
		case "MANUAL":
			ev.Status, ev.Flags = ipn.StatusPending, ipn.FlagManual
		default:
			ev.Status = ipn.StatusPending
		}
	}
	var paid *coinbaseMoney
	if k := len(c.Payments); k > 0 {
		paid = &c.Payments[k-1].Value.Crypto
	}
	if err := g.amounts(ev, c.Pricing.Local, paid); err != nil {
		return nil, err
	}
	return ev, nil
}

func (g *coinbaseGateway) amounts(ev *ipn.Event, price coinbaseMoney, paid *coinbaseMoney) error {
	if price.Amount != "" && price.Currency != "" {
		ev.Currency = strings.ToUpper(price.Currency)
		a, err := cryptoAmount(string(price.Amount), ev.Currency)
		if err != nil {
			return err
		}
		ev.Amount = a
	}
	if paid != nil && paid.Amount != "" && paid.Currency != "" {
		ev.PaidCurrency = strings.ToUpper(paid.Currency)
		a, err := cryptoAmount(string(paid.Amount), ev.PaidCurrency)
		if err != nil {
			return err
		}
		ev.PaidAmount = a
	}
	return nil
}

// decodeUseNumber decodes JSON into v keeping numbers in free-form maps
// as json.Number (exact), never float64.
func decodeUseNumber(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return dec.Decode(v)
}
