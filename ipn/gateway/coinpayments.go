package gateway

import (
	"cmp"
	"crypto/sha512"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"ipnd/ipn"
)

// coinpaymentsGateway is the coinpayments kind: the legacy CoinPayments
// IPN (GATEWAYS.md §7.1). A form-urlencoded POST whose raw bytes are signed
// in the HMAC header with hex HMAC-SHA512 keyed with the IPN secret. The
// form must say ipn_mode=hmac and name our merchant id; ipn_id identifies
// each IPN.
type coinpaymentsGateway struct {
	name     string
	keys     [][]byte
	merchant string
}

func newCoinPayments(cfg Config) (Gateway, error) {
	if strings.TrimSpace(cfg.MerchantID) == "" {
		return nil, fmt.Errorf("%w: gateway %q of kind coinpayments needs merchant_id (the IPN's merchant field is checked against it)", ipn.ErrConfig, cfg.Name)
	}
	return &coinpaymentsGateway{name: cfg.Name, keys: rawKeys(cfg.Secrets), merchant: cfg.MerchantID}, nil
}

func (g *coinpaymentsGateway) Name() string { return g.name }
func (g *coinpaymentsGateway) Kind() string { return "coinpayments" }
func (g *coinpaymentsGateway) Accepts(mediaType string) bool {
	return acceptsMedia(mediaForm, mediaType)
}
func (g *coinpaymentsGateway) KeepHeaders() []string { return []string{"Hmac", "User-Agent"} }

// ParseCoinPaymentsForm parses a raw CoinPayments IPN body. A body that is
// not valid form encoding is ErrMalformed.
func ParseCoinPaymentsForm(body []byte) (url.Values, error) {
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: body is not form-urlencoded", ipn.ErrMalformed)
	}
	return v, nil
}

func (g *coinpaymentsGateway) Check(in *Inbound) (string, error) {
	if !g.Accepts(in.MediaType) {
		return "", fmt.Errorf("%w: coinpayments sends application/x-www-form-urlencoded", ipn.ErrUnsupportedMedia)
	}
	sig, err := hexSignature(in.Header.Get("Hmac"), "HMAC", sha512.Size)
	if err != nil {
		return "", err
	}
	if !macMatchesAny(sha512.New, g.keys, sig, in.Body) {
		return "", fmt.Errorf("%w: no signature matched", ipn.ErrBadSignature)
	}
	f, err := ParseCoinPaymentsForm(in.Body)
	if err != nil {
		return "", err
	}
	if f.Get("ipn_mode") != "hmac" {
		return "", fmt.Errorf("%w: ipn_mode is not hmac", ipn.ErrBadSignature)
	}
	if f.Get("merchant") != g.merchant {
		return "", fmt.Errorf("%w: merchant is not the configured merchant_id", ipn.ErrBadSignature)
	}
	id := f.Get("ipn_id")
	if id == "" {
		return "", fmt.Errorf("%w: no ipn_id", ipn.ErrMalformed)
	}
	return id, nil
}

// coinpaymentsStatus maps a CoinPayments status code (GATEWAYS.md §7.1):
// >= 100 or 2 (queued for nightly payout) completed; -2 (PayPal refund or
// reversal) reversed; -1 (cancelled or timed out) canceled; other negatives
// failed; 0..99 pending. ok is false when code is not an integer.
func coinpaymentsStatus(code string) (ipn.EventType, ipn.EventStatus, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(code))
	if err != nil {
		return ipn.TypeOther, "", false
	}
	switch {
	case n >= 100 || n == 2:
		return ipn.TypePayment, ipn.StatusCompleted, true
	case n == -2:
		return ipn.TypeReversal, ipn.StatusReversed, true
	case n == -1:
		return ipn.TypePayment, ipn.StatusCanceled, true
	case n < 0:
		return ipn.TypePayment, ipn.StatusFailed, true
	}
	return ipn.TypePayment, ipn.StatusPending, true
}

// Normalize maps an IPN by its status code (coinpaymentsStatus) for the
// payment IPN types (simple, button, cart, donation, api, deposit); other
// types (withdrawal, anything new) and non-numeric statuses are other.
// GatewayStatus is "<status> <status_text>".
//
// Payments: TxnID txn_id, OrderID invoice else custom, Amount
// amount1/currency1 (the price), PaidAmount received_amount in currency2,
// Confirmations received_confirms. Deposits: TxnID deposit_id (one TXID
// can pay several addresses), Amount amount/currency, Confirmations
// confirms. Flags: underpaid / overpaid when received_amount differs from
// amount2 (the coin amount due).
func (g *coinpaymentsGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	f, err := ParseCoinPaymentsForm(n.Body)
	if err != nil {
		return nil, err
	}
	ev := &ipn.Event{
		Type:          ipn.TypeOther,
		GatewayStatus: strings.TrimSpace(f.Get("status") + " " + f.Get("status_text")),
		EventID:       f.Get("ipn_id"),
		TxnID:         f.Get("txn_id"),
		OrderID:       cmp.Or(f.Get("invoice"), f.Get("custom")),
		CustomerEmail: f.Get("email"),
		CustomerName:  strings.TrimSpace(f.Get("first_name") + " " + f.Get("last_name")),
		Receiver:      f.Get("merchant"),
	}
	ipnType := f.Get("ipn_type")
	switch ipnType {
	case "simple", "button", "cart", "donation", "api", "deposit":
		ev.Type, ev.Status, _ = coinpaymentsStatus(f.Get("status"))
	}
	price, priceCur, confirms := f.Get("amount1"), f.Get("currency1"), f.Get("received_confirms")
	if ipnType == "deposit" {
		ev.TxnID = cmp.Or(f.Get("deposit_id"), ev.TxnID)
		price, priceCur, confirms = f.Get("amount"), f.Get("currency"), f.Get("confirms")
	}
	if c, err := strconv.Atoi(cmp.Or(confirms, f.Get("confirms"))); err == nil && c > 0 {
		ev.Confirmations = c
	}
	if price != "" && priceCur != "" {
		ev.Currency = strings.ToUpper(priceCur)
		if ev.Amount, err = cryptoAmount(price, ev.Currency); err != nil {
			return nil, err
		}
	}
	if paid, coin := f.Get("received_amount"), f.Get("currency2"); paid != "" && coin != "" {
		ev.PaidCurrency = strings.ToUpper(coin)
		if ev.PaidAmount, err = cryptoAmount(paid, ev.PaidCurrency); err != nil {
			return nil, err
		}
		if ev.Type == ipn.TypePayment && (ev.Status == ipn.StatusPending || ev.Status == ipn.StatusCompleted) {
			flag := paymentFlag(paid, f.Get("amount2"))
			// Less than due with a completed status: the gateway decided; keep
			// completed and say nothing (underpaid implies pending).
			if flag == ipn.FlagOverpaid || ev.Status == ipn.StatusPending {
				ev.Flags = flag
			}
		}
	}
	ev.Unsign()
	return ev, nil
}
