package gateway

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"ipnd/ipn"
)

// HMACOptions configures a gateway of the generic "hmac" kind (GATEWAYS.md
// §10): any gateway that signs a request with an HMAC in one header. The
// zero value of every option is its default; Header is required. Sources
// (Timestamp, ID, DedupKey, RequiredFields keys, Fields) are written
// "header:<Name>", "json:<dotted.path>" (Body "json"; a numeric segment
// indexes an array) or "form:<field>" (Body "form"). Every source must be
// covered by the MAC (SignedContent has {header:Name}, or {ts}/{id} for
// the Timestamp/ID header; body fields are covered by {body}): newHMAC
// refuses a config trusting a value the sender could change unnoticed.
type HMACOptions struct {
	// Header is the request header holding the signature, e.g. "X-Signature".
	Header string
	// Parser says how to read Header: "plain" (default: the whole value),
	// "prefix" (strip Prefix, e.g. "sha256="), "kv" (pairs "k=v" separated by
	// PairSeparator; SignatureKey names the signatures, repeatable, and
	// TimestampKey the timestamp) or "list" (space-separated "version,sig"
	// entries; SignatureKey is the version, default "v1").
	Parser        string
	Prefix        string // parser prefix: the prefix to strip (matched case-insensitively)
	PairSeparator string // parser kv: "," (default) or ";"
	SignatureKey  string // parser kv: e.g. "v1", "h1" (required); parser list: version (default "v1")
	TimestampKey  string // parser kv: e.g. "t", "ts"; used when Timestamp is "kv"
	// Algorithm is "sha256" (default), "sha1" or "sha512".
	Algorithm string
	// Encoding of the signature: "hex" (default; either case), "base64" or
	// "base64url" (padding optional).
	Encoding string
	// KeyFormat says how a secret becomes the HMAC key: "raw" (default: its
	// UTF-8 bytes), "base64" or "hex", after removing KeyPrefix (e.g.
	// "whsec_") when the secret starts with it.
	KeyFormat string
	KeyPrefix string
	// SignedContent is the template of the signed bytes (default "{body}"):
	// literal text and the placeholders {body} (the raw body, or its
	// canonical form, see Canonicalize; required), {ts} (the timestamp,
	// from Timestamp "kv" or a header), {id} (from ID, a header), {url}
	// (Config.URL) and {header:Name}. E.g. "{ts}.{body}",
	// "{ts}:{body}", "{id}.{ts}.{body}", "{url}{body}".
	SignedContent string
	// Timestamp is where the signed time comes from: "" (none), "kv" (the
	// TimestampKey pair of Header), or a source. A body source is read only
	// after the signature is verified, so it cannot feed {ts}. The value is
	// Unix seconds or RFC 3339; the tolerance is Config.Tolerance
	// (default 300 s), both ways.
	Timestamp string
	// ID is the source of {id}: a header source.
	ID string
	// DedupKey is the source of the gateway's message id (the dedup key and
	// Event.EventID). Empty: ID's value, else none. A message without it is
	// stored without a dedup key, not refused.
	DedupKey string
	// Canonicalize is what {body} stands for: "raw" (default: the bytes as
	// sent), "json-sorted-toplevel" or "json-sorted-recursive" (SortedJSON),
	// or "json-sorted" (either of the two may match, as for NOWPayments).
	Canonicalize string
	// Body is "json" (default: accepts application/json and */*+json) or
	// "form" (application/x-www-form-urlencoded).
	Body string
	// RequiredFields maps a source to the exact value it must have, checked
	// after the signature (e.g. "form:ipn_mode" = "hmac"); a mismatch is
	// ErrBadSignature.
	RequiredFields map[string]string
	// Fields, when any is set, say where the event fields are; see HMACFields.
	Fields HMACFields
}

// HMACFields says where a generic hmac gateway's messages keep the event
// fields, each as a source (see HMACOptions). When none is set, a JSON
// body in ipnd's own envelope ({"type": "payment.completed", "data":
// {...}}, SPEC §5) is normalized as the standard-webhooks kind does, and
// anything else becomes an event of type other carrying only EventID.
//
// A field source may list alternatives separated by "|", the first that
// has a value wins: e.g. Razorpay's amount
// "json:payload.refund.entity.amount|json:payload.payment.entity.amount"
// is the refund's own amount in a refund event and the payment's in the
// others.
type HMACFields struct {
	TxnID, ParentTxnID, OrderID, Amount, Currency, Status, Email, Name string
	// SubscriptionID is where the subscription's id is; in an event mapped
	// to a subscription type without one, the object is the subscription
	// itself and TxnID is used (Paddle subscription.* events: data.id).
	SubscriptionID string
	// AmountMinor: Amount is an integer in the currency's smallest unit
	// (cents); otherwise a decimal in major units.
	AmountMinor bool
	// Statuses maps a value found at Status (e.g. an event name such as
	// "payment.captured") to an ipnd status ("completed", "pending",
	// "failed", "denied", "refunded", "reversed", "canceled", "expired")
	// or to a subscription event (see hmacEventKinds: "subscription_started",
	// "subscription_payment", "subscription_payment_failed",
	// "subscription_canceled", "subscription_expired"). refunded gives
	// type refund, reversed type reversal, the other statuses type payment;
	// an unmapped value gives type other.
	Statuses map[string]string
}

// hmacEventKind is what a Statuses value maps a gateway's status to.
type hmacEventKind struct {
	typ    ipn.EventType
	status ipn.EventStatus
}

// hmacEventKinds are the Statuses values that name a subscription event
// rather than an ipnd status.
var hmacEventKinds = map[string]hmacEventKind{
	"subscription_started":        {ipn.TypeSubscriptionStarted, ipn.StatusCompleted},
	"subscription_payment":        {ipn.TypeSubscriptionPayment, ipn.StatusCompleted},
	"subscription_payment_failed": {ipn.TypeSubscriptionPayment, ipn.StatusFailed},
	"subscription_canceled":       {ipn.TypeSubscriptionCanceled, ipn.StatusCanceled},
	"subscription_expired":        {ipn.TypeSubscriptionExpired, ipn.StatusExpired},
}

// Defaults of the hmac kind.
const hmacDefaultTolerance = 300 * time.Second

// mediaHMAC are the media types an hmac gateway may take: JSON ones with
// body json (the default), the form with body form.
var mediaHMAC = []string{"application/json", "application/*+json", "application/x-www-form-urlencoded"}

// source is a parsed HMACOptions source.
type source struct {
	from string // "", "kv", "header", "json", "form", "alt"
	name string // header name or form field
	path []string
	alts []source // from "alt": the alternatives, first non-empty wins
}

func (s source) set() bool { return s.from != "" }

// parseSource parses "header:Name", "json:a.b", "form:f" ("kv" only when
// allowKV). An empty spec is the zero source.
func parseSource(spec, body string, allowKV bool) (source, error) {
	if spec == "" {
		return source{}, nil
	}
	if spec == "kv" && allowKV {
		return source{from: "kv"}, nil
	}
	from, name, ok := strings.Cut(spec, ":")
	if !ok || name == "" {
		return source{}, fmt.Errorf("source %q is not header:<Name>, json:<path> or form:<field>", spec)
	}
	switch from {
	case "header":
		return source{from: from, name: http.CanonicalHeaderKey(name)}, nil
	case "json", "form":
		if from != body {
			return source{}, fmt.Errorf("source %q reads a %s body, but body is %s", spec, from, body)
		}
		return source{from: from, name: name, path: splitPath(name)}, nil
	}
	return source{}, fmt.Errorf("source %q: unknown kind %q", spec, from)
}

// hmacDoc is a parsed body: JSON (numbers as json.Number) or form.
type hmacDoc struct {
	json any
	form url.Values
}

// parseFieldSource is parseSource for event fields, which may list
// alternatives separated by "|".
func parseFieldSource(spec, body string) (source, error) {
	if !strings.Contains(spec, "|") {
		return parseSource(spec, body, false)
	}
	alt := source{from: "alt"}
	for part := range strings.SplitSeq(spec, "|") {
		src, err := parseSource(strings.TrimSpace(part), body, false)
		if err != nil {
			return source{}, err
		}
		if !src.set() {
			return source{}, fmt.Errorf("source %q has an empty alternative", spec)
		}
		alt.alts = append(alt.alts, src)
	}
	return alt, nil
}

func (s source) value(h http.Header, d *hmacDoc) string {
	switch s.from {
	case "alt":
		for _, a := range s.alts {
			if v := a.value(h, d); v != "" {
				return v
			}
		}
	case "header":
		return h.Get(s.name)
	case "form":
		if d != nil && d.form != nil {
			return d.form.Get(s.name)
		}
	case "json":
		if d != nil {
			if v, ok := jsonLookup(d.json, s.path); ok {
				return scalarText(v)
			}
		}
	}
	return ""
}

// Template segment kinds.
const (
	segLiteral = iota
	segBody
	segTS
	segID
	segURL
	segHeader
)

type segment struct {
	kind int
	text string // literal text or header name
}

// parseTemplate parses a signed_content template. A "{" that does not
// open a known placeholder is an error (there is no escaping).
func parseTemplate(t string) ([]segment, error) {
	var segs []segment
	for t != "" {
		i := strings.IndexByte(t, '{')
		if i < 0 {
			segs = append(segs, segment{segLiteral, t})
			break
		}
		if i > 0 {
			segs = append(segs, segment{segLiteral, t[:i]})
		}
		j := strings.IndexByte(t[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unclosed { in signed_content")
		}
		name := t[i+1 : i+j]
		switch {
		case name == "body":
			segs = append(segs, segment{segBody, ""})
		case name == "ts":
			segs = append(segs, segment{segTS, ""})
		case name == "id":
			segs = append(segs, segment{segID, ""})
		case name == "url":
			segs = append(segs, segment{segURL, ""})
		case strings.HasPrefix(name, "header:") && len(name) > len("header:"):
			segs = append(segs, segment{segHeader, http.CanonicalHeaderKey(name[len("header:"):])})
		default:
			return nil, fmt.Errorf("unknown placeholder {%s} in signed_content", name)
		}
		t = t[i+j+1:]
	}
	return segs, nil
}

type hmacGateway struct {
	name      string
	header    string
	parser    string
	prefix    string
	sep       string
	sigKey    string
	tsKey     string
	hash      func() hash.Hash
	size      int
	decodeSig func(string) ([]byte, error)
	keys      [][]byte
	template  []segment
	ts, id    source
	dedup     source
	canon     []bool // each: recursive?; nil: raw
	body      string
	url       string
	tolerance time.Duration
	required  []requiredField
	hasFields bool
	fields    struct{ txn, parent, order, amount, currency, status, email, name, sub source }
	minor     bool
	statuses  map[string]hmacEventKind
	keep      []string
	needTS    bool
	needID    bool
}

type requiredField struct {
	src  source
	spec string
	want string
}

// newHMAC builds a gateway of the generic hmac kind from cfg.HMAC (see
// HMACOptions), refusing with ErrConfig an option it cannot use and a
// config that trusts a value the signature does not cover.
func newHMAC(cfg Config) (Gateway, error) {
	o := cfg.HMAC
	g := &hmacGateway{name: cfg.Name, url: cfg.URL, tolerance: cfg.Tolerance}
	if g.tolerance <= 0 {
		g.tolerance = hmacDefaultTolerance
	}
	if strings.TrimSpace(o.Header) == "" {
		return nil, g.bad("header (the signature header) is required")
	}
	g.header = http.CanonicalHeaderKey(strings.TrimSpace(o.Header))
	for _, set := range []func() error{
		func() error { return g.setParser(o) },
		func() error { return g.setMAC(o, cfg.Secrets) },
		func() error { return g.setBody(o) },
		func() error { return g.setSignedContent(o) },
		func() error { return g.setRequired(o.RequiredFields) },
		func() error { return g.setFields(o.Fields) },
		func() error { return g.checkCovered(o) },
	} {
		if err := set(); err != nil {
			return nil, err
		}
	}
	g.keep = g.keptHeaders()
	return g, nil
}

// bad is a config error of the gateway: ErrConfig, its name and why.
func (g *hmacGateway) bad(format string, args ...any) error {
	return fmt.Errorf("%w: gateway %q (hmac): "+format, append([]any{ipn.ErrConfig, g.name}, args...)...)
}

// setParser reads how the signature header is parsed (Parser and its keys).
func (g *hmacGateway) setParser(o HMACOptions) error {
	g.parser = cmp.Or(o.Parser, "plain")
	switch g.parser {
	case "plain":
	case "prefix":
		if o.Prefix == "" {
			return g.bad("parser prefix needs prefix (e.g. \"sha256=\")")
		}
		g.prefix = o.Prefix
	case "kv":
		g.sep = cmp.Or(o.PairSeparator, ",")
		if g.sep != "," && g.sep != ";" {
			return g.bad("pair_separator must be \",\" or \";\"")
		}
		if o.SignatureKey == "" {
			return g.bad("parser kv needs signature_key (e.g. \"v1\", \"h1\")")
		}
		g.sigKey, g.tsKey = o.SignatureKey, o.TimestampKey
	case "list":
		g.sigKey = cmp.Or(o.SignatureKey, "v1")
	default:
		return g.bad("parser %q is not plain, prefix, kv or list", o.Parser)
	}
	return nil
}

// setMAC reads the algorithm, the signature encoding and the keys (one
// per secret, in KeyFormat after KeyPrefix).
func (g *hmacGateway) setMAC(o HMACOptions, secrets []string) error {
	switch cmp.Or(o.Algorithm, "sha256") {
	case "sha1":
		g.hash, g.size = sha1.New, sha1.Size
	case "sha256":
		g.hash, g.size = sha256.New, sha256.Size
	case "sha512":
		g.hash, g.size = sha512.New, sha512.Size
	default:
		return g.bad("algorithm %q is not sha1, sha256 or sha512", o.Algorithm)
	}
	switch cmp.Or(o.Encoding, "hex") {
	case "hex":
		g.decodeSig = hex.DecodeString
	case "base64":
		g.decodeSig = decodeBase64(base64.StdEncoding.Strict(), base64.RawStdEncoding.Strict())
	case "base64url":
		g.decodeSig = decodeBase64(base64.URLEncoding.Strict(), base64.RawURLEncoding.Strict())
	default:
		return g.bad("encoding %q is not hex, base64 or base64url", o.Encoding)
	}
	keyFormat := cmp.Or(o.KeyFormat, "raw")
	for i, s := range secrets {
		s = strings.TrimPrefix(s, o.KeyPrefix)
		var k []byte
		var err error
		switch keyFormat {
		case "raw":
			k = []byte(s)
		case "base64":
			k, err = base64.StdEncoding.DecodeString(s)
		case "hex":
			k, err = hex.DecodeString(s)
		default:
			return g.bad("key_format %q is not raw, base64 or hex", o.KeyFormat)
		}
		if err != nil || len(k) == 0 {
			// Never quote the secret.
			return g.bad("secret #%d is not %s after the key prefix", i+1, keyFormat)
		}
		g.keys = append(g.keys, k)
	}
	return nil
}

// setBody reads the body kind and what {body} stands for (Canonicalize).
func (g *hmacGateway) setBody(o HMACOptions) error {
	g.body = cmp.Or(o.Body, "json")
	if g.body != "json" && g.body != "form" {
		return g.bad("body %q is not json or form", o.Body)
	}
	switch cmp.Or(o.Canonicalize, "raw") {
	case "raw":
	case "json-sorted-toplevel":
		g.canon = []bool{false}
	case "json-sorted-recursive":
		g.canon = []bool{true}
	case "json-sorted":
		g.canon = []bool{false, true}
	default:
		return g.bad("canonicalize %q is not raw, json-sorted-toplevel, json-sorted-recursive or json-sorted", o.Canonicalize)
	}
	if g.canon != nil && g.body != "json" {
		return g.bad("canonicalize %s needs body json", o.Canonicalize)
	}
	return nil
}

// setSignedContent reads the signed_content template and the sources
// it needs: the timestamp, the id and the dedup key.
func (g *hmacGateway) setSignedContent(o HMACOptions) error {
	var err error
	if g.template, err = parseTemplate(cmp.Or(o.SignedContent, "{body}")); err != nil {
		return g.bad("%v", err)
	}
	if g.ts, err = parseSource(o.Timestamp, g.body, true); err != nil {
		return g.bad("timestamp: %v", err)
	}
	if g.ts.from == "kv" && (g.parser != "kv" || g.tsKey == "") {
		return g.bad("timestamp kv needs parser kv and timestamp_key")
	}
	if g.id, err = parseSource(o.ID, g.body, false); err != nil {
		return g.bad("id: %v", err)
	}
	if g.id.set() && g.id.from != "header" {
		return g.bad("id must be a header source (it is signed before the body is read)")
	}
	if g.dedup, err = parseSource(o.DedupKey, g.body, false); err != nil {
		return g.bad("dedup_key: %v", err)
	}
	if !g.dedup.set() {
		g.dedup = g.id
	}
	bodies := 0
	for _, s := range g.template {
		switch s.kind {
		case segBody:
			bodies++
		case segTS:
			g.needTS = true
			if g.ts.from != "kv" && g.ts.from != "header" {
				return g.bad("{ts} in signed_content needs timestamp \"kv\" or a header source")
			}
		case segID:
			g.needID = true
			if !g.id.set() {
				return g.bad("{id} in signed_content needs id (a header source)")
			}
		case segURL:
			if g.url == "" {
				return g.bad("{url} in signed_content needs url (the public URL the gateway posts to)")
			}
		}
	}
	if bodies == 0 {
		return g.bad("signed_content must contain {body}")
	}
	return nil
}

// setRequired reads the required fields, in the order of their sources.
func (g *hmacGateway) setRequired(required map[string]string) error {
	specs := make([]string, 0, len(required))
	for spec := range required {
		specs = append(specs, spec)
	}
	slices.Sort(specs)
	for _, spec := range specs {
		src, err := parseSource(spec, g.body, false)
		if err != nil || !src.set() {
			return g.bad("required_fields: %v", err)
		}
		g.required = append(g.required, requiredField{src, spec, required[spec]})
	}
	return nil
}

// setFields reads where the event fields are, and the statuses map.
func (g *hmacGateway) setFields(f HMACFields) error {
	var err error
	for _, fs := range []struct {
		spec string
		dst  *source
	}{
		{f.TxnID, &g.fields.txn}, {f.ParentTxnID, &g.fields.parent}, {f.OrderID, &g.fields.order},
		{f.Amount, &g.fields.amount}, {f.Currency, &g.fields.currency}, {f.Status, &g.fields.status},
		{f.Email, &g.fields.email}, {f.Name, &g.fields.name}, {f.SubscriptionID, &g.fields.sub},
	} {
		if *fs.dst, err = parseFieldSource(fs.spec, g.body); err != nil {
			return g.bad("fields: %v", err)
		}
		g.hasFields = g.hasFields || fs.dst.set()
	}
	g.minor = f.AmountMinor
	if len(f.Statuses) > 0 {
		if !g.fields.status.set() {
			return g.bad("fields statuses need a status source")
		}
		g.statuses = make(map[string]hmacEventKind, len(f.Statuses))
		for k, v := range f.Statuses {
			kind, ok := hmacEventKinds[v]
			if !ok && ipn.ValidStatus(ipn.EventStatus(v)) {
				kind, ok = hmacEventKind{ipn.TypePayment, ipn.EventStatus(v)}, true
				switch kind.status {
				case ipn.StatusRefunded:
					kind.typ = ipn.TypeRefund
				case ipn.StatusReversed:
					kind.typ = ipn.TypeReversal
				}
			}
			if !ok {
				return g.bad("fields statuses: %q is neither an ipnd status nor a subscription event", v)
			}
			g.statuses[k] = kind
		}
	}
	return nil
}

// checkCovered refuses a config that trusts a source the MAC does not
// cover (see unsigned).
func (g *hmacGateway) checkCovered(o HMACOptions) error {
	f := o.Fields
	// Everything the adapter trusts must be covered by the MAC: a source
	// the sender can change without breaking the signature would make the
	// tolerance check, the dedup key or the event meaningless.
	dedupKey, dedupSpec := "dedup_key", o.DedupKey
	if o.DedupKey == "" {
		dedupKey, dedupSpec = "id", o.ID
	}
	type trust struct {
		key, spec, why string
		src            source
	}
	trusted := []trust{
		{"timestamp", o.Timestamp, "the sender could put a fresh time on a captured request and replay it forever", g.ts},
		{dedupKey, dedupSpec, "a replayed request could carry a new message id and be stored again, " +
			"or a forged one claim the id of a real message and have that dropped as a duplicate", g.dedup},
		{"fields.txn_id", f.TxnID, "the sender could change the event's transaction id", g.fields.txn},
		{"fields.parent_txn_id", f.ParentTxnID, "the sender could point the event at another payment", g.fields.parent},
		{"fields.subscription_id", f.SubscriptionID, "the sender could point the event at another subscription", g.fields.sub},
		{"fields.order_id", f.OrderID, "the sender could point the event at another order", g.fields.order},
		{"fields.amount", f.Amount, "the sender could change the event's amount", g.fields.amount},
		{"fields.currency", f.Currency, "the sender could change the event's currency", g.fields.currency},
		{"fields.status", f.Status, "the sender could change the event's status", g.fields.status},
		{"fields.email", f.Email, "the sender could change the customer's email", g.fields.email},
		{"fields.name", f.Name, "the sender could change the customer's name", g.fields.name},
	}
	for _, r := range g.required {
		trusted = append(trusted, trust{"required_fields", r.spec, "checking a value the sender may change proves nothing", r.src})
	}
	for _, tr := range trusted {
		if hint := g.unsigned(tr.src); hint != "" {
			return g.bad("%s = %q is not covered by the signature (%s): %s", tr.key, tr.spec, hint, tr.why)
		}
	}
	return nil
}

// keptHeaders lists the headers kept with the raw record: everything
// Check or Normalize reads, and User-Agent; each once.
func (g *hmacGateway) keptHeaders() []string {
	keep := []string{g.header}
	for _, s := range []source{g.ts, g.id, g.dedup, g.fields.txn, g.fields.parent, g.fields.order, g.fields.amount,
		g.fields.currency, g.fields.status, g.fields.email, g.fields.name, g.fields.sub} {
		for _, a := range append([]source{s}, s.alts...) {
			if a.from == "header" {
				keep = append(keep, a.name)
			}
		}
	}
	for _, r := range g.required {
		if r.src.from == "header" {
			keep = append(keep, r.src.name)
		}
	}
	for _, s := range g.template {
		if s.kind == segHeader {
			keep = append(keep, s.text)
		}
	}
	keep = append(keep, "User-Agent")
	var out []string
	for _, k := range keep {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// unsigned says why the value of s is not covered by the MAC, or ""
// when it is (or s is not set). A header is covered when signed_content
// contains it ({header:Name}, or {ts}/{id} for the timestamp and id
// headers); a kv timestamp when signed_content contains {ts}; a body field
// always, since {body} is required, except below the top level of a JSON
// body canonicalized by the top-level allow-list (NOWPayments' form keeps
// only nested keys that also appear at the top, so the MAC may not cover
// them).
func (g *hmacGateway) unsigned(s source) string {
	has := func(kind int, header string) bool {
		for _, seg := range g.template {
			if seg.kind == kind && (kind != segHeader || seg.text == header) {
				return true
			}
		}
		return false
	}
	switch s.from {
	case "alt":
		for _, a := range s.alts {
			if why := g.unsigned(a); why != "" {
				return why
			}
		}
	case "kv":
		if !has(segTS, "") {
			return "signed_content has no {ts}"
		}
	case "header":
		if has(segHeader, s.name) ||
			(g.ts.from == "header" && g.ts.name == s.name && has(segTS, "")) ||
			(g.id.from == "header" && g.id.name == s.name && has(segID, "")) {
			return ""
		}
		want := "{header:" + s.name + "}"
		if g.ts.from == "header" && g.ts.name == s.name {
			want += " or {ts}"
		}
		if g.id.from == "header" && g.id.name == s.name {
			want += " or {id}"
		}
		return "signed_content has no " + want
	case "json":
		if len(s.path) > 1 && slices.Contains(g.canon, false) {
			mode := "json-sorted-toplevel"
			if len(g.canon) > 1 {
				mode = "json-sorted"
			}
			return "with canonicalize " + mode + " the signature may cover only top-level fields"
		}
	}
	return ""
}

func decodeBase64(padded, raw *base64.Encoding) func(string) ([]byte, error) {
	return func(s string) ([]byte, error) {
		if b, err := padded.DecodeString(s); err == nil {
			return b, nil
		}
		return raw.DecodeString(s)
	}
}

func (g *hmacGateway) Name() string { return g.name }
func (g *hmacGateway) Kind() string { return "hmac" }
func (g *hmacGateway) Accepts(mediaType string) bool {
	if g.body == "form" {
		return acceptsMedia(mediaForm, mediaType)
	}
	return acceptsMedia(mediaAnyJSON, mediaType)
}
func (g *hmacGateway) KeepHeaders() []string { return slices.Clone(g.keep) }

// signatures reads every signature in the configured header (all its
// values) with the configured parser, and the kv timestamp if any.
// Entries that do not decode to a MAC of the algorithm's size are skipped.
func (g *hmacGateway) signatures(h http.Header) (sigs [][]byte, kvTS string, err error) {
	values := h.Values(g.header)
	if len(values) == 0 || strings.TrimSpace(strings.Join(values, "")) == "" {
		return nil, "", fmt.Errorf("%w: missing %s header", ipn.ErrBadSignature, g.header)
	}
	var encoded []string
	for _, v := range values {
		v = strings.TrimSpace(v)
		switch g.parser {
		case "plain":
			encoded = append(encoded, v)
		case "prefix":
			if len(v) >= len(g.prefix) && strings.EqualFold(v[:len(g.prefix)], g.prefix) {
				encoded = append(encoded, v[len(g.prefix):])
			}
		case "kv":
			for pair := range strings.SplitSeq(v, g.sep) {
				pair = strings.TrimSpace(pair)
				if pair == "" {
					continue
				}
				k, val, ok := strings.Cut(pair, "=")
				if !ok {
					return nil, "", fmt.Errorf("%w: garbled %s header", ipn.ErrBadSignature, g.header)
				}
				switch k {
				case g.sigKey:
					encoded = append(encoded, val)
				case g.tsKey:
					kvTS = val
				}
			}
		case "list":
			for _, entry := range strings.Fields(v) {
				if ver, sig, ok := strings.Cut(entry, ","); ok && ver == g.sigKey {
					encoded = append(encoded, sig)
				}
			}
		}
	}
	for _, e := range encoded {
		if b, err := g.decodeSig(e); err == nil && len(b) == g.size {
			sigs = append(sigs, b)
		}
	}
	if len(sigs) == 0 {
		return nil, "", fmt.Errorf("%w: no usable signature in %s header", ipn.ErrBadSignature, g.header)
	}
	return sigs, kvTS, nil
}

// content builds the signed bytes for one form of the body.
func (g *hmacGateway) content(body []byte, ts, id string, h http.Header) []byte {
	var b []byte
	for _, s := range g.template {
		switch s.kind {
		case segLiteral:
			b = append(b, s.text...)
		case segBody:
			b = append(b, body...)
		case segTS:
			b = append(b, ts...)
		case segID:
			b = append(b, id...)
		case segURL:
			b = append(b, g.url...)
		case segHeader:
			b = append(b, h.Get(s.text)...)
		}
	}
	return b
}

// parse reads the body as the configured kind; anything else is
// ErrMalformed.
func (g *hmacGateway) parse(body []byte) (*hmacDoc, error) {
	if g.body == "form" {
		f, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("%w: body is not form-urlencoded", ipn.ErrMalformed)
		}
		return &hmacDoc{form: f}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: body is not JSON", ipn.ErrMalformed)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON value", ipn.ErrMalformed)
	}
	return &hmacDoc{json: v}, nil
}

func (g *hmacGateway) Check(in *Inbound) (string, error) {
	if !g.Accepts(in.MediaType) {
		return "", fmt.Errorf("%w: gateway %s accepts %s bodies only", ipn.ErrUnsupportedMedia, g.name, g.body)
	}
	sigs, ts, err := g.signatures(in.Header)
	if err != nil {
		return "", err
	}
	if g.ts.from == "header" {
		ts = in.Header.Get(g.ts.name)
	}
	if g.needTS && ts == "" {
		return "", fmt.Errorf("%w: missing signed timestamp", ipn.ErrBadSignature)
	}
	id := g.id.value(in.Header, nil)
	if g.needID && id == "" {
		return "", fmt.Errorf("%w: missing %s header", ipn.ErrBadSignature, g.id.name)
	}
	bodies := [][]byte{in.Body}
	if g.canon != nil {
		// The MAC covers a re-serialisation: parsing comes first here.
		obj, err := decodeJSONObject(in.Body)
		if err != nil {
			return "", err
		}
		bodies = bodies[:0]
		for _, recursive := range g.canon {
			bodies = append(bodies, sortedJSONOf(obj, recursive))
		}
	}
	ok := false
	for _, b := range bodies {
		c := g.content(b, ts, id, in.Header)
		for _, k := range g.keys {
			m := hmac.New(g.hash, k)
			m.Write(c)
			want := m.Sum(nil)
			for _, s := range sigs {
				if hmac.Equal(want, s) {
					ok = true
				}
			}
		}
	}
	if !ok {
		return "", fmt.Errorf("%w: no signature matched", ipn.ErrBadSignature)
	}
	doc, err := g.parse(in.Body)
	if err != nil {
		return "", err
	}
	if g.ts.from == "json" || g.ts.from == "form" {
		ts = g.ts.value(in.Header, doc)
	}
	if g.ts.set() {
		t, ok := parseTimestamp(ts)
		if !ok {
			return "", fmt.Errorf("%w: missing or garbled timestamp", ipn.ErrBadSignature)
		}
		if !withinTolerance(t, in.Now, g.tolerance) {
			return "", fmt.Errorf("%w: signed at %s, tolerance %s", ipn.ErrStaleTimestamp, t.UTC().Format(time.RFC3339), g.tolerance)
		}
	}
	for _, r := range g.required {
		if r.src.value(in.Header, doc) != r.want {
			return "", fmt.Errorf("%w: %s does not have the configured value", ipn.ErrBadSignature, r.spec)
		}
	}
	return g.dedup.value(in.Header, doc), nil
}

// parseTimestamp reads Unix seconds or an RFC 3339 time.
func parseTimestamp(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), true
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// Normalize reads the configured Fields (see HMACFields); without any, a
// JSON body in ipnd's own envelope is normalized like the
// standard-webhooks kind does, and anything else is type other. EventID
// is the dedup key's value.
func (g *hmacGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	doc, err := g.parse(n.Body)
	if err != nil {
		return nil, err
	}
	h := http.Header(n.Headers)
	if h == nil {
		h = http.Header{}
	}
	eventID := g.dedup.value(h, doc)
	if !g.hasFields {
		if m, ok := doc.json.(map[string]any); ok {
			t := scalarText(m["type"])
			if strings.HasPrefix(t, "payment.") || strings.HasPrefix(t, "subscription.") {
				return ParseWebhookEvent(n.Body, eventID)
			}
		}
		return &ipn.Event{Type: ipn.TypeOther, EventID: eventID}, nil
	}
	f := g.fields
	ev := &ipn.Event{
		Type:          ipn.TypeOther,
		EventID:       eventID,
		GatewayStatus: f.status.value(h, doc),
		TxnID:         f.txn.value(h, doc),
		ParentTxnID:   f.parent.value(h, doc),
		OrderID:       f.order.value(h, doc),
		CustomerEmail: f.email.value(h, doc),
		CustomerName:  f.name.value(h, doc),
		Currency:      strings.ToUpper(f.currency.value(h, doc)),
	}
	ev.SubscriptionID = f.sub.value(h, doc)
	if k, ok := g.statuses[ev.GatewayStatus]; ok {
		ev.Type, ev.Status = k.typ, k.status
		if ev.SubscriptionID == "" && k.typ != ipn.TypePayment && k.typ != ipn.TypeRefund && k.typ != ipn.TypeReversal {
			ev.SubscriptionID = ev.TxnID // the event's object is the subscription
		}
	}
	if amt := f.amount.value(h, doc); amt != "" {
		if g.minor {
			ev.Amount, err = ipn.FormatMinor(amt, ev.Currency)
		} else {
			ev.Amount, err = cryptoAmount(amt, ev.Currency)
		}
		if err != nil {
			return nil, err
		}
	}
	ev.Unsign()
	return ev, nil
}
