package ipn

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"
)

// keptOrder keeps an order the way the store does (facts, history and
// tally records apart, the one-off index) and applies events with
// ApplyState, handing it only the records TallyKeys names.
type keptOrder struct {
	order   *Order
	tally   Tally
	facts   map[uint64]OrderFact
	keys    map[string]uint64
	groups  map[string]Group
	index   map[string]string // OneOffKey -> group key
	history []OrderChange
	read    int // records handed to ApplyState in the last step
}

func newKeptOrder(start *Order) *keptOrder {
	k := &keptOrder{facts: map[uint64]OrderFact{}, keys: map[string]uint64{}, groups: map[string]Group{}, index: map[string]string{}}
	if start != nil {
		h := header(*start)
		k.order = &h
	}
	return k
}

func (k *keptOrder) allFacts() []OrderFact {
	seqs := make([]uint64, 0, len(k.facts))
	for s := range k.facts {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	out := make([]OrderFact, 0, len(seqs))
	for _, s := range seqs {
		out = append(out, k.facts[s])
	}
	return out
}

func (k *keptOrder) smallest() []OneOff {
	ks := make([]string, 0, len(k.index))
	for ik := range k.index {
		ks = append(ks, ik)
	}
	sort.Slice(ks, func(i, j int) bool { return bytes.Compare([]byte(ks[i]), []byte(ks[j])) < 0 })
	var out []OneOff
	for _, ik := range ks[:min(2, len(ks))] {
		g := k.index[ik]
		a, _ := OneOffAmount(g, k.groups[g])
		out = append(out, OneOff{Group: g, Amount: a})
	}
	return out
}

func (k *keptOrder) setIndex(registered bool, key string, old, g Group) {
	if !registered {
		return // as the store: only a registered order needs the index
	}
	if a, ok := OneOffAmount(key, old); ok {
		delete(k.index, string(OneOffKey(a, key)))
	}
	if a, ok := OneOffAmount(key, g); ok {
		k.index[string(OneOffKey(a, key))] = key
	}
}

func (k *keptOrder) apply(ev *Event, ac ApplyContext) (Order, *OrderWrite, []Effect) {
	var st *OrderState
	k.read = 0
	if k.order != nil {
		st = &OrderState{Tally: k.tally}
		if seq, ok := k.keys[FactKey(k.order.ID, ev, ac)]; ok {
			f := k.facts[seq]
			st.Fact, st.FactSeq = &f, seq
		}
		have := map[string]Group{}
		for {
			names, full := TallyKeys(k.order, ev, ac, st.Fact, have)
			if full {
				st.Full, st.All = true, k.allFacts()
				k.read = len(st.All)
				break
			}
			if len(names) == 0 {
				st.Groups = have
				break
			}
			for _, n := range names {
				have[n] = k.groups[n]
				k.read++
			}
		}
		st.Smallest = k.smallest()
	}
	next, w, effects := ApplyState(k.order, st, ev, ac)
	if w == nil {
		return next, nil, effects
	}
	if w.Replaces {
		delete(k.facts, st.FactSeq)
	}
	k.facts[w.FactSeq] = w.Fact
	k.keys[w.Fact.Key] = w.FactSeq
	k.history = append(k.history, w.Change)
	if w.Full {
		k.groups, k.index = map[string]Group{}, map[string]string{}
	}
	for key, g := range w.Groups {
		k.setIndex(next.Registered, key, k.groups[key], g)
		if g == (Group{}) {
			delete(k.groups, key)
		} else {
			k.groups[key] = g
		}
	}
	k.tally = w.Tally
	k.order = &next
	return next, w, effects
}

// full is the order with its facts, history and txn ids, as Apply keeps it.
func (k *keptOrder) full() Order {
	o := *k.order
	o.Facts, o.History = k.allFacts(), slices.Clone(k.history)
	o.TxnIDs = TxnIDs(o.Facts)
	return o
}

// genTallyEvent returns a random event over small sets of ids, amounts
// and currencies, so that facts collide in every way the tally groups
// them.
func genTallyEvent(r *rand.Rand) *Event {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	types := []EventType{TypePayment, TypePayment, TypeSubscriptionPayment, TypeRefund, TypeRefund, TypeReversal,
		TypeReversalCanceled, TypeDispute, TypeDispute, TypeSubscriptionStarted, TypeSubscriptionCanceled, TypeSubscriptionExpired, TypeOther}
	statuses := []EventStatus{StatusCompleted, StatusCompleted, StatusPending, StatusFailed, StatusDenied, StatusRefunded,
		StatusReversed, StatusCanceled, StatusExpired, ""}
	ev := &Event{
		Type:           types[r.IntN(len(types))],
		Status:         statuses[r.IntN(len(statuses))],
		TxnID:          pick("T1", "T2", "T3", "T4", ""),
		ParentTxnID:    pick("", "", "T1", "T2"),
		OrderID:        "O1",
		Amount:         pick("20.00", "20", "10.00", "-10.00", "5.5", "0", "0.001", "", "x", "30.00", "1"),
		Currency:       pick("USD", "USD", "USD", "", "EUR", "JPY"),
		SubscriptionID: pick("", "", "S1", "S2"),
		Receiver:       pick("shop@example.com", "other@example.com"),
		Test:           r.IntN(8) == 0,
		Flags:          pick("", "", "underpaid"),
	}
	if ev.Type == TypeDispute {
		// A dispute is about one payment: the tally takes its subject
		// from its first fact, so facts of one dispute name the same.
		ev.ParentTxnID = map[string]string{"T1": "T2", "T2": "", "T3": "T1", "T4": "T1", "": "T2"}[ev.TxnID]
	}
	if ev.Type == TypeRefund && r.IntN(2) == 0 {
		// Stripe's running total, with or without the refund's own amount
		// (same currency for the same total: see the tally's "R" record).
		ev.RefundedTotal, ev.Currency = pick("10.00", "20.00", "25.00", "5"), "USD"
		if r.IntN(2) == 0 {
			ev.Amount = ""
		}
	}
	return ev
}

// TestTallyMatchesRetally: applying random fact sequences with only the
// records TallyKeys names (as the store does) ends each step in the
// state the full re-tally of every fact gives (summarize, the code
// before the tally was kept), with the same history and effects as
// Apply on an order holding its facts.
func TestTallyMatchesRetally(t *testing.T) {
	for seed := range uint64(600) {
		r := rand.New(rand.NewPCG(seed, 19))
		checkTallySequence(t, r, fmt.Sprintf("seed %d", seed))
	}
}

// FuzzTally is TestTallyMatchesRetally with the sequence drawn from the
// fuzzer's seed.
func FuzzTally(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(77), uint64(5))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		checkTallySequence(t, rand.New(rand.NewPCG(a, b)), fmt.Sprintf("seed %d,%d", a, b))
	})
}

func checkTallySequence(t *testing.T, r *rand.Rand, label string) {
	t.Helper()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var start *Order
	switch r.IntN(3) {
	case 0:
		start = &Order{ID: "O1", Status: OrderAwaitingPayment, Registered: true, Amount: "20.00", Currency: "USD",
			Paid: "0.00", Refunded: "0.00", Flags: []string{}, TxnIDs: []string{}, CreatedAt: t0, UpdatedAt: t0}
	case 1:
		start = &Order{ID: "O1", Status: OrderAwaitingPayment, Registered: true, Amount: "100", Currency: "JPY",
			Paid: "0", Refunded: "0", Flags: []string{}, TxnIDs: []string{}, CreatedAt: t0, UpdatedAt: t0}
	}
	kept := newKeptOrder(start)
	mem := start
	useKeys, sandbox := r.IntN(2) == 0, r.IntN(3) == 0
	var events []*Event
	n := 1 + r.IntN(30)
	for i := range n {
		var ev *Event
		if len(events) > 0 && r.IntN(4) == 0 {
			ev = events[r.IntN(len(events))] // the same fact again (or replayed)
		} else {
			ev = genTallyEvent(r)
			events = append(events, ev)
		}
		ac := ApplyContext{Now: t0.Add(time.Duration(i) * time.Minute), Notification: uint64(i + 1), Gateway: "gw", Sandbox: sandbox}
		if useKeys {
			ac.EventKey = EventKey("gw", ev)
		}
		if r.IntN(3) == 0 {
			ac.Receivers = []string{"shop@example.com"}
		}
		step := fmt.Sprintf("%s step %d (%+v)", label, i, *ev)
		var prevFlags []string
		if kept.order != nil {
			prevFlags = slices.Clone(kept.order.Flags)
		}
		got, w, gotEffects := kept.apply(ev, ac)
		want, wantEffects := Apply(mem, ev, ac)
		if want.ID != "" {
			mem = &want
		}
		if kept.order == nil {
			if got.ID != "" || want.ID != "" {
				t.Fatalf("%s: no order kept, yet %q / %q", step, got.ID, want.ID)
			}
			continue
		}
		full := kept.full()
		if a, b := mustText(t, full), mustText(t, want); a != b {
			t.Fatalf("%s: kept apart:\n%s\nheld in the order (Apply):\n%s", step, a, b)
		}
		if a, b := mustText(t, gotEffects), mustText(t, wantEffects); a != b {
			t.Fatalf("%s: effects kept apart:\n%s\nheld in the order:\n%s", step, a, b)
		}
		if w == nil {
			continue
		}
		// The reference: every fact tallied again, with the flags the
		// order had before this step (as Apply did before the tally).
		ref := full
		ref.Flags = prevFlags
		s := summarize(&ref)
		if s.status != got.Status || formatAmount(s.paid, got.Currency) != got.Paid ||
			formatAmount(s.refunded, got.Currency) != got.Refunded || !slices.Equal(s.flags, got.Flags) ||
			!slices.Equal(s.txnIDs, full.TxnIDs) {
			t.Fatalf("%s: incremental %s paid %s refunded %s flags %v txns %v; re-tally %s paid %s refunded %s flags %v txns %v\nfacts %+v",
				step, got.Status, got.Paid, got.Refunded, got.Flags, full.TxnIDs,
				s.status, formatAmount(s.paid, got.Currency), formatAmount(s.refunded, got.Currency), s.flags, s.txnIDs, full.Facts)
		}
		var open []string
		for key, g := range kept.groups {
			if key[0] != kindParent {
				continue
			}
			parent := key[1:]
			if g.Standing > g.Anonymous {
				open = append(open, openReversal+parent)
			}
			if g.Cancels == 0 {
				for _, id := range listItems(g.Disputes) {
					open = append(open, openDispute+id)
				}
			}
		}
		slices.Sort(open)
		if want := tallyFacts(&ref).open(); !slices.Equal(open, want) {
			t.Fatalf("%s: open %q, re-tally %q", step, open, want)
		}
		if !w.Full && kept.read > 16 {
			t.Fatalf("%s: %d records read for one event", step, kept.read)
		}
	}
}

func mustText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTallyLongOrder: the records applying an event reads do not grow
// with the order's facts (10,000 monthly payments of one subscription).
func TestTallyLongOrder(t *testing.T) {
	kept := newKeptOrder(nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10_000 {
		ev := &Event{Type: TypeSubscriptionPayment, Status: StatusCompleted, TxnID: fmt.Sprintf("T%d", i), OrderID: "SUB-1",
			Amount: "9.99", Currency: "USD", SubscriptionID: "S1"}
		_, w, _ := kept.apply(ev, ApplyContext{Now: t0.Add(time.Duration(i) * time.Hour), Notification: uint64(i + 1), Gateway: "gw",
			EventKey: EventKey("gw", ev)})
		if w == nil || w.Full || kept.read > 6 || len(w.Groups) > 6 {
			t.Fatalf("event %d: write %v, %d records read", i, w != nil, kept.read)
		}
	}
	if o := kept.order; o.Paid != "99900.00" || o.Status != OrderPaid || o.Changes != 10_000 {
		t.Fatalf("%s paid %s changes %d", o.Status, o.Paid, o.Changes)
	}
}
