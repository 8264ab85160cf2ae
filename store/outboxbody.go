package store

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"ipnd/ipn"
)

// The binary layout of an outbox item in bucket outbox (schema 9). Items
// queued by earlier builds are JSON, packed or not (codec.go), and read as
// they are; from 9 on an item is written once, when it is queued, in this
// layout: no field names, no JSON to scan or escape, nothing to pack (a
// queued item was JSON-encoded and packed on the request's pipeline
// commit, and JSON-decoded each time a lane read it; measured: that was
// about a tenth of the CPU an email and a callback cost end to end).
//
//	item   = tagOutboxBin, format (1), uvarint id, str delivery id, str state,
//	         uvarint attempts, time next attempt, str last error,
//	         uvarint notification, time created, time sent, effect
//	effect = kind (a kindCodes byte, or 0 and str), str template, cause,
//	         order id, to, reason, amount; opt event; opt order snapshot
//	event  = str type, status, gateway status, txn id, parent txn id,
//	         event id, order id, amount, refunded total, currency, customer
//	         email, customer name, receiver, subscription id; bool test;
//	         str refs, paid amount, paid currency; varint confirmations;
//	         str flags, items, period end
//	order  = str id, status, previous status; bool registered, test;
//	         strs flags, approved flags; str amount, paid, refunded,
//	         currency, customer email, customer name, reason; varint
//	         version; list of deliveries
//	delivered = str product, product name, download url; varint downloads
//	         left; time expires at; str license key
//	str    = uvarint length, bytes     time = 0 (zero) | 1, varint unix s, uvarint ns
//	opt    = 0 (nil) | 1, value        bool = 0 | 1
//	strs, list = uvarint 0 (nil) | uvarint n+1, n values
//
// The state fields are those of the item when it was written (pending);
// its changes go to its state record (outboxstate.go). Every field of the
// types above is in the layout: TestOutboxBodyEveryField fills each one
// and fails on one that does not come back. A field added to them needs
// the next format byte, written from then on, with format 1 still read
// (its items lack the field).
//
// A record of packMin bytes or more is packed (codec.go) with its own
// dictionary, dictOutbox, under tagOutboxPacked: an item's order id,
// address, amounts and transaction id recur in its fields, and its
// usual values in every item.
const (
	tagOutboxBin    = 0xa3 // an outbox item in the binary layout below
	tagOutboxPacked = 0xa4 // that, packed with dictOutbox
	outboxBinFormat = 1
)

// dictOutboxParts make dictOutbox: the fragments that recur in outbox
// items, most frequent last, each whole value also as the layout writes
// it (its length first). Like every dictionary, it never changes once
// written: a new one needs a new tag.
var dictOutboxParts = []string{
	"charge.refunded", "payment_intent.succeeded", "checkout.session.completed", "Completed", "Refunded",
	"underpaid", "overpaid", "dispute", "reversal", "refund", "partially_refunded", "disputed", "reversed",
	"review", "canceled", "failed", "dead", "skipped", "GBP", "USD",
	"verification_failed", "order_review", "payment_pending", "refund_issued", "refunded", "/refund/refund_issued",
	"script/event/\x00", "event/decision/", "test_payment", "receiver_mismatch",
	"order created by this event; payment ", " completed ", "; paid ", "payment ", " EUR",
	"@example.com", "ipnd_", "event/\x00", "\x00payment\x00completed\x00", "/paid/payment_received",
	"0.00", "EUR", "paid", "pending", "payment", "completed", "payment.completed", "payment_received",
}

var outboxPacker = newPacker(tagOutboxPacked, dictOutbox())

func dictOutbox() string {
	var b []byte
	for _, p := range dictOutboxParts {
		b = append(b, p...)
		b = appendString(b, p)
	}
	return string(b)
}

var errOutboxBody = errors.New("bad binary outbox item")

// encodeOutboxBody returns the binary record of it.
func encodeOutboxBody(it *ipn.OutboxItem) []byte {
	e := &it.Effect
	n := 64 + len(it.DeliveryID) + len(it.State) + len(it.LastError) + len(e.Kind) + len(e.Template) + len(e.Cause) +
		len(e.OrderID) + len(e.To) + len(e.Reason) + len(e.Amount)
	if ev := e.Event; ev != nil {
		n += 64 + len(ev.GatewayStatus) + len(ev.TxnID) + len(ev.ParentTxnID) + len(ev.EventID) + len(ev.OrderID) +
			len(ev.Amount) + len(ev.CustomerEmail) + len(ev.CustomerName) + len(ev.Receiver) + len(ev.Refs) + len(ev.Items)
	}
	if o := e.Order; o != nil {
		n += 64 + len(o.ID) + len(o.Amount) + len(o.Paid) + len(o.Refunded) + len(o.Customer.Email) +
			len(o.Customer.Name) + len(o.Reason) + 160*len(o.Deliveries)
	}
	b := make([]byte, 0, n)
	b = append(b, tagOutboxBin, outboxBinFormat)
	b = binary.AppendUvarint(b, it.ID)
	b = appendString(b, it.DeliveryID)
	b = appendString(b, it.State)
	b = binary.AppendUvarint(b, uint64(max(it.Attempts, 0)))
	b = appendTime(b, it.NextAttempt)
	b = appendString(b, it.LastError)
	b = binary.AppendUvarint(b, it.Notification)
	b = appendTime(b, it.CreatedAt)
	b = appendTime(b, it.SentAt)

	if code := kindCodes[e.Kind]; code != 0 {
		b = append(b, code)
	} else {
		b = appendString(append(b, 0), e.Kind)
	}
	for _, s := range [...]string{e.Template, e.Cause, e.OrderID, e.To, e.Reason, e.Amount} {
		b = appendString(b, s)
	}
	if ev := e.Event; ev == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		for _, s := range [...]string{string(ev.Type), string(ev.Status), ev.GatewayStatus, ev.TxnID, ev.ParentTxnID,
			ev.EventID, ev.OrderID, ev.Amount, ev.RefundedTotal, ev.Currency, ev.CustomerEmail, ev.CustomerName,
			ev.Receiver, ev.SubscriptionID} {
			b = appendString(b, s)
		}
		b = appendBool(b, ev.Test)
		for _, s := range [...]string{ev.Refs, ev.PaidAmount, ev.PaidCurrency} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, int64(ev.Confirmations))
		for _, s := range [...]string{ev.Flags, ev.Items, ev.PeriodEnd} {
			b = appendString(b, s)
		}
	}
	if o := e.Order; o == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = appendString(b, o.ID)
		b = appendString(b, string(o.Status))
		b = appendString(b, string(o.PreviousStatus))
		b = appendBool(b, o.Registered)
		b = appendBool(b, o.Test)
		b = appendStrings(b, o.Flags)
		b = appendStrings(b, o.ApprovedFlags)
		for _, s := range [...]string{o.Amount, o.Paid, o.Refunded, o.Currency, o.Customer.Email, o.Customer.Name, o.Reason} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, int64(o.Version))
		if o.Deliveries == nil {
			b = append(b, 0)
		} else {
			b = binary.AppendUvarint(b, uint64(len(o.Deliveries))+1)
			for i := range o.Deliveries {
				d := &o.Deliveries[i]
				b = appendString(b, d.Product)
				b = appendString(b, d.ProductName)
				b = appendString(b, d.DownloadURL)
				b = binary.AppendVarint(b, int64(d.DownloadsLeft))
				b = appendTime(b, d.ExpiresAt)
				b = appendString(b, d.LicenseKey)
			}
		}
	}
	return b
}

// appendTime appends t to the second and nanosecond. Its location is not
// kept: times come back in UTC (JSON kept the offset), and what shows a
// time in a zone converts it (the emails' link expiry: notify's
// expiryInLocal).
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = binary.AppendVarint(append(b, 1), t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendStrings appends a string list, nil apart from empty (an order
// snapshot's flags are [] in a callback, never null).
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(ss))+1)
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// outboxBody is the stored form of it: its binary record, packed when
// that makes it shorter.
func outboxBody(it *ipn.OutboxItem) []byte {
	return outboxPacker.pack(encodeOutboxBody(it))
}

// decodeOutboxBody decodes a stored outbox item in any layout: binary
// packed or not (schema 9 on), or JSON packed or plain (before).
func decodeOutboxBody(v []byte, it *ipn.OutboxItem) error {
	if len(v) > 0 && v[0] == tagOutboxPacked {
		plain, err := outboxPacker.unpack(v)
		if err != nil {
			return err
		}
		if len(plain) == 0 || plain[0] != tagOutboxBin {
			return errOutboxBody
		}
		v = plain
	}
	if len(v) > 0 && v[0] == tagOutboxBin {
		return decodeOutboxBin(v, it)
	}
	return decodeValue(v, it)
}

// decodeOutboxBin decodes the binary layout into it. It never panics; a
// damaged record is errOutboxBody.
func decodeOutboxBin(v []byte, it *ipn.OutboxItem) error {
	if len(v) < 2 || v[0] != tagOutboxBin || v[1] != outboxBinFormat {
		return errOutboxBody
	}
	// One string of the whole record, which the item's strings are
	// parts of: one allocation instead of one per field.
	r := &stateReader{b: v[2:], str: string(v[2:])}
	*it = ipn.OutboxItem{}
	it.ID = r.uvarint()
	it.DeliveryID = r.string()
	it.State = r.string()
	it.Attempts = r.count(math.MaxInt32)
	it.NextAttempt = r.time()
	it.LastError = r.string()
	it.Notification = r.uvarint()
	it.CreatedAt = r.time()
	it.SentAt = r.time()

	e := &it.Effect
	switch code := r.byte(); {
	case r.err != nil:
	case code == 0:
		if e.Kind = r.string(); kindCodes[e.Kind] != 0 {
			r.fail() // a known kind is written as its code
		}
	case int(code) < len(kindNames):
		e.Kind = kindNames[code]
	default:
		r.err = errOutboxBody
	}
	e.Template, e.Cause, e.OrderID, e.To, e.Reason, e.Amount = r.string(), r.string(), r.string(), r.string(), r.string(), r.string()
	if r.opt() {
		ev := &ipn.Event{}
		ev.Type, ev.Status = ipn.EventType(r.string()), ipn.EventStatus(r.string())
		ev.GatewayStatus, ev.TxnID, ev.ParentTxnID, ev.EventID, ev.OrderID = r.string(), r.string(), r.string(), r.string(), r.string()
		ev.Amount, ev.RefundedTotal, ev.Currency = r.string(), r.string(), r.string()
		ev.CustomerEmail, ev.CustomerName, ev.Receiver, ev.SubscriptionID = r.string(), r.string(), r.string(), r.string()
		ev.Test = r.bool()
		ev.Refs, ev.PaidAmount, ev.PaidCurrency = r.string(), r.string(), r.string()
		ev.Confirmations = r.int()
		ev.Flags, ev.Items, ev.PeriodEnd = r.string(), r.string(), r.string()
		e.Event = ev
	}
	if r.opt() {
		o := &ipn.OrderSnapshot{}
		o.ID, o.Status, o.PreviousStatus = r.string(), ipn.OrderStatus(r.string()), ipn.OrderStatus(r.string())
		o.Registered, o.Test = r.bool(), r.bool()
		o.Flags, o.ApprovedFlags = r.strings(), r.strings()
		o.Amount, o.Paid, o.Refunded, o.Currency = r.string(), r.string(), r.string(), r.string()
		o.Customer.Email, o.Customer.Name, o.Reason = r.string(), r.string(), r.string()
		o.Version = r.int()
		// Each delivery takes at least 6 bytes.
		if n, ok := r.list(6); ok {
			o.Deliveries = make([]ipn.Delivered, n)
			for i := range o.Deliveries {
				d := &o.Deliveries[i]
				d.Product, d.ProductName, d.DownloadURL = r.string(), r.string(), r.string()
				d.DownloadsLeft = r.int()
				d.ExpiresAt = r.time()
				d.LicenseKey = r.string()
			}
		}
		e.Order = o
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errOutboxBody
	}
	if r.err != nil {
		*it = ipn.OutboxItem{}
		return errOutboxBody
	}
	return nil
}

// count reads a uvarint of at most limit.
func (r *stateReader) count(limit uint64) int {
	v := r.uvarint()
	if v > limit {
		r.fail()
		return 0
	}
	return int(v)
}

func (r *stateReader) fail() {
	if r.err == nil {
		r.err = errOutboxBody
	}
}

// int reads a varint that fits an int (counts, versions, a crypto
// payment's confirmations: the gateway takes any int, so every int
// written reads back).
func (r *stateReader) int() int {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 || overlong(r.b, n) || int64(int(v)) != v {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

func (r *stateReader) bool() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail()
	return false
}

// opt reads the presence byte of an optional value.
func (r *stateReader) opt() bool { return r.bool() && r.err == nil }

func (r *stateReader) time() time.Time {
	if !r.opt() {
		return time.Time{}
	}
	s, n := binary.Varint(r.b)
	if n <= 0 || overlong(r.b, n) {
		r.fail()
		return time.Time{}
	}
	r.b = r.b[n:]
	ns := r.uvarint()
	if r.err != nil || ns >= 1e9 {
		r.fail()
		return time.Time{}
	}
	t := time.Unix(s, int64(ns)).UTC()
	if t.IsZero() { // written as 0, never as a time
		r.fail()
	}
	return t
}

// list reads the length of a list whose items take at least min bytes
// each; ok is false for nil (or an error).
func (r *stateReader) list(min int) (n int, ok bool) {
	v := r.uvarint()
	if r.err != nil || v == 0 {
		return 0, false
	}
	if v-1 > uint64(len(r.b)/min) {
		r.fail()
		return 0, false
	}
	return int(v - 1), true
}

func (r *stateReader) strings() []string {
	n, ok := r.list(1)
	if !ok {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.string()
	}
	return ss
}
