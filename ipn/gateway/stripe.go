package gateway

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"ipnd/ipn"
)

// stripeTolerance is Stripe's documented default tolerance (stripe-go
// DefaultTolerance).
const stripeTolerance = 300 * time.Second

type stripeGateway struct {
	name      string
	keys      [][]byte // each whsec_ secret used verbatim as the HMAC key
	tolerance time.Duration
}

func newStripe(cfg Config) (Gateway, error) {
	g := &stripeGateway{name: cfg.Name, tolerance: cfg.Tolerance}
	if g.tolerance <= 0 {
		g.tolerance = stripeTolerance
	}
	for _, s := range cfg.Secrets {
		if !strings.HasPrefix(s, "whsec_") {
			// An API key (sk_live_..., rk_...) pasted by mistake would
			// refuse every event: say so at start instead.
			return nil, fmt.Errorf("%w: gateway %q: a Stripe secret must be the endpoint's signing secret (whsec_...), not an API key", ipn.ErrConfig, cfg.Name)
		}
		g.keys = append(g.keys, []byte(s))
	}
	return g, nil
}

func (g *stripeGateway) Name() string                  { return g.name }
func (g *stripeGateway) Kind() string                  { return "stripe" }
func (g *stripeGateway) Accepts(mediaType string) bool { return acceptsMedia(mediaAnyJSON, mediaType) }
func (g *stripeGateway) KeepHeaders() []string         { return []string{"Stripe-Signature", "User-Agent"} }

// ParseStripeSignature parses a Stripe-Signature header value
// ("t=1495999758,v1=abc,v1=def,v0=ghi"). It returns the timestamp and every
// v1 signature that decodes as hex; unknown keys are ignored. A pair without
// "=", a missing or non-numeric t, or no usable v1 is an error.
func ParseStripeSignature(header string) (ts int64, sigs [][]byte, err error) {
	if header == "" {
		return 0, nil, fmt.Errorf("%w: missing Stripe-Signature header", ipn.ErrBadSignature)
	}
	haveT := false
	for _, pair := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			return 0, nil, fmt.Errorf("%w: garbled Stripe-Signature header", ipn.ErrBadSignature)
		}
		switch k {
		case "t":
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil {
				return 0, nil, fmt.Errorf("%w: garbled timestamp in Stripe-Signature header", ipn.ErrBadSignature)
			}
			ts, haveT = n, true
		case "v1":
			b, derr := hex.DecodeString(v)
			if derr == nil && len(b) == sha256.Size {
				sigs = append(sigs, b)
			}
		}
	}
	if !haveT {
		return 0, nil, fmt.Errorf("%w: no timestamp in Stripe-Signature header", ipn.ErrBadSignature)
	}
	if len(sigs) == 0 {
		return 0, nil, fmt.Errorf("%w: no v1 signature in Stripe-Signature header", ipn.ErrBadSignature)
	}
	return ts, sigs, nil
}

// StripeSignature computes the v1 signature Stripe sends for body at unix
// time ts with the given signing secret.
func StripeSignature(secret string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func (g *stripeGateway) Check(in *Inbound) (string, error) {
	if err := singleHeaders(in.Header, "Stripe-Signature"); err != nil {
		return "", err
	}
	ts, sigs, err := ParseStripeSignature(in.Header.Get("Stripe-Signature"))
	if err != nil {
		return "", err
	}
	if !anyHMACMatches(g.keys, sigs, func(key []byte) []byte {
		return StripeSignature(string(key), ts, in.Body)
	}) {
		return "", fmt.Errorf("%w: no signature matched", ipn.ErrBadSignature)
	}
	if !withinTolerance(time.Unix(ts, 0), in.Now, g.tolerance) {
		return "", fmt.Errorf("%w: signed at %d, tolerance %s", ipn.ErrStaleTimestamp, ts, g.tolerance)
	}
	var env struct {
		ID     string `json:"id"`
		Object string `json:"object"`
	}
	if err := json.Unmarshal(in.Body, &env); err != nil {
		return "", fmt.Errorf("%w: body is not a JSON object", ipn.ErrMalformed)
	}
	if env.ID == "" {
		return "", fmt.Errorf("%w: event has no id", ipn.ErrMalformed)
	}
	return env.ID, nil
}

// anyHMACMatches reports whether any key's MAC (computed by mac) equals any
// of the given signatures, comparing in constant time.
func anyHMACMatches(keys [][]byte, sigs [][]byte, mac func(key []byte) []byte) bool {
	ok := false
	for _, k := range keys {
		want := mac(k)
		for _, s := range sigs {
			if hmac.Equal(want, s) {
				ok = true
			}
		}
	}
	return ok
}

// stripeEvent is the part of a Stripe Event object ipnd reads.
type stripeEvent struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Livemode bool   `json:"livemode"`
	Data     struct {
		Object stripeObject `json:"object"`
	} `json:"data"`
}

type stripeObject struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	ClientReferenceID string            `json:"client_reference_id"`
	Metadata          map[string]string `json:"metadata"`
	AmountTotal       json.Number       `json:"amount_total"`
	Amount            json.Number       `json:"amount"`
	AmountRefunded    json.Number       `json:"amount_refunded"`
	// Refunded: a charge refunded in full. Events of API versions
	// before amount_refunded (2012) say only this: the whole amount.
	Refunded        bool            `json:"refunded"`
	Currency        string          `json:"currency"`
	PaymentIntent   json.RawMessage `json:"payment_intent"`
	PaymentStatus   string          `json:"payment_status"`
	Status          string          `json:"status"`
	CustomerEmail   string          `json:"customer_email"`
	CustomerDetails struct {
		Email string `json:"email"`
		Name  string `json:"name"`
	} `json:"customer_details"`
	BillingDetails struct {
		Email string `json:"email"`
		Name  string `json:"name"`
	} `json:"billing_details"`
	ReceiptEmail string          `json:"receipt_email"`
	LatestCharge json.RawMessage `json:"latest_charge"`
	Invoice      json.RawMessage `json:"invoice"`
	Subscription json.RawMessage `json:"subscription"`
	Mode         string          `json:"mode"`
	Charge       json.RawMessage `json:"charge"`
	AmountPaid   json.Number     `json:"amount_paid"`
	AmountDue    json.Number     `json:"amount_due"`
	// Refunds is a charge's list of refunds, newest first, when the
	// event includes it (API versions before 2022-11-15 do).
	Refunds struct {
		Data []stripeRefund `json:"data"`
	} `json:"refunds"`
}

type stripeRefund struct {
	ID      string      `json:"id"`
	Amount  json.Number `json:"amount"`
	Created int64       `json:"created"`
	Status  string      `json:"status"`
}

// newestRefund returns the amount, in minor units, of the newest refund a
// charge lists that took effect (not failed or canceled), "" when it lists
// none or the newest one's amount is not a count of minor units within
// the charge's amount_refunded (then the refund's own amount is derived
// from amount_refunded when the event is applied).
func newestRefund(o *stripeObject) json.Number {
	var best *stripeRefund
	for i, r := range o.Refunds.Data {
		if r.Status == "failed" || r.Status == "canceled" {
			continue
		}
		if best == nil || r.Created > best.Created {
			best = &o.Refunds.Data[i] // equal times: the first, as Stripe lists newest first
		}
	}
	if best == nil {
		return ""
	}
	amt, err1 := strconv.ParseInt(best.Amount.String(), 10, 64)
	total, err2 := strconv.ParseInt(o.AmountRefunded.String(), 10, 64)
	if err1 != nil || err2 != nil || amt <= 0 || amt > total {
		return ""
	}
	return best.Amount
}

// stripeID reads a field that Stripe sends either as an id string or as
// an expanded object with an "id".
func stripeID(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.ID
	}
	return ""
}

func (g *stripeGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	var se stripeEvent
	d := json.NewDecoder(bytes.NewReader(n.Body))
	d.UseNumber()
	if err := d.Decode(&se); err != nil {
		return nil, fmt.Errorf("%w: stripe event: %v", ipn.ErrMalformed, err)
	}
	o := se.Data.Object
	ev := &ipn.Event{
		Type:          ipn.TypeOther,
		GatewayStatus: se.Type,
		EventID:       se.ID,
		TxnID:         o.ID,
		Test:          !se.Livemode,
		Currency:      strings.ToUpper(o.Currency),
		CustomerEmail: cmp.Or(o.CustomerDetails.Email, o.CustomerEmail, o.BillingDetails.Email, o.ReceiptEmail),
		CustomerName:  cmp.Or(o.CustomerDetails.Name, o.BillingDetails.Name),
		OrderID:       cmp.Or(o.ClientReferenceID, o.Metadata["order_id"]),
	}
	minor := o.Amount
	if sub := stripeID(o.Subscription); sub != "" {
		ev.SubscriptionID = sub
	}
	pi, charge, invoice := stripeID(o.PaymentIntent), stripeID(o.Charge), stripeID(o.Invoice)
	// One payment, whichever object reports it: the PaymentIntent is its
	// txn id when there is one (a Checkout Session, a charge and the
	// intent itself are then one payment), and every other id the later
	// refunds, disputes and invoices may name alone goes to Refs.
	asPayment := func(status ipn.EventStatus) {
		ev.Type, ev.Status = ipn.TypePayment, status
		if pi != "" && pi != o.ID {
			ev.TxnID = pi
			ev.Refs = joinRefs(o.ID, charge, stripeID(o.LatestCharge), invoice)
		} else {
			ev.Refs = joinRefs(charge, stripeID(o.LatestCharge), invoice)
		}
	}
	switch se.Type {
	case "checkout.session.completed", "checkout.session.async_payment_succeeded":
		asPayment(ipn.StatusCompleted)
		minor = o.AmountTotal
		if o.PaymentStatus == "unpaid" {
			ev.Status = ipn.StatusPending
		}
		if o.Mode == "subscription" && ev.SubscriptionID != "" {
			ev.Type = ipn.TypeSubscriptionStarted
		}
	case "checkout.session.async_payment_failed":
		asPayment(ipn.StatusFailed)
		minor = o.AmountTotal
	case "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed":
		// The invoice's payment intent (and its charge) report the same
		// payment: the intent is its txn id, as for a Checkout Session.
		status, sum := ipn.StatusCompleted, o.AmountPaid
		if se.Type == "invoice.payment_failed" {
			status, sum = ipn.StatusFailed, o.AmountDue
		}
		asPayment(status)
		minor = sum
		if ev.SubscriptionID != "" {
			ev.Type = ipn.TypeSubscriptionPayment
		}
	case "customer.subscription.deleted":
		ev.Type, ev.Status, minor = ipn.TypeSubscriptionCanceled, ipn.StatusCanceled, ""
		ev.SubscriptionID = o.ID
	case "customer.subscription.created":
		ev.Type, ev.Status, minor = ipn.TypeSubscriptionStarted, ipn.StatusCompleted, ""
		ev.SubscriptionID = o.ID
	case "payment_intent.succeeded", "charge.succeeded":
		asPayment(ipn.StatusCompleted)
	case "payment_intent.processing", "charge.pending":
		asPayment(ipn.StatusPending)
	case "payment_intent.payment_failed", "charge.failed":
		asPayment(ipn.StatusFailed)
	case "payment_intent.canceled":
		asPayment(ipn.StatusCanceled)
	case "charge.refunded":
		// amount_refunded is the charge's running total: refunds on one
		// charge share its id as txn and the order counts the largest
		// total. The refund's own amount is the newest refund the charge
		// lists; without the list (newer API versions) it is what the
		// total adds to the order's refunds of the charge, filled in
		// when the event is applied.
		ev.Type, ev.Status, minor = ipn.TypeRefund, ipn.StatusRefunded, newestRefund(&o)
		ev.ParentTxnID = pi
		ev.Refs = joinRefs(invoice)
		if o.AmountRefunded == "" && o.Refunded {
			// An API version before amount_refunded: the whole charge.
			o.AmountRefunded = o.Amount
		}
		if o.AmountRefunded != "" && ev.Currency != "" {
			total, err := ipn.FormatMinor(o.AmountRefunded.String(), ev.Currency)
			if err != nil {
				return nil, err
			}
			ev.RefundedTotal = total
		}
	case "charge.dispute.created":
		ev.Type, ev.Status = ipn.TypeDispute, ipn.StatusPending
		ev.ParentTxnID, ev.Refs = charge, joinRefs(pi)
	case "charge.dispute.funds_withdrawn":
		// The disputed amount left the merchant's balance: reversed until
		// the funds are reinstated (a won dispute).
		ev.Type, ev.Status = ipn.TypeReversal, ipn.StatusReversed
		ev.ParentTxnID, ev.Refs = charge, joinRefs(pi)
	case "charge.dispute.funds_reinstated":
		ev.Type, ev.Status = ipn.TypeReversalCanceled, ipn.StatusCompleted
		ev.ParentTxnID, ev.Refs = charge, joinRefs(pi)
	case "charge.dispute.closed":
		// won: the dispute is over, the funds stay; lost: the payment is
		// reversed (a closing dispute fact, not a new reversal: the merchant
		// was told when it opened).
		ev.Type, ev.Status = ipn.TypeDispute, ipn.StatusCanceled
		if o.Status == "lost" {
			ev.Status = ipn.StatusReversed
		}
		ev.ParentTxnID, ev.Refs = charge, joinRefs(pi)
	}
	// Only a Checkout Session (a Payment Link's too) names the merchant's
	// order: the intent, the charge and the invoices of its payment, and
	// the subscription objects, come before or after it without it. When
	// they name no order they wait for it; a session that names none
	// makes the payment an order of its own (ipn.OwnOrderID).
	switch ev.Type {
	case ipn.TypePayment, ipn.TypeSubscriptionPayment, ipn.TypeSubscriptionStarted:
		ev.Secondary = !strings.HasPrefix(se.Type, "checkout.session.")
	}
	if minor != "" && ev.Currency != "" {
		amt, err := ipn.FormatMinor(minor.String(), ev.Currency)
		if err != nil {
			return nil, err
		}
		ev.Amount = amt
	}
	ev.Unsign()
	return ev, nil
}

// sampleStripe is a test-mode event (livemode false), as the Stripe CLI
// sends it, signed with the first secret: one payment intent per order,
// so that a simulated refund or failure names the payment a simulated
// checkout made.
func sampleStripe(s Sample, secrets []string) (*SignedSample, error) {
	minor := strings.TrimLeft(strings.Replace(s.Amount, ".", "", 1), "0")
	if minor == "" {
		minor = "0"
	}
	sum := sha256.Sum256([]byte(s.Order))
	pi := "pi_sim_" + hex.EncodeToString(sum[:8])
	out := &SignedSample{}
	var object map[string]any
	switch s.Status {
	case "completed":
		out.What = "checkout.session.completed"
		object = map[string]any{"id": "cs_sim_" + randomHex(6), "object": "checkout.session",
			"client_reference_id": s.Order, "payment_intent": pi, "amount_total": json.Number(minor),
			"currency": strings.ToLower(s.Currency), "payment_status": "paid", "mode": "payment",
			"customer_details": map[string]any{"email": s.Email}}
	case "refunded":
		out.What = "charge.refunded"
		object = map[string]any{"id": "ch_sim_" + hex.EncodeToString(sum[:8]), "object": "charge", "payment_intent": pi,
			"amount": json.Number(minor), "amount_refunded": json.Number(minor), "currency": strings.ToLower(s.Currency),
			"receipt_email": s.Email, "metadata": map[string]string{"order_id": s.Order}}
	case "failed", "pending":
		out.What = map[string]string{"failed": "payment_intent.payment_failed", "pending": "payment_intent.processing"}[s.Status]
		object = map[string]any{"id": pi, "object": "payment_intent", "amount": json.Number(minor),
			"currency": strings.ToLower(s.Currency), "receipt_email": s.Email, "metadata": map[string]string{"order_id": s.Order}}
	default:
		return nil, fmt.Errorf("-status %q has no stripe event here (completed, pending, failed, refunded)", s.Status)
	}
	out.Marker = "evt_sim_" + randomHex(8)
	out.Body, _ = json.Marshal(map[string]any{"id": out.Marker, "object": "event", "type": out.What, "livemode": false,
		"created": s.Now.Unix(), "data": map[string]any{"object": object}})
	out.Header = http.Header{"Content-Type": {"application/json"}}
	out.Header.Set("Stripe-Signature", "t="+strconv.FormatInt(s.Now.Unix(), 10)+",v1="+hex.EncodeToString(StripeSignature(secrets[0], s.Now.Unix(), out.Body)))
	return out, nil
}
