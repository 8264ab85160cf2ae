package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/ipn"
)

const shopSecret = "whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz"

// postAll posts payments of orders prefix-0 .. prefix-(n-1), each with the
// customer address prefix-i@example.com, from 8 clients at once.
func postAll(t testing.TB, post func(string, string, map[string]any) int, prefix string, n int, extra map[string]any) {
	t.Helper()
	postAllClients(t, post, prefix, n, 8, extra)
}

// postAllClients is postAll from the given number of clients.
func postAllClients(t testing.TB, post func(string, string, map[string]any) int, prefix string, n, clients int, extra map[string]any) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	for range clients {
		wg.Go(func() {
			for i := range next {
				data := map[string]any{"order_id": fmt.Sprintf("%s-%d", prefix, i), "txn_id": fmt.Sprintf("T-%s-%d", prefix, i),
					"amount": "1.00", "currency": "USD", "customer_email": fmt.Sprintf("%s-%d@example.com", prefix, i)}
				for k, v := range extra {
					data[k] = v
				}
				if code := post(fmt.Sprintf("m-%s-%d", prefix, i), "payment.completed", data); code != 200 {
					t.Errorf("post %s-%d = %d", prefix, i, code)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// countTo is the number of messages whose To starts with prefix.
func countTo(f *fakeSMTP, prefix string) int {
	n := 0
	for _, m := range f.messages() {
		if strings.HasPrefix(strings.Trim(m.Header.Get("To"), "<>"), prefix) {
			n++
		}
	}
	return n
}

// TestUnsendableAlertsAreSkipped: on the default config (no
// email.merchant_to), 210 merchant alerts (test payments on a live
// gateway put their orders in review) cannot be sent: they end skipped,
// once each, listed, counted and noted in their orders' history, and the
// customer email of a correctly paid order behind them arrives.
func TestUnsendableAlertsAreSkipped(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	cfg := strings.Replace(mailConfig(smtpd.port(), ""), "merchant_to = \"owner@example.com\"\n", "", 1)
	d, post := webhookDaemon(t, cfg)
	const alerts = 210
	postAll(t, post, "R", alerts, map[string]any{"test": true})
	d.drained(alerts)
	payOrder(d, post, "GOOD", "ann@example.com")
	waitFor(t, "the customer email behind 210 unsendable alerts", 20*time.Second, func() bool {
		return len(smtpd.to("ann@example.com")) == 1
	})

	var skipped struct{ Items []ipn.OutboxItem }
	waitFor(t, "210 skipped alerts", 10*time.Second, func() bool {
		d.api("GET", "/api/outbox?state=skipped", nil, &skipped)
		return len(skipped.Items) == alerts
	})
	for _, it := range skipped.Items {
		if it.Effect.Kind != ipn.EffectEmailMerchant || it.Attempts != 1 || !strings.Contains(it.LastError, "email.merchant_to is empty") {
			t.Fatalf("skipped item %+v", it)
		}
	}
	var pending struct{ Items []ipn.OutboxItem }
	if d.api("GET", "/api/outbox?state=pending", nil, &pending); len(pending.Items) != 0 {
		t.Errorf("%d items still pending, e.g. %+v", len(pending.Items), pending.Items[0])
	}
	if n := len(smtpd.messages()); n != 1 {
		t.Errorf("the SMTP server got %d messages, want only the customer's", n)
	}
	var o ipn.Order
	d.api("GET", "/api/orders/R-7", nil, &o)
	noted := false
	for _, h := range o.History {
		noted = noted || strings.Contains(h.Reason, "order_review") && strings.Contains(h.Reason, "skipped: no recipient: email.merchant_to is empty")
	}
	if !noted {
		t.Errorf("order R-7's history does not say its alert was skipped: %+v", o.History)
	}
	out, err := runCmd(t, envFunc(), "outbox", "skipped", "-limit", "1000", "-config", d.cfg)
	if err != nil || strings.Count(out, " skipped ") != alerts {
		t.Errorf("ipnd outbox skipped: %v, %d lines with skipped\n%.500s", err, strings.Count(out, " skipped "), out)
	}
	if m := adminGet([]byte(strings.TrimPrefix(d.addr("admin"), "http://")), "/metrics"); !strings.Contains(m, `ipnd_outbox_skipped{kind="email_merchant"} 210`) {
		t.Errorf("metrics lack ipnd_outbox_skipped 210:\n%s", grepLines(m, "ipnd_outbox_"))
	}
	out, err = runCmd(t, envFunc(), "check", "-config", d.cfg)
	if err != nil || !strings.Contains(out, "warning: email.merchant_to is empty: merchant alerts") {
		t.Errorf("ipnd check does not warn about merchant alerts: %v\n%s", err, out)
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// hangingShop is a shop endpoint that accepts connections and never
// answers; it returns its URL.
func hangingShop(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/ipn-callback"
}

// TestHangingShopDelaysOnlyCallbacks: with a shop that accepts
// connections and never answers, customer emails arrive as fast as with
// no shop at all.
func TestHangingShopDelaysOnlyCallbacks(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	const n = 50
	deliver := func(prefix, extra string) time.Duration {
		d, post := webhookDaemon(t, mailConfig(smtpd.port(), extra))
		defer d.stop()
		start := time.Now()
		postAll(t, post, prefix, n, nil)
		waitFor(t, fmt.Sprintf("%d customer emails (%s)", n, prefix), 60*time.Second, func() bool { return countTo(smtpd, prefix+"-") == n })
		return time.Since(start)
	}
	noShop := deliver("free", "")
	hung := deliver("hung", fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\ntimeout = \"5s\"\n", hangingShop(t), shopSecret))
	t.Logf("%d payments to %d customer emails: %s with no shop, %s with a hanging shop", n, n, noShop.Round(time.Millisecond), hung.Round(time.Millisecond))
	if hung > 2*noShop+time.Second {
		t.Errorf("a hanging shop slowed customer emails down: %s, against %s with no shop", hung, noShop)
	}
}

// TestWebhookIDsDifferAcrossDatabases: the first callbacks of two fresh
// databases carry different webhook-ids; a retry carries the same one.
func TestWebhookIDsDifferAcrossDatabases(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, r.Header.Get("Webhook-Id"))
		if len(ids)%2 == 1 {
			w.WriteHeader(500) // every first try: the retry must carry the same id
		}
	}))
	defer shop.Close()
	extra := fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\n[pipeline]\noutbox_retry_base = \"20ms\"\noutbox_retry_cap = \"50ms\"\n", shop.URL, shopSecret)
	for i := range 2 {
		d, post := webhookDaemon(t, extra)
		post("m1", "payment.completed", map[string]any{"order_id": "O-1", "txn_id": "T1", "amount": "5.00", "currency": "EUR"})
		waitFor(t, "a callback and its retry", 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(ids) == 2*(i+1)
		})
		d.stop()
	}
	mu.Lock()
	defer mu.Unlock()
	if ids[0] != ids[1] || ids[2] != ids[3] {
		t.Errorf("a retry changed the webhook-id: %q", ids)
	}
	if ids[0] == ids[2] || ids[0] == "" {
		t.Errorf("the first callbacks of two fresh databases have the same webhook-id %q", ids[0])
	}
}

// TestKill9DuringSlowDelivery: a slow SMTP server (30 ms a message), a
// slow shop (100 ms a callback), and ipnd killed with SIGKILL 8 times,
// 1 to 2.5 s apart: every email and callback arrives, and a kill repeats
// at most what was in flight: 3 emails (the customer lane's one SMTP
// connection with email.unrecorded = 3) and 4 callbacks
// (shop.connections = 4).
func TestKill9DuringSlowDelivery(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	smtpd.answer = func(string, int) *smtp.SMTPError {
		time.Sleep(30 * time.Millisecond) // a slow server, not a synchronisation
		return nil
	}
	var mu sync.Mutex
	calls := map[string]int{}
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		calls[r.Header.Get("Webhook-Id")]++
		mu.Unlock()
		time.Sleep(100 * time.Millisecond) // a slow shop
	}))
	defer shop.Close()
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	mail := strings.Replace(mailConfig(smtpd.port(), fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\nconnections = 4\n", shop.URL, shopSecret)),
		"max_attempts = 3", "max_attempts = 1000\nconnections = 1\nunrecorded = 3", 1) // the bound is 3 emails per connection
	cfg := writeTestConfig(t, dir, fmt.Sprintf("[log]\nlevel = \"warn\"\n%s\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = %q\n", mail, secret))
	cmd, exited := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir, cfg: cfg}
	const n, kills = 300, 8
	postAll(t, signedPoster(t, func() string { return d.addr("public") }, secret), "K", n, nil)
	for k := range kills {
		<-time.After(time.Duration(1000+rand.IntN(1500)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
		t.Logf("kill %d: %d emails, %d callbacks received so far", k+1, len(smtpd.messages()), received(&mu, calls))
		cmd, exited = startChild(t, dir, cfg)
	}
	waitFor(t, "every email and callback", 120*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		return len(pending.Items) == 0 && countTo(smtpd, "K-") >= n && received(&mu, calls) == n
	})
	emails := map[string]int{}
	for _, m := range smtpd.messages() {
		emails[m.Header.Get("Message-Id")]++
	}
	extraEmails, extraCalls := 0, 0
	for _, c := range emails {
		extraEmails += c - 1
	}
	mu.Lock()
	for _, c := range calls {
		extraCalls += c - 1
	}
	mu.Unlock()
	t.Logf("%d kills: %d emails with %d extra copies, %d callbacks with %d extra copies", kills, len(emails), extraEmails, n, extraCalls)
	if len(emails) != n {
		t.Errorf("%d distinct emails, want %d", len(emails), n)
	}
	if extraEmails > kills*3 {
		t.Errorf("%d extra email copies after %d kills: more than 3 per kill (one SMTP connection, 3 unrecorded)", extraEmails, kills)
	}
	if extraCalls > kills*4 {
		t.Errorf("%d extra callback copies after %d kills: more than 4 per kill (4 callbacks at once)", extraCalls, kills)
	}
}

func received(mu *sync.Mutex, calls map[string]int) int {
	mu.Lock()
	defer mu.Unlock()
	return len(calls)
}
