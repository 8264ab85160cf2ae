package gateway

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"ipnd/ipn"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/unicode"
)

// PayPal IPN postback endpoints (GATEWAYS.md §2.2). The legacy www hosts
// redirect and drop the body, so only ipnpb is used.
const (
	PayPalLiveURL    = "https://ipnpb.paypal.com/cgi-bin/webscr"
	PayPalSandboxURL = "https://ipnpb.sandbox.paypal.com/cgi-bin/webscr"
	payPalUserAgent  = "ipnd-IPN-Verification/1.0"
)

type payPalGateway struct {
	name      string
	verifyURL string
	client    *http.Client
}

func newPayPal(cfg Config) (Gateway, error) {
	g := &payPalGateway{name: cfg.Name, verifyURL: cfg.VerifyURL}
	if g.verifyURL == "" {
		g.verifyURL = PayPalLiveURL
		if cfg.Sandbox {
			g.verifyURL = PayPalSandboxURL
		}
	}
	u, err := url.Parse(g.verifyURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: gateway %q: verify_url %q is not a URL", ipn.ErrConfig, cfg.Name, g.verifyURL)
	}
	if u.Scheme != "https" && !isLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("%w: gateway %q: verify_url must be https (plain http only to a loopback test server)", ipn.ErrConfig, cfg.Name)
	}
	g.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment, // HTTPS_PROXY, NO_PROXY: VPSs that reach out through a proxy
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   false, // PayPal requires HTTP/1.1
		},
		// A redirect means the wrong host: it drops the body. Never follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return g, nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (g *payPalGateway) Name() string                  { return g.name }
func (g *payPalGateway) Kind() string                  { return "paypal" }
func (g *payPalGateway) Accepts(mediaType string) bool { return acceptsMedia(mediaForm, mediaType) }
func (g *payPalGateway) KeepHeaders() []string         { return []string{"User-Agent"} }

// ParsePayPalForm parses a raw IPN body. Values keep their raw bytes (in
// the message's charset); use PayPalFields to decode them.
func ParsePayPalForm(body []byte) (url.Values, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("%w: empty body", ipn.ErrMalformed)
	}
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: not form-encoded", ipn.ErrMalformed)
	}
	if v.Get("txn_type") == "" && v.Get("payment_status") == "" && v.Get("txn_id") == "" && v.Get("ipn_track_id") == "" {
		return nil, fmt.Errorf("%w: no IPN fields", ipn.ErrMalformed)
	}
	return v, nil
}

// Check: PayPal signs nothing; authenticity comes from the postback in the
// pipeline. The message is stored once per ipn_track_id (or, without one,
// per txn_id and payment_status).
func (g *payPalGateway) Check(in *Inbound) (string, error) {
	v, err := ParsePayPalForm(in.Body)
	if err != nil {
		return "", err
	}
	if id := v.Get("ipn_track_id"); id != "" {
		return "track:" + id, nil
	}
	if txn := v.Get("txn_id"); txn != "" {
		return "txn:" + txn + ":" + v.Get("payment_status"), nil
	}
	return "", nil
}

// Verify posts "cmd=_notify-validate&" + the exact bytes received back to
// PayPal and reads VERIFIED or INVALID.
func (g *payPalGateway) Verify(ctx context.Context, n *ipn.Notification) error {
	body := make([]byte, 0, len(n.Body)+21)
	body = append(append(body, "cmd=_notify-validate&"...), n.Body...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.verifyURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", payPalUserAgent)
	resp, err := g.client.Do(req)
	if err != nil {
		return fmt.Errorf("postback: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return fmt.Errorf("postback: reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("postback: HTTP %d", resp.StatusCode)
	}
	switch string(bytes.TrimSpace(answer)) {
	case "VERIFIED":
		return nil
	case "INVALID":
		return fmt.Errorf("%w: PayPal postback", ipn.ErrInvalid)
	}
	return fmt.Errorf("postback: unexpected answer (%d bytes)", len(answer))
}

// PayPalFields decodes an IPN's values from the charset its "charset"
// field names (windows-1252 when absent or unknown) into UTF-8. The raw
// body is never changed; this is for display and events.
func PayPalFields(body []byte) (map[string]string, error) {
	v, err := ParsePayPalForm(body)
	if err != nil {
		return nil, err
	}
	var enc encoding.Encoding = charmap.Windows1252
	if cs := strings.TrimSpace(v.Get("charset")); cs != "" {
		if e, err := htmlindex.Get(cs); err == nil {
			enc = e
		}
	}
	out := make(map[string]string, len(v))
	for k, vs := range v {
		raw := vs[0]
		if enc == encoding.Nop || enc == unicode.UTF8 {
			out[k] = strings.ToValidUTF8(raw, "\uFFFD")
			continue
		}
		if s, err := enc.NewDecoder().String(raw); err == nil {
			out[k] = s
		} else {
			out[k] = strings.ToValidUTF8(raw, "\uFFFD")
		}
	}
	return out, nil
}

// ReceiverOK reports whether the payment was sent to one of the given
// receivers: receiver_email or receiver_id, the account that got the
// money. business is not looked at: it is the button's field, which the
// buyer can edit, and a payment can name the merchant there while the
// money went to another account. An IPN ipnd does not act on (type
// other: masspay, the merchant's own payouts, which name the payees in
// receiver_email_1, ... and no receiver of the merchant's; mp_signup,
// subscr_modify, ...) moves no money to an order, so there is no
// receiver to check: it is stored as other, with no alert.
func (g *payPalGateway) ReceiverOK(n *ipn.Notification, receivers []string) bool {
	f, err := PayPalFields(n.Body)
	if err != nil {
		return false
	}
	if PayPalEvent(f).Type == ipn.TypeOther {
		return true
	}
	for _, want := range receivers {
		for _, k := range []string{"receiver_email", "receiver_id"} {
			if got := f[k]; got != "" && strings.EqualFold(got, want) {
				return true
			}
		}
	}
	return false
}

func (g *payPalGateway) Normalize(n *ipn.Notification) (*ipn.Event, error) {
	f, err := PayPalFields(n.Body)
	if err != nil {
		return nil, err
	}
	ev := PayPalEvent(f)
	if ev.Amount != "" {
		amt, err := ipn.NormalizeAmount(ev.Amount, ev.Currency)
		if err != nil {
			return nil, err
		}
		ev.Amount = amt
	}
	return ev, nil
}

// PayPalEvent maps decoded IPN fields to an Event (amount as sent).
func PayPalEvent(f map[string]string) *ipn.Event {
	status := f["payment_status"]
	ev := &ipn.Event{
		Type:           ipn.TypeOther,
		GatewayStatus:  strings.Trim(f["txn_type"]+"/"+status, "/"),
		TxnID:          f["txn_id"],
		ParentTxnID:    f["parent_txn_id"],
		EventID:        f["ipn_track_id"],
		OrderID:        cmp.Or(f["invoice"], f["custom"], f["rp_invoice_id"]),
		Amount:         cmp.Or(f["mc_gross"], f["amount"], f["mc_amount3"], f["amount_per_cycle"]),
		Currency:       strings.ToUpper(cmp.Or(f["mc_currency"], f["currency_code"])),
		CustomerEmail:  f["payer_email"],
		CustomerName:   strings.TrimSpace(f["first_name"] + " " + f["last_name"]),
		Receiver:       cmp.Or(f["receiver_email"], f["receiver_id"]),
		SubscriptionID: cmp.Or(f["subscr_id"], f["recurring_payment_id"]),
		Test:           f["test_ipn"] == "1",
		Items:          payPalItems(f),
		PeriodEnd:      payPalDate(f["next_payment_date"]),
	}
	if r := cmp.Or(f["pending_reason"], f["reason_code"], f["case_type"]); r != "" {
		ev.GatewayStatus += " (" + r + ")"
	}
	byStatus := func() {
		switch status {
		case "Completed", "Processed":
			ev.Type, ev.Status = ipn.TypePayment, ipn.StatusCompleted
		case "Pending", "Created":
			ev.Type, ev.Status = ipn.TypePayment, ipn.StatusPending
		case "Refunded":
			ev.Type, ev.Status = ipn.TypeRefund, ipn.StatusRefunded
		case "Reversed":
			ev.Type, ev.Status = ipn.TypeReversal, ipn.StatusReversed
		case "Canceled_Reversal":
			ev.Type, ev.Status = ipn.TypeReversalCanceled, ipn.StatusCompleted
		case "Denied", "Declined":
			ev.Type, ev.Status = ipn.TypePayment, ipn.StatusDenied
		case "Failed":
			ev.Type, ev.Status = ipn.TypePayment, ipn.StatusFailed
		case "Expired":
			ev.Type, ev.Status = ipn.TypePayment, ipn.StatusExpired
		case "Voided":
			ev.Type, ev.Status = ipn.TypePayment, ipn.StatusCanceled
		}
	}
	switch t := f["txn_type"]; t {
	case "subscr_signup", "recurring_payment_profile_created":
		ev.Type, ev.Status = ipn.TypeSubscriptionStarted, ipn.StatusCompleted
	case "subscr_payment", "recurring_payment":
		byStatus()
		if ev.Type == ipn.TypePayment {
			ev.Type = ipn.TypeSubscriptionPayment
		}
	case "subscr_failed", "recurring_payment_failed", "recurring_payment_skipped",
		"recurring_payment_suspended", "recurring_payment_suspended_due_to_max_failed_payment":
		ev.Type, ev.Status = ipn.TypeSubscriptionPayment, ipn.StatusFailed
	case "subscr_cancel", "recurring_payment_profile_cancel":
		ev.Type, ev.Status = ipn.TypeSubscriptionCanceled, ipn.StatusCanceled
	case "subscr_eot", "recurring_payment_expired":
		ev.Type, ev.Status = ipn.TypeSubscriptionExpired, ipn.StatusExpired
	case "new_case":
		// A case names the disputed payment by its txn_id: the case is
		// the dispute (txn id), the payment its parent, so that several
		// cases on one payment stay apart and a Canceled_Reversal of the
		// payment ends them.
		ev.Type, ev.Status = ipn.TypeDispute, ipn.StatusPending
		if c := f["case_id"]; c != "" {
			ev.TxnID, ev.ParentTxnID = c, f["txn_id"]
		}
	case "adjustment":
		ev.Type, ev.Status = ipn.TypeReversal, ipn.StatusReversed
	case "subscr_modify", "recurring_payment_profile_modify", "masspay", "mp_signup", "mp_cancel", "merch_pmt":
		// Informational: stored, not acted on.
	default: // web_accept, cart, express_checkout, send_money, virtual_terminal, pro_hosted, "" (chargebacks), ...
		byStatus()
	}
	ev.Unsign() // a refund's or reversal's negative mc_gross
	return ev
}

// checkPayPal refuses a paypal gateway without receivers. PayPal signs
// nothing the merchant can check: without the merchant's own account, a
// genuine IPN of a payment to anyone else (on a sandbox gateway: to any
// sandbox account) would pay the order.
func checkPayPal(cfg Config) *Problem {
	if len(cfg.Receivers) > 0 {
		return nil
	}
	return &Problem{Key: "receivers", Value: "", Why: "a paypal gateway needs the merchant's PayPal account " +
		"(receiver_email or receiver_id of your account) in receivers or orders.receivers: " +
		"otherwise a payment to someone else's account would pay the order"}
}
