package ipn

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// What a notification does to its order is decided here, in one pure
// function: Decide. The store looks up what it holds (Stored), calls
// Decide and writes what the Decision says in the same transaction; it
// decides nothing itself. Apply (apply.go) is the order's state machine
// that Decide runs; review.go lists every reason an order goes to review.

// Stored is what the store holds that the decision about one Outcome
// reads, looked up in the transaction that records it.
type Stored struct {
	// Processing is the notification's processing record before this
	// outcome.
	Processing *Processing
	// FirstOfFact is the notification that holds Outcome.EventKey (the
	// first copy of the payment fact), 0 when none does.
	FirstOfFact uint64
	// FirstNoOrder: FirstOfFact's recorded event reached no order (it is
	// parked, waiting for its payment).
	FirstNoOrder bool
	// RefOrder is the order one of the event's payment references
	// (Event.PaymentRefs) was applied to, "" when none was.
	RefOrder string
	// Order is the order the event names (Event.OrderID, else RefOrder),
	// nil when it is not stored.
	Order *Order
	// State is what the store keeps of Order apart from it (looked up by
	// FactKey and TallyKeys for the event): with it, Order holds no facts
	// or history and Decision.Write says what to add. nil: Order holds
	// its facts and history itself, and Decision.Order has them too.
	State *OrderState
}

// FactAction is what happens to the payment fact's key (Outcome.EventKey),
// which makes a later copy of the same fact a duplicate.
type FactAction int

// Fact actions.
const (
	FactKeep    FactAction = iota // leave it as it is
	FactClaim                     // this notification holds it now
	FactRelease                   // forget it: the fact was refused
)

// Decision is what recording one Outcome changes. The store writes all of
// it in one transaction, in this order: the processing record (with its
// retry schedule), the fact key, the order, the effects, the subscription,
// the parked event, the references.
type Decision struct {
	// AlreadyFinal: the notification was final already (recorded before a
	// crash moved the cursor, or out of order): nothing is written.
	AlreadyFinal bool
	// Processing is the notification's new processing record, with this
	// step's history entry appended.
	Processing Processing
	// Recorded is what the pipeline reports: the state and the order's
	// transition with its reason.
	Recorded Recorded
	Fact     FactAction
	// Order is the order to write (nil: none changes); it replaces
	// Stored.Order.
	Order *Order
	// Write is what to write besides Order when Stored.State was given
	// (nil: nothing, the same fact again).
	Write *OrderWrite
	// Effects are queued under the notification.
	Effects []Effect
	// Event and Context are the event as applied (its OrderID filled in
	// from a payment reference) and the state machine's context: what
	// ApplySubscription reads when Subscription is set.
	Event        *Event
	Context      ApplyContext
	Subscription bool
	// Park keeps the event under each of its payment references until a
	// payment brings one of them to an order (see Adopt).
	Park *Parked
	// AttachTo, when set, is the order Refs now belong to: the store maps
	// each reference to it and adopts the events parked under them.
	AttachTo *Order
	Refs     []string
}

// Parked is an applied event that named no order the store knew, waiting
// for a payment that brings one of its references.
type Parked struct {
	Event    *Event `json:"event"`
	EventKey string `json:"event_key,omitempty"`
	Sandbox  bool   `json:"sandbox,omitempty"`
	// At is when it was parked (set by the store): past orders.park_for
	// it fails (see ExpireParked).
	At time.Time `json:"at,omitzero"`
	// Own: a completed payment that waits for the event naming its order
	// (a Stripe payment intent, charge or invoice waiting for its
	// Checkout Session) and may make an order of its own
	// (orders.require_registered is off): past orders.park_for it does
	// (see OwnOrder) rather than fail, since a merchant who takes
	// payments without Checkout never sends that event.
	Own bool `json:"own,omitempty"`
}

// OwnOrder returns the id of the order of its own the parked event w of
// gateway makes when it expires (see Parked.Own), "" when it fails.
func (w Parked) OwnOrder(gateway string) string {
	if !w.Own || w.Event == nil {
		return ""
	}
	ev := *w.Event
	ev.Secondary = false
	return OwnOrderID(gateway, &ev)
}

// OwnAtExpiry is the history's words for a parked payment that made an
// order of its own when it expired.
func OwnAtExpiry(orderID string, parkFor time.Duration) string {
	return fmt.Sprintf("waited %s for the event that names its order (orders.park_for): none came, "+
		"so the payment is an order of its own, %q", shortDuration(parkFor), orderID)
}

// ExpireParked decides what becomes of the event notification id parked
// (w), still waiting at now after parkFor: the notification fails with
// the reason in its history ("waited 72h for its payment ..."), and the
// merchant is told, once per notification (email event_unmatched). A
// replay processes it again: applied if its payment has come meanwhile,
// parked again otherwise. p is its processing record; it is pure and
// returns the new record and the effects to queue.
func ExpireParked(p *Processing, id uint64, w Parked, parkFor time.Duration, now time.Time) (Processing, []Effect) {
	next := *p
	next.History = slices.Clip(next.History)
	next.State, next.NextAttempt = StateFailed, time.Time{}
	what := "its payment"
	if w.Event != nil && isPaymentLike(w.Event.Type) {
		what = "the event that names its order"
	}
	refs := ""
	if w.Event != nil {
		refs = strings.Join(w.Event.PaymentRefs(), ", ")
	}
	detail := fmt.Sprintf("waited %s for %s (no order yet for %s; orders.park_for): not applied; "+
		"replay it once the payment is there (ipnd replay %d)", shortDuration(parkFor), what, refs, id)
	next.History = append(next.History, HistoryEntry{At: now.UTC(), State: StateFailed, Detail: detail})
	return next, []Effect{{Kind: EffectEmailMerchant, Template: TemplateEventUnmatched,
		Cause: fmt.Sprintf("notification/%d/%s", id, TemplateEventUnmatched), Reason: detail, Event: w.Event}}
}

// shortDuration writes d without its zero tail: 72h, 90m, 1h30m, 2s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Decide decides what recording outcome o does, given what is stored.
// It is pure: it reads only its arguments and modifies none of them.
//
//   - A notification final already is left as it is.
//   - An applied outcome whose payment fact another notification holds is
//     a duplicate of it, unless that one is parked and this one names an
//     order: this one is applied, and the parked one is adopted as the
//     same fact. A duplicate's references are attached to the order its
//     payment reached.
//   - An event that names no known order but payment references is
//     parked; one for an unregistered order when orders must be
//     registered is refused (invalid, the fact key released).
//   - Otherwise Apply runs. An outcome refused before (test payment on a
//     live gateway, another receiver) still reaches the order (review),
//     but the customer hears nothing and no subscription or reference is
//     recorded.
//   - A notification that could never be verified is told to the
//     merchant.
func Decide(o Outcome, s Stored, now time.Time) Decision {
	p := s.Processing
	if p.State.Final() {
		return Decision{AlreadyFinal: true, Recorded: Recorded{State: p.State}}
	}
	next := advance(p, o)
	var d Decision
	detail := o.Detail
	if o.State == StateApplied && o.EventKey != "" {
		first := s.FirstOfFact
		if first != 0 && first != o.ID && s.FirstNoOrder && TargetOrder(o, s.RefOrder) != "" {
			// The first copy of this fact named no order and waits for
			// one (a Stripe payment intent before its Checkout Session);
			// this copy names it: apply this one, and the first is
			// adopted as the same fact.
			first = 0
		}
		if first != 0 && first != o.ID {
			next.State, next.DuplicateOf = StateDuplicate, first
			detail = fmt.Sprintf("same payment fact as notification %d", first)
		} else {
			d.Fact = FactClaim
		}
	}
	if o.ApplyOrder && o.Event != nil {
		if next.State == StateDuplicate {
			// A duplicate may bring references (a Stripe charge.succeeded
			// repeating its payment intent's payment names the charge).
			if s.Order != nil {
				d.AttachTo, d.Refs = s.Order, o.Event.PaymentRefs()
			}
		} else if refused := decideOrder(&d, o, s, &next, now); refused != "" {
			if next.State == StateApplied && o.EventKey != "" {
				d.Fact = FactRelease
			}
			next.State, detail = StateInvalid, refused
		} else if d.Park != nil {
			detail = ParkedDetail(d.Park.Event)
		} else if d.Event != nil && d.Event.OrderID == "" && AttemptOnly(d.Event) {
			detail = attemptDetail
		}
	}
	if next.State == StateFailed {
		// The merchant hears of a notification that could never be verified.
		d.Effects = append(d.Effects, Effect{Kind: EffectEmailMerchant, Template: TemplateVerificationFailed,
			Cause: fmt.Sprintf("notification/%d/verification_failed", o.ID), Reason: detail, Event: o.Event})
	}
	if o.State == StateReceived {
		next.NextAttempt = o.RetryAt
	}
	next.History = append(next.History, HistoryEntry{At: now.UTC(), State: next.State, Detail: detail})
	d.Processing = next
	d.Recorded.State, d.Recorded.Detail = next.State, detail
	return d
}

// advance returns p as outcome o leaves it, before the decision's own
// changes: o's state, event and attempts, no retry scheduled, verified
// once verified. Its history shares nothing with p's.
func advance(p *Processing, o Outcome) Processing {
	next := *p
	next.History = slices.Clip(next.History) // appending copies
	next.NextAttempt = time.Time{}
	next.State, next.Event, next.Attempts = o.State, o.Event, o.Attempts
	next.Verified = p.Verified || o.Verified
	return next
}

// decideOrder fills in d for an event to apply to its order, and returns
// why it is refused ("" when it is not).
func decideOrder(d *Decision, o Outcome, s Stored, next *Processing, now time.Time) string {
	ev := *o.Event
	if ev.OrderID == "" {
		// Recorded with the event: the order it reached, or the order a
		// completed payment that names none makes of its own.
		ev.OrderID = TargetOrder(o, s.RefOrder)
	}
	next.Event = &ev
	ac := o.Context
	ac.Now, ac.Notification, ac.EventKey = now, o.ID, o.EventKey
	d.Event, d.Context = &ev, ac
	refs := ev.PaymentRefs()
	if ev.OrderID == "" {
		if o.State == StateApplied && ev.Type != TypeOther && len(refs) > 0 && !AttemptOnly(&ev) {
			d.Park = &Parked{Event: &ev, EventKey: o.EventKey, Sandbox: ac.Sandbox}
			if ev.Secondary && !o.RequireRegistered {
				sec := ev
				sec.Secondary = false
				d.Park.Own = OwnOrderID(o.Context.Gateway, &sec) != ""
			}
		}
		return ""
	}
	if s.Order == nil && o.RequireRegistered {
		return fmt.Sprintf("order %q is not registered (orders.require_registered)", ev.OrderID)
	}
	own := refundAmount(s.Order, s.State, &ev, ac)
	var order Order
	var effects []Effect
	if s.State != nil {
		order, d.Write, effects = ApplyState(s.Order, s.State, &ev, ac)
	} else {
		order, effects = Apply(s.Order, &ev, ac)
	}
	if order.ID == "" { // the event does not concern an order
		return ""
	}
	ev.Amount = own // recorded with the amount the shop and the emails are told
	d.Order = &order
	d.Recorded.OrderID, d.Recorded.OrderTo = order.ID, order.Status
	before := 0
	if s.Order != nil {
		d.Recorded.OrderFrom, before = s.Order.Status, len(s.Order.History)
	}
	if d.Write != nil {
		d.Recorded.Reason = d.Write.Change.Reason
	} else if len(order.History) > before { // Apply recorded a change (not the same fact again)
		d.Recorded.Reason = order.History[len(order.History)-1].Reason
	}
	if o.State != StateApplied {
		// Refused (a test payment on a live gateway, another receiver):
		// the order is flagged, the merchant told and the shop hears that
		// the order is in review, but the customer hears nothing and no
		// subscription or payment reference is recorded.
		for _, e := range effects {
			if e.Kind != EffectEmailCustomer {
				d.Effects = append(d.Effects, e)
			}
		}
		return ""
	}
	d.Effects = effects
	d.Subscription = IsSubscriptionEvent(&ev)
	d.AttachTo, d.Refs = &order, refs
	return ""
}

// TargetOrder returns the id of the order outcome o's event goes to,
// given refOrder, the order one of its payment references reached (""
// when none did): the order the event names, else refOrder, else, for a
// completed payment that names no order and is applied, the order of its
// own (OwnOrderID). "" when there is none: the event is parked (or does
// not concern an order). The store reads the order it names; Decide
// applies the event to it.
func TargetOrder(o Outcome, refOrder string) string {
	if o.Event == nil {
		return ""
	}
	if id := cmp.Or(o.Event.OrderID, refOrder); id != "" || o.State != StateApplied || !o.ApplyOrder {
		return id
	}
	return OwnOrderID(o.Context.Gateway, o.Event)
}

// AttemptOnly reports whether ev, naming no order, is a payment attempt
// that moved no money and is not parked: a one-off payment of a Stripe
// intent or charge (Secondary) that failed or was canceled (a declined
// card, an abandoned Checkout). Its session never comes when the
// customer gives up, so waiting for it would only fail at
// orders.park_for and alert the merchant for every abandoned checkout;
// when the customer pays after all, the session brings the order.
func AttemptOnly(ev *Event) bool {
	if !ev.Secondary || ev.Type != TypePayment {
		return false
	}
	switch ev.Status {
	case StatusFailed, StatusDenied, StatusExpired, StatusCanceled:
		return true
	}
	return false
}

const attemptDetail = "a payment attempt that names no order and moved no money (declined, canceled): no order to change, not kept waiting for one"

// ParkedDetail is the history's words for a parked event: what it waits
// for.
func ParkedDetail(ev *Event) string {
	what := "its payment"
	if isPaymentLike(ev.Type) {
		what = "the event that names its order" // a Stripe intent before its Checkout Session
	}
	return "waiting for " + what + ": no order yet for " + strings.Join(ev.PaymentRefs(), ", ")
}

// Adoption is what applying a parked event to its order changes.
type Adoption struct {
	Order        Order
	Write        *OrderWrite // with AdoptState: what to write besides Order (nil: nothing)
	Effects      []Effect
	Event        *Event // the event as applied, naming the order
	Context      ApplyContext
	Subscription bool   // apply Event to its subscription record too
	Detail       string // for the parked notification's history
}

// Adopt applies the event parked by notification id of gateway to order
// o, which a payment naming one of its references reached. It is pure.
func Adopt(o *Order, id uint64, gateway string, w Parked, now time.Time) Adoption {
	return AdoptState(o, nil, id, gateway, w, now)
}

// AdoptEvent is the event and context with which the event parked by
// notification id of gateway is applied to order orderID (for the
// store's look-ups: FactKey, TallyKeys).
func AdoptEvent(orderID string, id uint64, gateway string, w Parked, now time.Time) (*Event, ApplyContext) {
	ev := *w.Event
	ev.OrderID = orderID
	return &ev, ApplyContext{Now: now, Notification: id, Gateway: gateway, EventKey: w.EventKey, Sandbox: w.Sandbox}
}

// AdoptState is Adopt for an order whose facts and history the store
// keeps apart (see ApplyState); st nil: o holds them itself.
func AdoptState(o *Order, st *OrderState, id uint64, gateway string, w Parked, now time.Time) Adoption {
	ev, ac := AdoptEvent(o.ID, id, gateway, w, now)
	own := refundAmount(o, st, ev, ac)
	var a Adoption
	if st != nil {
		a.Order, a.Write, a.Effects = ApplyState(o, st, ev, ac)
	} else {
		a.Order, a.Effects = Apply(o, ev, ac)
	}
	ev.Amount = own
	a.Event, a.Context, a.Subscription = ev, ac, IsSubscriptionEvent(ev)
	a.Detail = fmt.Sprintf("applied to order %q, which its payment reached", o.ID)
	return a
}

// Policy is how the merchant configured the gateway a notification came
// through, as far as the decision reads it.
type Policy struct {
	Gateway           string
	Sandbox           bool     // a sandbox/test gateway
	Receivers         []string // the merchant's receivers; empty: not checked
	RequireRegistered bool     // orders.require_registered
	// Gateways are the names of the configured gateways: an order id an
	// event names of the form "<one of them>:..." is ipnd's own (see
	// OwnOrderID) and is not taken from the event.
	Gateways []string
}

// ownForm returns the gateway of gateways whose own order ids
// (OwnOrderID) id has the form of, "" when none.
func ownForm(id string, gateways []string) string {
	gw, _, ok := strings.Cut(id, ":")
	if ok && slices.Contains(gateways, gw) {
		return gw
	}
	return ""
}

// MaxIDLen bounds the identifiers an event may carry (order, transaction,
// subscription, payment references): they become store keys.
const MaxIDLen = 255

// Assess decides what the event ev of a verified notification may do,
// filling in outcome o (ID, Attempts and Verified set): invalid when an
// identifier is too long or an amount is not money; refused (invalid,
// but applied to its order, which goes to review: see review.go) when it
// is a test payment on a live gateway or, by receiverOK (the gateway's
// own check, or ReceiverAccepted), addressed to another receiver;
// applied otherwise. It is pure.
func Assess(o Outcome, ev *Event, pol Policy, receiverOK bool) Outcome {
	o.Event = ev
	for field, v := range map[string]string{"order_id": ev.OrderID, "txn_id": ev.TxnID, "subscription_id": ev.SubscriptionID,
		"parent_txn_id": ev.ParentTxnID, "payment references": ev.Refs} {
		if len(v) > MaxIDLen {
			o.State, o.Detail = StateInvalid, fmt.Sprintf("%s is longer than %d bytes", field, MaxIDLen)
			o.Event = nil
			return o
		}
	}
	if gw := ownForm(ev.OrderID, append([]string{pol.Gateway}, pol.Gateways...)); gw != "" {
		// A buyer can type any order reference (a PayPal button's
		// invoice, a Payment Link's client_reference_id): one of ipnd's
		// own order ids would make or pay the order of another payment
		// (stripe:pi_... of an intent the buyer never paid), which the
		// shop fulfils by looking that payment up. The event is taken
		// as naming no order.
		named := ev.OrderID
		evc := *ev
		evc.OrderID = ""
		ev = &evc
		o.Event = ev
		o.Detail = fmt.Sprintf("order id %q not taken from the event: %q:... are ipnd's own order ids (payments that name no order)", named, gw)
	}
	if err := CheckMoney(ev); err != nil {
		// Stored, not applied: the order is untouched.
		o.State, o.Detail = StateInvalid, "invalid amount: "+err.Error()
		return o
	}
	o.EventKey = EventKey(pol.Gateway, ev)
	o.ApplyOrder, o.RequireRegistered = true, pol.RequireRegistered
	o.Context = ApplyContext{Gateway: pol.Gateway, Sandbox: pol.Sandbox}
	if ev.Test && !pol.Sandbox {
		// Not applied; the order (if any) goes to review, flag test_payment.
		o.State, o.Detail = StateInvalid, refusedTestPayment
		return o
	}
	if !receiverOK {
		// Not applied; Apply flags receiver_mismatch on the order.
		o.Context.Receivers = pol.Receivers
		o.State, o.Detail = StateInvalid, refusedReceiver
		return o
	}
	o.State = StateApplied
	return o
}

// Unreadable decides an outcome the store cannot record because a record
// the decision must read is damaged (cause names it): the notification
// fails with the cause in its history and nothing else changes, so that
// one damaged order does not hold up every notification after it. Once
// the record is restored from a backup, a replay applies the
// notification. p is the notification's processing record; one final
// already is left as it is.
func Unreadable(o Outcome, p *Processing, cause string, now time.Time) Decision {
	if p.State.Final() {
		return Decision{AlreadyFinal: true, Recorded: Recorded{State: p.State}}
	}
	next := advance(p, o)
	next.State = StateFailed
	detail := "not applied: the store cannot read " + cause + "; restore it from a backup (ipnd restore), then replay this notification"
	next.History = append(next.History, HistoryEntry{At: now.UTC(), State: StateFailed, Detail: detail})
	return Decision{Processing: next, Recorded: Recorded{State: StateFailed, Detail: detail}}
}
