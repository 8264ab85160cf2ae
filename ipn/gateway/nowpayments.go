package gateway

import (
	"crypto/sha512"
	"fmt"
	"strings"

	"ipnd/ipn"
)

// nowpaymentsGateway is the nowpayments kind (GATEWAYS.md §7.2). The
// x-nowpayments-sig header is the hex HMAC-SHA512, keyed with the IPN
// secret, of the body re-serialised with sorted keys, not of the raw
// bytes. Which of the two sorted forms NOWPayments computes is not
// documented, so either one is accepted (SortedJSON). Only the top-level
// form may have matched, and it leaves nested objects unauthenticated, so
// Normalize reads top-level scalars only.
type nowpaymentsGateway struct {
	name string
	keys [][]byte
}

func newNOWPayments(cfg Config) (Gateway, error) {
	return &nowpaymentsGateway{name: cfg.Name, keys: rawKeys(cfg.Secrets)}, nil
}

func (g *nowpaymentsGateway) Name() string { return g.name }
func (g *nowpaymentsGateway) Kind() string { return "nowpayments" }
func (g *nowpaymentsGateway) Accepts(mediaType string) bool {
	return acceptsMedia(mediaJSON, mediaType)
}
func (g *nowpaymentsGateway) KeepHeaders() []string {
	return []string{"X-Nowpayments-Sig", "User-Agent"}
}

// Check verifies the signature against both canonical forms of the body
// and returns "payment_id:payment_status" (one IPN per status change), or
// "" for a message without payment_id.
func (g *nowpaymentsGateway) Check(in *Inbound) (string, error) {
	if !g.Accepts(in.MediaType) {
		return "", fmt.Errorf("%w: nowpayments sends application/json", ipn.ErrUnsupportedMedia)
	}
	sig, err := hexSignature(in.Header.Get("X-Nowpayments-Sig"), "x-nowpayments-sig", sha512.Size)
	if err != nil {
		return "", err
	}
	// The signature covers a re-serialisation, so the body must be parsed
	// before it can be verified (the one exception to GATEWAYS.md §0.1).
	obj, err := decodeJSONObject(in.Body)
	if err != nil {
		return "", err
	}
	top, rec := sortedJSONOf(obj, false), sortedJSONOf(obj, true)
	if !macMatchesAny(sha512.New, g.keys, sig, top, rec) {
		return "", fmt.Errorf("%w: no signature matched", ipn.ErrBadSignature)
	}
	id := scalarText(obj["payment_id"])
	if id == "" {
		return "", nil
	}
	return id + ":" + scalarText(obj["payment_status"]), nil
}

// nowpaymentsStatus maps payment_status (GATEWAYS.md §7.2). Fulfilment
// waits for finished: confirmed and sending still count as pending.
var nowpaymentsStatus = map[string]struct {
	typ  ipn.EventType
	st   ipn.EventStatus
	flag string
}{
	"waiting":        {ipn.TypePayment, ipn.StatusPending, ""},
	"confirming":     {ipn.TypePayment, ipn.StatusPending, ""},
	"confirmed":      {ipn.TypePayment, ipn.StatusPending, ""},
	"sending":        {ipn.TypePayment, ipn.StatusPending, ""},
	"partially_paid": {ipn.TypePayment, ipn.StatusPending, ipn.FlagUnderpaid},
	"finished":       {ipn.TypePayment, ipn.StatusCompleted, ""},
	"failed":         {ipn.TypePayment, ipn.StatusFailed, ""},
	"refunded":       {ipn.TypeRefund, ipn.StatusRefunded, ""},
	"expired":        {ipn.TypePayment, ipn.StatusExpired, ""},
	"cancelled":      {ipn.TypePayment, ipn.StatusCanceled, ""},
	"canceled":       {ipn.TypePayment, ipn.StatusCanceled, ""},
}

// Normalize maps an IPN by payment_status (nowpaymentsStatus; anything
// else is other). TxnID is payment_id, ParentTxnID parent_payment_id,
// OrderID order_id; Amount is price_amount in price_currency and
// PaidAmount actually_paid in pay_currency, both the exact decimal text
// of the JSON number. A finished payment with actually_paid above
// pay_amount is flagged overpaid. Keys match exactly (the body is read as
// a map, not with Go's case-insensitive struct matching).
func (g *nowpaymentsGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	obj, err := decodeJSONObject(n.Body)
	if err != nil {
		return nil, err
	}
	get := func(k string) string { return scalarText(obj[k]) }
	status := get("payment_status")
	ev := &ipn.Event{
		Type:          ipn.TypeOther,
		GatewayStatus: status,
		TxnID:         get("payment_id"),
		ParentTxnID:   get("parent_payment_id"),
		OrderID:       get("order_id"),
	}
	if ev.TxnID != "" {
		ev.EventID = ev.TxnID + ":" + status
	}
	if m, ok := nowpaymentsStatus[status]; ok {
		ev.Type, ev.Status, ev.Flags = m.typ, m.st, m.flag
	}
	if amt, cur := get("price_amount"), get("price_currency"); amt != "" && cur != "" {
		ev.Currency = strings.ToUpper(cur)
		if ev.Amount, err = cryptoAmount(amt, ev.Currency); err != nil {
			return nil, err
		}
	}
	if amt, cur := get("actually_paid"), get("pay_currency"); amt != "" && cur != "" {
		ev.PaidCurrency = strings.ToUpper(cur)
		if ev.PaidAmount, err = cryptoAmount(amt, ev.PaidCurrency); err != nil {
			return nil, err
		}
		if status == "finished" && paymentFlag(amt, get("pay_amount")) == ipn.FlagOverpaid {
			ev.Flags = ipn.FlagOverpaid
		}
	}
	ev.Unsign()
	return ev, nil
}
