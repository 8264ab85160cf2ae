package ipn

import (
	"cmp"
	"maps"
	"slices"

	"github.com/cockroachdb/apd/v3"
)

// summary is what an order's facts add up to.
type summary struct {
	status   OrderStatus
	paid     *apd.Decimal
	refunded *apd.Decimal
	flags    []string // sorted, including the order's earlier flags
	txnIDs   []string // sorted
}

// payGroup is one payment transaction as its facts describe it.
type payGroup struct {
	oneOff    bool         // a payment, not a subscription payment
	completed bool         // some fact is completed
	counted   bool         // some completed fact counts towards the totals
	amount    *apd.Decimal // largest counted completed amount
	failed    bool
	canceled  bool
	pending   bool
}

// dispute is one dispute as its facts describe it.
type dispute struct{ opened, closed, lost bool }

// tally is an order's facts grouped by what they are about.
type tally struct {
	pays      map[string]*payGroup
	payOrder  []string // group keys in first-seen order, for a deterministic sum
	refunds   map[string]*apd.Decimal
	reversals map[string]map[string]bool // parent txn -> reversal ids
	cancels   map[string]map[string]bool // parent txn -> reversal_canceled ids
	disputes  map[string]*dispute
	txns      map[string]bool
}

// tallyFacts groups o's facts: payments and refunds by txn id (by fact
// key when they have none), reversals and their cancellations by parent
// txn id, disputes by dispute id.
func tallyFacts(o *Order) *tally {
	cur := o.Currency
	t := &tally{pays: map[string]*payGroup{}, refunds: map[string]*apd.Decimal{}, reversals: map[string]map[string]bool{},
		cancels: map[string]map[string]bool{}, disputes: map[string]*dispute{}, txns: map[string]bool{}}
	add := func(m map[string]map[string]bool, parent, id string) {
		if m[parent] == nil {
			m[parent] = map[string]bool{}
		}
		m[parent][id] = true
	}
	for _, f := range o.Facts {
		if f.TxnID != "" {
			t.txns[f.TxnID] = true
		}
		counts := sameCurrency(f.Currency, cur) && len(f.Flags) == 0
		amt, amtErr := amountOf(f.Amount, cmp.Or(cur, f.Currency))
		if amtErr == nil {
			amt.Abs(amt)
		}
		id := cmp.Or(f.TxnID, "\x00"+f.Key)
		switch f.Type {
		case TypePayment, TypeSubscriptionPayment:
			g := t.pays[id]
			if g == nil {
				g = &payGroup{amount: zeroAmount()}
				t.pays[id] = g
				t.payOrder = append(t.payOrder, id)
			}
			g.oneOff = g.oneOff || f.Type == TypePayment
			switch f.Status {
			case StatusCompleted:
				g.completed = true
				if counts {
					g.counted = true
					if amtErr == nil && amt.Cmp(g.amount) > 0 {
						g.amount.Set(amt)
					}
				}
			case StatusPending:
				g.pending = true
			case StatusFailed, StatusDenied, StatusExpired:
				g.failed = true
			case StatusCanceled:
				g.canceled = true
			}
		case TypeRefund:
			if counts && (f.Status == StatusRefunded || f.Status == StatusCompleted) {
				if r := refundOf(f, cur); r != nil && (t.refunds[id] == nil || r.Cmp(t.refunds[id]) > 0) {
					t.refunds[id] = r
				}
			}
		case TypeReversal:
			add(t.reversals, cmp.Or(f.ParentTxnID, f.TxnID), id)
		case TypeReversalCanceled:
			add(t.cancels, cmp.Or(f.ParentTxnID, f.TxnID), id)
		case TypeDispute:
			did := cmp.Or(f.TxnID, cmp.Or(f.ParentTxnID, "\x00"+f.Key))
			d := t.disputes[did]
			if d == nil {
				d = &dispute{}
				t.disputes[did] = d
			}
			if disputeOpening(f.Status) {
				d.opened = true
			} else {
				d.closed = true
				d.lost = d.lost || f.Status == StatusReversed
			}
		}
	}
	return t
}

// refundOf is what a refund fact says its payment's refunds come to:
// the larger of its own amount and its running total (facts recorded
// before refunded_total existed kept Stripe's running total in Amount),
// positive; nil when it says nothing readable.
func refundOf(f OrderFact, cur string) *apd.Decimal {
	var best *apd.Decimal
	for _, s := range []string{f.Amount, f.RefundedTotal} {
		if v, err := amountOf(s, cmp.Or(cur, f.Currency)); err == nil && s != "" {
			v.Abs(v)
			if best == nil || v.Cmp(best) > 0 {
				best = v
			}
		}
	}
	return best
}

// summarize derives status, totals, flags and txn ids from o's facts and
// registered expectation (the rules are in Apply's comment, the flags'
// in review.go). o.Flags are kept: flags are never removed.
func summarize(o *Order) summary {
	var expected *apd.Decimal
	if o.Registered {
		expected, _ = amountOf(o.Amount, o.Currency)
	}
	t := tallyFacts(o)

	s := summary{paid: zeroAmount(), refunded: zeroAmount()}
	var completed, pending, failed, canceled bool
	var oneOffs []*apd.Decimal
	for _, id := range t.payOrder {
		g := t.pays[id]
		switch {
		case g.completed:
			completed = true
			if g.counted {
				addAmount(s.paid, g.amount)
				if g.oneOff {
					oneOffs = append(oneOffs, g.amount)
				}
			}
		case g.failed:
			failed = true
		case g.canceled:
			canceled = true
		case g.pending:
			pending = true
		}
	}
	for _, r := range t.refunds {
		addAmount(s.refunded, r)
	}
	reversed := false
	for parent, ids := range t.reversals {
		if len(ids) > len(t.cancels[parent]) {
			reversed = true
		}
	}
	disputed := false
	for _, d := range t.disputes {
		reversed = reversed || d.lost
		disputed = disputed || d.opened && !d.closed
	}

	s.flags = reviewFlags(o, expected, oneOffs)
	s.txnIDs = slices.Sorted(maps.Keys(t.txns))
	if s.txnIDs == nil {
		s.txnIDs = []string{}
	}
	switch {
	case len(s.flags) > 0:
		s.status = OrderReview
	case reversed:
		s.status = OrderReversed
	case disputed:
		s.status = OrderDisputed
	case completed && s.refunded.Sign() > 0 && s.refunded.Cmp(s.paid) >= 0:
		s.status = OrderRefunded
	case completed && s.refunded.Sign() > 0:
		s.status = OrderPartiallyRefunded
	case completed:
		s.status = OrderPaid
	case pending:
		s.status = OrderPending
	case failed:
		s.status = OrderFailed
	case canceled:
		s.status = OrderCanceled
	default:
		s.status = OrderAwaitingPayment
	}
	return s
}
