package fulfil

import (
	"slices"
	"strings"
	"time"

	"ipnd/ipn"
)

// ToReview puts order next, which just became paid, in review because
// nothing could be delivered (flag, e.g. ipn.FlagUnknownProduct; detail
// says what), and turns the change's effects into a review's: the
// customer is not told it is paid, the shop hears order.review and the
// merchant is emailed. next and change (the history entry of this
// change; nil: none) are changed in place; the effects' snapshot is
// not: the returned effects replace effects.
func ToReview(next *ipn.Order, change *ipn.OrderChange, effects []ipn.Effect, flag, detail string, now time.Time) []ipn.Effect {
	if !slices.Contains(next.Flags, flag) {
		next.Flags = append(slices.Clone(next.Flags), flag)
		slices.Sort(next.Flags)
	}
	next.Status = ipn.OrderReview
	reason := "review: " + strings.Join(next.Flags, ", ") + " (" + detail + ")"
	if change != nil {
		change.To, change.Reason = ipn.OrderReview, change.Reason+"; "+reason
	}
	next.UpdatedAt = now.UTC()
	var out []ipn.Effect
	var ev *ipn.Event
	var snap *ipn.OrderSnapshot
	for _, e := range effects {
		if e.Kind == ipn.EffectEmailCustomer && e.Template == ipn.TemplatePaymentReceived {
			continue
		}
		if e.Order != nil && snap == nil {
			s := *e.Order
			s.Status, s.Flags, s.Deliveries = ipn.OrderReview, slices.Clone(next.Flags), nil
			if change != nil {
				s.Reason = change.Reason
			}
			snap = &s
		}
		if e.Order != nil {
			e.Order = snap
		}
		if e.Event != nil {
			ev = e.Event
		}
		out = append(out, e)
	}
	if snap == nil {
		snap = next.Snapshot("", reason)
	}
	out = append(out, ipn.Effect{Kind: ipn.EffectEmailMerchant, Template: ipn.TemplateOrderReview,
		Cause: next.ID + "/review/" + ipn.TemplateOrderReview + "/" + flag, OrderID: next.ID, Reason: reason, Event: ev, Order: snap})
	return out
}
