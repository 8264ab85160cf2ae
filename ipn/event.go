package ipn

import (
	"cmp"
	"slices"
	"strings"
)

// EventType is the kind of a normalized payment event (SPEC §5).
type EventType string

// Event types.
const (
	TypePayment              EventType = "payment"
	TypeRefund               EventType = "refund"
	TypeReversal             EventType = "reversal"
	TypeReversalCanceled     EventType = "reversal_canceled"
	TypeDispute              EventType = "dispute"
	TypeSubscriptionStarted  EventType = "subscription_started"
	TypeSubscriptionPayment  EventType = "subscription_payment"
	TypeSubscriptionCanceled EventType = "subscription_canceled"
	TypeSubscriptionExpired  EventType = "subscription_expired"
	TypeOther                EventType = "other"
)

// EventStatus is the normalized status of a payment event.
type EventStatus string

// Event statuses.
const (
	StatusPending   EventStatus = "pending"
	StatusCompleted EventStatus = "completed"
	StatusFailed    EventStatus = "failed"
	StatusDenied    EventStatus = "denied"
	StatusRefunded  EventStatus = "refunded"
	StatusReversed  EventStatus = "reversed"
	StatusCanceled  EventStatus = "canceled"
	StatusExpired   EventStatus = "expired"
)

// ValidStatus reports whether s is a normalized status.
func ValidStatus(s EventStatus) bool {
	switch s {
	case StatusPending, StatusCompleted, StatusFailed, StatusDenied,
		StatusRefunded, StatusReversed, StatusCanceled, StatusExpired:
		return true
	}
	return false
}

// Event is a notification normalized into ipnd's own terms. Amount is an
// exact decimal string with the currency's own number of digits; it is
// never a float.
type Event struct {
	Type          EventType   `json:"type"`
	Status        EventStatus `json:"status,omitempty"`
	GatewayStatus string      `json:"gateway_status,omitempty"`
	TxnID         string      `json:"txn_id,omitempty"`
	ParentTxnID   string      `json:"parent_txn_id,omitempty"`
	EventID       string      `json:"event_id,omitempty"`
	OrderID       string      `json:"order_id,omitempty"`
	Amount        string      `json:"amount,omitempty"`
	// RefundedTotal is, for a refund, the payment's running refunded
	// total where the gateway reports one (Stripe charge.refunded
	// amount_refunded), "" where it reports each refund on its own
	// (PayPal). Amount is then this refund's own amount: the newest
	// refund the gateway lists, or, when it lists none, what the total
	// adds to the order's refunds of that payment (filled in when the
	// event is applied: see RefundAmount).
	RefundedTotal  string `json:"refunded_total,omitempty"`
	Currency       string `json:"currency,omitempty"`
	CustomerEmail  string `json:"customer_email,omitempty"`
	CustomerName   string `json:"customer_name,omitempty"`
	Receiver       string `json:"receiver,omitempty"`
	SubscriptionID string `json:"subscription_id,omitempty"`
	Test           bool   `json:"test"`

	// Refs lists, separated by spaces, the other identifiers the gateway
	// uses for the same payment and may name alone in a later event (a
	// Stripe Checkout Session, charge or invoice beside the payment
	// intent in TxnID). With TxnID, ParentTxnID and SubscriptionID they
	// link later refunds, disputes and payments to the order (see
	// PaymentRefs). A string, not a slice, so that Event stays comparable.
	Refs string `json:"refs,omitempty"`
	// Secondary: the event reports a payment that another event of the
	// gateway names the merchant's order for (a Stripe payment intent,
	// charge or invoice, which a Checkout Session's
	// client_reference_id names): when it names no order itself it waits
	// for that event (see OwnOrderID) rather than making an order of its
	// own. Not stored or sent: the gateway sets it again whenever the
	// notification is normalized.
	Secondary bool `json:"-"`

	// PaidAmount and PaidCurrency are what actually arrived when a crypto
	// gateway reports it beside the price (NOWPayments actually_paid,
	// CoinPayments received_amount, a BTCPay payment's value): an exact
	// decimal in the coin (e.g. "0.00017000" BTC). Informational only:
	// orders are checked against Amount and Currency.
	PaidAmount   string `json:"paid_amount,omitempty"`
	PaidCurrency string `json:"paid_currency,omitempty"`
	// Confirmations is the number of blockchain confirmations the gateway
	// reported (CoinPayments); 0 when it sent none.
	Confirmations int `json:"confirmations,omitempty"`
	// Flags qualifies Status with what the gateway said beyond it: a
	// comma-separated list of the Flag* values below, "" when none. It is a
	// string rather than a slice so that Event stays comparable.
	Flags string `json:"flags,omitempty"`
	// Items is what the payment says was bought, "product:quantity"
	// separated by commas (see ParseItems); "" when it says nothing. A
	// string so that Event stays comparable.
	Items string `json:"items,omitempty"`
	// PeriodEnd is, for a subscription payment, the end of the period it
	// pays (RFC 3339, UTC) when the gateway says: a subscription's
	// licenses run until then plus fulfilment.license_grace.
	PeriodEnd string `json:"period_end,omitempty"`
}

// Event flags (Event.Flags).
const (
	// FlagUnderpaid: less than the amount due arrived (BTCPay partiallyPaid,
	// NOWPayments partially_paid, Coinbase UNDERPAID); the status is pending.
	FlagUnderpaid = "underpaid"
	// FlagOverpaid: more than the amount due arrived.
	FlagOverpaid = "overpaid"
	// FlagPaidLate: the payment arrived after the invoice or charge expired
	// (Coinbase DELAYED, BTCPay afterExpiration); the merchant decides.
	FlagPaidLate = "paid_late"
	// FlagManual: the merchant set the status by hand in the gateway
	// (BTCPay manuallyMarked, Coinbase MANUAL).
	FlagManual = "manual"
	// FlagMultiple: the buyer paid with several transactions (Coinbase MULTIPLE).
	FlagMultiple = "multiple"
)

// PaymentRefs returns every identifier of the payment an event concerns
// that a later event may name alone: its txn id, parent txn id,
// subscription id and Refs, without empty or repeated ones.
func (ev *Event) PaymentRefs() []string {
	var out []string
	add := func(id string) {
		if id != "" && len(id) <= 255 && !slices.Contains(out, id) { // longer ones are refused before they get here
			out = append(out, id)
		}
	}
	add(ev.TxnID)
	add(ev.ParentTxnID)
	add(ev.SubscriptionID)
	for _, r := range strings.Fields(ev.Refs) {
		add(r)
	}
	return out
}

// OwnOrderID returns the id of the order a completed payment that names
// no order makes of its own, "<gateway>:<the gateway's id of the
// payment>" (PayPal "paypal:<txn_id>", Stripe "stripe:<payment intent>"),
// or "" when ev is no such payment: not completed, not a payment, a
// subscription start without a subscription id, or Secondary. A
// subscription's start is keyed by its subscription id, so that its
// payments, which name it, reach the same order.
func OwnOrderID(gateway string, ev *Event) string {
	if ev.OrderID != "" || ev.Secondary || ev.Status != StatusCompleted {
		return ""
	}
	id := ""
	switch ev.Type {
	case TypePayment, TypeSubscriptionPayment:
		id = ev.TxnID
	case TypeSubscriptionStarted:
		id = cmp.Or(ev.SubscriptionID, ev.TxnID)
	}
	if id == "" {
		return ""
	}
	return gateway + ":" + id
}

// EventKey identifies the payment fact an event reports, so that the
// same fact sent twice under different message ids is applied once. It
// is "" for events without a transaction id.
func EventKey(gateway string, ev *Event) string {
	if ev.TxnID == "" {
		return ""
	}
	k := gateway + "\x00" + ev.TxnID + "\x00" + string(ev.Type) + "\x00" + string(ev.Status) + "\x00" + ev.Amount
	if ev.RefundedTotal != "" {
		// Two refunds of the same sum on one Stripe charge differ only
		// in the running total.
		k += "\x00" + ev.RefundedTotal
	}
	return k
}

// movesMoneyBack reports whether events of type t move money back from
// the merchant (or say it may): their amounts are positive whatever the
// gateway's sign.
func movesMoneyBack(t EventType) bool {
	return t == TypeRefund || t == TypeReversal || t == TypeReversalCanceled || t == TypeDispute
}

// Unsign drops the sign a gateway gives the amounts of a refund,
// reversal, cancelled reversal or dispute (PayPal's negative mc_gross):
// Amount is the amount of this event and RefundedTotal the running
// total, both positive, for every gateway. Every normalizer calls it on
// the event it returns.
func (ev *Event) Unsign() {
	if !movesMoneyBack(ev.Type) {
		return
	}
	ev.Amount = strings.TrimPrefix(ev.Amount, "-")
	ev.RefundedTotal = strings.TrimPrefix(ev.RefundedTotal, "-")
}

// SearchTerms are the lower-cased identifiers ev is found by (txn id,
// parent txn id, order id, customer email, event id, subscription id),
// each once: what every store backend indexes for the dashboard's search.
func (ev *Event) SearchTerms() []string {
	if ev == nil {
		return nil
	}
	var out []string
	for _, v := range []string{ev.TxnID, ev.ParentTxnID, ev.OrderID, ev.CustomerEmail, ev.EventID, ev.SubscriptionID} {
		if v = strings.ToLower(strings.TrimSpace(v)); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
