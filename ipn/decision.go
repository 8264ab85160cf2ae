package ipn

import (
	"errors"
	"fmt"
	"slices"
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
