package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sync"
)

// The value codec. Every JSON value the store keeps in a bucket (orders,
// outbox items, processing states, subscriptions, orphans) and every log
// record goes through pack before it is written, and unpack when read:
//
//	value  = JSON | packed
//	record = encodeRecord's bytes (first byte recordVersion; recordPurged
//	         for a purged record, never packed) | packed
//	packed = tag byte | uvarint length n of the plain bytes | sequences
//
// Tags are bytes that neither JSON (which starts with '{', '[', '"', a
// digit, '-', t, f, n or white space) nor encodeRecord (recordVersion)
// ever begin with, so a value written before the codec existed (schema 2
// and older) reads as it did. Values below packMin bytes, and those that
// would not shrink, are written plain.
//
// The sequences are LZ77 with the tag's preset dictionary in front of the
// output. (compress/flate was measured at 18 µs for a 700-byte order at
// BestSpeed, which ignores a preset dictionary, and 35-45 µs at level 2,
// most of it clearing its tables; this packs one in about 5 µs and
// unpacks it in 2, to within 10% of flate's size with the dictionary.)
// Each sequence is
//
//	token byte: literal count L (high nibble), match length M-4 (low nibble),
//	            a nibble of 15 continued by a uvarint to add
//	L literal bytes
//	unless the output is then n bytes long: uvarint distance D (1 or more)
//	            and M bytes copied from D bytes back (into the dictionary
//	            when the output is shorter than D; overlapping allowed)
//
// A dictionary, once a tag names it, never changes: a new one needs a new
// tag.
const (
	tagJSON   = 0xa1 // a JSON value packed with dictJSON
	tagRecord = 0xa2 // a log record packed with dictRecord

	// packMin: smaller values are written as they are.
	packMin = 128
	// maxUnpacked bounds the length a packed value may claim, so that a
	// damaged length cannot make unpack allocate without limit.
	maxUnpacked = 64 << 20

	minMatch = 4
	hashBits = 12
	noEntry  = -1
)

// dictJSON holds the fragments that recur in the JSON values: field
// names and the usual values of orders, outbox items (effect, event and
// order snapshot) and processing states. The most frequent come last
// (shorter distances).
const dictJSON = `{"id":"","gateway":"","customer_email":"","customer_name":"","description":"","metadata":{},` +
	`"previous_status":"","subscription_id":"","parent_txn_id":"","refs":[],"paid_amount":"","paid_currency":"",` +
	`"confirmations":0,"receiver":"","duplicate_of":0,"verified":true,"next_attempt":"","last_error":"",` +
	`"payments":0,"events":0,"detail":"same payment fact as notification ","state":"invalid","state":"failed",` +
	`"state":"duplicate","state":"verified","status":"pending","status":"refunded","status":"reversed",` +
	`"status":"disputed","status":"canceled","status":"review","type":"refund","type":"dispute",` +
	`"type":"reversal","type":"other","flags":["test_payment","receiver_mismatch"],` +
	`"kind":"email_merchant","kind":"shop_script","template":"verification_failed","template":"refund_issued",` +
	`"template":"payment_pending","template":"order_review","registered":true,` +
	`{"id":,"effect":{"kind":"shop_callback","cause":"event/\u0000\u0000payment\u0000completed\u0000","order_id":"",` +
	`"event":{"type":"payment","status":"completed","gateway_status":"payment.completed","txn_id":"","event_id":"msg_",` +
	`"order_id":"","amount":"","currency":"EUR","customer_email":"","customer_name":"","test":false},"order":{"id":"",` +
	`"status":"paid","registered":false,"flags":[],"amount":"","paid":"","refunded":"0.00","currency":"EUR",` +
	`"customer":{"email":"","name":""},"reason":"order created by this event; payment  completed ; paid ","version":1}},` +
	`"delivery_id":"ipnd_","state":"sent","attempts":1,"notification":,"created_at":"2026-","sent_at":"2026-"}` +
	`{"id":,"effect":{"kind":"email_customer","template":"payment_received","cause":"/paid/payment_received","order_id":"",` +
	`"to":"","reason":"payment  completed  EUR","event":{"type":"payment","status":"completed",` +
	`"gateway_status":"payment.completed","txn_id":"","event_id":"","order_id":"","amount":"","currency":"USD",` +
	`"customer_email":"","customer_name":"","test":false},"amount":"","order":{"id":"","status":"paid",` +
	`"registered":false,"flags":[],"amount":"","paid":"","refunded":"0.00","currency":"EUR",` +
	`"customer":{"email":"","name":""},"reason":"order created by this event; payment  completed ; paid ",` +
	`"version":1}},"delivery_id":"ipnd_","state":"pending","state":"sent","attempts":1,"notification":,` +
	`"created_at":"2026-01-01T00:00:00.000000000Z","sent_at":"2026-"}` +
	`{"id":"","status":"paid","registered":false,"amount":"","currency":"EUR","customer_email":"",` +
	`"customer_name":"","gateway":"","paid":"","refunded":"0.00","flags":[],"txn_ids":[""],"history":[{"at":"",` +
	`"notification":1,"from":"","to":"paid","reason":"order created by this event; payment  completed  EUR; paid  EUR"}],` +
	`"created_at":"","updated_at":"","facts":[{"key":"\u0000payment\u0000completed\u0000","notification":1,` +
	`"type":"payment","status":"completed","txn_id":"","amount":"","currency":"EUR","at":"2026-"}]}` +
	`{"state":"applied","event":{"type":"payment","status":"completed","gateway_status":"payment.completed",` +
	`"txn_id":"","event_id":"","order_id":"","amount":"","currency":"EUR","customer_email":"","customer_name":"",` +
	`"test":false},"history":[{"at":"2026-","state":"received"},{"at":"2026-","state":"applied"}]}`

// dictRecord holds what recurs in log records: the headers the gateways'
// verification keeps and the common words of their bodies (JSON and
// PayPal's form encoding).
const dictRecord = `application/x-www-form-urlencoded; charset=UTF-8` +
	`mc_gross=&protection_eligibility=Eligible&payer_id=&payment_date=&payment_status=Completed` +
	`&charset=UTF-8&first_name=&last_name=&mc_fee=&notify_version=3.9&custom=&payer_status=verified` +
	`&business=&quantity=1&verify_sign=&payer_email=&txn_id=&payment_type=instant&receiver_email=` +
	`&receiver_id=&txn_type=web_accept&item_name=&mc_currency=EUR&item_number=&residence_country=US` +
	`&invoice=&test_ipn=1&handling_amount=0.00&transaction_subject=&payment_gross=&shipping=0.00&ipn_track_id=` +
	`PayPal IPN ( https://www.paypal.com/ipn )` +
	`Stripe-Signaturet=,v1=Stripe/1.0 (+https://stripe.com/docs/webhooks)` +
	`{"id":"evt_","object":"event","api_version":"2024-06-20","created":,"data":{"object":{"id":"pi_",` +
	`"object":"payment_intent","amount":,"amount_received":,"currency":"usd","customer":null,` +
	`"metadata":{"order_id":""},"livemode":false,"pending_webhooks":1,"request":{"id":null,` +
	`"idempotency_key":null},"type":"payment_intent.succeeded"}` +
	`X-Nowpayments-SigBTCPay-Sigsha256=X-Cc-Webhook-SignatureHmac` +
	`Svix-IdSvix-TimestampSvix-SignatureSvix-Webhooks/1.0 (sender-; +https://www.svix.com/http-sender/)` +
	`Webhook-Idmsg_Webhook-Timestamp1Webhook-Signaturev1,User-Agent` +
	`application/json` +
	`{"type":"payment.completed","timestamp":"2026-01-01T00:00:00Z","data":{"id":"","txn_id":"",` +
	`"order_id":"","amount":"","currency":"EUR","status":"completed","customer_email":"@example.com",` +
	`"customer_name":"","receiver":"","description":""}}`

// writePlain (tests and benchmarks only, never concurrently with a store
// in use) makes pack return its input and leaves bbolt's default page
// splits (split.go): values are written as schema 2 builds wrote them.
var writePlain bool

// packer packs with one dictionary.
type packer struct {
	tag   byte
	dict  []byte
	table hashTable // the dictionary's positions; read-only once built
	pool  sync.Pool // *packScratch
}

// hashTable holds, for each hash of 4 bytes, the last positions (newest
// first, noEntry when none) where those bytes were seen.
type hashTable [1 << hashBits][ways]int32

const ways = 2

func (t *hashTable) add(buf []byte, i int) {
	e := &t[hash4(buf[i:])]
	copy(e[1:], e[:ways-1])
	e[0] = int32(i)
}

// matchLen is the length of the common prefix of buf[c:] and buf[i:]
// (c < i), known to be at least minMatch.
func matchLen(buf []byte, c, i int) int {
	m := minMatch
	for i+m+8 <= len(buf) {
		if x := binary.LittleEndian.Uint64(buf[c+m:]) ^ binary.LittleEndian.Uint64(buf[i+m:]); x != 0 {
			return m + bits.TrailingZeros64(x)/8
		}
		m += 8
	}
	for i+m < len(buf) && buf[c+m] == buf[i+m] {
		m++
	}
	return m
}

// packScratch is one pack's working state, kept in the packer's pool.
// Its table starts as a copy of the dictionary's (packer.table, shared
// and never written) and gets the positions of the value being packed;
// afterwards only the buckets written to are put back, instead of
// copying 32 KiB per pack.
type packScratch struct {
	buf     []byte // the dictionary (kept from one pack to the next), then the value
	table   hashTable
	touched []uint32 // buckets written to by this pack
}

// scratch takes a scratch from the pool, or makes one.
func (p *packer) scratch() *packScratch {
	if sc, _ := p.pool.Get().(*packScratch); sc != nil {
		return sc
	}
	return &packScratch{buf: append([]byte(nil), p.dict...), table: p.table}
}

// release puts back the dictionary's positions and returns sc to the pool.
func (p *packer) release(sc *packScratch) {
	for _, h := range sc.touched {
		sc.table[h] = p.table[h]
	}
	sc.touched = sc.touched[:0]
	p.pool.Put(sc)
}

// add records position i of buf.
func (sc *packScratch) add(buf []byte, i int) {
	h := hash4(buf[i:])
	sc.touched = append(sc.touched, h)
	e := &sc.table[h]
	copy(e[1:], e[:ways-1])
	e[0] = int32(i)
}

// longest returns the longest match for buf[i:] among the positions
// seen, and records i.
func (sc *packScratch) longest(buf []byte, i int) (at, length int) {
	h := hash4(buf[i:])
	sc.touched = append(sc.touched, h)
	e := &sc.table[h]
	want := binary.LittleEndian.Uint32(buf[i:])
	for _, c := range e {
		if c == noEntry || binary.LittleEndian.Uint32(buf[c:]) != want {
			continue
		}
		m := matchLen(buf, int(c), i)
		if m > length {
			at, length = int(c), m
		}
	}
	copy(e[1:], e[:ways-1])
	e[0] = int32(i)
	return at, length
}

func newPacker(tag byte, dict string) *packer {
	p := &packer{tag: tag, dict: []byte(dict)}
	for i := range p.table {
		for w := range p.table[i] {
			p.table[i][w] = noEntry
		}
	}
	for i := 0; i+minMatch <= len(p.dict); i++ {
		p.table.add(p.dict, i)
	}
	return p
}

var (
	jsonPacker   = newPacker(tagJSON, dictJSON)
	recordPacker = newPacker(tagRecord, dictRecord)
)

func hash4(b []byte) uint32 {
	return (binary.LittleEndian.Uint32(b) * 2654435761) >> (32 - hashBits)
}

// pack returns plain packed, or plain itself when it is short or would
// not shrink. It does not keep plain. Greedy matching with one step of
// lazy evaluation (a longer match one byte on wins).
func (p *packer) pack(plain []byte) []byte {
	if len(plain) < packMin || len(plain) > maxUnpacked || writePlain {
		return plain
	}
	sc := p.scratch()
	defer p.release(sc)
	buf := append(sc.buf[:len(p.dict)], plain...)
	sc.buf = buf
	out := make([]byte, 0, len(plain)/2+16)
	out = append(out, p.tag)
	out = binary.AppendUvarint(out, uint64(len(plain)))
	lit, i, end := len(p.dict), len(p.dict), len(buf)
	for i+minMatch <= end {
		c, m := sc.longest(buf, i)
		if m == 0 {
			i++
			continue
		}
		for i+1+minMatch <= end {
			c2, m2 := sc.longest(buf, i+1)
			if m2 <= m {
				break
			}
			i, c, m = i+1, c2, m2
		}
		for i > lit && c > 0 && buf[c-1] == buf[i-1] { // grow it backwards over pending literals
			i, c, m = i-1, c-1, m+1
		}
		out = appendSeq(out, buf[lit:i], m, i-c)
		if len(out) >= len(plain) {
			return plain
		}
		// i+1 is in the table already when lazy evaluation looked at it.
		for j := i + 2; j < i+m && j+minMatch <= end; j++ {
			sc.add(buf, j)
		}
		i += m
		lit = i
	}
	if lit < end {
		out = appendSeq(out, buf[lit:end], 0, 0)
	}
	if len(out) >= len(plain) {
		return plain
	}
	return out
}

// appendSeq appends one sequence: the literals, then (m > 0) a match of
// m bytes at distance d.
func appendSeq(out, lits []byte, m, d int) []byte {
	l, ml := len(lits), 0
	if m > 0 {
		ml = m - minMatch
	}
	out = append(out, byte(min(l, 15))<<4|byte(min(ml, 15)))
	if l >= 15 {
		out = binary.AppendUvarint(out, uint64(l-15))
	}
	out = append(out, lits...)
	if m > 0 {
		out = binary.AppendUvarint(out, uint64(d))
		if ml >= 15 {
			out = binary.AppendUvarint(out, uint64(ml-15))
		}
	}
	return out
}

// errPacked: a packed value that does not unpack (bad length, a sequence
// out of bounds, bytes after the end).
var errPacked = errors.New("bad packed value")

// unpack returns the plain bytes of packed, whose first byte is p's tag.
// It never panics; the result does not alias packed. Matches that reach
// back past the output's start read the dictionary in place.
func (p *packer) unpack(packed []byte) ([]byte, error) {
	return p.unpackPrefix(packed, maxUnpacked)
}

// unpackPrefix is unpack that stops once it has at least limit bytes (or
// all of them): the start of a value, read without unpacking the rest.
// Only the part unpacked is checked.
func (p *packer) unpackPrefix(packed []byte, limit int) ([]byte, error) {
	n, k := binary.Uvarint(packed[1:])
	if k <= 0 || n > maxUnpacked || n < packMin {
		return nil, fmt.Errorf("%w: length", errPacked)
	}
	in := packed[1+k:]
	dict := p.dict
	total := int(n)
	// The length is trusted for the allocation only as far as the input
	// can plausibly make it (real values unpack to a few times their
	// packed size): a damaged length fails at its first bad sequence
	// without allocating what it claims; a real long value grows out.
	out := make([]byte, 0, min(total, limit+64, 16*len(packed)+512))
	bad := func(what string) ([]byte, error) {
		return nil, fmt.Errorf("%w: %s at output byte %d", errPacked, what, len(out))
	}
	uvarint := func() (uint64, bool) {
		v, k := binary.Uvarint(in)
		if k <= 0 {
			return 0, false
		}
		in = in[k:]
		return v, true
	}
	for len(out) < total {
		if len(out) >= limit {
			return out, nil
		}
		if len(in) == 0 {
			return bad("end of input")
		}
		tok := in[0]
		in = in[1:]
		l, ml := uint64(tok>>4), uint64(tok&15)
		if l == 15 {
			x, ok := uvarint()
			if !ok || x > uint64(total) {
				return bad("literal count")
			}
			l += x
		}
		if l > uint64(len(in)) || l > uint64(total-len(out)) {
			return bad("literals out of bounds")
		}
		out = append(out, in[:l]...)
		in = in[l:]
		if len(out) == total {
			break
		}
		d, ok := uvarint()
		if !ok || d == 0 || d > uint64(len(dict)+len(out)) {
			return bad("distance")
		}
		if ml == 15 {
			x, ok := uvarint()
			if !ok || x > uint64(total) {
				return bad("match length")
			}
			ml += x
		}
		m := int(ml + minMatch)
		if uint64(m) > uint64(total-len(out)) {
			return bad("match out of bounds")
		}
		from := len(out) - int(d)
		if from < 0 { // starts in the dictionary
			k := min(m, -from)
			out = append(out, dict[len(dict)+from:len(dict)+from+k]...)
			m, from = m-k, 0
		}
		if len(out)-from >= m {
			out = append(out, out[from:from+m]...)
		} else {
			for j := range m { // overlapping: byte by byte
				out = append(out, out[from+j])
			}
		}
	}
	if len(in) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the end", errPacked, len(in))
	}
	return out, nil
}

// encodeValue is json.Marshal of v, packed.
func encodeValue(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonPacker.pack(b), nil
}

// plainValue returns the JSON of a stored value (written packed or not).
func plainValue(b []byte) ([]byte, error) {
	if len(b) > 0 && b[0] == tagJSON {
		return jsonPacker.unpack(b)
	}
	return b, nil
}

// decodeValue is json.Unmarshal of a stored value (packed or not) into v.
func decodeValue(b []byte, v any) error {
	plain, err := plainValue(b)
	if err != nil {
		return err
	}
	return json.Unmarshal(plain, v)
}
