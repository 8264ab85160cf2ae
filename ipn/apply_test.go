package ipn_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

var modelSeed = flag.Uint64("apply.seed", 0, "first seed of TestApplyModel (0: from the clock)")

var applyT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// applier applies events one after the other to one order, the way the
// store does, and checks what must hold after every step: *o untouched
// and not shared, a repeated fact a no-op, unique causes, a consistent
// history.
type applier struct {
	tb      testing.TB
	gateway string
	useKeys bool // ApplyContext.EventKey set as the pipeline does; else "" (derived keys)
	ctx     func(*ipn.ApplyContext)
	order   *ipn.Order
	n       uint64
	causes  map[string]string // cause -> the step that queued it
	effects []ipn.Effect
	seen    map[*ipn.Event]bool
	label   string // prefixed to failures (e.g. the seed)
}

func newApplier(tb testing.TB, start *ipn.Order) *applier {
	return &applier{tb: tb, gateway: "gw", useKeys: true, order: start, causes: map[string]string{}, seen: map[*ipn.Event]bool{}}
}

func (a *applier) context(ev *ipn.Event) ipn.ApplyContext {
	ac := ipn.ApplyContext{Now: applyT0.Add(time.Duration(a.n) * time.Minute), Notification: a.n, Gateway: a.gateway}
	if a.useKeys {
		ac.EventKey = ipn.EventKey(a.gateway, ev)
	}
	if a.ctx != nil {
		a.ctx(&ac)
	}
	return ac
}

// apply applies ev and returns the effects of that step.
func (a *applier) apply(ev *ipn.Event) []ipn.Effect {
	a.tb.Helper()
	a.n++
	var before []byte
	if a.order != nil {
		before = mustJSON(a.tb, *a.order)
	}
	next, effects := ipn.Apply(a.order, ev, a.context(ev))
	step := fmt.Sprintf("%sstep %d (%s %s %s %s)", a.label, a.n, ev.Type, ev.Status, ev.TxnID, ev.Amount)
	if a.order != nil {
		if after := mustJSON(a.tb, *a.order); string(after) != string(before) {
			a.tb.Fatalf("%s: Apply modified its input order:\nbefore %s\nafter  %s", step, before, after)
		}
		checkNotShared(a.tb, step, a.order, &next)
		if a.seen[ev] {
			if got := mustJSON(a.tb, next); string(got) != string(before) {
				a.tb.Fatalf("%s: a repeated fact changed the order:\nbefore %s\nafter  %s", step, before, got)
			}
			if len(effects) != 0 {
				a.tb.Fatalf("%s: a repeated fact queued %d effects: %+v", step, len(effects), effects)
			}
		}
	}
	a.seen[ev] = true
	for _, e := range effects {
		if prior, dup := a.causes[e.Cause]; dup {
			a.tb.Fatalf("%s: cause %q queued twice (first at %s)", step, e.Cause, prior)
		}
		a.causes[e.Cause] = step
		if e.Template == ipn.TemplatePaymentReceived && next.Status != ipn.OrderPaid && next.Status != ipn.OrderPartiallyRefunded {
			a.tb.Fatalf("%s: payment_received queued while the order is %s", step, next.Status)
		}
	}
	checkHistory(a.tb, step, &next)
	a.effects = append(a.effects, effects...)
	if next.ID != "" {
		a.order = &next
	}
	return effects
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// checkNotShared fails when the new order shares a backing array with
// the old one.
func checkNotShared(tb testing.TB, step string, old, next *ipn.Order) {
	tb.Helper()
	same := func(a, b []string) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }
	if same(old.Flags, next.Flags) || same(old.TxnIDs, next.TxnIDs) ||
		len(old.History) > 0 && len(next.History) > 0 && &old.History[0] == &next.History[0] ||
		len(old.Facts) > 0 && len(next.Facts) > 0 && &old.Facts[0] == &next.Facts[0] {
		tb.Fatalf("%s: the new order shares a slice with the old one", step)
	}
}

// checkHistory checks that the history is a chain of explained
// transitions ending in the order's status.
func checkHistory(tb testing.TB, step string, o *ipn.Order) {
	tb.Helper()
	if o.ID == "" {
		return
	}
	if len(o.History) == 0 {
		tb.Fatalf("%s: order %s has no history", step, o.ID)
	}
	for i, h := range o.History {
		if h.Reason == "" || h.To == "" {
			tb.Fatalf("%s: history[%d] = %+v: no reason or target status", step, i, h)
		}
		if i > 0 && h.From != o.History[i-1].To {
			tb.Fatalf("%s: history[%d] goes from %s, but history[%d] ended in %s", step, i, h.From, i-1, o.History[i-1].To)
		}
	}
	if last := o.History[len(o.History)-1]; last.To != o.Status {
		tb.Fatalf("%s: history ends in %s, order is %s", step, last.To, o.Status)
	}
}

func templates(effects []ipn.Effect) []string {
	var out []string
	for _, e := range effects {
		out = append(out, e.Kind+":"+e.Template)
	}
	return out
}

func hasTemplate(effects []ipn.Effect, template string) bool {
	return slices.ContainsFunc(effects, func(e ipn.Effect) bool { return e.Template == template })
}

func mustRegister(tb testing.TB, id, amount, currency string) *ipn.Order {
	tb.Helper()
	o, err := ipn.NewRegisteredOrder(id, amount, currency, "buyer@example.com", "", nil, applyT0)
	if err != nil {
		tb.Fatalf("NewRegisteredOrder(%q, %q, %q): %v", id, amount, currency, err)
	}
	return &o
}

// ---- the model-based test -------------------------------------------

// money renders v minor units with d fraction digits. It is the test's
// own, independent of the package's formatting.
func money(v int64, d int) string {
	neg := v < 0
	if neg {
		v = -v
	}
	s := strconv.FormatInt(v, 10)
	for len(s) <= d {
		s = "0" + s
	}
	if d > 0 {
		s = s[:len(s)-d] + "." + s[len(s)-d:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// scenario is one order's story as a set of distinct facts.
type scenario struct {
	cur        string
	digits     int
	registered bool
	expected   int64 // minor units, registered orders
	p1         int64 // amount of payment P1
	p1Pending  bool
	p1Done     bool // P1 completed
	p1Failed   bool // P1 failed (also as a late, stray message after completion)
	f0Failed   bool // an earlier attempt F0 that failed
	p2         int64
	ppRefunds  []int64 // PayPal style: each refund its own txn id, negative mc_gross
	stRefunds  []int64 // Stripe style: cumulative amount_refunded on charge CH1, increasing
	reversals  int     // distinct Reversed messages on P1
	cancels    int     // distinct Canceled_Reversal messages on P1
	dispOpen   bool
	dispClosed bool // won
	useKeys    bool
}

var modelCurrencies = []struct {
	code   string
	digits int
}{{"USD", 2}, {"JPY", 0}, {"KWD", 3}, {"BTC", 8}, {"EUR", 2}}

func genScenario(r *rand.Rand) scenario {
	c := modelCurrencies[r.IntN(len(modelCurrencies))]
	sc := scenario{cur: c.code, digits: c.digits, registered: r.IntN(2) == 0, useKeys: r.IntN(4) != 0}
	sc.expected = 1 + r.Int64N(200000)
	sc.p1 = sc.expected
	if r.IntN(5) == 0 {
		sc.p1 = 1 + r.Int64N(200000) // a price edited in the form (or an unregistered order)
	}
	sc.p1Pending = r.IntN(2) == 0
	sc.p1Done = r.IntN(3) != 0
	sc.p1Failed = r.IntN(4) == 0
	sc.f0Failed = r.IntN(4) == 0
	if r.IntN(6) == 0 {
		sc.p2 = sc.expected
		if r.IntN(2) == 0 {
			sc.p2 = 1 + r.Int64N(sc.expected)
		}
	}
	if r.IntN(3) == 0 {
		left := sc.p1
		for n := 1 + r.IntN(3); n > 0 && left > 0; n-- {
			part := 1 + r.Int64N(left)
			if n == 1 && r.IntN(2) == 0 {
				part = left // refund the rest
			}
			sc.ppRefunds = append(sc.ppRefunds, part)
			left -= part
		}
	}
	if r.IntN(3) == 0 {
		var cum int64
		for n := 1 + r.IntN(3); n > 0 && cum < sc.p1; n-- {
			cum += 1 + r.Int64N(sc.p1-cum)
			sc.stRefunds = append(sc.stRefunds, cum)
		}
	}
	if r.IntN(4) == 0 {
		sc.reversals = 1 + r.IntN(2)
		sc.cancels = r.IntN(sc.reversals + 1)
	}
	if r.IntN(5) == 0 {
		sc.dispOpen, sc.dispClosed = true, r.IntN(2) == 0
	}
	return sc
}

// events lists the scenario's distinct facts as normalized events.
func (sc scenario) events() []*ipn.Event {
	m := func(v int64) string { return money(v, sc.digits) }
	ev := func(typ ipn.EventType, st ipn.EventStatus, txn, parent, amount string) *ipn.Event {
		return &ipn.Event{Type: typ, Status: st, TxnID: txn, ParentTxnID: parent, OrderID: "ORDER-1", Amount: amount,
			Currency: sc.cur, CustomerEmail: "buyer@example.com", Receiver: "shop@example.com"}
	}
	var out []*ipn.Event
	if sc.p1Pending {
		out = append(out, ev(ipn.TypePayment, ipn.StatusPending, "P1", "", m(sc.p1)))
	}
	if sc.p1Done {
		out = append(out, ev(ipn.TypePayment, ipn.StatusCompleted, "P1", "", m(sc.p1)))
	}
	if sc.p1Failed {
		out = append(out, ev(ipn.TypePayment, ipn.StatusDenied, "P1", "", m(sc.p1)))
	}
	if sc.f0Failed {
		out = append(out, ev(ipn.TypePayment, ipn.StatusFailed, "F0", "", m(sc.p1)))
	}
	if sc.p2 > 0 {
		out = append(out, ev(ipn.TypePayment, ipn.StatusCompleted, "P2", "", m(sc.p2)))
	}
	for i, v := range sc.ppRefunds {
		out = append(out, ev(ipn.TypeRefund, ipn.StatusRefunded, fmt.Sprintf("RF%d", i), "P1", m(-v)))
	}
	for _, v := range sc.stRefunds {
		out = append(out, ev(ipn.TypeRefund, ipn.StatusRefunded, "CH1", "", m(v)))
	}
	for i := range sc.reversals {
		out = append(out, ev(ipn.TypeReversal, ipn.StatusReversed, fmt.Sprintf("RV%d", i), "P1", m(-sc.p1)))
	}
	for i := range sc.cancels {
		out = append(out, ev(ipn.TypeReversalCanceled, ipn.StatusCompleted, fmt.Sprintf("CR%d", i), "P1", m(sc.p1)))
	}
	if sc.dispOpen {
		out = append(out, ev(ipn.TypeDispute, ipn.StatusPending, "DP1", "P1", m(sc.p1)))
	}
	if sc.dispClosed {
		out = append(out, ev(ipn.TypeDispute, ipn.StatusCanceled, "DP1", "P1", ""))
	}
	return out
}

// modelResult is what the reference model expects.
type modelResult struct {
	status   ipn.OrderStatus
	paid     string
	refunded string
	flags    []string
}

// model is the small reference model: what the scenario must end as,
// computed from the story rather than from the facts.
func (sc scenario) model() modelResult {
	var payments []int64
	if sc.p1Done {
		payments = append(payments, sc.p1)
	}
	if sc.p2 > 0 {
		payments = append(payments, sc.p2)
	}
	var paid, refunded, smallest int64
	for i, p := range payments {
		paid += p
		if i == 0 || p < smallest {
			smallest = p
		}
	}
	for _, v := range sc.ppRefunds {
		refunded += v
	}
	if n := len(sc.stRefunds); n > 0 {
		refunded += sc.stRefunds[n-1] // cumulative: the last is the total
	}
	flags := []string{}
	if sc.registered && slices.ContainsFunc(payments, func(p int64) bool { return p != sc.expected }) {
		flags = append(flags, ipn.FlagAmountMismatch)
	}
	if len(payments) >= 2 && (!sc.registered || paid-smallest >= sc.expected) {
		flags = append(flags, ipn.FlagDoublePayment)
	}
	var st ipn.OrderStatus
	switch {
	case len(flags) > 0:
		st = ipn.OrderReview
	case sc.reversals > sc.cancels:
		st = ipn.OrderReversed
	case sc.dispOpen && !sc.dispClosed && sc.cancels == 0:
		// A cancelled reversal of P1 ends its dispute too (PayPal's
		// chargeback case won: new_case, Reversed, Canceled_Reversal).
		st = ipn.OrderDisputed
	case len(payments) > 0 && refunded > 0 && refunded >= paid:
		st = ipn.OrderRefunded
	case len(payments) > 0 && refunded > 0:
		st = ipn.OrderPartiallyRefunded
	case len(payments) > 0:
		st = ipn.OrderPaid
	case sc.p1Pending && !sc.p1Failed:
		st = ipn.OrderPending
	case sc.p1Failed || sc.f0Failed:
		st = ipn.OrderFailed
	default:
		st = ipn.OrderAwaitingPayment
	}
	return modelResult{st, money(paid, sc.digits), money(refunded, sc.digits), flags}
}

// play applies the facts in a random order with random repeats.
func (sc scenario) play(t *testing.T, r *rand.Rand, label string) *ipn.Order {
	t.Helper()
	facts := sc.events()
	seq := slices.Clone(facts)
	if len(facts) > 0 {
		for range r.IntN(len(facts) + 1) {
			seq = append(seq, facts[r.IntN(len(facts))])
		}
	}
	r.Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i] })
	var start *ipn.Order
	if sc.registered {
		start = mustRegister(t, "ORDER-1", money(sc.expected, sc.digits), sc.cur)
	}
	a := newApplier(t, start)
	a.useKeys, a.label = sc.useKeys, label
	for _, ev := range seq {
		a.apply(ev)
	}
	o := a.order
	if o == nil {
		if len(facts) > 0 {
			t.Fatalf("%sno order after %d events", label, len(seq))
		}
		return &ipn.Order{Status: ipn.OrderAwaitingPayment, Paid: money(0, sc.digits), Refunded: money(0, sc.digits), Flags: []string{}}
	}
	wantHistory := len(facts)
	if sc.registered {
		wantHistory++
	}
	if len(o.History) != wantHistory {
		t.Fatalf("%s%d history entries for %d distinct facts:\n%s", label, len(o.History), len(facts), historyText(o))
	}
	return o
}

func historyText(o *ipn.Order) string {
	var b strings.Builder
	for _, h := range o.History {
		fmt.Fprintf(&b, "  %s -> %s: %s\n", h.From, h.To, h.Reason)
	}
	return b.String()
}

func TestApplyModel(t *testing.T) {
	iterations := 1000
	if testing.Short() {
		iterations = 300
	}
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -apply.seed=%d)", seed, seed)
	for i := range uint64(iterations) {
		s := seed + i
		r := rand.New(rand.NewPCG(s, 7))
		sc := genScenario(r)
		want := sc.model()
		var first *ipn.Order
		for perm := range 3 {
			label := fmt.Sprintf("seed %d, permutation %d: ", s, perm)
			got := sc.play(t, r, label)
			if got.Status != want.status || got.Paid != want.paid || got.Refunded != want.refunded || !slices.Equal(got.Flags, want.flags) {
				t.Fatalf("%sscenario %+v\ngot  %s paid %s refunded %s flags %v\nwant %s paid %s refunded %s flags %v\nhistory:\n%s",
					label, sc, got.Status, got.Paid, got.Refunded, got.Flags,
					want.status, want.paid, want.refunded, want.flags, historyText(got))
			}
			if first == nil {
				first = got
				continue
			}
			if got.Status != first.Status || got.Paid != first.Paid || got.Refunded != first.Refunded ||
				!slices.Equal(got.Flags, first.Flags) || !slices.Equal(got.TxnIDs, first.TxnIDs) {
				t.Fatalf("%sanother order of arrival ends differently: %s %s %s %v %v, first %s %s %s %v %v", label,
					got.Status, got.Paid, got.Refunded, got.Flags, got.TxnIDs,
					first.Status, first.Paid, first.Refunded, first.Flags, first.TxnIDs)
			}
		}
	}
}

// ---- disorder, table-driven over every permutation --------------------

// usd is a USD event for order ORDER-D; subscription events name
// subscription SUB1.
func usd(typ ipn.EventType, st ipn.EventStatus, txn, parent, amount string) *ipn.Event {
	ev := &ipn.Event{Type: typ, Status: st, TxnID: txn, ParentTxnID: parent, OrderID: "ORDER-D", Amount: amount,
		Currency: "USD", CustomerEmail: "buyer@example.com"}
	if strings.HasPrefix(string(typ), "subscription") {
		ev.SubscriptionID = "SUB1"
	}
	return ev
}

func modified(ev *ipn.Event, f func(*ipn.Event)) *ipn.Event {
	f(ev)
	return ev
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

func TestApplyDisorder(t *testing.T) {
	completed := usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "19.99")
	cases := []struct {
		name     string
		events   []*ipn.Event
		status   ipn.OrderStatus
		paid     string
		refunded string
	}{
		{"pending after completed", []*ipn.Event{completed, usd(ipn.TypePayment, ipn.StatusPending, "P1", "", "19.99")},
			ipn.OrderPaid, "19.99", "0.00"},
		{"denied after completed", []*ipn.Event{completed, usd(ipn.TypePayment, ipn.StatusDenied, "P1", "", "19.99")},
			ipn.OrderPaid, "19.99", "0.00"},
		{"refund before its payment", []*ipn.Event{usd(ipn.TypeRefund, ipn.StatusRefunded, "R1", "P1", "-5.00"), completed},
			ipn.OrderPartiallyRefunded, "19.99", "5.00"},
		{"full refund before its payment", []*ipn.Event{usd(ipn.TypeRefund, ipn.StatusRefunded, "R1", "P1", "-19.99"), completed},
			ipn.OrderRefunded, "19.99", "19.99"},
		{"reversed then canceled reversal", []*ipn.Event{completed,
			usd(ipn.TypeReversal, ipn.StatusReversed, "RV1", "P1", "-19.99"),
			usd(ipn.TypeReversalCanceled, ipn.StatusCompleted, "CR1", "P1", "19.99")},
			ipn.OrderPaid, "19.99", "0.00"},
		{"reversed twice, canceled once", []*ipn.Event{completed,
			usd(ipn.TypeReversal, ipn.StatusReversed, "RV1", "P1", "-19.99"),
			usd(ipn.TypeReversalCanceled, ipn.StatusCompleted, "CR1", "P1", "19.99"),
			usd(ipn.TypeReversal, ipn.StatusReversed, "RV2", "P1", "-19.99")},
			ipn.OrderReversed, "19.99", "0.00"},
		{"dispute won", []*ipn.Event{completed,
			usd(ipn.TypeDispute, ipn.StatusPending, "DP1", "P1", "19.99"),
			usd(ipn.TypeDispute, ipn.StatusCanceled, "DP1", "P1", "19.99")},
			ipn.OrderPaid, "19.99", "0.00"},
		{"dispute open", []*ipn.Event{completed, usd(ipn.TypeDispute, ipn.StatusPending, "DP1", "P1", "19.99")},
			ipn.OrderDisputed, "19.99", "0.00"},
		{"dispute lost (Stripe: a reversal)", []*ipn.Event{completed,
			usd(ipn.TypeDispute, ipn.StatusPending, "DP1", "P1", "19.99"),
			usd(ipn.TypeReversal, ipn.StatusReversed, "DP1", "P1", "19.99")},
			ipn.OrderReversed, "19.99", "0.00"},
		{"cumulative refunds, newest first or last", []*ipn.Event{completed,
			usd(ipn.TypeRefund, ipn.StatusRefunded, "CH1", "", "5.00"),
			usd(ipn.TypeRefund, ipn.StatusRefunded, "CH1", "", "19.99")},
			ipn.OrderRefunded, "19.99", "19.99"},
		{"new attempt after a failure", []*ipn.Event{usd(ipn.TypePayment, ipn.StatusFailed, "F0", "", "19.99"),
			usd(ipn.TypePayment, ipn.StatusPending, "P1", "", "19.99")},
			ipn.OrderPending, "0.00", "0.00"},
		{"failed attempt, then paid", []*ipn.Event{usd(ipn.TypePayment, ipn.StatusFailed, "F0", "", "19.99"),
			usd(ipn.TypePayment, ipn.StatusPending, "P1", "", "19.99"), completed},
			ipn.OrderPaid, "19.99", "0.00"},
		{"pending then failed", []*ipn.Event{usd(ipn.TypePayment, ipn.StatusPending, "P1", "", "19.99"),
			usd(ipn.TypePayment, ipn.StatusFailed, "P1", "", "19.99")},
			ipn.OrderFailed, "0.00", "0.00"},
		{"authorization voided", []*ipn.Event{usd(ipn.TypePayment, ipn.StatusPending, "P1", "", "19.99"),
			usd(ipn.TypePayment, ipn.StatusCanceled, "P1", "", "19.99")},
			ipn.OrderCanceled, "0.00", "0.00"},
		{"subscription payments are not double payments", []*ipn.Event{
			usd(ipn.TypeSubscriptionStarted, ipn.StatusCompleted, "", "", "19.99"),
			usd(ipn.TypeSubscriptionPayment, ipn.StatusCompleted, "S1", "", "19.99"),
			usd(ipn.TypeSubscriptionPayment, ipn.StatusCompleted, "S2", "", "19.99"),
			usd(ipn.TypeSubscriptionCanceled, ipn.StatusCanceled, "", "", "")},
			ipn.OrderPaid, "39.98", "0.00"},
		{"same txn completed under two keys counts once", []*ipn.Event{completed,
			usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "19.990")},
			ipn.OrderPaid, "19.99", "0.00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, perm := range permutations(len(tc.events)) {
				a := newApplier(t, nil)
				a.label = fmt.Sprintf("order %v: ", perm)
				for _, i := range perm {
					a.apply(tc.events[i])
				}
				o := a.order
				if o.Status != tc.status || o.Paid != tc.paid || o.Refunded != tc.refunded {
					t.Fatalf("order %v: got %s paid %s refunded %s, want %s paid %s refunded %s\n%s",
						perm, o.Status, o.Paid, o.Refunded, tc.status, tc.paid, tc.refunded, historyText(o))
				}
			}
		})
	}
}

// ---- fraud ------------------------------------------------------------

func TestApplyFraud(t *testing.T) {
	pay := func(txn, amount, cur string) *ipn.Event {
		return &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: txn, OrderID: "ORDER-F",
			Amount: amount, Currency: cur, CustomerEmail: "buyer@example.com", Receiver: "shop@example.com"}
	}
	cases := []struct {
		name       string
		registered bool
		before     []*ipn.Event // applied first, legitimately
		fraud      *ipn.Event
		ctx        func(*ipn.ApplyContext)
		flag       string
	}{
		{"amount lowered in the form", true, nil, pay("T1", "0.99", "USD"), nil, ipn.FlagAmountMismatch},
		{"amount raised", true, nil, pay("T1", "29.99", "USD"), nil, ipn.FlagAmountMismatch},
		{"currency changed in the form", true, nil, pay("T1", "19.99", "JPY"), nil, ipn.FlagCurrencyMismatch},
		{"currency changed, unregistered order", false, []*ipn.Event{pay("T1", "19.99", "USD")}, pay("T2", "19.99", "EUR"), nil, ipn.FlagCurrencyMismatch},
		{"another receiver", true, nil, modified(pay("T1", "19.99", "USD"), func(e *ipn.Event) { e.Receiver = "fraudster@example.com" }),
			func(ac *ipn.ApplyContext) { ac.Receivers = []string{"Shop@Example.com", "SHOPID123"} }, ipn.FlagReceiverMismatch},
		{"test payment on a live gateway", true, nil, modified(pay("T1", "19.99", "USD"), func(e *ipn.Event) { e.Test = true }),
			nil, ipn.FlagTestPayment},
		{"paid twice under another txn", true, []*ipn.Event{pay("T1", "19.99", "USD")}, pay("T2", "19.99", "USD"), nil, ipn.FlagDoublePayment},
		{"paid twice, unregistered order", false, []*ipn.Event{pay("T1", "19.99", "USD")}, pay("T2", "19.99", "USD"), nil, ipn.FlagDoublePayment},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var start *ipn.Order
			if tc.registered {
				start = mustRegister(t, "ORDER-F", "19.99", "USD")
			}
			a := newApplier(t, start)
			for _, ev := range tc.before {
				a.apply(ev)
			}
			a.ctx = tc.ctx
			effects := a.apply(tc.fraud)
			o := a.order
			if o.Status != ipn.OrderReview || !slices.Contains(o.Flags, tc.flag) {
				t.Fatalf("status %s flags %v, want review with %s\n%s", o.Status, o.Flags, tc.flag, historyText(o))
			}
			if hasTemplate(effects, ipn.TemplatePaymentReceived) || len(tc.before) == 0 && hasTemplate(a.effects, ipn.TemplatePaymentReceived) {
				t.Errorf("the customer is told the order is paid: %v", templates(a.effects))
			}
			i := slices.IndexFunc(effects, func(e ipn.Effect) bool { return e.Template == ipn.TemplateOrderReview })
			if i < 0 {
				t.Fatalf("no order_review effect: %v", templates(effects))
			}
			if e := effects[i]; e.Kind != ipn.EffectEmailMerchant || !strings.Contains(e.Reason, tc.flag) || e.To != "" {
				t.Errorf("order_review effect %+v: want a merchant email whose reason names %s", e, tc.flag)
			}
			if last := o.History[len(o.History)-1]; !strings.Contains(last.Reason, "review: "+tc.flag) {
				t.Errorf("history %q does not explain the review", last.Reason)
			}
			// Review is final: a legitimate payment afterwards changes nothing of that.
			a.ctx = nil
			more := a.apply(pay("T9", "19.99", "USD"))
			if a.order.Status != ipn.OrderReview || hasTemplate(more, ipn.TemplatePaymentReceived) {
				t.Errorf("after another payment: %s %v, want review, no payment_received", a.order.Status, templates(more))
			}
		})
	}
	t.Run("test payment on a sandbox gateway, test order", func(t *testing.T) {
		o := mustRegister(t, "ORDER-F", "19.99", "USD")
		o.Test = true
		a := newApplier(t, o)
		a.ctx = func(ac *ipn.ApplyContext) { ac.Sandbox = true }
		effects := a.apply(modified(pay("T1", "19.99", "USD"), func(e *ipn.Event) { e.Test = true }))
		if a.order.Status != ipn.OrderPaid || !hasTemplate(effects, ipn.TemplatePaymentReceived) {
			t.Errorf("got %s %v, want paid with payment_received", a.order.Status, templates(effects))
		}
	})
	t.Run("test payment on a sandbox gateway, order created by it", func(t *testing.T) {
		a := newApplier(t, nil)
		a.ctx = func(ac *ipn.ApplyContext) { ac.Sandbox = true }
		a.apply(modified(pay("T1", "19.99", "USD"), func(e *ipn.Event) { e.Test = true }))
		if a.order.Status != ipn.OrderPaid || !a.order.Test {
			t.Errorf("got %s test=%v, want a paid test order", a.order.Status, a.order.Test)
		}
	})
	// Real money from a live gateway never pays a test order: the shop
	// never fulfils a test order and the merchant may delete it, so the
	// buyer's payment would be lost from view (an order id the merchant
	// tested with, reused by the shop for a real customer).
	t.Run("live payment on a live gateway, test order", func(t *testing.T) {
		o := mustRegister(t, "ORDER-F", "19.99", "USD")
		o.Test = true
		a := newApplier(t, o)
		effects := a.apply(pay("T1", "19.99", "USD"))
		if a.order.Status != ipn.OrderReview || !slices.Contains(a.order.Flags, ipn.FlagTestPayment) || hasTemplate(effects, ipn.TemplatePaymentReceived) {
			t.Errorf("got %s %v %v, want review with test_payment", a.order.Status, a.order.Flags, templates(effects))
		}
	})
	// A sandbox account's payment never pays a real order, even through a
	// sandbox gateway.
	t.Run("test payment on a sandbox gateway, real order", func(t *testing.T) {
		a := newApplier(t, mustRegister(t, "ORDER-F", "19.99", "USD"))
		a.ctx = func(ac *ipn.ApplyContext) { ac.Sandbox = true }
		effects := a.apply(modified(pay("T1", "19.99", "USD"), func(e *ipn.Event) { e.Test = true }))
		if a.order.Status != ipn.OrderReview || !slices.Contains(a.order.Flags, ipn.FlagTestPayment) || hasTemplate(effects, ipn.TemplatePaymentReceived) {
			t.Errorf("got %s %v %v, want review with test_payment", a.order.Status, a.order.Flags, templates(effects))
		}
	})
}

// ---- refunds through the real adapters ---------------------------------

type wire struct {
	gateway string // "paypal" or "stripe"
	body    string
}

func paypalMsg(fields ...string) wire {
	v := url.Values{}
	for i := 0; i+1 < len(fields); i += 2 {
		v.Set(fields[i], fields[i+1])
	}
	return wire{"paypal", v.Encode()}
}

func stripeMsg(id, typ, object string) wire {
	return wire{"stripe", fmt.Sprintf(`{"id":%q,"type":%q,"livemode":true,"data":{"object":%s}}`, id, typ, object)}
}

func TestApplyRefunds(t *testing.T) {
	gateways := map[string]gateway.Gateway{}
	for kind, cfg := range map[string]gateway.Config{
		"paypal": {Name: "paypal", Kind: "paypal"},
		"stripe": {Name: "stripe", Kind: "stripe", Secrets: []string{"whsec_test"}},
	} {
		g, err := gateway.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		gateways[kind] = g
	}
	ppPay := func(order, txn, amount, cur string) wire {
		return paypalMsg("txn_type", "web_accept", "payment_status", "Completed", "txn_id", txn, "invoice", order,
			"mc_gross", amount, "mc_currency", cur, "payer_email", "buyer@example.com", "receiver_email", "shop@example.com")
	}
	ppRefund := func(order, txn, parent, amount, cur string) wire {
		return paypalMsg("payment_status", "Refunded", "reason_code", "refund", "txn_id", txn, "parent_txn_id", parent,
			"invoice", order, "mc_gross", amount, "mc_currency", cur, "payer_email", "buyer@example.com")
	}
	stPay := func(order string, minor int, cur string) wire {
		return stripeMsg("evt_pay_"+order, "checkout.session.completed", fmt.Sprintf(
			`{"id":"cs_%s","object":"checkout.session","client_reference_id":%q,"amount_total":%d,"currency":%q,"payment_status":"paid","customer_details":{"email":"buyer@example.com"}}`,
			order, order, minor, cur))
	}
	stRefund := func(order string, minor, refunded int, cur string) wire {
		return stripeMsg(fmt.Sprintf("evt_ref_%s_%d", order, refunded), "charge.refunded", fmt.Sprintf(
			`{"id":"ch_%s","object":"charge","amount":%d,"amount_refunded":%d,"currency":%q,"metadata":{"order_id":%q}}`,
			order, minor, refunded, cur, order))
	}
	cases := []struct {
		name     string
		register []string // id, amount, currency; nil: created by the first event
		msgs     []wire
		status   ipn.OrderStatus
		paid     string
		refunded string
		emails   int // refund_issued emails in arrival order
	}{
		{"PayPal full refund", []string{"PP-1", "19.99", "USD"},
			[]wire{ppPay("PP-1", "T1", "19.99", "USD"), ppRefund("PP-1", "R1", "T1", "-19.99", "USD")},
			ipn.OrderRefunded, "19.99", "19.99", 1},
		{"PayPal two partial refunds", []string{"PP-2", "19.99", "USD"},
			[]wire{ppPay("PP-2", "T1", "19.99", "USD"), ppRefund("PP-2", "R1", "T1", "-5.00", "USD"), ppRefund("PP-2", "R2", "T1", "-4.99", "USD")},
			ipn.OrderPartiallyRefunded, "19.99", "9.99", 2},
		{"PayPal partial refunds adding up to the whole", nil,
			[]wire{ppPay("PP-3", "T1", "19.99", "USD"), ppRefund("PP-3", "R1", "T1", "-5.00", "USD"), ppRefund("PP-3", "R2", "T1", "-14.99", "USD")},
			ipn.OrderRefunded, "19.99", "19.99", 2},
		{"PayPal JPY partial refund", []string{"PP-4", "1999", "JPY"},
			[]wire{ppPay("PP-4", "T1", "1999", "JPY"), ppRefund("PP-4", "R1", "T1", "-500", "JPY")},
			ipn.OrderPartiallyRefunded, "1999", "500", 1},
		{"PayPal JPY full refund", nil,
			[]wire{ppPay("PP-5", "T1", "1999", "JPY"), ppRefund("PP-5", "R1", "T1", "-1999", "JPY")},
			ipn.OrderRefunded, "1999", "1999", 1},
		{"PayPal KWD partial refund", []string{"PP-6", "12.5", "KWD"},
			[]wire{ppPay("PP-6", "T1", "12.500", "KWD"), ppRefund("PP-6", "R1", "T1", "-0.125", "KWD")},
			ipn.OrderPartiallyRefunded, "12.500", "0.125", 1},
		{"Stripe partial refund", []string{"ST-1", "19.99", "USD"},
			[]wire{stPay("ST-1", 1999, "usd"), stRefund("ST-1", 1999, 500, "usd")},
			ipn.OrderPartiallyRefunded, "19.99", "5.00", 1},
		{"Stripe cumulative refunds to full", []string{"ST-2", "19.99", "USD"},
			[]wire{stPay("ST-2", 1999, "usd"), stRefund("ST-2", 1999, 500, "usd"), stRefund("ST-2", 1999, 1999, "usd")},
			ipn.OrderRefunded, "19.99", "19.99", 2},
		{"Stripe JPY full refund", []string{"ST-3", "1999", "JPY"},
			[]wire{stPay("ST-3", 1999, "jpy"), stRefund("ST-3", 1999, 1999, "jpy")},
			ipn.OrderRefunded, "1999", "1999", 1},
		{"Stripe KWD cumulative partial refunds", []string{"ST-4", "12.500", "KWD"},
			[]wire{stPay("ST-4", 12500, "kwd"), stRefund("ST-4", 12500, 1250, "kwd"), stRefund("ST-4", 12500, 2500, "kwd")},
			ipn.OrderPartiallyRefunded, "12.500", "2.500", 2},
		{"Stripe BHD full refund, unregistered", nil,
			[]wire{stPay("ST-5", 7005, "bhd"), stRefund("ST-5", 7005, 7005, "bhd")},
			ipn.OrderRefunded, "7.005", "7.005", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var events []*ipn.Event
			var gws []string
			for i, m := range tc.msgs {
				ev, err := gateways[m.gateway].Normalize(&ipn.Notification{ID: uint64(i + 1), Gateway: m.gateway, Body: []byte(m.body)})
				if err != nil {
					t.Fatalf("Normalize(%s): %v", m.body, err)
				}
				events, gws = append(events, ev), append(gws, m.gateway)
			}
			for _, reversed := range []bool{false, true} {
				var start *ipn.Order
				if tc.register != nil {
					start = mustRegister(t, tc.register[0], tc.register[1], tc.register[2])
				}
				a := newApplier(t, start)
				for k := range events {
					i := k
					if reversed {
						i = len(events) - 1 - k
					}
					a.gateway = gws[i]
					a.apply(events[i])
				}
				o := a.order
				if o.Status != tc.status || o.Paid != tc.paid || o.Refunded != tc.refunded || len(o.Flags) != 0 {
					t.Fatalf("reversed=%v: got %s paid %s refunded %s flags %v, want %s paid %s refunded %s\n%s", reversed,
						o.Status, o.Paid, o.Refunded, o.Flags, tc.status, tc.paid, tc.refunded, historyText(o))
				}
				n := 0
				for _, e := range a.effects {
					if e.Template == ipn.TemplateRefundIssued {
						n++
						if e.To != "buyer@example.com" || e.Kind != ipn.EffectEmailCustomer {
							t.Errorf("refund_issued effect %+v", e)
						}
					}
				}
				if !reversed && n != tc.emails {
					t.Errorf("%d refund_issued effects, want %d: %v", n, tc.emails, templates(a.effects))
				}
			}
		})
	}
}

// ---- duplicates, causes, history ----------------------------------------

func TestApplyDuplicatesAndCauses(t *testing.T) {
	events := []*ipn.Event{
		usd(ipn.TypePayment, ipn.StatusPending, "P1", "", "19.99"),
		usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "19.99"),
		usd(ipn.TypeReversal, ipn.StatusReversed, "RV1", "P1", "-19.99"),
		usd(ipn.TypeReversalCanceled, ipn.StatusCompleted, "CR1", "P1", "19.99"), // paid a second time
		// (A dispute of P1 would be over already: P1's reversal was
		// cancelled. This one disputes the charge refunded below.)
		usd(ipn.TypeDispute, ipn.StatusPending, "DP1", "CH1", "19.99"),
		usd(ipn.TypeDispute, ipn.StatusCanceled, "DP1", "CH1", "19.99"), // and a third
		usd(ipn.TypeRefund, ipn.StatusRefunded, "CH1", "", "10.00"),
		usd(ipn.TypeRefund, ipn.StatusRefunded, "CH1", "", "5.00"), // older cumulative amount, late: no email
		usd(ipn.TypeSubscriptionStarted, ipn.StatusCompleted, "", "", "19.99"),
		usd(ipn.TypeSubscriptionStarted, ipn.StatusCompleted, "", "", "9.99"), // same subscription, other content
		usd(ipn.TypeSubscriptionCanceled, ipn.StatusCanceled, "", "", ""),
	}
	for _, useKeys := range []bool{true, false} {
		t.Run(fmt.Sprintf("event keys %v", useKeys), func(t *testing.T) {
			a := newApplier(t, mustRegister(t, "ORDER-D", "19.99", "USD"))
			a.useKeys = useKeys
			for _, ev := range events {
				a.apply(ev)
				a.apply(ev) // the applier checks the repeat is a no-op
			}
			count := map[string]int{}
			for _, e := range a.effects {
				count[e.Template]++
			}
			want := map[string]int{
				ipn.TemplatePaymentPending: 1, ipn.TemplatePaymentReceived: 1, ipn.TemplateDisputeOpened: 2,
				ipn.TemplateRefundIssued: 1, ipn.TemplateSubscriptionStarted: 1, ipn.TemplateSubscriptionCanceled: 1,
				// Shop callbacks: one per fact that changes the order or
				// starts, pays or ends a subscription; the late, older
				// cumulative refund (5.00) and the second report of the
				// same subscription's start tell the shop nothing new.
				"": len(events) - 2,
			}
			for k, n := range want {
				if count[k] != n {
					t.Errorf("%d %q effects, want %d: %v", count[k], k, n, templates(a.effects))
				}
			}
			if got := a.order.Status; got != ipn.OrderPartiallyRefunded {
				t.Errorf("status %s, want partially_refunded\n%s", got, historyText(a.order))
			}
			for _, e := range a.effects {
				if e.Cause == "" || e.OrderID != "ORDER-D" {
					t.Errorf("effect %+v: want a cause and the order id", e)
				}
				if e.Kind == ipn.EffectShopCallback && (!strings.HasPrefix(e.Cause, "event/") || e.Event == nil) {
					t.Errorf("shop callback %+v: want cause event/<key> and the event", e)
				}
				if e.Template == ipn.TemplatePaymentReceived && e.Cause != "ORDER-D/paid/payment_received" {
					t.Errorf("payment_received cause %q", e.Cause)
				}
			}
		})
	}
	t.Run("other events and events without an order", func(t *testing.T) {
		o, effects := ipn.Apply(nil, &ipn.Event{Type: ipn.TypeOther, OrderID: "X"}, ipn.ApplyContext{})
		if o.ID != "" || effects != nil {
			t.Errorf("other on no order: %+v %v, want the zero order", o, effects)
		}
		o, effects = ipn.Apply(nil, modified(usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "1.00"), func(e *ipn.Event) { e.OrderID = "" }), ipn.ApplyContext{})
		if o.ID != "" || effects != nil {
			t.Errorf("no order id: %+v %v, want the zero order", o, effects)
		}
		reg := mustRegister(t, "ORDER-D", "19.99", "USD")
		o, effects = ipn.Apply(reg, &ipn.Event{Type: ipn.TypeOther, OrderID: "ORDER-D", TxnID: "X"}, ipn.ApplyContext{})
		if string(mustJSON(t, o)) != string(mustJSON(t, *reg)) || effects != nil {
			t.Errorf("other changed the order or queued %v", effects)
		}
	})
	t.Run("no customer email", func(t *testing.T) {
		a := newApplier(t, nil)
		ev := usd(ipn.TypePayment, ipn.StatusCompleted, "P1", "", "1.00")
		ev.CustomerEmail = ""
		effects := a.apply(ev)
		if got := templates(effects); !slices.Equal(got, []string{ipn.EffectShopCallback + ":"}) {
			t.Errorf("effects %v, want only the shop callback", got)
		}
	})
}

func TestApplyHistory(t *testing.T) {
	a := newApplier(t, mustRegister(t, "ORDER-D", "19.99", "USD"))
	steps := []struct {
		ev     *ipn.Event
		to     ipn.OrderStatus
		reason string
	}{
		{usd(ipn.TypePayment, ipn.StatusPending, "TXN1", "", "19.99"), ipn.OrderPending, "payment TXN1 pending 19.99 USD"},
		{usd(ipn.TypePayment, ipn.StatusCompleted, "TXN1", "", "19.99"), ipn.OrderPaid, "payment TXN1 completed 19.99 USD; paid 19.99 USD"},
		{modified(usd(ipn.TypePayment, ipn.StatusDenied, "TXN1", "", "19.99"), func(e *ipn.Event) { e.Flags = ipn.FlagManual }), ipn.OrderPaid, "payment TXN1 denied 19.99 USD [manual]; no change"},
		{usd(ipn.TypeRefund, ipn.StatusRefunded, "TXN2", "TXN1", "-5.00"), ipn.OrderPartiallyRefunded, "refund TXN2 of TXN1 5.00 USD; refunded 5.00 USD"},
		{usd(ipn.TypeReversal, ipn.StatusReversed, "TXN3", "TXN1", "-19.99"), ipn.OrderReversed, "reversal TXN3 of TXN1 19.99 USD"},
		{usd(ipn.TypeReversalCanceled, ipn.StatusCompleted, "TXN4", "TXN1", "19.99"), ipn.OrderPartiallyRefunded, "reversal_canceled TXN4 of TXN1 completed 19.99 USD"},
		{usd(ipn.TypePayment, ipn.StatusCompleted, "TXN5", "", "19.99"), ipn.OrderReview, "payment TXN5 completed 19.99 USD; paid 39.98 USD; review: double_payment"},
	}
	for _, s := range steps {
		a.apply(s.ev)
	}
	h := a.order.History
	if len(h) != len(steps)+1 {
		t.Fatalf("%d history entries, want %d:\n%s", len(h), len(steps)+1, historyText(a.order))
	}
	if h[0].From != "" || h[0].To != ipn.OrderAwaitingPayment || h[0].Reason != "registered: expecting 19.99 USD" {
		t.Errorf("history[0] = %+v", h[0])
	}
	prev := ipn.OrderAwaitingPayment
	for i, s := range steps {
		got := h[i+1]
		if got.From != prev || got.To != s.to || got.Reason != s.reason || got.Notification != uint64(i+1) || !got.At.Equal(applyT0.Add(time.Duration(i+1)*time.Minute)) {
			t.Errorf("history[%d] = %+v, want %s -> %s %q (notification %d)", i+1, got, prev, s.to, s.reason, i+1)
		}
		prev = s.to
	}
}

// ---- registration ---------------------------------------------------------

func TestNewRegisteredOrder(t *testing.T) {
	bad := []struct {
		name                               string
		id, amount, currency, email, descr string
		meta                               map[string]string
		field                              string
	}{
		{"empty id", "", "1.00", "USD", "a@b.c", "", nil, "id"},
		{"id too long", strings.Repeat("x", ipn.MaxOrderIDLen+1), "1.00", "USD", "a@b.c", "", nil, "id"},
		{"id with a newline", "A\nB", "1.00", "USD", "a@b.c", "", nil, "id"},
		{"id with a trailing space", "A1 ", "1.00", "USD", "a@b.c", "", nil, "id"},
		{"id not UTF-8", "A\xff", "1.00", "USD", "a@b.c", "", nil, "id"},
		{"currency too short", "A1", "1.00", "US", "a@b.c", "", nil, "currency"},
		{"currency too long", "A1", "1.00", "USDTTT", "a@b.c", "", nil, "currency"},
		{"currency with a digit", "A1", "1.00", "US1", "a@b.c", "", nil, "currency"},
		{"amount zero", "A1", "0.00", "USD", "a@b.c", "", nil, "amount"},
		{"amount negative", "A1", "-1.00", "USD", "a@b.c", "", nil, "amount"},
		{"amount with an exponent", "A1", "1e3", "USD", "a@b.c", "", nil, "amount"},
		{"amount with too many digits", "A1", "1.999", "USD", "a@b.c", "", nil, "amount"},
		{"JPY amount with cents", "A1", "1999.5", "JPY", "a@b.c", "", nil, "amount"},
		{"amount empty", "A1", "", "USD", "a@b.c", "", nil, "amount"},
		{"amount text", "A1", "ten", "USD", "a@b.c", "", nil, "amount"},
		{"email without @", "A1", "1.00", "USD", "buyer.example.com", "", nil, "customer_email"},
		{"email empty", "A1", "1.00", "USD", "", "", nil, "customer_email"},
		{"email with a space", "A1", "1.00", "USD", "a b@c.d", "", nil, "customer_email"},
		{"email without a domain", "A1", "1.00", "USD", "buyer@", "", nil, "customer_email"},
		{"description not UTF-8", "A1", "1.00", "USD", "a@b.c", "\xff", nil, "description"},
		{"metadata with an empty key", "A1", "1.00", "USD", "a@b.c", "", map[string]string{"": "x"}, "metadata"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ipn.NewRegisteredOrder(tc.id, tc.amount, tc.currency, tc.email, tc.descr, tc.meta, applyT0)
			var fe *ipn.FieldError
			if !errors.Is(err, ipn.ErrMalformed) || !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("NewRegisteredOrder(%q, %q, %q, %q) = %v, want a malformed %s", tc.id, tc.amount, tc.currency, tc.email, err, tc.field)
			}
		})
	}
	good := []struct {
		amount, currency     string
		wantAmount, wantZero string
		wantCurrency         string
	}{
		{"19.9", "usd", "19.90", "0.00", "USD"},
		{"1999", "JPY", "1999", "0", "JPY"},
		{"1.25", "KWD", "1.250", "0.000", "KWD"},
		{"0.00012", "btc", "0.00012000", "0.00000000", "BTC"},
		{"5", "USDC", "5.000000", "0.000000", "USDC"},
	}
	for _, tc := range good {
		meta := map[string]string{"sku": "A-1"}
		o, err := ipn.NewRegisteredOrder("ORDER-1", tc.amount, tc.currency, "buyer@example.com", "A book", meta, applyT0)
		if err != nil {
			t.Fatalf("NewRegisteredOrder(%q, %q): %v", tc.amount, tc.currency, err)
		}
		if o.Amount != tc.wantAmount || o.Currency != tc.wantCurrency || o.Paid != tc.wantZero || o.Refunded != tc.wantZero ||
			o.Status != ipn.OrderAwaitingPayment || !o.Registered || o.ID != "ORDER-1" || o.CustomerEmail != "buyer@example.com" ||
			o.Description != "A book" || o.Metadata["sku"] != "A-1" || !o.CreatedAt.Equal(applyT0) || len(o.History) != 1 {
			t.Errorf("NewRegisteredOrder(%q, %q) = %+v", tc.amount, tc.currency, o)
		}
		meta["sku"] = "changed"
		if o.Metadata["sku"] != "A-1" {
			t.Errorf("the order shares the caller's metadata map")
		}
	}
}

// ---- fuzzing -------------------------------------------------------------

var (
	fuzzTypes = []ipn.EventType{ipn.TypePayment, ipn.TypeRefund, ipn.TypeReversal, ipn.TypeReversalCanceled, ipn.TypeDispute,
		ipn.TypeSubscriptionStarted, ipn.TypeSubscriptionPayment, ipn.TypeSubscriptionCanceled, ipn.TypeSubscriptionExpired,
		ipn.TypeOther, "bogus"}
	fuzzStatuses = []ipn.EventStatus{ipn.StatusPending, ipn.StatusCompleted, ipn.StatusFailed, ipn.StatusDenied,
		ipn.StatusRefunded, ipn.StatusReversed, ipn.StatusCanceled, ipn.StatusExpired, ""}
	fuzzTxns       = []string{"", "T1", "T2", "T3", "CH1"}
	fuzzCurrencies = []string{"USD", "JPY", "KWD", "BTC", "", "usd", "EUR", "ETH"}
)

// fuzzAmount makes an amount string from two bytes: mostly a decimal with
// 0 to 4 fraction digits, sometimes negative, sometimes junk.
func fuzzAmount(b0, b1 byte) string {
	switch b1 >> 5 {
	case 7:
		return []string{"", "1e3", "abc", "-", ".5", "1.", "0", "99999999999999999999999999999999999999"}[b0%8]
	}
	v := int(b0) | int(b1&0x0f)<<8
	s := strconv.Itoa(v)
	if d := int(b1>>4) % 5; d > 0 {
		for len(s) <= d {
			s = "0" + s
		}
		s = s[:len(s)-d] + "." + s[len(s)-d:]
	}
	if b1&0x10 != 0 && b1&0x20 != 0 {
		s = "-" + s
	}
	return s
}

// fuzzEvents decodes an event sequence: 6 bytes per event.
func fuzzEvents(data []byte) []*ipn.Event {
	var out []*ipn.Event
	for len(data) >= 6 && len(out) < 64 {
		b := data[:6]
		data = data[6:]
		ev := &ipn.Event{
			Type:          fuzzTypes[int(b[0])%len(fuzzTypes)],
			Status:        fuzzStatuses[int(b[1])%len(fuzzStatuses)],
			TxnID:         fuzzTxns[int(b[2]&0x0f)%len(fuzzTxns)],
			ParentTxnID:   fuzzTxns[int(b[2]>>4)%len(fuzzTxns)],
			OrderID:       "FZ-1",
			Amount:        fuzzAmount(b[3], b[4]),
			Currency:      fuzzCurrencies[int(b[5]&0x07)%len(fuzzCurrencies)],
			CustomerEmail: "buyer@example.com",
			Test:          b[5]&0x40 != 0 && b[5]&0x20 != 0,
		}
		if b[5]&0x08 != 0 {
			ev.Receiver = "other@example.com"
		}
		if b[0]&0x80 != 0 {
			ev.SubscriptionID = "S1"
		}
		out = append(out, ev)
	}
	return out
}

func FuzzApply(f *testing.F) {
	seed := func(events ...[6]byte) []byte {
		var b []byte
		for _, e := range events {
			b = append(b, e[:]...)
		}
		return b
	}
	f.Add(byte(0), seed([6]byte{0, 1, 1, 0x07, 0x27, 0}, [6]byte{1, 4, 0x12, 0xf4, 0x31, 0}))
	f.Add(byte(1), seed([6]byte{0, 1, 1, 0xcf, 0x27, 0}, [6]byte{0, 1, 2, 0xcf, 0x27, 0}, [6]byte{2, 5, 0x13, 1, 1, 0}))
	f.Add(byte(3), seed([6]byte{0, 0, 1, 5, 0, 1}, [6]byte{0, 1, 1, 5, 0, 2}, [6]byte{1, 4, 4, 9, 0, 3}, [6]byte{4, 0, 3, 1, 0, 0x68}))
	f.Add(byte(2), binary.BigEndian.AppendUint64(nil, 0x0102030405060708))
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		var start *ipn.Order
		if mode&1 != 0 {
			start = mustRegister(t, "FZ-1", "20", []string{"USD", "JPY", "KWD", "BTC"}[mode>>1&3])
		}
		a := newApplier(t, start)
		a.useKeys = mode&8 == 0
		a.ctx = func(ac *ipn.ApplyContext) {
			ac.Sandbox = mode&16 != 0
			if mode&32 != 0 {
				ac.Receivers = []string{"shop@example.com"}
			}
		}
		events := fuzzEvents(data)
		for i, ev := range events {
			var prev ipn.Order
			if a.order != nil {
				prev = *a.order
			}
			a.apply(ev)
			if i%3 == 2 { // and an earlier one again
				a.apply(events[int(data[i])%(i+1)])
			}
			o := a.order
			if o == nil {
				continue
			}
			if !slices.Contains(ipn.OrderStatuses, o.Status) {
				t.Fatalf("status %q is not an order status", o.Status)
			}
			for name, v := range map[string]string{"paid": o.Paid, "refunded": o.Refunded} {
				norm, err := ipn.NormalizeAmount(v, o.Currency)
				if err != nil || norm != v || strings.HasPrefix(v, "-") {
					t.Fatalf("%s = %q (%s): not a canonical non-negative exact decimal (%v)", name, v, o.Currency, err)
				}
			}
			if !slices.IsSorted(o.Flags) || len(slices.Compact(slices.Clone(o.Flags))) != len(o.Flags) {
				t.Fatalf("flags %v not sorted and distinct", o.Flags)
			}
			for _, fl := range prev.Flags {
				if !slices.Contains(o.Flags, fl) {
					t.Fatalf("flag %s disappeared: %v -> %v", fl, prev.Flags, o.Flags)
				}
			}
			if (len(o.Flags) > 0) != (o.Status == ipn.OrderReview) {
				t.Fatalf("status %s with flags %v", o.Status, o.Flags)
			}
		}
	})
}

// A payment refused for its receiver counts once the merchant fixed the
// configuration and replayed it; the order stays in review (flags are
// never removed), with the payment in its total.
func TestRefusedFactCountsAfterReplay(t *testing.T) {
	o := mustRegister(t, "ORDER-R", "19.99", "USD")
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T1", OrderID: "ORDER-R",
		Amount: "19.99", Currency: "USD", Receiver: "shop@example.com"}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	ac := ipn.ApplyContext{Now: now, Notification: 1, Gateway: "g", EventKey: ipn.EventKey("g", ev), Receivers: []string{"old@example.com"}}
	refused, first := ipn.Apply(o, ev, ac)
	if refused.Paid != "0.00" || !slices.Contains(refused.Flags, ipn.FlagReceiverMismatch) {
		t.Fatalf("refused: paid %s flags %v", refused.Paid, refused.Flags)
	}
	ac.Receivers = nil // fixed: the receiver is checked and passes
	again, replayed := ipn.Apply(&refused, ev, ac)
	if again.Paid != "19.99" || again.Status != ipn.OrderReview || len(again.Facts) != 1 {
		t.Errorf("after the replay: %s paid %s, %d facts; want review with 19.99 paid, one fact", again.Status, again.Paid, len(again.Facts))
	}
	// The shop hears of the paid total: a callback whose cause is not the
	// refused copy's (the outbox queues a cause once).
	causes := map[string]bool{}
	for _, e := range first {
		causes[e.Cause] = true
	}
	callback := false
	for _, e := range replayed {
		if causes[e.Cause] {
			t.Errorf("the replay queued %s %s under the refused copy's cause %q: the outbox drops it", e.Kind, e.Template, e.Cause)
		}
		callback = callback || e.Kind == ipn.EffectShopCallback
	}
	if !callback {
		t.Errorf("no callback for the counted payment: %v", templates(replayed))
	}
	if same, eff := ipn.Apply(&again, ev, ac); same.Paid != "19.99" || len(eff) != 0 {
		t.Errorf("a third time: paid %s, %d effects", same.Paid, len(eff))
	}
}

// A live payment on a test order makes it a real order: the merchant can
// no longer delete it (with the payment's record) as a test order.
func TestLivePaymentMakesTestOrderReal(t *testing.T) {
	test := modified(usd(ipn.TypePayment, ipn.StatusPending, "T1", "", "5.00"), func(e *ipn.Event) { e.Test = true })
	ac := ipn.ApplyContext{Now: applyT0, Notification: 1, Gateway: "sandbox", Sandbox: true, EventKey: ipn.EventKey("sandbox", test)}
	o, _ := ipn.Apply(nil, test, ac)
	if !o.Test {
		t.Fatalf("a sandbox test payment made a real order: %+v", o)
	}
	// Another test event keeps it a test order.
	test2 := modified(usd(ipn.TypePayment, ipn.StatusCompleted, "T1", "", "5.00"), func(e *ipn.Event) { e.Test = true })
	ac2 := ac
	ac2.Notification, ac2.EventKey = 2, ipn.EventKey("sandbox", test2)
	if o2, _ := ipn.Apply(&o, test2, ac2); !o2.Test {
		t.Fatal("a second sandbox test event made the order real")
	}
	live := usd(ipn.TypePayment, ipn.StatusCompleted, "L1", "", "5.00")
	live.OrderID = o.ID
	lac := ipn.ApplyContext{Now: applyT0.Add(time.Minute), Notification: 3, Gateway: "live", EventKey: ipn.EventKey("live", live)}
	o3, _ := ipn.Apply(&o, live, lac)
	if o3.Test {
		t.Fatalf("a live payment left the order a test order: %+v", o3)
	}
}
