package ipn

import (
	"slices"
	"time"
)

// OrderStatus is where an order stands (SPEC §5).
type OrderStatus string

// Order statuses.
const (
	OrderAwaitingPayment   OrderStatus = "awaiting_payment"
	OrderPending           OrderStatus = "pending"
	OrderPaid              OrderStatus = "paid"
	OrderPartiallyRefunded OrderStatus = "partially_refunded"
	OrderRefunded          OrderStatus = "refunded"
	OrderReversed          OrderStatus = "reversed"
	OrderDisputed          OrderStatus = "disputed"
	OrderFailed            OrderStatus = "failed"
	OrderCanceled          OrderStatus = "canceled"
	OrderReview            OrderStatus = "review"
)

// OrderStatuses lists every order status (for metrics and validation).
var OrderStatuses = []OrderStatus{OrderAwaitingPayment, OrderPending, OrderPaid, OrderPartiallyRefunded,
	OrderRefunded, OrderReversed, OrderDisputed, OrderFailed, OrderCanceled, OrderReview}

// Order is the merchant's order as ipnd knows it: registered in advance
// (POST /api/orders) or created from the first event that names it.
// Amounts are exact decimal strings with the currency's digits.
type Order struct {
	ID         string      `json:"id"`
	Status     OrderStatus `json:"status"`
	Registered bool        `json:"registered"` // created through the API with an expected amount
	// Test: a test order, created by a sandbox gateway's test event or
	// registered with "test": true. Only test orders take test payments,
	// and only from a sandbox gateway: anything else raises test_payment.
	Test          bool              `json:"test,omitempty"`
	Amount        string            `json:"amount,omitempty"`
	Currency      string            `json:"currency,omitempty"`
	CustomerEmail string            `json:"customer_email,omitempty"`
	CustomerName  string            `json:"customer_name,omitempty"`
	Description   string            `json:"description,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Gateway       string            `json:"gateway,omitempty"`
	Paid          string            `json:"paid"`     // total received (completed payments), exact
	Refunded      string            `json:"refunded"` // total refunded, exact
	Flags         []string          `json:"flags"`
	// ApprovedFlags are the flags the merchant approved (an approve
	// decision): they stay in Flags, visible, but no longer hold the order
	// in review; a flag raised later that is not among them does.
	ApprovedFlags []string `json:"approved_flags,omitempty"`
	// Canceled: the merchant canceled the order (a cancel decision): its
	// status stays canceled whatever its payments, unless a flag not
	// approved puts it in review.
	Canceled bool          `json:"canceled,omitempty"`
	TxnIDs   []string      `json:"txn_ids"`
	History  []OrderChange `json:"history"`
	// Changes counts the order's history entries: History may hold only
	// the newest of them (the store keeps the history apart and pages it).
	Changes   int       `json:"changes,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Facts is the state the status is derived from: each distinct
	// payment fact applied (by EventKey), so that a repeated event changes
	// nothing and disorder ends in the same state.
	Facts []OrderFact `json:"facts,omitempty"`
	// Items is what the order contains (POST /api/orders "items"): the
	// products delivered when it is paid (SPEC §11).
	Items []Item `json:"items,omitempty"`
}

// OrderFact is one payment fact applied to an order.
type OrderFact struct {
	Key          string      `json:"key"` // EventKey (or a key the state machine derives)
	Notification uint64      `json:"notification"`
	Type         EventType   `json:"type"`
	Status       EventStatus `json:"status"`
	TxnID        string      `json:"txn_id,omitempty"`
	ParentTxnID  string      `json:"parent_txn_id,omitempty"`
	Amount       string      `json:"amount,omitempty"` // a refund's own amount
	// RefundedTotal is a refund's running total of its payment where the
	// gateway reports one (Event.RefundedTotal).
	RefundedTotal string    `json:"refunded_total,omitempty"`
	Currency      string    `json:"currency,omitempty"`
	At            time.Time `json:"at"`
	// SubscriptionID links subscription facts (one email per subscription
	// started or canceled, however many facts report it).
	SubscriptionID string `json:"subscription_id,omitempty"`
	// Flags are the review flags the fact raised on its own when it was
	// applied (receiver_mismatch, test_payment): they depend on the
	// configuration at that time, so they are kept with the fact. A fact
	// with flags is recorded but not counted in the totals.
	Flags []string `json:"flags,omitempty"`
}

// OrderChange is one entry of an order's history: every change of
// status, totals or flags, with the notification that caused it.
type OrderChange struct {
	At           time.Time   `json:"at"`
	Notification uint64      `json:"notification,omitempty"`
	From         OrderStatus `json:"from,omitempty"`
	To           OrderStatus `json:"to"`
	Reason       string      `json:"reason"`
	// By is who made a merchant's decision ("admin", "cli"); "" for a
	// change a notification or ipnd itself made.
	By string `json:"by,omitempty"`
}

// Effect kinds.
const (
	EffectEmailCustomer = "email_customer"
	EffectEmailMerchant = "email_merchant"
	EffectShopCallback  = "shop_callback"
)

// Email templates named by effects.
const (
	TemplatePaymentReceived      = "payment_received"
	TemplatePaymentPending       = "payment_pending"
	TemplateRefundIssued         = "refund_issued"
	TemplatePaymentFailed        = "payment_failed"
	TemplateSubscriptionStarted  = "subscription_started"
	TemplateSubscriptionCanceled = "subscription_canceled"
	TemplateOrderReview          = "order_review"
	TemplateDisputeOpened        = "dispute_opened"
	TemplateDisputeClosed        = "dispute_closed"
	TemplateEventUnmatched       = "event_unmatched"
	TemplateVerificationFailed   = "verification_failed"
)

// Effect is outgoing work a state change causes (an email, a shop
// callback). Cause is a stable key (order id, transition, template) so
// that the same cause is never queued twice.
type Effect struct {
	Kind     string `json:"kind"`
	Template string `json:"template,omitempty"`
	Cause    string `json:"cause"`
	OrderID  string `json:"order_id,omitempty"`
	To       string `json:"to,omitempty"` // customer email for customer emails
	Reason   string `json:"reason,omitempty"`
	Event    *Event `json:"event,omitempty"`
	// Amount is the sum the effect is about, in Order.Currency: the
	// payment's amount for payment emails, the refund's own amount (not
	// the total refunded) for refund emails. "" when it has none.
	Amount string `json:"amount,omitempty"`
	// Order is the order as it stood right after the change that queued
	// the effect: emails and callbacks state the totals as of that
	// change, not as of sending time. nil for effects queued by older
	// versions and for effects without an order.
	Order *OrderSnapshot `json:"order,omitempty"`
}

// OrderSnapshot is an order as the shop and the emails see it at one
// transition: the data.order of a shop callback.
type OrderSnapshot struct {
	ID             string      `json:"id"`
	Status         OrderStatus `json:"status"`
	PreviousStatus OrderStatus `json:"previous_status,omitempty"`
	Registered     bool        `json:"registered"`
	Test           bool        `json:"test,omitempty"` // a test (sandbox) order: never fulfil it for real
	Flags          []string    `json:"flags"`
	ApprovedFlags  []string    `json:"approved_flags,omitempty"` // flags the merchant approved (they hold nothing up)
	Amount         string      `json:"amount,omitempty"`         // expected (registered) or first payment's amount
	Paid           string      `json:"paid"`
	Refunded       string      `json:"refunded"`
	Currency       string      `json:"currency,omitempty"`
	Customer       Customer    `json:"customer"`
	// Reason is the order history's reason for this transition.
	Reason string `json:"reason,omitempty"`
	// Version counts the order's history entries up to this transition:
	// callbacks may arrive out of order, and a shop keeps the one with
	// the highest version of each order.
	Version int `json:"version"`
	// Deliveries are the download links and license keys issued when
	// the order became paid (SPEC §11), on the snapshot of that change.
	Deliveries []Delivered `json:"deliveries,omitempty"`
}

// Customer is who an order is for.
type Customer struct {
	Email string `json:"email,omitempty"`
	Name  string `json:"name,omitempty"`
}

// Snapshot returns o as the shop sees it, after a change from status from.
func (o *Order) Snapshot(from OrderStatus, reason string) *OrderSnapshot {
	flags := slices.Clone(o.Flags)
	if flags == nil {
		flags = []string{}
	}
	return &OrderSnapshot{ID: o.ID, Status: o.Status, PreviousStatus: from, Registered: o.Registered, Test: o.Test, Flags: flags,
		ApprovedFlags: slices.Clone(o.ApprovedFlags),
		Amount:        o.Amount, Paid: o.Paid, Refunded: o.Refunded, Currency: o.Currency,
		Customer: Customer{Email: o.CustomerEmail, Name: o.CustomerName}, Reason: reason, Version: max(o.Changes, len(o.History))}
}

// ApplyContext is what the state machine needs to know besides the order
// and the event.
type ApplyContext struct {
	Now          time.Time
	Notification uint64 // log id of the notification carrying the event
	Gateway      string
	EventKey     string   // the payment fact's key (EventKey); "" if none
	Sandbox      bool     // the gateway is configured as sandbox/test
	Receivers    []string // merchant identities accepted as receiver; empty: any
	// Decision, for a fact the merchant decided (CloseDispute), says who
	// and why; it leads the history's reason.
	Decision string
}
