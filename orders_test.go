package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// webhookDaemon runs ipnd with one standard-webhooks gateway "shop" and
// returns it with a function that posts signed ipnd events to it.
func webhookDaemon(t *testing.T, extra string) (*daemon, func(msgID, typ string, data map[string]any) int) {
	t.Helper()
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "warn"
%s
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, extra, secret))
	d := startDaemon(t, dir, cfg)
	return d, signedPoster(t, func() string { return d.addr("public") }, secret)
}

// signedPoster returns a function that posts signed ipnd events to the
// "shop" gateway (a standard-webhooks one with secret) of the daemon whose
// public URL public returns, and returns the status.
func signedPoster(tb testing.TB, public func() string, secret string) func(msgID, typ string, data map[string]any) int {
	key, _ := gateway.DecodeWebhookSecret(secret)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 20 * time.Second}
	return func(msgID, typ string, data map[string]any) int {
		body, _ := json.Marshal(map[string]any{"type": typ, "data": data})
		ts := time.Now().Unix()
		req, _ := http.NewRequest("POST", public()+"/ipn/shop", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Webhook-Id", msgID)
		req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, msgID, ts, body))
		resp, err := client.Do(req)
		if err != nil {
			tb.Error(err)
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
}

func (d *daemon) api(method, path string, body any, out any) int {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, d.addr("admin")+path, rd)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// drained waits until the pipeline has processed every stored notification.
func (d *daemon) drained(want int) {
	d.t.Helper()
	waitFor(d.t, fmt.Sprintf("%d notifications processed", want), 120*time.Second, func() bool {
		var list struct {
			Notifications []struct{ ID int }
		}
		d.api("GET", "/api/notifications?state=received&limit=1", nil, &list)
		if len(list.Notifications) > 0 {
			return false
		}
		d.api("GET", "/api/notifications?limit=1", nil, &list)
		return len(list.Notifications) == 1 && list.Notifications[0].ID >= want
	})
}

func TestOrderRegistryAPI(t *testing.T) {
	d, post := webhookDaemon(t, "")
	var o ipn.Order
	if code := d.api("POST", "/api/orders", map[string]any{"id": "ORDER-1", "amount": "19.99", "currency": "usd",
		"customer_email": "ann@example.com", "metadata": map[string]string{"download_url": "https://x/y"}}, &o); code != 201 ||
		o.Status != ipn.OrderAwaitingPayment || o.Currency != "USD" || o.Amount != "19.99" {
		t.Fatalf("create = %d %+v", code, o)
	}
	var e map[string]string
	if code := d.api("POST", "/api/orders", map[string]any{"id": "ORDER-1", "amount": "1.00", "currency": "USD", "customer_email": "a@b.c"}, &e); code != 409 {
		t.Errorf("duplicate id = %d %v", code, e)
	}
	for field, body := range map[string]map[string]any{
		"amount":         {"id": "O2", "amount": "1.999", "currency": "USD", "customer_email": "a@b.c"},
		"currency":       {"id": "O2", "amount": "1.00", "currency": "US DOLLAR", "customer_email": "a@b.c"},
		"customer_email": {"id": "O2", "amount": "1.00", "currency": "USD", "customer_email": "nobody"},
		"id":             {"id": "", "amount": "1.00", "currency": "USD", "customer_email": "a@b.c"},
		"colour":         {"id": "O2", "amount": "1.00", "currency": "USD", "customer_email": "a@b.c", "colour": "red"},
	} {
		e = nil
		if code := d.api("POST", "/api/orders", body, &e); code != 400 || !strings.Contains(e["error"], field) {
			t.Errorf("bad %s: %d %v", field, code, e)
		}
	}
	// Paid as expected: paid, with history.
	post("m1", "payment.completed", map[string]any{"txn_id": "T1", "order_id": "ORDER-1", "amount": "19.99", "currency": "USD", "customer_email": "ann@example.com"})
	waitFor(t, "order paid", 10*time.Second, func() bool {
		d.api("GET", "/api/orders/ORDER-1", nil, &o)
		return o.Status == ipn.OrderPaid
	})
	if o.Paid != "19.99" || o.Refunded != "0.00" || len(o.History) == 0 || o.History[len(o.History)-1].To != ipn.OrderPaid {
		t.Errorf("paid order = %+v", o)
	}
	var list struct{ Orders []ipn.Order }
	if code := d.api("GET", "/api/orders?status=paid", nil, &list); code != 200 || len(list.Orders) != 1 {
		t.Errorf("list paid = %d %+v", code, list)
	}
	if code := d.api("GET", "/api/orders/NOPE", nil, &e); code != 404 {
		t.Errorf("missing order = %d", code)
	}
	env := envFunc("IPND_CONFIG", filepath.Join(d.dir, "ipnd.toml"))
	if out, err := runCmd(t, env, "orders"); err != nil || !strings.Contains(out, "ORDER-1") || !strings.Contains(out, "paid") {
		t.Errorf("ipnd orders: %v\n%s", err, out)
	}
	if out, err := runCmd(t, env, "orders", "ORDER-1"); err != nil || !strings.Contains(out, `"history"`) {
		t.Errorf("ipnd orders ORDER-1: %v\n%s", err, out)
	}
	// The outbox holds the customer's payment_received email, once.
	var ob struct{ Items []struct{ Effect ipn.Effect } }
	d.api("GET", "/api/outbox", nil, &ob)
	n := 0
	for _, it := range ob.Items {
		if it.Effect.Template == ipn.TemplatePaymentReceived && it.Effect.OrderID == "ORDER-1" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("payment_received effects for ORDER-1: %d, want 1 (%+v)", n, ob.Items)
	}
}

func TestOrderFraudGoesToReview(t *testing.T) {
	// A shop that is never reachable: callbacks stay queued, and can be counted.
	d, post := webhookDaemon(t, "[orders]\nreceivers = [\"shop@example.com\"]\n[shop]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n")
	cases := []struct {
		id, flag string
		data     map[string]any
	}{
		{"O-AMOUNT", ipn.FlagAmountMismatch, map[string]any{"amount": "9.99", "currency": "USD"}},
		{"O-CURRENCY", ipn.FlagCurrencyMismatch, map[string]any{"amount": "19.99", "currency": "EUR"}},
		{"O-RECEIVER", ipn.FlagReceiverMismatch, map[string]any{"amount": "19.99", "currency": "USD", "receiver": "thief@example.com"}},
		{"O-TEST", ipn.FlagTestPayment, map[string]any{"amount": "19.99", "currency": "USD", "test": true}},
	}
	for i, tc := range cases {
		d.api("POST", "/api/orders", map[string]any{"id": tc.id, "amount": "19.99", "currency": "USD", "customer_email": "c@example.com"}, nil)
		tc.data["order_id"], tc.data["txn_id"] = tc.id, fmt.Sprintf("T%d", i)
		post("m-"+tc.id, "payment.completed", tc.data)
	}
	// Double payment: paid twice under two transactions.
	d.api("POST", "/api/orders", map[string]any{"id": "O-DOUBLE", "amount": "19.99", "currency": "USD", "customer_email": "c@example.com"}, nil)
	post("m-d1", "payment.completed", map[string]any{"order_id": "O-DOUBLE", "txn_id": "D1", "amount": "19.99", "currency": "USD"})
	post("m-d2", "payment.completed", map[string]any{"order_id": "O-DOUBLE", "txn_id": "D2", "amount": "19.99", "currency": "USD"})
	cases = append(cases, struct {
		id, flag string
		data     map[string]any
	}{"O-DOUBLE", ipn.FlagDoublePayment, nil})
	d.drained(6)
	var ob struct{ Items []struct{ Effect ipn.Effect } }
	d.api("GET", "/api/outbox", nil, &ob)
	for _, tc := range cases {
		var o ipn.Order
		d.api("GET", "/api/orders/"+tc.id, nil, &o)
		if o.Status != ipn.OrderReview || !strings.Contains(strings.Join(o.Flags, ","), tc.flag) {
			t.Errorf("%s: status %s flags %v, want review with %s", tc.id, o.Status, o.Flags, tc.flag)
		}
		merchant := 0
		for _, it := range ob.Items {
			if it.Effect.OrderID != tc.id {
				continue
			}
			if it.Effect.Template == ipn.TemplatePaymentReceived && tc.id != "O-DOUBLE" {
				t.Errorf("%s: the customer was told it is paid", tc.id)
			}
			if it.Effect.Kind == ipn.EffectEmailMerchant && it.Effect.Template == ipn.TemplateOrderReview {
				merchant++
			}
			// The shop hears of a refused payment's order (test, other
			// receiver) only as in review: never as paid.
			refused := tc.id == "O-TEST" || tc.id == "O-RECEIVER"
			if refused && it.Effect.Kind == ipn.EffectShopCallback && (it.Effect.Order == nil || it.Effect.Order.Status != ipn.OrderReview) {
				t.Errorf("%s: a shop callback for an order in review says %+v", tc.id, it.Effect.Order)
			}
		}
		if merchant != 1 {
			t.Errorf("%s: %d order_review merchant effects, want 1", tc.id, merchant)
		}
	}
}

// TestManyOrdersConcurrently posts 10,000 notifications over 1,000 orders
// from 64 clients at once (payments, partial refunds, exact duplicates and
// the same facts under new message ids, in random order) and checks every
// order's totals against the sum of its distinct events.
func TestManyOrdersConcurrently(t *testing.T) {
	d, post := webhookDaemon(t, "")
	type msg struct {
		id, typ string
		data    map[string]any
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var msgs []msg
	wantPaid := map[string]int{}     // cents
	wantRefunded := map[string]int{} // cents
	for i := 0; i < 1000; i++ {
		order := fmt.Sprintf("ORD-%04d", i)
		price := 1000 + rng.IntN(9000)
		wantPaid[order] = price
		msgs = append(msgs, msg{fmt.Sprintf("p-%d", i), "payment.completed",
			map[string]any{"order_id": order, "txn_id": "P" + order, "amount": cents(price), "currency": "USD"}})
		left := price
		for r := 0; r < 3 && left > 1; r++ {
			amt := 1 + rng.IntN(left/2)
			left -= amt
			wantRefunded[order] += amt
			msgs = append(msgs, msg{fmt.Sprintf("r-%d-%d", i, r), "payment.refunded",
				map[string]any{"order_id": order, "txn_id": fmt.Sprintf("R%s-%d", order, r), "parent_txn_id": "P" + order, "amount": cents(amt), "currency": "USD"}})
		}
	}
	for len(msgs) < 10000 { // duplicates: the same message again, or the same fact with a new id
		m := msgs[rng.IntN(len(msgs))]
		if rng.IntN(2) == 0 {
			m.id += "-again-" + strconv.Itoa(len(msgs))
		}
		msgs = append(msgs, m)
	}
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	work := make(chan msg)
	var wg sync.WaitGroup
	for c := 0; c < 64; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				if code := post(m.id, m.typ, m.data); code != 200 {
					t.Errorf("post %s: %d", m.id, code)
				}
			}
		}()
	}
	for _, m := range msgs {
		work <- m
	}
	close(work)
	wg.Wait()
	stored := map[string]bool{}
	for _, m := range msgs {
		stored[m.id] = true
	}
	d.drained(len(stored))
	bad := 0
	for order, paid := range wantPaid {
		var o ipn.Order
		d.api("GET", "/api/orders/"+order, nil, &o)
		if o.Paid != cents(paid) || o.Refunded != cents(wantRefunded[order]) || o.Status != ipn.OrderPartiallyRefunded {
			if bad++; bad <= 5 {
				t.Errorf("%s: status %s paid %s refunded %s; want partially_refunded %s %s", order, o.Status, o.Paid, o.Refunded, cents(paid), cents(wantRefunded[order]))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of 1000 orders wrong", bad)
	}
}

func cents(n int) string { return fmt.Sprintf("%d.%02d", n/100, n%100) }

// TestStripeRefundsEndToEnd: a JPY Stripe checkout, then two charge.refunded
// events carrying the cumulative amount_refunded (arriving in reverse
// order): partially refunded, then refunded, with exact totals.
func TestStripeRefundsEndToEnd(t *testing.T) {
	d, _ := webhookDaemon(t, "[[gateway]]\nname = \"stripe\"\nkind = \"stripe\"\nsecret = \"whsec_test\"\n")
	post := func(id, typ string, object string) {
		body := []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":%q,"livemode":true,"data":{"object":%s}}`, id, typ, object))
		now := time.Now().Unix()
		req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/stripe", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", fmt.Sprintf("t=%d,v1=%x", now, gateway.StripeSignature("whsec_test", now, body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("post %s: %v %v", id, err, resp)
		}
		resp.Body.Close()
	}
	d.api("POST", "/api/orders", map[string]any{"id": "JP-1", "amount": "1999", "currency": "JPY", "customer_email": "k@example.jp"}, nil)
	post("evt_1", "checkout.session.completed", `{"id":"cs_1","object":"checkout.session","client_reference_id":"JP-1","payment_intent":"pi_1","amount_total":1999,"currency":"jpy","payment_status":"paid","customer_details":{"email":"k@example.jp"}}`)
	post("evt_2", "payment_intent.succeeded", `{"id":"pi_1","object":"payment_intent","amount":1999,"currency":"jpy","metadata":{"order_id":"JP-1"}}`)
	var o ipn.Order
	waitFor(t, "JP-1 paid", 10*time.Second, func() bool {
		d.api("GET", "/api/orders/JP-1", nil, &o)
		return o.Status == ipn.OrderPaid
	})
	post("evt_4", "charge.refunded", `{"id":"ch_1","object":"charge","payment_intent":"pi_1","amount":1999,"amount_refunded":1999,"currency":"jpy","metadata":{"order_id":"JP-1"}}`)
	post("evt_3", "charge.refunded", `{"id":"ch_1","object":"charge","payment_intent":"pi_1","amount":1999,"amount_refunded":500,"currency":"jpy","metadata":{"order_id":"JP-1"}}`)
	d.drained(4)
	d.api("GET", "/api/orders/JP-1", nil, &o)
	if o.Status != ipn.OrderRefunded || o.Paid != "1999" || o.Refunded != "1999" || len(o.Flags) != 0 {
		t.Errorf("JP-1 = %s paid %s refunded %s flags %v; want refunded 1999/1999, no flags", o.Status, o.Paid, o.Refunded, o.Flags)
	}
}
