package ipn

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"github.com/cockroachdb/apd/v3"
)

// Why an order goes to review: an order is in review (OrderReview, the
// highest status) as soon as it carries a flag, and flags are never
// removed once raised (the merchant decides). Every flag is raised here,
// by factFlags (a fact on its own) or reviewFlags (the order's facts
// together); Assess (decide.go) refuses the notifications that raise the
// first two, so that they reach the order only to put it in review.
//
//   - receiver_mismatch: ApplyContext.Receivers is not empty and the
//     event's receiver is none of them (case-insensitive), an event that
//     names no receiver included: the caller sets Receivers only where
//     the receiver is to be checked (Assess: once the gateway found a
//     mismatch).
//   - test_payment: a test event (Event.Test) that is not a sandbox
//     gateway's payment for a test order; or a live event of a live
//     gateway reaching a test order.
//   - currency_mismatch: a fact's currency differs from the order's.
//   - amount_mismatch: the order is registered and a completed payment in
//     its currency has an amount other than the expected one (an
//     underpayment, an overpayment, a missing amount). A registered order
//     paid in several smaller parts is therefore in review too.
//   - double_payment: two or more completed one-off payment groups (not
//     subscription payments) that count, and, for a registered order, the
//     total without the smallest of them still reaches the expected
//     amount (an order already paid in full was paid again). For an
//     order that was not registered, any second completed txn.
//
// A fact that raised a flag of its own (the first two) does not count
// towards the order's totals.

// Order flags (Order.Flags): why an order is in review.
const (
	FlagAmountMismatch   = "amount_mismatch"
	FlagCurrencyMismatch = "currency_mismatch"
	FlagReceiverMismatch = "receiver_mismatch"
	FlagTestPayment      = "test_payment"
	FlagDoublePayment    = "double_payment"
)

// The details of notifications Assess refuses, for their history.
const (
	refusedTestPayment = "test_payment: a sandbox/test message on a live gateway is not applied"
	refusedReceiver    = "receiver_mismatch: the payment is not addressed to one of the merchant's receivers"
)

// factFlags returns the review flags event ev raises on its own, as a
// fact of an order that is a test order or not.
func factFlags(ev *Event, ac ApplyContext, testOrder bool) []string {
	var flags []string
	if len(ac.Receivers) > 0 &&
		!slices.ContainsFunc(ac.Receivers, func(r string) bool { return strings.EqualFold(r, ev.Receiver) }) {
		flags = append(flags, FlagReceiverMismatch)
	}
	if ev.Test && !(ac.Sandbox && testOrder) {
		// A test payment counts only on a sandbox gateway and only for a
		// test order: a sandbox account's payment must not pay a real
		// order (one registered for real, or created by a live event).
		flags = append(flags, FlagTestPayment)
	} else if testOrder && !ev.Test && !ac.Sandbox && ac.Decision == "" {
		// Nor does a live gateway's real money pay a test order: the shop
		// never fulfils one and the merchant may delete it (an order id
		// the merchant tested with, reused for a real customer).
		flags = append(flags, FlagTestPayment)
	}
	return flags
}

// reviewFlags returns o's flags, sorted: those it has, those its facts
// raised, and those its facts raise together. expected is the registered
// amount (nil when the order was not registered) and oneOffs the amounts
// of its counted, completed one-off payment groups.
func reviewFlags(o *Order, expected *apd.Decimal, oneOffs []*apd.Decimal) []string {
	flags := map[string]bool{}
	for _, f := range o.Flags {
		flags[f] = true
	}
	for _, f := range o.Facts {
		for _, fl := range f.Flags {
			flags[fl] = true
		}
		inCurrency := sameCurrency(f.Currency, o.Currency)
		if !inCurrency {
			flags[FlagCurrencyMismatch] = true
		}
		payment := f.Type == TypePayment || f.Type == TypeSubscriptionPayment
		if expected != nil && inCurrency && payment && f.Status == StatusCompleted {
			amt, err := amountOf(f.Amount, cmp.Or(o.Currency, f.Currency))
			if err != nil || amt.Abs(amt).Cmp(expected) != 0 {
				flags[FlagAmountMismatch] = true
			}
		}
	}
	if paidTwice(expected, oneOffs) {
		flags[FlagDoublePayment] = true
	}
	out := slices.Sorted(maps.Keys(flags))
	if out == nil { // [] rather than null in JSON
		out = []string{}
	}
	return out
}

// paidTwice reports whether the one-off payments oneOffs pay an order
// expecting expected (nil: not registered) more than once.
func paidTwice(expected *apd.Decimal, oneOffs []*apd.Decimal) bool {
	if len(oneOffs) < 2 {
		return false
	}
	if expected == nil {
		return true
	}
	total, smallest := zeroAmount(), oneOffs[0]
	for _, a := range oneOffs {
		addAmount(total, a)
		if a.Cmp(smallest) < 0 {
			smallest = a
		}
	}
	decimalCtx.Sub(total, total, smallest)
	return total.Cmp(expected) >= 0
}

// ReceiverAccepted reports whether the event's receiver is one of the
// merchant's (want, compared case-insensitively): true when want is empty
// or the event names no receiver. A gateway with a check of its own
// (PayPal looks at three fields) uses that instead.
func ReceiverAccepted(ev *Event, want []string) bool {
	if len(want) == 0 || ev.Receiver == "" {
		return true
	}
	return slices.ContainsFunc(want, func(w string) bool { return strings.EqualFold(w, ev.Receiver) })
}
