package ipn

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DisputeDecision is the merchant's word on how a dispute ended, for a
// gateway that never says (PayPal sends no message when a complaint case
// closes in the seller's favour).
type DisputeDecision struct {
	// Dispute is the dispute's id as the order's history names it (a
	// PayPal case_id, a Stripe dp_ id); "" means the order's only open
	// dispute.
	Dispute string
	Won     bool   // won: the order returns to where it was; lost: reversed
	By      string // who decided (the admin token's user, "cli", ...)
	Why     string // the merchant's words, for the history
}

// ErrNoOpenDispute: the order has no open dispute the decision can close.
var ErrNoOpenDispute = errors.New("no open dispute")

// OpenDisputes lists the ids of o's open disputes, sorted.
func OpenDisputes(o *Order) []string {
	var ids []string
	for _, what := range tallyFacts(o).open() {
		if id, ok := strings.CutPrefix(what, openDispute); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// CloseDispute applies the merchant's decision d to order o at now: a
// fact like any other (a dispute closing fact, status canceled when won,
// reversed when lost, under the key "decision/<dispute>/won|lost"), so
// the order's status is derived as for a gateway's own word, the history
// says who decided and why, the shop gets its callback and the merchant
// the dispute_closed email. A later word of the gateway still counts: a
// dispute the gateway reports lost is lost. It is pure; it fails with
// ErrNoOpenDispute when o has no open dispute of that id (or, with no
// id, not exactly one).
func CloseDispute(o *Order, d DisputeDecision, now time.Time) (Order, []Effect, error) {
	if o == nil {
		return Order{}, nil, fmt.Errorf("%w: no order", ErrNoOpenDispute)
	}
	open := OpenDisputes(o)
	id := d.Dispute
	switch {
	case id == "" && len(open) == 1:
		id = open[0]
	case id == "":
		return Order{}, nil, fmt.Errorf("%w: order %q has %d open disputes (%s): name one", ErrNoOpenDispute, o.ID, len(open), strings.Join(open, ", "))
	case !slices.Contains(open, id):
		return Order{}, nil, fmt.Errorf("%w: order %q has no open dispute %q (open: %s)", ErrNoOpenDispute, o.ID, id, strings.Join(open, ", "))
	}
	subject := ""
	for _, f := range o.Facts {
		if f.Type == TypeDispute && (f.TxnID == id || f.TxnID == "" && f.ParentTxnID == id) {
			subject = f.ParentTxnID
			break
		}
	}
	outcome, status := "lost", StatusReversed
	if d.Won {
		outcome, status = "won", StatusCanceled
	}
	ev := &Event{Type: TypeDispute, Status: status, GatewayStatus: "merchant decision: " + outcome, TxnID: id,
		ParentTxnID: subject, OrderID: o.ID, Currency: o.Currency}
	who := "merchant decision"
	if d.By != "" {
		who += " by " + d.By
	}
	why := who + ": dispute " + id + " " + outcome
	if d.Why != "" {
		why += " (" + d.Why + ")"
	}
	ac := ApplyContext{Now: now, Gateway: o.Gateway, EventKey: "decision/" + id + "/" + outcome, Decision: why}
	next, effects := Apply(o, ev, ac)
	return next, effects, nil
}

// Order decision kinds (OrderDecision.Kind).
const (
	DecisionApprove = "approve"
	DecisionCancel  = "cancel"
	DecisionNote    = "note"
)

// TypeDecision is the type of the event a merchant's decision on an
// order hands the shop with its callback (ShopEvent.Data.Event): it
// carries no payment, only the order's id and the decision's words.
const TypeDecision EventType = "decision"

// OrderDecision is the merchant's decision on an order: approve an order
// in review, cancel it, or add a note to its history.
type OrderDecision struct {
	Kind string // DecisionApprove, DecisionCancel, DecisionNote
	By   string // who decided: "admin" (the API or dashboard session), "cli"
	Why  string // the merchant's words (a note's text)
}

// Errors of DecideOrder.
var (
	// ErrNotInReview: approve on an order that is not in review.
	ErrNotInReview = errors.New("order is not in review")
	// ErrFinal: cancel on an order already refunded, reversed or canceled.
	ErrFinal = errors.New("order is final")
	// ErrBadDecision: an unknown kind, or a note without text.
	ErrBadDecision = errors.New("bad decision")
)

// DecideOrder applies the merchant's decision d to order o at now, given its
// tally t (the store's, or RebuildTally's for an order that holds its
// facts): it returns the order after it (Changes counted, the history
// entry appended to History), the history entry, and the effects to
// queue with it in the same transaction. It is pure.
//
//   - approve: o must be in review (ErrNotInReview). Its flags become
//     ApprovedFlags (they stay in Flags) and its status is what its
//     payments make it (paid in the common case); the customer gets the
//     payment email the first time it is paid (the same cause as a
//     payment's, so never twice) and the shop hears of the transition.
//     A flag raised later that was not approved puts it in review again.
//   - cancel: o must not be refunded, reversed or canceled (ErrFinal). It
//     becomes canceled (its flags approved with it); the shop hears
//     order.canceled.
//   - note: appends a history entry; status and effects unchanged.
//
// Each callback's cause names the order and the history entry it comes
// from, so a decision queued twice is sent once.
func DecideOrder(o *Order, t Tally, d OrderDecision, now time.Time) (Order, OrderChange, []Effect, error) {
	if o == nil {
		return Order{}, OrderChange{}, nil, fmt.Errorf("%w: no order", ErrBadDecision)
	}
	next := cloneOrder(*o)
	version := max(o.Changes, len(o.History))
	next.Changes = version + 1
	who := "merchant decision"
	if d.By != "" {
		who += " by " + d.By
	}
	why := ""
	if d.Why != "" {
		why = " (" + d.Why + ")"
	}
	change := OrderChange{At: now, From: o.Status, To: o.Status, By: d.By}
	switch d.Kind {
	case DecisionNote:
		if strings.TrimSpace(d.Why) == "" {
			return Order{}, OrderChange{}, nil, fmt.Errorf("%w: a note needs text", ErrBadDecision)
		}
		change.Reason = "note by " + cmp.Or(d.By, "merchant") + ": " + d.Why
		next.History = append(slices.Clip(next.History), change)
		return next, change, nil, nil
	case DecisionApprove:
		if o.Status != OrderReview {
			return Order{}, OrderChange{}, nil, fmt.Errorf("%w: order %q is %s", ErrNotInReview, o.ID, o.Status)
		}
		next.ApprovedFlags = slices.Clone(next.Flags)
		change.Reason = who + ": approved " + strings.Join(next.Flags, ", ") + why
	case DecisionCancel:
		switch o.Status {
		case OrderRefunded, OrderReversed, OrderCanceled:
			return Order{}, OrderChange{}, nil, fmt.Errorf("%w: order %q is %s", ErrFinal, o.ID, o.Status)
		}
		next.ApprovedFlags = slices.Clone(next.Flags)
		next.Canceled = true
		change.Reason = who + ": canceled" + why
	default:
		return Order{}, OrderChange{}, nil, fmt.Errorf("%w: unknown decision %q", ErrBadDecision, d.Kind)
	}
	paid, err := amountOf(o.Paid, o.Currency)
	if err != nil {
		paid = zeroAmount()
	}
	refunded, err := amountOf(o.Refunded, o.Currency)
	if err != nil {
		refunded = zeroAmount()
	}
	next.Status = t.orderStatus(&next, paid, refunded)
	next.UpdatedAt = now
	change.To = next.Status
	change.Reason += "; order " + string(next.Status)
	next.History = append(slices.Clip(next.History), change)

	snap := next.Snapshot(o.Status, change.Reason)
	ev := &Event{Type: TypeDecision, Status: EventStatus(d.Kind), GatewayStatus: "merchant decision: " + d.Kind,
		OrderID: o.ID, Currency: o.Currency}
	var effects []Effect
	add := func(e Effect) {
		evc := *ev
		e.OrderID, e.Event, e.Order = o.ID, &evc, snap
		effects = append(effects, e)
	}
	if next.CustomerEmail != "" && next.Status != o.Status {
		switch next.Status {
		case OrderPaid, OrderPartiallyRefunded:
			if !t.reached(OrderPaid, OrderPartiallyRefunded) {
				add(Effect{Kind: EffectEmailCustomer, Template: TemplatePaymentReceived, To: next.CustomerEmail,
					Cause: o.ID + "/paid/" + TemplatePaymentReceived, Reason: change.Reason, Amount: next.Paid})
			}
		case OrderPending:
			if !t.reached(OrderPending) {
				add(Effect{Kind: EffectEmailCustomer, Template: TemplatePaymentPending, To: next.CustomerEmail,
					Cause: o.ID + "/pending/" + TemplatePaymentPending, Reason: change.Reason})
			}
		case OrderFailed:
			if !t.reached(OrderFailed) {
				add(Effect{Kind: EffectEmailCustomer, Template: TemplatePaymentFailed, To: next.CustomerEmail,
					Cause: o.ID + "/failed/" + TemplatePaymentFailed, Reason: change.Reason})
			}
		}
	}
	if next.Status != o.Status {
		add(Effect{Kind: EffectShopCallback, Cause: "event/decision/" + o.ID + "/" + strconv.Itoa(next.Changes) + "/" + d.Kind})
	}
	return next, change, effects, nil
}
