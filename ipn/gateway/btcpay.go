package gateway

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"

	"ipnd/ipn"
)

// btcpayGateway is the btcpay kind: BTCPay Server Greenfield webhooks
// (GATEWAYS.md §6.1). The body is indented JSON signed in
// "BTCPay-Sig: sha256=<hex HMAC-SHA256(UTF8(secret), body)>". There is no
// signed timestamp; every attempt has a new deliveryId and a redelivery
// names the first one in originalDeliveryId, which is the dedup key.
type btcpayGateway struct {
	name string
	keys [][]byte
}

func newBTCPay(cfg Config) (Gateway, error) {
	return &btcpayGateway{name: cfg.Name, keys: rawKeys(cfg.Secrets)}, nil
}

func (g *btcpayGateway) Name() string                  { return g.name }
func (g *btcpayGateway) Kind() string                  { return "btcpay" }
func (g *btcpayGateway) Accepts(mediaType string) bool { return acceptsMedia(mediaJSON, mediaType) }
func (g *btcpayGateway) KeepHeaders() []string         { return []string{"BTCPay-Sig", "User-Agent"} }

// ParseBTCPaySig decodes a BTCPay-Sig header value ("sha256=<64 hex>",
// hex in either case). Anything else is ErrBadSignature.
func ParseBTCPaySig(value string) ([]byte, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, fmt.Errorf("%w: missing BTCPay-Sig header", ipn.ErrBadSignature)
	}
	const prefix = "sha256="
	if len(value) < len(prefix) || !strings.EqualFold(value[:len(prefix)], prefix) {
		return nil, fmt.Errorf("%w: BTCPay-Sig header is not sha256=<hex>", ipn.ErrBadSignature)
	}
	return hexSignature(value[len(prefix):], "BTCPay-Sig", sha256.Size)
}

func (g *btcpayGateway) Check(in *Inbound) (string, error) {
	if !g.Accepts(in.MediaType) {
		return "", fmt.Errorf("%w: btcpay sends application/json", ipn.ErrUnsupportedMedia)
	}
	sig, err := ParseBTCPaySig(in.Header.Get("BTCPay-Sig"))
	if err != nil {
		return "", err
	}
	if !macMatchesAny(sha256.New, g.keys, sig, in.Body) {
		return "", fmt.Errorf("%w: no signature matched", ipn.ErrBadSignature)
	}
	var ids struct {
		DeliveryID         looseString `json:"deliveryId"`
		OriginalDeliveryID looseString `json:"originalDeliveryId"`
	}
	if err := json.Unmarshal(in.Body, &ids); err != nil {
		return "", fmt.Errorf("%w: body is not a JSON object", ipn.ErrMalformed)
	}
	key := cmp.Or(string(ids.OriginalDeliveryID), string(ids.DeliveryID))
	if key == "" {
		return "", fmt.Errorf("%w: no deliveryId", ipn.ErrMalformed)
	}
	return key, nil
}

type btcpayEvent struct {
	DeliveryID         looseString    `json:"deliveryId"`
	OriginalDeliveryID looseString    `json:"originalDeliveryId"`
	Type               string         `json:"type"`
	InvoiceID          looseString    `json:"invoiceId"`
	Metadata           map[string]any `json:"metadata"`
	OverPaid           bool           `json:"overPaid"`
	PartiallyPaid      bool           `json:"partiallyPaid"`
	ManuallyMarked     bool           `json:"manuallyMarked"`
	AfterExpiration    bool           `json:"afterExpiration"`
	PaymentMethodID    string         `json:"paymentMethodId"`
	PaymentMethod      string         `json:"paymentMethod"` // older servers
	Payment            *struct {
		Value looseString `json:"value"`
	} `json:"payment"`
}

// Normalize maps a Greenfield webhook (GATEWAYS.md §6.1):
//
//	InvoiceCreated                         payment pending (nothing paid yet)
//	InvoiceReceivedPayment,
//	InvoicePaymentSettled                  payment pending (one payment seen or
//	                                       confirmed; the invoice may be short)
//	InvoiceProcessing                      payment pending (fully paid, unconfirmed)
//	InvoiceSettled                         payment completed
//	InvoiceExpired, partiallyPaid          payment pending, underpaid
//	InvoiceExpired                         payment expired
//	InvoiceExpiredPaidPartial              payment pending, underpaid
//	InvoicePaidAfterExpiration             payment pending, paid_late
//	InvoiceInvalid                         payment failed
//	InvoiceRefund, anything else           other (a refund is a pull payment the
//	                                       buyer may never claim; no amount)
//
// Flags: overPaid → overpaid, manuallyMarked → manual, afterExpiration →
// paid_late. TxnID is the invoice id, OrderID metadata.orderId, the
// customer metadata.buyerEmail / buyerName. The webhook carries neither
// the invoice amount nor its currency, so Amount stays empty; a payment's
// value (in the coin of paymentMethodId) becomes PaidAmount.
func (g *btcpayGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	var e btcpayEvent
	if err := decodeUseNumber(n.Body, &e); err != nil {
		return nil, fmt.Errorf("%w: btcpay event: %v", ipn.ErrMalformed, err)
	}
	ev := &ipn.Event{
		Type:          ipn.TypeOther,
		GatewayStatus: e.Type,
		EventID:       cmp.Or(string(e.OriginalDeliveryID), string(e.DeliveryID)),
		TxnID:         string(e.InvoiceID),
		OrderID:       metaText(e.Metadata, "orderId"),
		CustomerEmail: metaText(e.Metadata, "buyerEmail"),
		CustomerName:  metaText(e.Metadata, "buyerName"),
	}
	var flags []string
	if e.OverPaid {
		flags = append(flags, ipn.FlagOverpaid)
	}
	if e.ManuallyMarked {
		flags = append(flags, ipn.FlagManual)
	}
	if e.AfterExpiration {
		flags = append(flags, ipn.FlagPaidLate)
	}
	pay := func(st ipn.EventStatus, extra ...string) {
		ev.Type, ev.Status = ipn.TypePayment, st
		flags = append(flags, extra...)
	}
	switch e.Type {
	case "InvoiceCreated", "InvoiceReceivedPayment", "InvoicePaymentSettled", "InvoiceProcessing":
		pay(ipn.StatusPending)
	case "InvoiceSettled":
		pay(ipn.StatusCompleted)
	case "InvoiceExpired":
		if e.PartiallyPaid {
			pay(ipn.StatusPending, ipn.FlagUnderpaid)
		} else {
			pay(ipn.StatusExpired)
		}
	case "InvoiceExpiredPaidPartial":
		pay(ipn.StatusPending, ipn.FlagUnderpaid)
	case "InvoicePaidAfterExpiration":
		pay(ipn.StatusPending, ipn.FlagPaidLate)
	case "InvoiceInvalid":
		pay(ipn.StatusFailed)
	default:
		flags = nil
	}
	ev.Flags = joinFlags(flags...)
	if e.Payment != nil && e.Payment.Value != "" {
		coin := cmp.Or(e.PaymentMethodID, e.PaymentMethod)
		if i := strings.IndexAny(coin, "-_"); i >= 0 {
			coin = coin[:i] // "BTC-CHAIN", "BTC-LN", "BTC_LightningLike" → BTC
		}
		if coin != "" {
			ev.PaidCurrency = strings.ToUpper(coin)
			a, err := cryptoAmount(string(e.Payment.Value), ev.PaidCurrency)
			if err != nil {
				return nil, err
			}
			ev.PaidAmount = a
		}
	}
	return ev, nil
}
