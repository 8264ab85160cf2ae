package ipn

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"github.com/cockroachdb/apd/v3"
)

// Apply applies one event to an order and returns the new order and the
// effects to queue with it, in the same transaction. o is the current
// order, nil when it does not exist yet: the order is then created from
// the event (Registered false; ID from ev.OrderID; currency, amount,
// customer and gateway from the event). Apply never modifies *o and the
// result shares no slice or map with it. It is pure: it reads only its
// arguments (ac.Now for times) and never fails.
//
// It returns the order unchanged and no effects when the fact is already
// in the order (a duplicate) or the event is of type other (or of a type
// ipnd does not know). When o is nil and nothing is applied (type other,
// or an event without an order id) it returns the zero Order: its empty
// ID tells the caller there is nothing to store. Otherwise the fact is
// added, the order is recomputed from all its facts, one OrderChange is
// appended to History (From, To and a Reason such as "payment TXN1
// completed 19.99 USD; paid 19.99 USD" or "...; review:
// amount_mismatch"), even when the status stays the same, and the
// effects are returned.
//
// An order keeps the set of distinct payment facts applied to it
// (Order.Facts, one per fact key: ApplyContext.EventKey, or a key derived
// from the order id, the gateway and the event's content when there is
// none). Its status, paid and refunded totals, flags and txn ids are a pure
// function of the registered expectation (Registered, Amount, Currency)
// and that set: kept running per group of facts (tally.go), so that an
// event costs the same whatever the number of facts before it, and equal
// to summing them all again. So a fact applied twice changes
// nothing, and the facts can arrive in any order and end in the same
// state.
//
// Derivation, from the facts:
//
//   - A fact "counts" towards the totals when it is in the order's currency
//     (a fact without a currency is taken to be in it) and raised no review
//     flag of its own (receiver_mismatch, test_payment). Amounts are read
//     as exact decimals with the order currency's digits; their sign is
//     ignored (PayPal refunds carry a negative mc_gross).
//   - Payments (payment, subscription_payment) are grouped by txn id (by
//     fact key when they have none). A group is completed when any fact of
//     it is completed; else failed when one is failed, denied or expired;
//     else canceled when one is canceled; else pending when one is
//     pending. paid is the sum over completed groups of the largest
//     counted completed amount of the group: the same txn id completed
//     twice under different keys counts once.
//   - refunded: refund facts with status refunded or completed that count,
//     grouped by txn id: the largest amount or running total
//     (refunded_total) of each group, summed. PayPal gives each refund its
//     own txn id and amount (so partial refunds add up); Stripe reports
//     charge.refunded under the charge's id with its running
//     amount_refunded (so the largest total is the charge's refunds). A
//     refund that arrives before its payment is kept and counted; the
//     status reflects it once the payment is there. A refund event's own
//     amount, where the gateway gives only the running total, is filled
//     in from the order (see RefundAmount).
//   - reversed: a payment (a reversal's parent txn id, its own txn id when
//     it has none) with an outstanding reversal: more reversals standing
//     than taken back (by a reversal_canceled or a won dispute under the
//     same id, as Stripe's funds_reinstated or closed won of the dispute
//     whose funds were withdrawn; or by any other reversal_canceled of the
//     payment, as PayPal's Canceled_Reversal); or a dispute closed as lost
//     (status reversed). Reversed then Canceled_Reversal, in either order,
//     is not reversed. See tally.open in summary.go.
//   - disputed: an open dispute (grouped by txn id: PayPal's case_id,
//     Stripe's dp_ id): an opening fact (status pending or none), no
//     closing fact (any other status: completed or canceled means won,
//     reversed means lost; the merchant's decision, CloseDispute, is one),
//     and no cancelled reversal of its payment (a PayPal chargeback case
//     ends with its Canceled_Reversal, a Stripe dispute with
//     funds_reinstated).
//   - flags: see review.go; flags are never removed once raised.
//   - status, highest first: review (any flag) > reversed > disputed >
//     refunded (a completed payment and refunded >= paid) >
//     partially_refunded (0 < refunded < paid) > paid (a completed
//     payment) > pending (a payment group still pending: a new attempt
//     after a failure is pending) > failed > canceled > awaiting_payment.
//     Because completed wins within a txn, a late Pending or Failed never
//     takes a paid order back.
//
// An unregistered order's currency is the first one an event names;
// events in another currency raise currency_mismatch and are not counted.
// Its Amount (informational) is the first payment amount in that currency.
//
// Effects, queued only for a new fact, each with a stable Cause:
//
//	<order>/paid/payment_received              customer, first time paid or partially_refunded (never from review)
//	<order>/pending/payment_pending            customer, first time pending
//	<order>/failed/payment_failed              customer, first time failed
//	<order>/refund_issued/<fact key>           customer, a refund fact that raised the refunded total
//	<order>/subscription_started/<sub id|key>  customer, first subscription_started fact of a subscription
//	<order>/subscription_canceled/<sub id|key> customer, first subscription_canceled fact of a subscription
//	<order>/review/order_review/<new flags>    merchant, flags raised (joined with "+"), Reason lists all flags
//	<order>/dispute_opened/<fact key>          merchant, a reversal fact or an opening dispute fact
//	<order>/dispute_closed/<fact key>          merchant, a fact that ends a dispute or reversal (won, lost, cancelled)
//	event/<fact key>                           shop callback, every new fact
//
// "First time" is read from the statuses the order's history reached
// (Tally.Reached), so a state reached
// twice (paid, reversed, paid again) queues its email once. Customer
// emails are skipped when the order has no customer email.
func Apply(o *Order, ev *Event, ac ApplyContext) (Order, []Effect) {
	if ev == nil || !actionable(ev.Type) {
		if o == nil {
			return Order{}, nil
		}
		return cloneOrder(*o), nil
	}
	if o == nil && ev.OrderID == "" {
		return Order{}, nil
	}
	var st *OrderState
	if o != nil {
		st = memoryState(o, FactKey(o.ID, ev, ac))
	}
	next, w, effects := ApplyState(o, st, ev, ac)
	if w == nil { // the same fact again
		return cloneOrder(*o), nil
	}
	if o != nil {
		next.History = slices.Clone(o.History)
		next.Facts = slices.Clone(o.Facts)
		if w.Replaces {
			next.Facts = slices.Delete(next.Facts, int(st.FactSeq), int(st.FactSeq)+1)
		}
		for i := range next.Facts {
			next.Facts[i].Flags = slices.Clone(next.Facts[i].Flags)
		}
	}
	next.Facts = append(next.Facts, w.Fact)
	next.History = append(next.History, w.Change)
	next.TxnIDs = TxnIDs(next.Facts)
	return next, effects
}

// ApplyState is Apply for an order whose facts and history the store
// keeps apart: o is the order without them (nil: none yet) and st what
// the store looked up for ev (FactKey, TallyKeys). It returns the order
// (without its facts, history and txn ids: the store keeps them) and
// what to write besides it; w is nil when nothing is applied (the same
// fact again, an event of type other, or no order). It is pure and
// modifies none of its arguments.
func ApplyState(o *Order, st *OrderState, ev *Event, ac ApplyContext) (next Order, w *OrderWrite, effects []Effect) {
	if ev == nil || !actionable(ev.Type) {
		if o == nil {
			return Order{}, nil, nil
		}
		return header(*o), nil, nil
	}
	if o == nil {
		if ev.OrderID == "" {
			return Order{}, nil, nil
		}
		next = Order{ID: ev.OrderID, CreatedAt: ac.Now, Currency: strings.ToUpper(ev.Currency), Flags: []string{},
			Test: ev.Test && ac.Sandbox}
		zero := formatAmount(zeroAmount(), next.Currency)
		next.Paid, next.Refunded = zero, zero
		st = &OrderState{}
	} else {
		next = header(*o)
	}
	key := FactKey(next.ID, ev, ac)
	evc := *ev
	evc.Amount = refundAmount(o, st, ev, ac)
	ev = &evc
	if f := st.Fact; f != nil {
		// The same fact again changes nothing, unless it was refused
		// (receiver_mismatch, test_payment) and is not now: a replay after
		// the merchant fixed the config counts it (the order's flags stay).
		if len(f.Flags) == 0 || len(newFact(key, ev, ac, next.Currency, next.Test).Flags) > 0 {
			return next, nil, nil
		}
	}
	c := change{created: o == nil, prevStatus: next.Status, prevFlags: slices.Clone(next.Flags),
		prevPaid: next.Paid, prevRefunded: next.Refunded, key: key, tally: st.Tally}
	c.tally.Reached = slices.Clone(st.Tally.Reached)

	// Fill in what the order does not know yet.
	if next.Currency == "" && ev.Currency != "" {
		next.Currency = strings.ToUpper(ev.Currency)
	}
	if next.CustomerEmail == "" {
		next.CustomerEmail = ev.CustomerEmail
	}
	if next.CustomerName == "" {
		next.CustomerName = ev.CustomerName
	}
	if next.Gateway == "" {
		next.Gateway = ac.Gateway
	}
	if !next.Registered && next.Amount == "" && isPaymentLike(ev.Type) && sameCurrency(ev.Currency, next.Currency) {
		if v, err := amountOf(ev.Amount, next.Currency); err == nil && v.Sign() != 0 {
			next.Amount = formatAmount(v.Abs(v), next.Currency)
		}
	}
	var expected *apd.Decimal
	if next.Registered {
		expected, _ = amountOf(next.Amount, next.Currency)
	}

	// The tally without the fact: built again from every fact (Full), or
	// the stored one with the refused copy of this fact taken out.
	flags := map[string]bool{}
	for _, f := range next.Flags {
		flags[f] = true
	}
	var x *tallier
	if st.Full {
		base := c.tally
		base.Completed, base.Failed, base.Canceled, base.Pending = 0, 0, 0, 0
		base.Paid, base.Refunded, base.OneOffs, base.OneOffSum = "", "", 0, ""
		base.Reversed, base.Lost, base.Open = 0, 0, 0
		x = newTallier(next.Currency, base, nil)
		for _, f := range st.All {
			if f.Key != key {
				x.fact(f, 1)
				orderFactFlags(&next, expected, f, flags)
			}
		}
	} else {
		x = newTallier(next.Currency, c.tally, st.Groups)
		if st.Fact != nil {
			x.fact(*st.Fact, -1)
		}
	}
	c.fact = newFact(key, ev, ac, next.Currency, next.Test)
	if next.Test && !ev.Test && !ac.Sandbox && ac.Decision == "" {
		// A live gateway's real money on a test order (it raised
		// test_payment above: review) makes it a real order: counted as
		// real, and never deleted as a test order with the payment's record.
		next.Test = false
	}
	c.subscriptionSeen, c.disputeSeen = x.seen(c.fact)
	x.watch = map[string][2]bool{}
	x.fact(c.fact, 1)
	c.ended = x.ended()
	if st.Fact != nil {
		// The refused copy of this fact, replaced now that it counts,
		// opened and ended the same (flags change only the totals): the
		// merchant heard of those then (the outbox would drop the same
		// causes again).
		c.replaces = true
		c.subscriptionSeen = c.subscriptionSeen || isSubscriptionType(c.fact.Type)
		c.disputeSeen = c.disputeSeen || c.fact.TxnID != ""
		c.ended, x.lost = nil, nil
	}
	if c.fact.Type == TypeDispute && c.fact.Status == StatusReversed {
		// A dispute lost after it was closed (a won decision, then the
		// gateway's loss) ends nothing open, but the merchant hears of it.
		for _, what := range x.lost {
			if !slices.Contains(c.ended, what) {
				c.ended = append(c.ended, what)
			}
		}
		slices.Sort(c.ended)
	}
	orderFactFlags(&next, expected, c.fact, flags)
	if paidTwiceTally(expected, x.t.OneOffs, x.oneOffSum, x.smallestOneOff(st.Smallest, st.Full)) {
		flags[FlagDoublePayment] = true
	}
	next.Flags = slices.Sorted(maps.Keys(flags))
	if next.Flags == nil { // [] rather than null in JSON
		next.Flags = []string{}
	}
	t := x.tally()
	next.Status = t.orderStatus(&next, x.paid, x.refunded)
	next.Paid = formatAmount(x.paid, next.Currency)
	next.Refunded = formatAmount(x.refunded, next.Currency)
	next.UpdatedAt = ac.Now
	c.paid, c.refunded = x.paid, x.refunded
	c.paidChanged = totalChanged(c.prevPaid, x.paid, next.Currency)
	c.refundedChanged = totalChanged(c.prevRefunded, x.refunded, next.Currency)
	for _, f := range next.Flags {
		if !slices.Contains(c.prevFlags, f) {
			c.newFlags = append(c.newFlags, f)
		}
	}
	c.desc = describeFact(c.fact, ev.Flags, next.Currency)
	c.decision = ac.Decision

	// History: one entry per new fact, whether or not the status moved.
	w = &OrderWrite{Fact: c.fact, FactSeq: t.NextFact, Replaces: st.Fact != nil, Groups: x.groups, Full: st.Full}
	t.NextFact++
	t.Reach(next.Status)
	next.Changes = max(next.Changes, len(o.historyOrNil())) + 1
	w.Change = OrderChange{
		At:           ac.Now,
		Notification: ac.Notification,
		From:         c.prevStatus,
		To:           next.Status,
		Reason:       c.reason(&next),
	}
	w.Tally = t
	return next, w, c.effects(&next, ev, w.Change.Reason)
}

// historyOrNil is o's history, nil when o is nil.
func (o *Order) historyOrNil() []OrderChange {
	if o == nil {
		return nil
	}
	return o.History
}

// header is o without its facts, history and txn ids, sharing no slice
// or map with it.
func header(o Order) Order {
	o.Facts, o.History, o.TxnIDs = nil, nil, nil
	return cloneOrder(o)
}

// change is one new fact's change to an order, as Apply computes it.
type change struct {
	created                      bool  // the order is created by this fact
	tally                        Tally // the order's tally before it
	prevStatus                   OrderStatus
	prevFlags, newFlags          []string
	prevPaid, prevRefunded       string
	key                          string // the fact's key
	fact                         OrderFact
	desc                         string // describeFact
	paid, refunded               *apd.Decimal
	paidChanged, refundedChanged bool
	decision                     string // ApplyContext.Decision
	// replaces: the fact replaces its refused copy (see ApplyState).
	replaces bool
	// subscriptionSeen, disputeSeen: the order held a fact of the same
	// type for the same subscription, an opening of the same dispute or
	// reversal (same txn id), before this one.
	subscriptionSeen, disputeSeen bool
	// ended lists, sorted, what the fact ended of what was open about
	// the order's money ("reversal of P", "dispute D": see tally.open),
	// and, for a lost dispute fact, the dispute it made lost.
	ended []string
}

// moved reports whether the order's status, totals or flags changed.
func (c *change) moved(next *Order) bool {
	return next.Status != c.prevStatus || c.paidChanged || c.refundedChanged || len(c.newFlags) > 0
}

// reason is the order history's words for the change: "payment TXN1
// completed 19.99 USD; paid 19.99 USD", "...; review: amount_mismatch".
func (c *change) reason(next *Order) string {
	var why []string
	if c.decision != "" {
		why = append(why, c.decision)
	}
	if c.created {
		why = append(why, "order created by this event")
	}
	why = append(why, c.desc)
	if c.paidChanged {
		why = append(why, "paid "+next.Paid+" "+next.Currency)
	}
	if c.refundedChanged {
		why = append(why, "refunded "+next.Refunded+" "+next.Currency)
	}
	if len(c.newFlags) > 0 {
		why = append(why, "review: "+strings.Join(c.newFlags, ", "))
	}
	if !c.moved(next) {
		why = append(why, "no change")
	}
	return strings.Join(why, "; ")
}

// effects returns what the change queues (see Apply). Each effect
// carries the order as it stands now, so that what is sent later states
// this change's amounts.
func (c *change) effects(next *Order, ev *Event, reason string) []Effect {
	evc := *ev
	snap := next.Snapshot(c.prevStatus, reason)
	var effects []Effect
	add := func(e Effect) {
		e.OrderID, e.Event, e.Order = next.ID, &evc, snap
		effects = append(effects, e)
	}
	fact, desc, key := c.fact, c.desc, c.key
	payment := ""
	if isPaymentLike(fact.Type) && sameCurrency(fact.Currency, next.Currency) {
		payment = strings.TrimPrefix(fact.Amount, "-")
	}
	customer := func(template, cause, reason, amount string) {
		if next.CustomerEmail == "" {
			return
		}
		add(Effect{Kind: EffectEmailCustomer, Template: template, Cause: next.ID + "/" + cause, To: next.CustomerEmail,
			Reason: reason, Amount: amount})
	}
	merchant := func(template, cause, reason string) {
		add(Effect{Kind: EffectEmailMerchant, Template: template, Cause: next.ID + "/" + cause, Reason: reason, Amount: payment})
	}
	if next.Status != c.prevStatus {
		switch next.Status {
		case OrderPaid, OrderPartiallyRefunded:
			if !c.tally.reached(OrderPaid, OrderPartiallyRefunded) {
				customer(TemplatePaymentReceived, "paid/"+TemplatePaymentReceived, desc, payment)
			}
		case OrderPending:
			if !c.tally.reached(OrderPending) {
				customer(TemplatePaymentPending, "pending/"+TemplatePaymentPending, desc, payment)
			}
		case OrderFailed:
			if !c.tally.reached(OrderFailed) {
				customer(TemplatePaymentFailed, "failed/"+TemplatePaymentFailed, desc, payment)
			}
		}
	}
	switch fact.Type {
	case TypeRefund:
		if c.refundedChanged {
			// The refund's own amount, as the event states it (see
			// RefundAmount); without one, what it added to the total.
			ownText := ""
			if a, err := amountOf(ev.Amount, next.Currency); err == nil && ev.Amount != "" && sameCurrency(ev.Currency, next.Currency) {
				ownText = formatAmount(a.Abs(a), next.Currency)
			} else {
				own := new(apd.Decimal).Set(c.refunded)
				if prev, err := amountOf(c.prevRefunded, next.Currency); err == nil {
					decimalCtx.Sub(own, own, prev)
				}
				ownText = formatAmount(own, next.Currency)
			}
			customer(TemplateRefundIssued, TemplateRefundIssued+"/"+key,
				desc+"; refunded "+next.Refunded+" "+next.Currency+" of "+next.Paid+" paid", ownText)
		}
	case TypeSubscriptionStarted, TypeSubscriptionCanceled:
		if !c.subscriptionSeen {
			tmpl := TemplateSubscriptionStarted
			if fact.Type == TypeSubscriptionCanceled {
				tmpl = TemplateSubscriptionCanceled
			}
			customer(tmpl, tmpl+"/"+cmp.Or(fact.SubscriptionID, key), desc, payment)
		}
	case TypeReversal, TypeDispute:
		// One email per dispute or reversal: Stripe reports an opened
		// dispute and the funds it withdrew under the dispute's id.
		if (fact.Type == TypeReversal || disputeOpening(fact.Status)) && !c.disputeSeen {
			merchant(TemplateDisputeOpened, TemplateDisputeOpened+"/"+key, desc)
		}
	}
	if ended := c.endedText(next); ended != "" {
		// One email per dispute or reversal that this fact ends, won or
		// lost: the merchant heard when it opened.
		merchant(TemplateDisputeClosed, TemplateDisputeClosed+"/"+key, ended+" ("+desc+")")
	}
	if len(c.newFlags) > 0 {
		merchant(TemplateOrderReview, "review/"+TemplateOrderReview+"/"+strings.Join(c.newFlags, "+"),
			"review: "+strings.Join(next.Flags, ", ")+" ("+desc+")")
	}
	newSubscription := isSubscriptionType(fact.Type) && !c.subscriptionSeen
	if c.moved(next) || newSubscription {
		// The shop hears of every transition of the order (status, totals
		// or flags) and of each subscription's start, end and payments,
		// once: a fact that changes nothing tells it nothing.
		cause := "event/" + key
		if c.replaces {
			// The refused copy's callback has the fact's cause: this
			// change is another one for the shop.
			cause += "/counted"
		}
		add(Effect{Kind: EffectShopCallback, Cause: cause})
	}
	return effects
}

// endedText says, in words, what dispute or reversal the change's fact
// ended ("dispute DP1 won; order paid"), "" when it ended none: only a
// closing fact (a reversal_canceled, a dispute won or lost) that leaves
// less open than before (see tally.open) ends one.
func (c *change) endedText(next *Order) string {
	f := c.fact
	closing := f.Type == TypeReversalCanceled || f.Type == TypeDispute && !disputeOpening(f.Status)
	if !closing || len(c.ended) == 0 {
		return ""
	}
	outcome := "won"
	if f.Type == TypeDispute && f.Status == StatusReversed {
		outcome = "lost"
	}
	return strings.Join(c.ended, ", ") + " ended: " + outcome + "; order " + string(next.Status)
}

// totalChanged reports whether a total shown as before is not now, read
// in the order's (possibly just learnt) currency.
func totalChanged(before string, now *apd.Decimal, cur string) bool {
	v, err := amountOf(before, cur)
	return err != nil || v.Cmp(now) != 0
}

// actionable reports whether events of type t change orders.
func actionable(t EventType) bool {
	switch t {
	case TypePayment, TypeRefund, TypeReversal, TypeReversalCanceled, TypeDispute,
		TypeSubscriptionStarted, TypeSubscriptionPayment, TypeSubscriptionCanceled, TypeSubscriptionExpired:
		return true
	}
	return false
}

func isPaymentLike(t EventType) bool {
	return t == TypePayment || t == TypeSubscriptionPayment || t == TypeSubscriptionStarted
}

// sameCurrency reports whether a fact in currency c is in the order's
// currency cur; a fact or an order without a currency matches.
func sameCurrency(c, cur string) bool {
	return c == "" || cur == "" || strings.EqualFold(c, cur)
}

func disputeOpening(s EventStatus) bool { return s == "" || s == StatusPending }

// factKey is the key of the fact ev brings to order orderID: the
// context's EventKey, else one derived from the event.
func factKey(orderID string, ev *Event, ac ApplyContext) string {
	if ac.EventKey != "" {
		return ac.EventKey
	}
	return derivedKey(orderID, ac.Gateway, ev)
}

// RefundAmount returns the amount of refund ev of order o (nil: not
// stored yet), to show as the event's Amount: ev.Amount when the gateway
// gave one. A gateway that gives only its running total
// (RefundedTotal: Stripe's amount_refunded without the charge's list of
// refunds) leaves it to the order: the amount the order recorded for
// this same fact when it has it (a replay), else what the total adds to
// the order's refunds of the same payment (same txn id), "" when it adds
// nothing (an older total arriving after a newer one). Other events keep
// their Amount. It is pure.
func RefundAmount(o *Order, ev *Event, ac ApplyContext) string {
	if ev.Type != TypeRefund || ev.Amount != "" || ev.RefundedTotal == "" {
		return ev.Amount
	}
	cur := strings.ToUpper(ev.Currency)
	var facts []OrderFact
	orderID := ev.OrderID
	if o != nil {
		cur, facts, orderID = cmp.Or(o.Currency, cur), o.Facts, o.ID
	}
	total, err := amountOf(ev.RefundedTotal, cur)
	if err != nil || !sameCurrency(ev.Currency, cur) {
		return ""
	}
	key := factKey(orderID, ev, ac)
	before := zeroAmount()
	for _, f := range facts {
		if f.Key == key {
			return f.Amount
		}
		if f.Type == TypeRefund && ev.TxnID != "" && f.TxnID == ev.TxnID && sameCurrency(f.Currency, cur) {
			if r := refundOf(f, cur); r != nil && r.Cmp(before) > 0 {
				before = r
			}
		}
	}
	total.Abs(total)
	if total.Cmp(before) <= 0 {
		return ""
	}
	decimalCtx.Sub(total, total, before)
	return formatAmount(total, cur)
}

// refundAmount is RefundAmount for order o kept as st (see ApplyState;
// nil: o holds its facts): the same amount, read from the fact under the
// event's key and the record of the largest refund of the same payment
// (TallyKeys names both) rather than from every fact.
func refundAmount(o *Order, st *OrderState, ev *Event, ac ApplyContext) string {
	if ev.Type != TypeRefund || ev.Amount != "" || ev.RefundedTotal == "" {
		return ev.Amount
	}
	if o == nil || st == nil {
		return RefundAmount(o, ev, ac)
	}
	if st.Full {
		all := *o
		all.Facts = st.All
		return RefundAmount(&all, ev, ac)
	}
	cur := cmp.Or(o.Currency, strings.ToUpper(ev.Currency))
	total, err := amountOf(ev.RefundedTotal, cur)
	if err != nil || !sameCurrency(ev.Currency, cur) {
		return ""
	}
	if st.Fact != nil {
		return st.Fact.Amount
	}
	before := zeroAmount()
	if ev.TxnID != "" {
		before = decimalOrZero(st.Groups[groupKey(kindRefundOf, ev.TxnID)].Amount)
	}
	total.Abs(total)
	if total.Cmp(before) <= 0 {
		return ""
	}
	decimalCtx.Sub(total, total, before)
	return formatAmount(total, cur)
}

// derivedKey identifies a fact that came without an EventKey by its
// content, scoped to the order.
func derivedKey(orderID, gateway string, ev *Event) string {
	return strings.Join([]string{"derived", orderID, gateway, ev.TxnID, ev.ParentTxnID, string(ev.Type),
		string(ev.Status), ev.Amount, strings.ToUpper(ev.Currency), ev.SubscriptionID}, "\x00")
}

// newFact records ev as a fact of an order in currency cur, with the
// review flags the event raises on its own.
func newFact(key string, ev *Event, ac ApplyContext, cur string, testOrder bool) OrderFact {
	f := OrderFact{
		Key:            key,
		Notification:   ac.Notification,
		Type:           ev.Type,
		Status:         ev.Status,
		TxnID:          ev.TxnID,
		ParentTxnID:    ev.ParentTxnID,
		Amount:         ev.Amount,
		Currency:       strings.ToUpper(ev.Currency),
		At:             ac.Now,
		SubscriptionID: ev.SubscriptionID,
	}
	if a, err := NormalizeAmount(ev.Amount, cmp.Or(f.Currency, cur)); err == nil {
		f.Amount = a
	}
	if ev.Type == TypeRefund && ev.RefundedTotal != "" {
		f.RefundedTotal = ev.RefundedTotal
		if a, err := NormalizeAmount(ev.RefundedTotal, cmp.Or(f.Currency, cur)); err == nil {
			f.RefundedTotal = a
		}
	}
	f.Flags = factFlags(ev, ac, testOrder)
	return f
}

// describeFact explains a fact in words for the history and the emails:
// "payment TXN1 completed 19.99 USD", "refund TXN2 5.00 USD".
func describeFact(f OrderFact, eventFlags, cur string) string {
	var b strings.Builder
	b.WriteString(string(f.Type))
	if f.TxnID != "" {
		b.WriteString(" " + f.TxnID)
	}
	if f.ParentTxnID != "" {
		b.WriteString(" of " + f.ParentTxnID)
	}
	implied := f.Type == TypeRefund && f.Status == StatusRefunded || f.Type == TypeReversal && f.Status == StatusReversed
	if f.Status != "" && !implied {
		b.WriteString(" " + string(f.Status))
	}
	if f.Amount != "" {
		b.WriteString(" " + strings.TrimPrefix(f.Amount, "-") + " " + cmp.Or(f.Currency, cur))
	}
	if eventFlags != "" {
		b.WriteString(" [" + eventFlags + "]")
	}
	if len(f.Flags) > 0 {
		b.WriteString(" (" + strings.Join(f.Flags, ", ") + ")")
	}
	return b.String()
}

func isSubscriptionType(t EventType) bool {
	switch t {
	case TypeSubscriptionStarted, TypeSubscriptionPayment, TypeSubscriptionCanceled, TypeSubscriptionExpired:
		return true
	}
	return false
}

func cloneOrder(o Order) Order {
	o.Metadata = maps.Clone(o.Metadata)
	o.Flags = slices.Clone(o.Flags)
	o.ApprovedFlags = slices.Clone(o.ApprovedFlags)
	o.TxnIDs = slices.Clone(o.TxnIDs)
	o.History = slices.Clone(o.History)
	o.Facts = slices.Clone(o.Facts)
	for i := range o.Facts {
		o.Facts[i].Flags = slices.Clone(o.Facts[i].Flags)
	}
	return o
}
