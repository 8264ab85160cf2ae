package ipn

import (
	"slices"
	"time"
)

// SubscriptionStatus is where a subscription stands.
type SubscriptionStatus string

// Subscription statuses.
const (
	SubscriptionActive   SubscriptionStatus = "active"
	SubscriptionPastDue  SubscriptionStatus = "past_due"
	SubscriptionCanceled SubscriptionStatus = "canceled"
	SubscriptionExpired  SubscriptionStatus = "expired"
)

// Subscription is a recurring payment agreement (PayPal subscr_* /
// recurring_payment_*, Stripe invoice.* and customer.subscription.*),
// with the payments linked to it.
type Subscription struct {
	ID            string             `json:"id"`
	Gateway       string             `json:"gateway"`
	OrderID       string             `json:"order_id,omitempty"`
	CustomerEmail string             `json:"customer_email,omitempty"`
	Status        SubscriptionStatus `json:"status"`
	Payments      []string           `json:"payments"` // txn ids of completed payments
	Events        []SubscriptionFact `json:"events"`
	CreatedAt     time.Time          `json:"created_at"`
	UpdatedAt     time.Time          `json:"updated_at"`
}

// SubscriptionFact is one distinct subscription event applied.
type SubscriptionFact struct {
	Key          string      `json:"key"`
	Notification uint64      `json:"notification"`
	Type         EventType   `json:"type"`
	Status       EventStatus `json:"status"`
	TxnID        string      `json:"txn_id,omitempty"`
	At           time.Time   `json:"at"`
}

// IsSubscriptionEvent reports whether ev concerns a subscription record.
func IsSubscriptionEvent(ev *Event) bool {
	switch ev.Type {
	case TypeSubscriptionStarted, TypeSubscriptionPayment, TypeSubscriptionCanceled, TypeSubscriptionExpired:
		return ev.SubscriptionID != ""
	}
	return false
}

// ApplySubscription records ev on subscription s (nil: a new one) and
// returns the result; s is not modified. A repeated event changes nothing.
// The status is derived from the set of events, so arrival order does not
// matter: expired beats canceled beats the rest; otherwise past_due when
// the newest payment event (by the gateway's order of notifications) is a
// failure, else active.
func ApplySubscription(s *Subscription, ev *Event, ac ApplyContext) (Subscription, bool) {
	var out Subscription
	if s != nil {
		out = *s
		out.Payments = slices.Clone(s.Payments)
		out.Events = slices.Clone(s.Events)
	} else {
		out = Subscription{ID: ev.SubscriptionID, Gateway: ac.Gateway, CreatedAt: ac.Now.UTC()}
	}
	key := ac.EventKey
	if key == "" {
		key = string(ev.Type) + "/" + string(ev.Status) + "/" + ev.TxnID + "/" + ev.EventID
	}
	for _, f := range out.Events {
		if f.Key == key {
			return out, false
		}
	}
	out.Events = append(out.Events, SubscriptionFact{Key: key, Notification: ac.Notification, Type: ev.Type,
		Status: ev.Status, TxnID: ev.TxnID, At: ac.Now.UTC()})
	if out.OrderID == "" {
		out.OrderID = ev.OrderID
	}
	if out.CustomerEmail == "" {
		out.CustomerEmail = ev.CustomerEmail
	}
	if ev.Type == TypeSubscriptionPayment && ev.Status == StatusCompleted && ev.TxnID != "" &&
		!slices.Contains(out.Payments, ev.TxnID) {
		out.Payments = append(out.Payments, ev.TxnID)
	}
	out.Status = subscriptionStatus(out.Events)
	out.UpdatedAt = ac.Now.UTC()
	return out, true
}

func subscriptionStatus(facts []SubscriptionFact) SubscriptionStatus {
	var canceled, expired bool
	var lastPay *SubscriptionFact
	for i, f := range facts {
		switch f.Type {
		case TypeSubscriptionExpired:
			expired = true
		case TypeSubscriptionCanceled:
			canceled = true
		case TypeSubscriptionPayment:
			if lastPay == nil || f.Notification > lastPay.Notification {
				lastPay = &facts[i]
			}
		}
	}
	switch {
	case expired:
		return SubscriptionExpired
	case canceled:
		return SubscriptionCanceled
	case lastPay != nil && lastPay.Status != StatusCompleted:
		return SubscriptionPastDue
	}
	return SubscriptionActive
}
