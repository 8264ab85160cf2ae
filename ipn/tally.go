package ipn

import (
	"cmp"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/cockroachdb/apd/v3"
)

// An order's running tally: what its facts add up to, kept so that
// applying the n-th event reads and writes a few small records, not the
// n-1 facts before it. The store keeps the facts and the history in
// keyed spaces of their own (appended, read in order) and, per order:
//
//   - the Tally, stored with the order: counts and sums that give the
//     status and totals at once, the statuses the history reached, the
//     numbers of facts and history entries;
//   - one Group record per key TallyKeys names: a payment group per txn
//     id, a refund group, a reversal parent and its reversal and
//     cancellation ids, a dispute, a subscription's facts of one type, a
//     dispute or reversal opening, the refunds of one payment;
//   - for a registered order, an index of the counted one-off payments by
//     amount (OneOffKey), of which the store hands the two smallest
//     (State.Smallest) for the double payment check (an order not
//     registered needs only their number).
//
// Each record counts facts, so that a fact removed (a refused fact
// replayed after the merchant fixed the configuration) is taken out
// exactly. The result is the same as summing every fact again
// (tallyFacts and summarize in summary.go, kept as the reference the
// tests compare with).

// Group is one record of an order's tally. Which fields mean something
// depends on the key's kind (the first byte of the key, see TallyKeys).
// The zero Group is a record that does not exist.
type Group struct {
	Facts int `json:"n,omitempty"` // facts in the record (every kind)
	// Payment group ("p"): facts of type payment (one-off) and by status.
	Payments  int `json:"payments,omitempty"`
	Completed int `json:"completed,omitempty"`
	Counted   int `json:"counted,omitempty"` // completed facts that count towards the totals
	Pending   int `json:"pending,omitempty"`
	Failed    int `json:"failed,omitempty"`
	Canceled  int `json:"canceled,omitempty"`
	// Amount: a payment group's largest counted completed amount ("" is
	// zero); a refund group's ("r") largest counted refund ("": none).
	Amount string `json:"amount,omitempty"`
	// A payment's reversals ("v", by parent txn id; see tally.open):
	// Standing counts its reversal ids neither cancelled under the same id
	// nor taken back by a won dispute of that id, Anonymous its
	// cancellation ids that match no reversal id, Cancels its distinct
	// cancellation ids; Disputes lists the ids of its disputes opened and
	// neither won nor lost (open while it has no cancellation).
	Standing  int    `json:"standing,omitempty"`
	Anonymous int    `json:"anonymous,omitempty"`
	Cancels   int    `json:"cancels,omitempty"`
	Disputes  string `json:"disputes,omitempty"` // a list (see listSet)
	// Reversal id ("M"): the payments it reverses (a list).
	Parents string `json:"parents,omitempty"`
	// Dispute ("d"): the payment it is about (from its first fact), its
	// opening, won and lost facts.
	Subject string `json:"subject,omitempty"`
	Opened  int    `json:"opened,omitempty"`
	Won     int    `json:"won,omitempty"`
	Lost    int    `json:"lost,omitempty"`
}

// Tally is an order's running totals, stored with the order.
type Tally struct {
	// NextFact numbers the next fact (facts are kept by this sequence,
	// in the order they were applied).
	NextFact uint64 `json:"next_fact"`
	// Reached lists the statuses the order's history reached, sorted.
	Reached []OrderStatus `json:"reached,omitempty"`
	// Payment groups by what they are: completed, else failed, else
	// canceled, else pending.
	Completed int    `json:"completed,omitempty"`
	Failed    int    `json:"failed,omitempty"`
	Canceled  int    `json:"canceled,omitempty"`
	Pending   int    `json:"pending,omitempty"`
	Paid      string `json:"paid,omitempty"`     // exact sum of the counted payment groups ("" zero)
	Refunded  string `json:"refunded,omitempty"` // exact sum of the refund groups ("" zero)
	// OneOffs and OneOffSum: counted, completed one-off payment groups.
	OneOffs   int    `json:"one_offs,omitempty"`
	OneOffSum string `json:"one_off_sum,omitempty"`
	Reversed  int    `json:"reversed,omitempty"` // payments with outstanding reversals (Standing > Anonymous)
	Lost      int    `json:"lost,omitempty"`     // disputes lost
	Open      int    `json:"open,omitempty"`     // open disputes (see tally.open)
}

// OneOff is an entry of the index of counted one-off payments.
type OneOff struct {
	Group  string // its payment group's key
	Amount string
}

// OrderState is what the store holds of an order that applying one
// event reads: looked up by FactKey and TallyKeys.
type OrderState struct {
	Tally Tally
	// Fact is the fact already kept under the event's key (FactKey), nil
	// when none is; FactSeq is its sequence number.
	Fact    *OrderFact
	FactSeq uint64
	// Groups holds the records TallyKeys named; one missing is the zero
	// Group.
	Groups map[string]Group
	// Smallest: the two smallest entries of the one-off payment index.
	Smallest []OneOff
	// Full: TallyKeys asked for every fact (the order learns its
	// currency, and its facts are read again in it); All holds them in
	// order. The tally is then built again from them.
	Full bool
	All  []OrderFact
}

// OrderWrite is what applying one event writes besides the order itself.
type OrderWrite struct {
	Tally Tally
	// Fact is appended under FactSeq (Tally.NextFact-1); when Replaces,
	// the fact of the same key before (OrderState.FactSeq) is removed.
	Fact     OrderFact
	FactSeq  uint64
	Replaces bool
	// Change is the history entry appended (the order's Changes-th).
	Change OrderChange
	// Groups are the records that changed (a zero Group: delete it);
	// Full: they are every record of the order, which replace the ones
	// stored (and the one-off index is built again from them).
	Groups map[string]Group
	Full   bool
}

// Tally record kinds (the first byte of a key).
const (
	kindPay      = 'p'
	kindRefund   = 'r'
	kindRefundOf = 'R' // refunds of one payment (txn id): the largest refundOf, for RefundAmount
	kindParent   = 'v'
	kindRevIndex = 'M' // reversal id -> the payments it reverses
	kindReversal = 'm'
	kindCancel   = 'c'
	kindDispute  = 'd'
	kindSubSeen  = 's'
	kindOpenSeen = 'o'
)

// groupKey joins a kind and its parts; every part but the last is
// length-prefixed, so that no two keys collide.
func groupKey(kind byte, parts ...string) string {
	b := []byte{kind}
	for i, p := range parts {
		if i < len(parts)-1 {
			b = binary.AppendUvarint(b, uint64(len(p)))
		}
		b = append(b, p...)
	}
	return string(b)
}

// FactKey returns the key the fact ev reports is kept under in order
// orderID: ac.EventKey, or one derived from the event's content.
func FactKey(orderID string, ev *Event, ac ApplyContext) string { return factKey(orderID, ev, ac) }

// TallyKeys returns the tally records applying ev to order o (nil: a
// new one) reads that are not in have, given the fact already kept under
// its key (nil when none is) and the records read so far (have: a
// missing one is the zero Group); and whether it reads every fact of the
// order instead (full: the order learns its currency from ev). Which
// records it reads may depend on what the ones before hold (a dispute
// names the payment it is about), so the store calls it again with what
// it read until it names none.
func TallyKeys(o *Order, ev *Event, ac ApplyContext, old *OrderFact, have map[string]Group) (keys []string, full bool) {
	if o == nil {
		return nil, false
	}
	if o.Currency == "" && ev.Currency != "" {
		return nil, true
	}
	// What ApplyState does, on what was read so far.
	x := newTallier(o.Currency, Tally{}, have)
	if old != nil {
		x.fact(*old, -1)
	}
	f := newFact(FactKey(o.ID, ev, ac), ev, ac, o.Currency, o.Test)
	x.seen(f)
	x.fact(f, 1)
	for k := range x.reads {
		if _, ok := have[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, false
}

// OneOffAmount returns the amount under which payment group g (of key
// k) is in the one-off index, and whether it is in it.
func OneOffAmount(k string, g Group) (string, bool) {
	if len(k) == 0 || k[0] != kindPay || g.Counted == 0 || g.Payments == 0 {
		return "", false
	}
	return cmp.Or(g.Amount, "0"), true
}

// OneOffKey is the index key of a one-off payment group: its amount in
// an encoding whose byte order is the amount's order, a NUL, the group's
// key.
func OneOffKey(amount, group string) []byte {
	d, ok := parseDecimal(amount, false)
	if !ok {
		d = zeroAmount()
	}
	d.Abs(d)
	r := new(apd.Decimal)
	r.Reduce(d)
	text := "0"
	if !r.IsZero() {
		if r.Exponent > 0 {
			decimalCtx.Quantize(r, r, 0)
		}
		text = r.Text('f')
	}
	whole, frac, _ := strings.Cut(text, ".")
	whole = strings.TrimLeft(whole, "0")
	b := append([]byte{byte(len(whole))}, whole...)
	b = append(b, frac...)
	b = append(b, 0)
	return append(b, group...)
}

// TxnIDs returns the distinct txn ids of facts, sorted (never nil).
func TxnIDs(facts []OrderFact) []string {
	out := []string{}
	for _, f := range facts {
		if f.TxnID != "" {
			out = append(out, f.TxnID)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tallier updates a tally and the records it reads.
type tallier struct {
	cur                       string
	t                         Tally
	base                      map[string]Group // as stored
	groups                    map[string]Group // changed
	reads                     map[string]bool  // every record read (for TallyKeys)
	paid, refunded, oneOffSum *apd.Decimal
	// watch, when set, records what was open about the order's money
	// ("reversal of P", "dispute D") and what is now (see ended), and
	// lost the disputes ("dispute D") a fact made lost that were not.
	watch map[string][2]bool
	lost  []string
}

func newTallier(cur string, t Tally, base map[string]Group) *tallier {
	x := &tallier{cur: cur, t: t, base: base, groups: map[string]Group{}, reads: map[string]bool{}}
	x.paid, x.refunded, x.oneOffSum = decimalOrZero(t.Paid), decimalOrZero(t.Refunded), decimalOrZero(t.OneOffSum)
	return x
}

func decimalOrZero(s string) *apd.Decimal {
	if d, ok := parseDecimal(s, true); ok {
		return d
	}
	return zeroAmount()
}

func (x *tallier) get(k string) Group {
	x.reads[k] = true
	if g, ok := x.groups[k]; ok {
		return g
	}
	return x.base[k]
}

// seen reports whether the tally holds a fact of f's type for the same
// subscription (of a subscription type), and an opening of the dispute
// or reversal f opens (same txn id).
func (x *tallier) seen(f OrderFact) (subscription, dispute bool) {
	if f.SubscriptionID != "" && isSubscriptionType(f.Type) {
		subscription = x.get(groupKey(kindSubSeen, string(f.Type), f.SubscriptionID)).Facts > 0
	}
	if f.TxnID != "" && (f.Type == TypeReversal || f.Type == TypeDispute && disputeOpening(f.Status)) {
		dispute = x.get(groupKey(kindOpenSeen, f.TxnID)).Facts > 0
	}
	return subscription, dispute
}

// tally returns the totals, their sums written out.
func (x *tallier) tally() Tally {
	t := x.t
	t.Paid, t.Refunded, t.OneOffSum = decimalText(x.paid), decimalText(x.refunded), decimalText(x.oneOffSum)
	return t
}

func decimalText(d *apd.Decimal) string {
	if d.IsZero() {
		return ""
	}
	return d.String()
}

// count adds d facts to the record k and reports whether it held any
// before and after.
func (x *tallier) count(k string, d int) (before, after bool) {
	g := x.get(k)
	before = g.Facts > 0
	g.Facts += d
	x.groups[k] = g
	return before, g.Facts > 0
}

// fact adds fact f to the tally (d = 1) or takes it out (d = -1; only
// facts that do not count towards the totals are taken out: a largest
// amount cannot be taken back).
func (x *tallier) fact(f OrderFact, d int) {
	if isSubscriptionType(f.Type) && f.SubscriptionID != "" {
		x.count(groupKey(kindSubSeen, string(f.Type), f.SubscriptionID), d)
	}
	if f.TxnID != "" && (f.Type == TypeReversal || f.Type == TypeDispute && disputeOpening(f.Status)) {
		x.count(groupKey(kindOpenSeen, f.TxnID), d)
	}
	counts := sameCurrency(f.Currency, x.cur) && len(f.Flags) == 0
	amt, amtErr := amountOf(f.Amount, cmp.Or(x.cur, f.Currency))
	if amtErr == nil {
		amt.Abs(amt)
	}
	id := cmp.Or(f.TxnID, "\x00"+f.Key)
	switch f.Type {
	case TypePayment, TypeSubscriptionPayment:
		k := groupKey(kindPay, id)
		old := x.get(k)
		g := old
		g.Facts += d
		if f.Type == TypePayment {
			g.Payments += d
		}
		switch f.Status {
		case StatusCompleted:
			g.Completed += d
			if counts {
				g.Counted += d
				if d > 0 && amtErr == nil && amt.Cmp(decimalOrZero(g.Amount)) > 0 {
					g.Amount = amt.String()
				}
			}
		case StatusPending:
			g.Pending += d
		case StatusFailed, StatusDenied, StatusExpired:
			g.Failed += d
		case StatusCanceled:
			g.Canceled += d
		}
		x.groups[k] = g
		x.payMoved(old, g)
	case TypeRefund:
		k := groupKey(kindRefund, id)
		old := x.get(k)
		g := old
		g.Facts += d
		if r := refundOf(f, x.cur); d > 0 && counts && r != nil && (f.Status == StatusRefunded || f.Status == StatusCompleted) &&
			(g.Amount == "" || r.Cmp(decimalOrZero(g.Amount)) > 0) {
			g.Amount = r.String()
			if old.Amount != "" {
				decimalCtx.Sub(x.refunded, x.refunded, decimalOrZero(old.Amount))
			}
			addAmount(x.refunded, r)
		}
		x.groups[k] = g
		if f.TxnID != "" && sameCurrency(f.Currency, x.cur) {
			// What RefundAmount reads: the largest refund of the payment,
			// of any status, flagged or not. A fact taken out is the
			// refused copy of one put back with the same amount and
			// total, so the largest stays.
			rk := groupKey(kindRefundOf, f.TxnID)
			rg := x.get(rk)
			rg.Facts += d
			if r := refundOf(f, x.cur); d > 0 && r != nil && r.Cmp(decimalOrZero(rg.Amount)) > 0 {
				rg.Amount = r.String()
			}
			x.groups[rk] = rg
		}
	case TypeReversal:
		parent := cmp.Or(f.ParentTxnID, f.TxnID)
		if before, after := x.count(groupKey(kindReversal, parent, id), d); before != after {
			x.reversalMember(parent, id, after)
		}
	case TypeReversalCanceled:
		parent := cmp.Or(f.ParentTxnID, f.TxnID)
		if before, after := x.count(groupKey(kindCancel, parent, id), d); before != after {
			x.cancelMember(parent, id, after)
		}
	case TypeDispute:
		did := cmp.Or(f.TxnID, f.ParentTxnID, "\x00"+f.Key)
		k := groupKey(kindDispute, did)
		old := x.get(k)
		g := old
		if g.Facts == 0 {
			g.Subject = cmp.Or(f.ParentTxnID, f.TxnID) // the first fact's
		}
		g.Facts += d
		switch {
		case disputeOpening(f.Status):
			g.Opened += d
		case f.Status == StatusReversed:
			g.Lost += d
		default:
			g.Won += d
		}
		if g.Facts == 0 {
			g = Group{}
		}
		x.groups[k] = g
		x.t.Lost += boolStep(old.Lost > 0, g.Lost > 0)
		if x.watch != nil && old.Lost == 0 && g.Lost > 0 {
			x.lost = append(x.lost, openDispute+did)
		}
		if (old.Won > 0) != (g.Won > 0) {
			x.wonChanged(did, g.Won > 0)
		}
		unresolved := func(g Group) bool { return g.Opened > 0 && g.Won == 0 && g.Lost == 0 }
		if unresolved(old) != unresolved(g) || old.Subject != g.Subject {
			if unresolved(old) {
				x.parentDispute(old.Subject, did, false)
			}
			if unresolved(g) {
				x.parentDispute(g.Subject, did, true)
			}
		}
	}
}

// reversalMember notes that payment parent has (present) or no longer
// has reversal id r.
func (x *tallier) reversalMember(parent, r string, present bool) {
	mk := groupKey(kindRevIndex, r)
	m := x.get(mk)
	m.Parents = listSet(m.Parents, parent, present)
	m.Facts = len(listItems(m.Parents))
	x.groups[mk] = m
	inC := x.get(groupKey(kindCancel, parent, r)).Facts > 0
	won := x.get(groupKey(kindDispute, r)).Won > 0
	pk := groupKey(kindParent, parent)
	old := x.get(pk)
	g := old
	step := boolStep(!present, present)
	if inC {
		g.Anonymous -= step
	} else if !won {
		g.Standing += step
	}
	x.putParent(parent, old, g)
}

// cancelMember notes that payment parent has (present) or no longer has
// cancellation id c.
func (x *tallier) cancelMember(parent, c string, present bool) {
	inR := x.get(groupKey(kindReversal, parent, c)).Facts > 0
	won := x.get(groupKey(kindDispute, c)).Won > 0
	pk := groupKey(kindParent, parent)
	old := x.get(pk)
	g := old
	step := boolStep(!present, present)
	g.Cancels += step
	if !inR {
		g.Anonymous += step
	} else if !won {
		g.Standing -= step
	}
	x.putParent(parent, old, g)
}

// wonChanged notes that dispute did is now won (or no longer): a
// reversal under the same id no longer stands (or stands again).
func (x *tallier) wonChanged(did string, won bool) {
	for _, parent := range listItems(x.get(groupKey(kindRevIndex, did)).Parents) {
		if x.get(groupKey(kindCancel, parent, did)).Facts > 0 {
			continue // cancelled: it did not stand either way
		}
		pk := groupKey(kindParent, parent)
		old := x.get(pk)
		g := old
		g.Standing -= boolStep(!won, won)
		x.putParent(parent, old, g)
	}
}

// parentDispute notes that dispute did of payment parent is unresolved
// (add) or no longer.
func (x *tallier) parentDispute(parent, did string, add bool) {
	pk := groupKey(kindParent, parent)
	old := x.get(pk)
	g := old
	g.Disputes = listSet(g.Disputes, did, add)
	x.putParent(parent, old, g)
}

// putParent writes payment parent's reversal record, moving the totals
// from old to g and noting what opened or ended.
func (x *tallier) putParent(parent string, old, g Group) {
	x.groups[groupKey(kindParent, parent)] = g
	wasRev, isRev := old.Standing > old.Anonymous, g.Standing > g.Anonymous
	x.t.Reversed += boolStep(wasRev, isRev)
	x.note(openReversal+parent, wasRev, isRev)
	open := func(g Group) []string {
		if g.Cancels > 0 {
			return nil
		}
		return listItems(g.Disputes)
	}
	before, after := open(old), open(g)
	x.t.Open += len(after) - len(before)
	for _, id := range before {
		x.note(openDispute+id, true, slices.Contains(after, id))
	}
	for _, id := range after {
		x.note(openDispute+id, slices.Contains(before, id), true)
	}
}

// note records, while x.watch is set, that what was open (before) and is
// now (after).
func (x *tallier) note(what string, before, after bool) {
	if x.watch == nil {
		return
	}
	if e, ok := x.watch[what]; ok {
		before = e[0]
	}
	x.watch[what] = [2]bool{before, after}
}

// ended lists, sorted, what was open when x.watch was set and is not now.
func (x *tallier) ended() []string {
	var out []string
	for what, e := range x.watch {
		if e[0] && !e[1] {
			out = append(out, what)
		}
	}
	slices.Sort(out)
	return out
}

// listSet returns list with item in it (in) or not: a list is its items,
// sorted, each after its length (uvarint).
func listSet(list, item string, in bool) string {
	items := listItems(list)
	i, found := slices.BinarySearch(items, item)
	switch {
	case in && !found:
		items = slices.Insert(items, i, item)
	case !in && found:
		items = slices.Delete(items, i, i+1)
	default:
		return list
	}
	var b []byte
	for _, it := range items {
		b = binary.AppendUvarint(b, uint64(len(it)))
		b = append(b, it...)
	}
	return string(b)
}

func listItems(list string) []string {
	var out []string
	for len(list) > 0 {
		n, w := binary.Uvarint([]byte(list))
		if w <= 0 || uint64(len(list)-w) < n {
			break // not a list
		}
		out = append(out, list[w:w+int(n)])
		list = list[w+int(n):]
	}
	return out
}

// boolStep is how a count of records for which something holds moves
// when it held before and holds after.
func boolStep(before, after bool) int {
	switch {
	case before == after:
		return 0
	case after:
		return 1
	}
	return -1
}

// payMoved moves the totals from payment group old to g.
func (x *tallier) payMoved(old, g Group) {
	class := func(g Group) *int {
		switch {
		case g.Completed > 0:
			return &x.t.Completed
		case g.Failed > 0:
			return &x.t.Failed
		case g.Canceled > 0:
			return &x.t.Canceled
		case g.Pending > 0:
			return &x.t.Pending
		}
		return nil
	}
	if p := class(old); p != nil {
		*p--
	}
	if p := class(g); p != nil {
		*p++
	}
	if old.Counted > 0 {
		decimalCtx.Sub(x.paid, x.paid, decimalOrZero(old.Amount))
		if old.Payments > 0 {
			x.t.OneOffs--
			decimalCtx.Sub(x.oneOffSum, x.oneOffSum, decimalOrZero(old.Amount))
		}
	}
	if g.Counted > 0 {
		addAmount(x.paid, decimalOrZero(g.Amount))
		if g.Payments > 0 {
			x.t.OneOffs++
			addAmount(x.oneOffSum, decimalOrZero(g.Amount))
		}
	}
}

// smallestOneOff returns the smallest counted one-off payment after the
// change: the touched groups as they are now, the others from the index
// (smallest: its two smallest entries, before the change). full: every
// group is in x.groups.
func (x *tallier) smallestOneOff(smallest []OneOff, full bool) *apd.Decimal {
	var min *apd.Decimal
	consider := func(a string) {
		if v := decimalOrZero(a); min == nil || v.Cmp(min) < 0 {
			min = v
		}
	}
	for k, g := range x.groups {
		if a, ok := OneOffAmount(k, g); ok {
			consider(a)
		}
	}
	if !full {
		for _, s := range smallest {
			if _, touched := x.groups[s.Group]; !touched {
				consider(s.Amount)
				break
			}
		}
	}
	if min == nil {
		return zeroAmount()
	}
	return min
}

// status is the order's status from its totals and flags (the rules are
// in Apply's comment).
func (t *Tally) status(flags []string, paid, refunded *apd.Decimal) OrderStatus {
	completed := t.Completed > 0
	switch {
	case len(flags) > 0:
		return OrderReview
	case t.Reversed > 0 || t.Lost > 0:
		return OrderReversed
	case t.Open > 0:
		return OrderDisputed
	case completed && refunded.Sign() > 0 && refunded.Cmp(paid) >= 0:
		return OrderRefunded
	case completed && refunded.Sign() > 0:
		return OrderPartiallyRefunded
	case completed:
		return OrderPaid
	case t.Pending > 0:
		return OrderPending
	case t.Failed > 0:
		return OrderFailed
	case t.Canceled > 0:
		return OrderCanceled
	}
	return OrderAwaitingPayment
}

// orderStatus is order o's status from its totals, its flags and the
// merchant's decisions: flags the merchant approved do not hold it in
// review, and an order the merchant canceled stays canceled.
func (t *Tally) orderStatus(o *Order, paid, refunded *apd.Decimal) OrderStatus {
	open := pendingFlags(o)
	if len(open) == 0 && o.Canceled {
		return OrderCanceled
	}
	return t.status(open, paid, refunded)
}

// pendingFlags are o's flags the merchant did not approve.
func pendingFlags(o *Order) []string {
	var open []string
	for _, f := range o.Flags {
		if !slices.Contains(o.ApprovedFlags, f) {
			open = append(open, f)
		}
	}
	return open
}

// Reach adds s to the statuses reached.
func (t *Tally) Reach(s OrderStatus) {
	if i, found := slices.BinarySearch(t.Reached, s); !found {
		t.Reached = slices.Insert(slices.Clone(t.Reached), i, s)
	}
}

func (t *Tally) reached(statuses ...OrderStatus) bool {
	for _, s := range statuses {
		if _, found := slices.BinarySearch(t.Reached, s); found {
			return true
		}
	}
	return false
}

// factFlags returns the review flags fact f raises in order o on its
// own (expected: the registered amount, nil when not registered): those
// it was recorded with, currency_mismatch, amount_mismatch.
func orderFactFlags(o *Order, expected *apd.Decimal, f OrderFact, into map[string]bool) {
	for _, fl := range f.Flags {
		into[fl] = true
	}
	inCurrency := sameCurrency(f.Currency, o.Currency)
	if !inCurrency {
		into[FlagCurrencyMismatch] = true
	}
	payment := f.Type == TypePayment || f.Type == TypeSubscriptionPayment
	if expected != nil && inCurrency && payment && f.Status == StatusCompleted {
		amt, err := amountOf(f.Amount, cmp.Or(o.Currency, f.Currency))
		if err != nil || amt.Abs(amt).Cmp(expected) != 0 {
			into[FlagAmountMismatch] = true
		}
	}
}

// paidTwiceTally is paidTwice from the one-off payments' count, sum and
// smallest.
func paidTwiceTally(expected *apd.Decimal, n int, total, smallest *apd.Decimal) bool {
	if n < 2 {
		return false
	}
	if expected == nil {
		return true
	}
	rest := new(apd.Decimal)
	decimalCtx.Sub(rest, total, smallest)
	return rest.Cmp(expected) >= 0
}

// RebuildTally builds the tally of order o from its facts and history
// (an order stored before the tally was kept): the Tally and every
// record.
func RebuildTally(o *Order) (Tally, map[string]Group) {
	x := newTallier(o.Currency, Tally{NextFact: uint64(len(o.Facts))}, nil)
	for _, f := range o.Facts {
		x.fact(f, 1)
	}
	t := x.tally()
	for _, h := range o.History {
		t.Reach(h.To)
	}
	groups := map[string]Group{}
	for k, g := range x.groups {
		if g != (Group{}) {
			groups[k] = g
		}
	}
	return t, groups
}

// memoryState is the state of an order that holds its facts and
// history itself (Order.Facts, Order.History): every fact, read in full.
func memoryState(o *Order, key string) *OrderState {
	st := &OrderState{Full: true, All: o.Facts}
	st.Tally.NextFact = uint64(len(o.Facts))
	for i, f := range o.Facts {
		if f.Key == key {
			st.Fact, st.FactSeq = &o.Facts[i], uint64(i)
		}
	}
	for _, h := range o.History {
		st.Tally.Reach(h.To)
	}
	return st
}
