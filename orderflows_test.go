package main

// Whole flows of issue 19 (points 1 to 3), over real HTTP into a real
// ipnd, with the identifiers each gateway really sends: refund amounts,
// the end of a dispute, payments that name no order.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// flowDaemon is an ipnd with a PayPal gateway (verified by a local
// postback server), a Stripe gateway, the in-process SMTP server and a
// shop receiving callbacks.
type flowDaemon struct {
	*daemon
	paypal *fakePayPal
	smtp   *fakeSMTP
	shop   *shopReceiver
	stripe func(id, typ, object string)
}

func newFlowDaemon(t *testing.T, extra string) *flowDaemon {
	t.Helper()
	f := &flowDaemon{paypal: newFakePayPal(t), smtp: newFakeSMTP(t, "127.0.0.1:0")}
	shop, shopURL := newShopReceiver(t)
	f.shop = shop
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "warn"
[pipeline]
verify_timeout = "2s"
retry_base = "20ms"
retry_cap = "80ms"
outbox_retry_base = "20ms"
outbox_retry_cap = "100ms"
[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "Shop <shop@example.com>"
timeout = "2s"
[email]
merchant_to = "owner@example.com"
max_attempts = 3
[shop]
url = %q
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
[[gateway]]
name = "stripe"
kind = "stripe"
secret = "whsec_trust"
%s`, f.smtp.port(), shopURL, f.paypal.srv.URL+"/cgi-bin/webscr", extra))
	f.daemon = startDaemon(t, dir, cfg)
	f.stripe = stripePoster(t, f.daemon, "stripe", "whsec_trust")
	return f
}

// ipn posts a PayPal IPN built from fields (see ipnBody) and returns
// nothing: a refusal fails the test.
func (f *flowDaemon) ipn(fields ...string) {
	f.t.Helper()
	body := ipnBody(fields...)
	f.paypal.remember(body)
	if code := f.postIPN("paypal", body); code != 200 {
		f.t.Fatalf("IPN %v: HTTP %d", fields, code)
	}
}

// callbacks waits until the shop has at least n callbacks about order id
// and returns them as "type" strings and their data.event.
func (f *flowDaemon) callbacks(id string, n int) ([]string, []map[string]any) {
	f.t.Helper()
	var types []string
	var events []map[string]any
	waitFor(f.t, fmt.Sprintf("%d callbacks for %s", n, id), 20*time.Second, func() bool {
		types, events = nil, nil
		for _, b := range f.shop.forOrder(id) {
			types = append(types, fmt.Sprint(b["type"]))
			ev, _ := b["data"].(map[string]any)["event"].(map[string]any)
			events = append(events, ev)
		}
		return len(types) >= n
	})
	return types, events
}

// byVersion orders callbacks by data.order.version (the shop keeps the
// highest; the lane may deliver them in any order).
func (f *flowDaemon) byVersion(id string, n int) []map[string]any {
	f.t.Helper()
	f.callbacks(id, n)
	out := make([]map[string]any, 0, n)
	bodies := f.shop.forOrder(id)
	for v := 0; len(out) < len(bodies) && v < 1000; v++ {
		for _, b := range bodies {
			if o := b["data"].(map[string]any)["order"].(map[string]any); int(o["version"].(float64)) == v {
				out = append(out, b)
			}
		}
	}
	return out
}

func cbType(b map[string]any) string { return fmt.Sprint(b["type"]) }

func cbEvent(b map[string]any, field string) string {
	ev, _ := b["data"].(map[string]any)["event"].(map[string]any)
	if v, ok := ev[field]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// TestRefundAmountsAgree (issue 19 point 3): a refund's amount is the
// amount of that refund, positive, for PayPal and Stripe alike, and the
// running total Stripe sends is in refunded_total; the shop, the
// customer's email, the admin API and `ipnd ls` say the same.
func TestRefundAmountsAgree(t *testing.T) {
	f := newFlowDaemon(t, "")

	// PayPal: a payment of 30.00, a partial refund of 10.00 (mc_gross -10.00).
	f.ipn("txn_id", "61E67681CH3238416", "invoice", "PP-R1", "mc_gross", "30.00", "payer_email", "ann@example.com")
	waitOrder(t, f.daemon, "PP-R1", ipn.OrderPaid)
	f.ipn("txn_id", "2BD47329K5432911C", "parent_txn_id", "61E67681CH3238416", "invoice", "PP-R1",
		"payment_status", "Refunded", "reason_code", "refund", "mc_gross", "-10.00", "payer_email", "ann@example.com")
	if o := waitOrder(t, f.daemon, "PP-R1", ipn.OrderPartiallyRefunded); o.Refunded != "10.00" {
		t.Errorf("PP-R1 refunded %s, want 10.00", o.Refunded)
	}

	// Stripe: a Checkout payment of 40.00, refunds of 10.00 then 15.00.
	// The first charge.refunded lists its refunds (older API versions),
	// the second does not (2022-11-15 and later): its own amount comes
	// from amount_refunded and what the order had.
	f.stripe("evt_1QdR1", "checkout.session.completed", `{"id":"cs_test_a1R","object":"checkout.session","client_reference_id":"ST-R1","payment_intent":"pi_3QdR1","amount_total":4000,"currency":"usd","mode":"payment","payment_status":"paid","status":"complete","customer_details":{"email":"bob@example.com"},"metadata":{}}`)
	waitOrder(t, f.daemon, "ST-R1", ipn.OrderPaid)
	f.stripe("evt_1QdR2", "charge.refunded", `{"id":"ch_3QdR1","object":"charge","amount":4000,"amount_refunded":1000,"currency":"usd","payment_intent":"pi_3QdR1","refunded":false,"metadata":{},"refunds":{"object":"list","data":[{"id":"re_3QdR1a","object":"refund","amount":1000,"created":1733480000,"status":"succeeded"}],"has_more":false}}`)
	waitFor(t, "ST-R1 refunded 10.00", 15*time.Second, func() bool {
		var o ipn.Order
		f.api("GET", "/api/orders/ST-R1", nil, &o)
		return o.Refunded == "10.00"
	})
	f.stripe("evt_1QdR3", "charge.refunded", `{"id":"ch_3QdR1","object":"charge","amount":4000,"amount_refunded":2500,"currency":"usd","payment_intent":"pi_3QdR1","refunded":false,"metadata":{}}`)
	waitFor(t, "ST-R1 refunded 25.00", 15*time.Second, func() bool {
		var o ipn.Order
		f.api("GET", "/api/orders/ST-R1", nil, &o)
		return o.Refunded == "25.00" && o.Status == ipn.OrderPartiallyRefunded
	})

	// The shop.
	pp := f.byVersion("PP-R1", 2)
	if len(pp) != 2 || cbType(pp[1]) != "order.partially_refunded" || cbEvent(pp[1], "amount") != "10.00" || cbEvent(pp[1], "refunded_total") != "" {
		t.Errorf("PayPal refund callback: %v", pp)
	}
	st := f.byVersion("ST-R1", 3)
	if len(st) != 3 {
		t.Fatalf("Stripe callbacks: %v", st)
	}
	for i, want := range [][2]string{{"10.00", "10.00"}, {"15.00", "25.00"}} {
		b := st[i+1]
		if cbType(b) != "order.partially_refunded" || cbEvent(b, "amount") != want[0] || cbEvent(b, "refunded_total") != want[1] {
			t.Errorf("Stripe refund %d callback: type %s amount %q refunded_total %q, want %s / %s",
				i+1, cbType(b), cbEvent(b, "amount"), cbEvent(b, "refunded_total"), want[0], want[1])
		}
	}

	// The customers' emails.
	for to, want := range map[string][]string{"ann@example.com": {"refund of 10.00 USD"}, "bob@example.com": {"refund of 10.00 USD", "refund of 15.00 USD"}} {
		var mails []string
		waitFor(t, "refund emails to "+to, 15*time.Second, func() bool {
			mails = nil
			for _, m := range mailText(t, f.smtp, to) {
				if strings.Contains(m, "refund issued") {
					mails = append(mails, m)
				}
			}
			return len(mails) >= len(want)
		})
		all := strings.Join(mails, "\n")
		for _, w := range want {
			if !strings.Contains(all, w) {
				t.Errorf("emails to %s do not say %q:\n%s", to, w, all)
			}
		}
	}

	// The admin API and `ipnd ls`: notifications 2 (PayPal refund), 4 and 5
	// (Stripe refunds).
	for id, want := range map[uint64][2]string{2: {"10.00", ""}, 4: {"10.00", "10.00"}, 5: {"15.00", "25.00"}} {
		n := f.notification(id)
		if n.Event == nil || n.Event.Amount != want[0] || n.Event.RefundedTotal != want[1] {
			t.Errorf("notification %d event %+v, want amount %s refunded_total %q", id, n.Event, want[0], want[1])
		}
	}
	out, err := runCmd(t, envFunc("IPND_ADMIN_URL", f.addr("admin"), "IPND_ADMIN_TOKEN", "t"), "ls")
	if err != nil {
		t.Fatalf("ipnd ls: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "refund") && (strings.Contains(line, "-10.00") || strings.Contains(line, "25.00")) {
			t.Errorf("ipnd ls shows a signed or running amount for a refund: %q", line)
		}
	}
	if !strings.Contains(out, "15.00 USD") {
		t.Errorf("ipnd ls does not show the 15.00 refund:\n%s", out)
	}
}

// merchantMails waits until the merchant has at least n emails whose
// subject contains what, and returns them.
func (f *flowDaemon) merchantMails(what string, n int) []string {
	f.t.Helper()
	var got []string
	waitFor(f.t, fmt.Sprintf("%d merchant emails %q", n, what), 20*time.Second, func() bool {
		got = nil
		for _, m := range mailText(f.t, f.smtp, "owner@example.com") {
			subject, _, _ := strings.Cut(m, "\n")
			if strings.Contains(subject, what) {
				got = append(got, m)
			}
		}
		return len(got) >= n
	})
	return got
}

func cbTypes(bodies []map[string]any) []string {
	var out []string
	for _, b := range bodies {
		out = append(out, cbType(b))
	}
	return out
}

// TestDisputeLifecycle (issue 19 point 2): a dispute ends where the money
// ends. PayPal: a chargeback case (new_case), its Reversed and its
// Canceled_Reversal take a partially refunded order back to
// partially_refunded. Stripe: charge.dispute.closed won (without
// funds_reinstated) takes the order back to paid; lost leaves it
// reversed. The shop hears each step, the merchant gets one email per
// change.
func TestDisputeLifecycle(t *testing.T) {
	f := newFlowDaemon(t, "")
	const pay = "9XK10393JT4876123"
	f.ipn("txn_id", pay, "invoice", "PP-D1", "mc_gross", "25.00", "payer_email", "cat@example.com")
	waitOrder(t, f.daemon, "PP-D1", ipn.OrderPaid)
	f.ipn("txn_id", "1LM27766AB5128114", "parent_txn_id", pay, "invoice", "PP-D1", "payment_status", "Refunded",
		"reason_code", "refund", "mc_gross", "-5.00")
	waitOrder(t, f.daemon, "PP-D1", ipn.OrderPartiallyRefunded)
	// The case names the payment by its txn_id, not the order.
	f.ipn("txn_type", "new_case", "payment_status", "", "txn_id", pay, "case_id", "PP-D-27803", "case_type", "chargeback",
		"reason_code", "unauthorized_claim", "case_creation_date", "02:31:03 Dec 06, 2026 PST", "invoice", "", "mc_gross", "")
	waitOrder(t, f.daemon, "PP-D1", ipn.OrderDisputed)
	f.ipn("txn_id", "4TN23489WK6412730", "parent_txn_id", pay, "invoice", "", "payment_status", "Reversed",
		"reason_code", "chargeback", "mc_gross", "-25.00")
	waitOrder(t, f.daemon, "PP-D1", ipn.OrderReversed)
	f.ipn("txn_id", "7EU40210RT9283412", "parent_txn_id", pay, "invoice", "", "payment_status", "Canceled_Reversal",
		"reason_code", "other", "mc_gross", "25.00")
	if o := waitOrder(t, f.daemon, "PP-D1", ipn.OrderPartiallyRefunded); o.Paid != "25.00" || o.Refunded != "5.00" {
		t.Errorf("PP-D1 after the won chargeback: paid %s refunded %s", o.Paid, o.Refunded)
	}
	want := "order.paid order.partially_refunded order.disputed order.reversed order.partially_refunded"
	if got := strings.Join(cbTypes(f.byVersion("PP-D1", 5)), " "); got != want {
		t.Errorf("PP-D1 callbacks %s, want %s", got, want)
	}

	// Stripe, won: created, funds withdrawn, closed won (no funds_reinstated).
	f.stripe("evt_1QdW1", "checkout.session.completed", `{"id":"cs_test_a1W","object":"checkout.session","client_reference_id":"ST-D1","payment_intent":"pi_3QdW1","amount_total":4200,"currency":"eur","mode":"payment","payment_status":"paid","customer_details":{"email":"dan@example.com"},"metadata":{}}`)
	waitOrder(t, f.daemon, "ST-D1", ipn.OrderPaid)
	f.stripe("evt_1QdW2", "charge.dispute.created", `{"id":"dp_1QdW1","object":"dispute","amount":4200,"currency":"eur","charge":"ch_3QdW1","payment_intent":"pi_3QdW1","reason":"fraudulent","status":"needs_response","metadata":{}}`)
	waitOrder(t, f.daemon, "ST-D1", ipn.OrderDisputed)
	f.stripe("evt_1QdW3", "charge.dispute.funds_withdrawn", `{"id":"dp_1QdW1","object":"dispute","amount":4200,"currency":"eur","charge":"ch_3QdW1","payment_intent":"pi_3QdW1","reason":"fraudulent","status":"needs_response","metadata":{}}`)
	waitOrder(t, f.daemon, "ST-D1", ipn.OrderReversed)
	f.stripe("evt_1QdW4", "charge.dispute.closed", `{"id":"dp_1QdW1","object":"dispute","amount":4200,"currency":"eur","charge":"ch_3QdW1","payment_intent":"pi_3QdW1","reason":"fraudulent","status":"won","metadata":{}}`)
	waitOrder(t, f.daemon, "ST-D1", ipn.OrderPaid)
	want = "order.paid order.disputed order.reversed order.paid"
	if got := strings.Join(cbTypes(f.byVersion("ST-D1", 4)), " "); got != want {
		t.Errorf("ST-D1 callbacks %s, want %s", got, want)
	}

	// Stripe, lost.
	f.stripe("evt_1QdL1", "checkout.session.completed", `{"id":"cs_test_a1L","object":"checkout.session","client_reference_id":"ST-D2","payment_intent":"pi_3QdL1","amount_total":1000,"currency":"eur","mode":"payment","payment_status":"paid","customer_details":{"email":"eve@example.com"},"metadata":{}}`)
	waitOrder(t, f.daemon, "ST-D2", ipn.OrderPaid)
	f.stripe("evt_1QdL2", "charge.dispute.created", `{"id":"dp_1QdL1","object":"dispute","amount":1000,"currency":"eur","charge":"ch_3QdL1","payment_intent":"pi_3QdL1","reason":"product_not_received","status":"needs_response","metadata":{}}`)
	waitOrder(t, f.daemon, "ST-D2", ipn.OrderDisputed)
	f.stripe("evt_1QdL3", "charge.dispute.closed", `{"id":"dp_1QdL1","object":"dispute","amount":1000,"currency":"eur","charge":"ch_3QdL1","payment_intent":"pi_3QdL1","reason":"product_not_received","status":"lost","metadata":{}}`)
	waitOrder(t, f.daemon, "ST-D2", ipn.OrderReversed)

	// The merchant: one email per change. PayPal: the case opened, the
	// chargeback's Reversed, its end; Stripe: the opening and the end of
	// each dispute.
	f.drained(12)
	opened, closed := f.merchantMails("dispute or reversal on order", 4), f.merchantMails("dispute or reversal ended", 3)
	if len(opened) != 4 || len(closed) != 3 {
		t.Fatalf("%d opened and %d ended emails, want 4 and 3", len(opened), len(closed))
	}
	ends := strings.Join(closed, "\n----\n")
	for _, w := range []string{"order PP-D1", "won; order partially_refunded", "order ST-D1", "won; order paid", "order ST-D2", "lost; order reversed"} {
		if !strings.Contains(ends, w) {
			t.Errorf("no dispute-ended email says %q:\n%s", w, ends)
		}
	}
}

// metricsText returns the daemon's /metrics page.
func (f *flowDaemon) metricsText() string {
	f.t.Helper()
	req, _ := http.NewRequest("GET", f.addr("admin")+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestOrderlessPayments (issue 19 point 1): a PayPal "Buy Now" payment
// without invoice or custom, and a Stripe Payment Link payment (its
// charge and payment intent first, then a Checkout Session without
// client_reference_id), each become an order of their own, with the
// customer's email, the order.paid callback, and the refunds and
// disputes that name only the gateway's ids.
func TestOrderlessPayments(t *testing.T) {
	f := newFlowDaemon(t, "")

	const txn = "8MC585209K746392H"
	f.ipn("txn_id", txn, "invoice", "", "item_number", "BN-7", "item_name", "Poster", "mc_gross", "12.00", "payer_email", "fay@example.com")
	const ppOrder = "paypal:" + txn
	if o := waitOrder(t, f.daemon, ppOrder, ipn.OrderPaid); o.Paid != "12.00" || o.CustomerEmail != "fay@example.com" {
		t.Errorf("%s: %+v", ppOrder, o)
	}
	f.ipn("txn_id", "5WJ01929T3378362C", "parent_txn_id", txn, "invoice", "", "payment_status", "Refunded",
		"reason_code", "refund", "mc_gross", "-2.00", "payer_email", "fay@example.com")
	if o := waitOrder(t, f.daemon, ppOrder, ipn.OrderPartiallyRefunded); o.Refunded != "2.00" {
		t.Errorf("%s after a refund: refunded %s", ppOrder, o.Refunded)
	}
	f.ipn("txn_type", "new_case", "payment_status", "", "txn_id", txn, "case_id", "PP-D-31337", "case_type", "complaint",
		"reason_code", "non_receipt", "invoice", "", "mc_gross", "")
	waitOrder(t, f.daemon, ppOrder, ipn.OrderDisputed)

	// Stripe Payment Link: the charge and the intent come first.
	f.stripe("evt_3QdP1", "charge.succeeded", `{"id":"ch_3QdPL1","object":"charge","amount":2900,"amount_refunded":0,"currency":"usd","payment_intent":"pi_3QdPL1","paid":true,"status":"succeeded","billing_details":{"email":"gus@example.com","name":"Gus"},"metadata":{}}`)
	f.stripe("evt_3QdP2", "payment_intent.succeeded", `{"id":"pi_3QdPL1","object":"payment_intent","amount":2900,"amount_received":2900,"currency":"usd","latest_charge":"ch_3QdPL1","status":"succeeded","metadata":{}}`)
	f.drained(5)
	f.stripe("evt_3QdP3", "checkout.session.completed", `{"id":"cs_live_a1PL","object":"checkout.session","client_reference_id":null,"payment_link":"plink_1QdPL","payment_intent":"pi_3QdPL1","amount_total":2900,"currency":"usd","mode":"payment","payment_status":"paid","status":"complete","customer_details":{"email":"gus@example.com","name":"Gus"},"metadata":{}}`)
	const stOrder = "stripe:pi_3QdPL1"
	if o := waitOrder(t, f.daemon, stOrder, ipn.OrderPaid); o.Paid != "29.00" || len(o.Flags) != 0 {
		t.Errorf("%s: paid %s flags %v, want one payment of 29.00", stOrder, o.Paid, o.Flags)
	}
	f.stripe("evt_3QdP4", "charge.refunded", `{"id":"ch_3QdPL1","object":"charge","amount":2900,"amount_refunded":2900,"currency":"usd","payment_intent":"pi_3QdPL1","refunded":true,"metadata":{}}`)
	waitOrder(t, f.daemon, stOrder, ipn.OrderRefunded)
	f.drained(7)
	// The charge waited for the session and reached its order; the intent
	// reports the same payment fact (a duplicate of the charge).
	if n := f.notification(4); n.State != "applied" || n.Event == nil || n.Event.OrderID != stOrder {
		t.Errorf("notification 4 (the charge): %s %+v", n.State, n.Event)
	}
	if n := f.notification(5); n.State != "duplicate" || n.DuplicateOf != 4 {
		t.Errorf("notification 5 (the intent): %s duplicate of %d", n.State, n.DuplicateOf)
	}

	// The customers and the shop heard of both.
	for to, order := range map[string]string{"fay@example.com": ppOrder, "gus@example.com": stOrder} {
		waitFor(t, "payment email to "+to, 15*time.Second, func() bool {
			for _, m := range mailText(t, f.smtp, to) {
				if strings.Contains(m, "payment received") && strings.Contains(m, order) {
					return true
				}
			}
			return false
		})
	}
	if got := strings.Join(cbTypes(f.byVersion(ppOrder, 3)), " "); got != "order.paid order.partially_refunded order.disputed" {
		t.Errorf("%s callbacks: %s", ppOrder, got)
	}
	if got := strings.Join(cbTypes(f.byVersion(stOrder, 2)), " "); got != "order.paid order.refunded" {
		t.Errorf("%s callbacks: %s", stOrder, got)
	}
	if m := f.metricsText(); !strings.Contains(m, "ipnd_parked_events 0") {
		t.Errorf("parked events left:\n%s", grepLines(m, "ipnd_parked_events"))
	}
}

// TestParkedEventExpires (issue 19 point 1): a refund whose payment never
// comes waits orders.park_for, then fails with the reason, the merchant
// is told once, ipnd_parked_events goes back down, and a replay after the
// payment arrived applies it.
func TestParkedEventExpires(t *testing.T) {
	f := newFlowDaemon(t, "[orders]\npark_for = \"1s\"\n")
	f.stripe("evt_3QdX1", "charge.refunded", `{"id":"ch_3QdX1","object":"charge","amount":5000,"amount_refunded":1500,"currency":"usd","payment_intent":"pi_3QdX1","refunded":false,"metadata":{}}`)
	n := f.waitState(1, "applied")
	if n.Event == nil || n.Event.OrderID != "" || !strings.Contains(n.History[len(n.History)-1].Detail, "waiting for its payment") {
		t.Fatalf("the early refund: %+v", n)
	}
	// (Polling the daemon, not sleeping: park_for runs on its own clock.)
	waitFor(t, "the parked refund failed", 20*time.Second, func() bool { return f.notification(1).State == "failed" })
	n = f.notification(1)
	if last := n.History[len(n.History)-1].Detail; !strings.Contains(last, "waited 1s for its payment (no order yet for ch_3QdX1, pi_3QdX1") {
		t.Errorf("failed with %q", last)
	}
	alert := f.merchantMails("never found its payment", 1)
	if !strings.Contains(alert[0], "waited 1s for its payment") || !strings.Contains(alert[0], "ipnd replay 1") {
		t.Errorf("alert:\n%s", alert[0])
	}
	waitFor(t, "ipnd_parked_events 0", 10*time.Second, func() bool { return strings.Contains(f.metricsText(), "ipnd_parked_events 0") })

	// The payment arrives after all; the merchant replays the refund.
	f.stripe("evt_3QdX2", "checkout.session.completed", `{"id":"cs_live_a1X","object":"checkout.session","client_reference_id":"X-1","payment_intent":"pi_3QdX1","amount_total":5000,"currency":"usd","mode":"payment","payment_status":"paid","customer_details":{"email":"hal@example.com"},"metadata":{}}`)
	waitOrder(t, f.daemon, "X-1", ipn.OrderPaid)
	if code := f.api("POST", "/api/notifications/1/replay", nil, nil); code/100 != 2 {
		t.Fatalf("replay: HTTP %d", code)
	}
	if o := waitOrder(t, f.daemon, "X-1", ipn.OrderPartiallyRefunded); o.Refunded != "15.00" {
		t.Errorf("X-1 after the replay: refunded %s", o.Refunded)
	}
	f.drained(2)
	if got := len(f.merchantMails("never found its payment", 1)); got != 1 {
		t.Errorf("%d alerts, want 1", got)
	}
}
