package ipn

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"github.com/cockroachdb/apd/v3"
)

// summary is what an order's facts add up to.
type summary struct {
	status   OrderStatus
	paid     *apd.Decimal
	refunded *apd.Decimal
	flags    []string // sorted, including the order's earlier flags
	txnIDs   []string // sorted
	open     []string // sorted: see tally.open
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

// dispute is one dispute (a PayPal case, a Stripe dispute, grouped by
// its id) as its facts describe it.
type dispute struct {
	subject string // the payment disputed (its parent txn id)
	opened  bool   // an opening fact (status pending or none)
	won     bool   // a closing fact other than lost (Stripe won or warning_closed, a merchant's decision)
	lost    bool   // a closing fact with status reversed
}

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
			did := cmp.Or(f.TxnID, f.ParentTxnID, "\x00"+f.Key)
			d := t.disputes[did]
			if d == nil {
				d = &dispute{subject: cmp.Or(f.ParentTxnID, f.TxnID)}
				t.disputes[did] = d
			}
			switch {
			case disputeOpening(f.Status):
				d.opened = true
			case f.Status == StatusReversed:
				d.lost = true
			default:
				d.won = true
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

// What open returns: an outstanding reversal of a payment, an open
// dispute.
const (
	openReversal = "reversal of "
	openDispute  = "dispute "
)

// open lists, sorted, what is still open about the order's money: each
// payment with an outstanding reversal ("reversal of P") and each open
// dispute ("dispute D").
//
// A payment's reversals are outstanding when more of them stand than
// were taken back. A reversal is taken back by a reversal_canceled or a
// won dispute under the same id (Stripe funds_reinstated, or
// charge.dispute.closed won, of the dispute whose funds were
// withdrawn); each other reversal_canceled of the payment takes back one
// (PayPal's Canceled_Reversal has a txn id of its own).
//
// A dispute is open when it was opened and neither won nor lost, and no
// reversal of its payment was cancelled (PayPal's new_case ends with the
// chargeback's Canceled_Reversal; Stripe's with funds_reinstated).
func (t *tally) open() []string {
	var out []string
	for subject, ids := range t.reversals {
		standing, anonymous := 0, 0
		for id := range ids {
			if !t.cancels[subject][id] && !(t.disputes[id] != nil && t.disputes[id].won) {
				standing++
			}
		}
		for id := range t.cancels[subject] {
			if !ids[id] {
				anonymous++
			}
		}
		if standing > anonymous {
			out = append(out, openReversal+subject)
		}
	}
	for id, d := range t.disputes {
		if d.opened && !d.won && !d.lost && len(t.cancels[d.subject]) == 0 {
			out = append(out, openDispute+id)
		}
	}
	slices.Sort(out)
	return out
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
	open := t.open()
	reversed, disputed := false, false
	for _, d := range t.disputes {
		reversed = reversed || d.lost
	}
	for _, what := range open {
		reversed = reversed || strings.HasPrefix(what, openReversal)
		disputed = disputed || strings.HasPrefix(what, openDispute)
	}

	s.open = open
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
