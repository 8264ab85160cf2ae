package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"ipnd/ipn"
)

// dash is a signed-in browser of the dashboard, without JavaScript: a
// cookie jar, redirects not followed.
type dash struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

var dashCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func signInDash(t *testing.T, d *daemon) *dash {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	b := &dash{t: t, base: d.addr("admin"), c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	resp, _ := b.post("/login", url.Values{"token": {"t"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	_, page := b.get("/")
	m := dashCSRF.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the overview has no CSRF token")
	}
	b.csrf = m[1]
	return b
}

func (b *dash) get(path string) (*http.Response, string) {
	b.t.Helper()
	return b.do("GET", path, nil)
}

// post sends form (with the session's CSRF token, when it has one).
func (b *dash) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	if b.csrf != "" && !form.Has("csrf") {
		form.Set("csrf", b.csrf)
	}
	return b.do("POST", path, form)
}

func (b *dash) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	return resp, string(page)
}

// TestDashboardNotificationCharset: a PayPal IPN sent in windows-1252
// is shown decoded (José, Café crème) on its page, while the stored
// bytes stay as sent; one without a charset field is decoded as
// windows-1252 as the gateway does; "what decided it" shows the
// verification and the transition the payment caused on its order,
// linked.
func TestDashboardNotificationCharset(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	if st := d.api("POST", "/api/orders", map[string]any{"id": "ORDER-1", "amount": "19.95", "currency": "USD",
		"customer_email": "buyer@example.com"}, nil); st != http.StatusCreated {
		t.Fatalf("register ORDER-1: %d", st)
	}
	body := ipnBody("txn_id", "T-CS", "ipn_track_id", "tr-1", "item_name", "Caf\xe9 cr\xe8me")
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != 200 {
		t.Fatalf("IPN: %d", code)
	}
	d.waitState(1, "applied")
	// Without a charset field (and a txn the order does not know: a
	// second payment of ORDER-1 is a double payment, flagged).
	bare := []byte(strings.Replace(string(ipnBody("txn_id", "T-BARE", "ipn_track_id", "tr-2")), "charset=windows-1252&", "", 1))
	fake.remember(bare)
	if code := d.postIPN("paypal", bare); code != 200 {
		t.Fatalf("IPN: %d", code)
	}
	d.waitState(2, "applied")

	b := signInDash(t, d)
	resp, page := b.get("/notifications/1")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /notifications/1: %d", resp.StatusCode)
	}
	for _, want := range []string{"<td>José</td>", "<td>Café crème</td>", "Charset: windows-1252.",
		`<dd id="verification">verified: <strong>applied</strong>`,
		`<a href="/orders/ORDER-1">ORDER-1</a>`, `<a href="/orders/ORDER-1#transitions">`, "→ <strong>paid</strong>"} {
		if !strings.Contains(page, want) {
			t.Errorf("notification 1's page lacks %q", want)
		}
	}
	if strings.Contains(page, "\ufffd") {
		t.Error("notification 1's page shows replacement characters")
	}
	if n := d.notification(1); n.Body == nil || *n.Body != string(body) {
		t.Error("the stored body is no longer the bytes PayPal sent")
	}
	_, page = b.get("/notifications/2")
	for _, want := range []string{"<td>José</td>", "Charset: windows-1252 (none named: PayPal&#39;s default"} {
		if !strings.Contains(page, want) {
			t.Errorf("notification 2's page lacks %q", want)
		}
	}
}

// TestDashboardSubscriptionsRejections: the subscriptions page lists
// them (filtered by status, each linked to its page with its events and
// notifications) and the rejections page counts the refused requests
// by reason; both are in the navigation and need no JavaScript.
func TestDashboardSubscriptionsRejections(t *testing.T) {
	d, post := webhookDaemon(t, "")
	post("s1", "subscription.started", map[string]any{"subscription_id": "SUB-1", "order_id": "ORDER-S1", "customer_email": "sub@example.com"})
	post("s2", "subscription.payment", map[string]any{"subscription_id": "SUB-1", "order_id": "ORDER-S1", "txn_id": "TS1", "amount": "5.00", "currency": "USD"})
	post("s3", "subscription.started", map[string]any{"subscription_id": "SUB-2", "order_id": "ORDER-S2"})
	post("s4", "subscription.canceled", map[string]any{"subscription_id": "SUB-2", "order_id": "ORDER-S2"})
	d.drained(4)
	for range 3 { // bad signatures
		resp, err := http.Post(d.addr("public")+"/ipn/shop", "application/json", strings.NewReader(`{"type":"payment.completed"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Post(d.addr("public")+"/ipn/nowhere", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	b := signInDash(t, d)
	_, page := b.get("/subscriptions")
	for _, want := range []string{`<a href="/subscriptions"`, `<a href="/rejections"`, `<a href="/subscriptions/SUB-1">SUB-1</a>`,
		`<a href="/subscriptions/SUB-2">SUB-2</a>`, `<a href="/orders/ORDER-S1">`, `<label for="f-sub-status">`} {
		if !strings.Contains(page, want) {
			t.Errorf("/subscriptions lacks %q", want)
		}
	}
	if strings.Contains(page, "<script") {
		t.Error("/subscriptions loads a script")
	}
	_, page = b.get("/subscriptions?status=canceled")
	if !strings.Contains(page, "SUB-2") || strings.Contains(page, "SUB-1") {
		t.Errorf("/subscriptions?status=canceled: want SUB-2 only:\n%s", page)
	}
	resp, page = b.get("/subscriptions/SUB-1")
	if resp.StatusCode != 200 {
		t.Fatalf("/subscriptions/SUB-1: %d", resp.StatusCode)
	}
	for _, want := range []string{`<dd id="sub-status" class="status active">active</dd>`, "TS1", `<a href="/notifications/1">1</a>`,
		`<a href="/notifications/2">2</a>`, "subscription_payment"} {
		if !strings.Contains(page, want) {
			t.Errorf("/subscriptions/SUB-1 lacks %q", want)
		}
	}
	if _, page := b.get("/orders/ORDER-S1"); !strings.Contains(page, `<a href="/subscriptions/SUB-1">subscription SUB-1</a>`) {
		t.Error("ORDER-S1's facts do not link their subscription")
	}
	if resp, _ := b.get("/subscriptions/NOPE"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/subscriptions/NOPE: %d, want 404", resp.StatusCode)
	}
	_, page = b.get("/rejections")
	reasons := regexp.MustCompile(`<tr><td><a href="/rejections\?reason=([a-z_]+)">[a-z_]+</a></td><td class="num">(\d+)</td>`).FindAllStringSubmatch(page, -1)
	got := map[string]string{}
	for _, m := range reasons {
		got[m[1]] = m[2]
	}
	if got["bad_signature"] != "3" || got["unknown_gateway"] != "1" {
		t.Errorf("/rejections counts by reason: %v, want bad_signature 3, unknown_gateway 1\n%s", got, page)
	}
	_, page = b.get("/rejections?reason=unknown_gateway")
	if n := strings.Count(page, "<td>unknown_gateway</td>"); n != 1 || strings.Contains(page, "<td>bad_signature</td>") {
		t.Errorf("/rejections?reason=unknown_gateway lists %d of them, or others", n)
	}
}

// TestDashboardBulkReplay: the notifications page's bulk replay selects
// by the current filters (the invalid ones of one gateway), asks for a
// confirmation showing the count, needs the CSRF token, is bounded, and
// replays through the admin API's code path (POST /api/replay, tested
// here too): once PayPal answers VERIFIED, the replayed ones are applied
// and the other gateway's stay invalid until replayed through the API.
func TestDashboardBulkReplay(t *testing.T) {
	fake := newFakePayPal(t)
	var verified atomic.Bool
	fake.setAnswer(func(string, int) (int, string, time.Duration) {
		if verified.Load() {
			return 200, "VERIFIED", 0
		}
		return 200, "INVALID", 0
	})
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	for i, gw := range []string{"paypal", "paypal", "paypal", "paypal-sandbox"} {
		body := ipnBody("txn_id", fmt.Sprintf("T-%d", i+1), "ipn_track_id", fmt.Sprintf("tr-%d", i+1), "invoice", fmt.Sprintf("ORDER-%d", i+1))
		fake.remember(body)
		if code := d.postIPN(gw, body); code != 200 {
			t.Fatalf("IPN %d: %d", i+1, code)
		}
		d.waitState(uint64(i+1), "invalid")
	}
	verified.Store(true)

	b := signInDash(t, d)
	_, page := b.get("/notifications?gateway=paypal&state=invalid")
	if !strings.Contains(page, `action="/notifications-replay"`) || !strings.Contains(page, `id="bulk-replay"`) {
		t.Fatal("the filtered notifications page has no bulk replay form")
	}
	resp, page := b.get("/notifications-replay?gateway=paypal&state=invalid")
	if resp.StatusCode != 200 || !strings.Contains(page, `<dd id="bulk-count">3</dd>`) || !strings.Contains(page, `id="bulk-confirm"`) {
		t.Fatalf("confirmation page: %d\n%s", resp.StatusCode, page)
	}
	form := url.Values{}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="([a-z]+)" value="([^"]*)">`).FindAllStringSubmatch(page, -1) {
		form.Set(m[1], m[2])
	}
	if form.Get("limit") != "3" || form.Get("before") != "4" || form.Get("confirm") != "yes" {
		t.Fatalf("confirmation form: %v", form)
	}
	noCSRF := url.Values{}
	for k, v := range form {
		if k != "csrf" {
			noCSRF[k] = v
		}
	}
	if resp, _ := b.do("POST", "/notifications-replay", noCSRF); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bulk replay without the CSRF token: %d, want 403", resp.StatusCode)
	}
	tooMany := url.Values{}
	for k, v := range form {
		tooMany[k] = v
	}
	tooMany.Set("limit", "1001")
	if resp, _ := b.post("/notifications-replay", tooMany); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bulk replay of 1001: %d, want 400", resp.StatusCode)
	}
	if n := d.notification(1); n.State != ipn.StateInvalid {
		t.Fatalf("refused bulk replays changed notification 1: %s", n.State)
	}
	resp, _ = b.post("/notifications-replay", form)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "done=bulk-replay") || !strings.Contains(loc, "n=3") {
		t.Fatalf("bulk replay: %d to %q", resp.StatusCode, loc)
	}
	for id := uint64(1); id <= 3; id++ {
		d.waitState(id, "applied")
	}
	_, page = b.get(resp.Header.Get("Location"))
	if !strings.Contains(page, "Replay scheduled for 3 notifications") {
		t.Error("no message after the bulk replay")
	}
	if n := d.notification(4); n.State != ipn.StateInvalid {
		t.Errorf("the other gateway's notification: %s, want invalid (not selected)", n.State)
	}
	var res struct {
		Replayed []uint64
		More     bool
	}
	if st := d.api("POST", "/api/replay", map[string]any{"gateway": "paypal-sandbox", "state": "invalid", "limit": 5000}, nil); st != http.StatusBadRequest {
		t.Errorf("POST /api/replay limit 5000: %d, want 400", st)
	}
	if st := d.api("POST", "/api/replay", map[string]any{"gateway": "paypal-sandbox", "state": "invalid"}, &res); st != http.StatusAccepted ||
		len(res.Replayed) != 1 || res.Replayed[0] != 4 || res.More {
		t.Fatalf("POST /api/replay: %d %+v", st, res)
	}
	d.waitState(4, "applied")
	// The CLI takes the same route.
	env := envFunc("IPND_CONFIG", d.cfg)
	out, err := runCmd(t, env, "replay", "-gateway", "paypal", "-state", "applied", "-limit", "2")
	if err != nil || !strings.Contains(out, "2 notifications scheduled for replay; more match") {
		t.Errorf("ipnd replay -gateway paypal -state applied -limit 2: %v\n%s", err, out)
	}
	if out, err := runCmd(t, env, "replay", "-state", "bogus"); err == nil {
		t.Errorf("ipnd replay -state bogus: no error\n%s", out)
	}
	for id := uint64(1); id <= 3; id++ {
		d.waitState(id, "applied")
	}
}

// TestDashboardReissue: an order with deliveries shows them with a
// "Reissue downloads and resend the email" button; it takes the admin
// API's code path: new links (the old one stops working) and the
// customer's email with them; the same form sent twice (a double click)
// reissues once.
func TestDashboardReissue(t *testing.T) {
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 1000)
	d := startDaemon(t, dir, fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr", "[[product]]\nid = \"app\"\nfile = \"app.zip\"\n"))
	body := ipnBody("txn_id", "T1", "invoice", "D-1", "item_number", "app")
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != 200 {
		t.Fatalf("IPN = %d", code)
	}
	waitOrder(t, d, "D-1", ipn.OrderPaid)
	var first []string
	waitFor(t, "the payment email", 10*time.Second, func() bool {
		first = mailPlain(t, smtpd, "buyer@example.com")
		return len(first) == 1
	})
	oldLink := linkRE.FindStringSubmatch(first[0])
	if oldLink == nil {
		t.Fatalf("no link in the payment email:\n%s", first[0])
	}

	b := signInDash(t, d)
	_, page := b.get("/orders/D-1")
	if !strings.Contains(page, `id="reissue"`) || !strings.Contains(page, "<td>app</td>") {
		t.Fatalf("the order page shows no deliveries or no reissue button:\n%s", page)
	}
	form := url.Values{"reissues": {"0"}}
	resp, _ := b.post("/orders/D-1/reissue", form)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/orders/D-1?done=reissue" {
		t.Fatalf("reissue: %d to %q", resp.StatusCode, loc)
	}
	resp, _ = b.post("/orders/D-1/reissue", form) // the same form again
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/orders/D-1?done=reissued-already" {
		t.Fatalf("reissue sent again: %d to %q", resp.StatusCode, loc)
	}
	if resp, _ := b.do("POST", "/orders/D-1/reissue", url.Values{"reissues": {"1"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("reissue without the CSRF token: %d, want 403", resp.StatusCode)
	}
	var ob struct{ Items []struct{ Effect ipn.Effect } }
	d.api("GET", "/api/outbox", nil, &ob)
	emails := 0
	for _, it := range ob.Items {
		if it.Effect.OrderID == "D-1" && it.Effect.Kind == ipn.EffectEmailCustomer {
			emails++
		}
	}
	if emails != 2 {
		t.Errorf("customer emails of D-1 after a reissue sent twice: %d, want 2 (the payment's and one reissue)", emails)
	}
	var msgs []string
	waitFor(t, "the reissue email", 10*time.Second, func() bool {
		msgs = mailPlain(t, smtpd, "buyer@example.com")
		return len(msgs) == 2
	})
	newLink := linkRE.FindStringSubmatch(msgs[1])
	if newLink == nil || newLink[1] == oldLink[1] {
		t.Fatalf("the reissue email has no new link:\n%s", msgs[1])
	}
	if resp, _ := d.get(oldLink[1]); resp.StatusCode == http.StatusOK {
		t.Error("the old link still works after the reissue")
	}
	if resp, _ := d.get(newLink[1]); resp.StatusCode != http.StatusOK {
		t.Errorf("the new link: %d", resp.StatusCode)
	}
	_, page = b.get("/orders/D-1?done=reissue")
	if !strings.Contains(page, "Downloads reissued") || !strings.Contains(page, "reissues since: 1") {
		t.Error("the order page after the reissue lacks its message or the count")
	}
}
