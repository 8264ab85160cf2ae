package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"ipnd/ipn"
)

// orderedShop is a shop that checks, as each callback arrives, that the
// callbacks of its order come in queue order (data.order.version): none
// arrives while one of a lower version has not been answered 2xx, and
// none of a lower version arrives after one of a higher version. It
// answers 500 to the first tries fail says.
type orderedShop struct {
	mu      sync.Mutex
	t       *testing.T
	arrived map[string][]orderedCall // per order, in arrival order
	fail    func(order, typ string, try int) bool
	tries   map[string]int // per webhook-id
	wrong   []string
}

type orderedCall struct {
	typ     string
	version int
	ok      bool
}

func (s *orderedShop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev struct {
		Type string
		Data struct {
			Order struct {
				ID      string
				Version int
			}
		}
	}
	json.Unmarshal(body, &ev)
	o, v := ev.Data.Order.ID, ev.Data.Order.Version
	s.mu.Lock()
	for _, c := range s.arrived[o] {
		switch {
		case c.version > v:
			s.wrong = append(s.wrong, fmt.Sprintf("%s: %s (version %d) arrived after %s (version %d)", o, ev.Type, v, c.typ, c.version))
		case c.version < v && !s.accepted(o, c.version):
			s.wrong = append(s.wrong, fmt.Sprintf("%s: %s (version %d) arrived before %s (version %d) was accepted", o, ev.Type, v, c.typ, c.version))
		}
	}
	id := r.Header.Get("Webhook-Id")
	s.tries[id]++
	ok := s.fail == nil || !s.fail(o, ev.Type, s.tries[id])
	s.arrived[o] = append(s.arrived[o], orderedCall{ev.Type, v, ok})
	s.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // a shop that takes a moment, so that slots overlap
	if !ok {
		w.WriteHeader(500)
	}
}

func (s *orderedShop) accepted(order string, version int) bool {
	for _, c := range s.arrived[order] {
		if c.version == version && c.ok {
			return true
		}
	}
	return false
}

// accepts counts the callbacks accepted (2xx) per order.
func (s *orderedShop) accepts() (orders, calls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cs := range s.arrived {
		orders++
		for _, c := range cs {
			if c.ok {
				calls++
			}
		}
	}
	return orders, calls
}

// TestReview23bCallbackOrderWith16Slots: 60 orders each paid, partly
// refunded and refunded (three callbacks each, queued close together),
// 16 callback slots, the shop refusing (500) the first try of many
// orders' first or second callback and taking a moment over each; and
// reloads that change shop.connections (16, 2, 7, 16) while they go.
// Every order's callbacks reach the shop in queue order: none is
// overtaken by a later one of its order while it waits for its retry.
func TestReview23bCallbackOrderWith16Slots(t *testing.T) {
	shop := &orderedShop{t: t, arrived: map[string][]orderedCall{}, tries: map[string]int{},
		fail: func(order, typ string, try int) bool {
			n, _ := strconv.Atoi(strings.TrimPrefix(order, "R-"))
			switch {
			case typ == "order.paid" && n%2 == 0:
				return try <= 1+n%3 // one to three refusals
			case typ == "order.partially_refunded" && n%3 == 0:
				return try == 1
			}
			return false
		}}
	srv := httptest.NewServer(shop)
	defer srv.Close()
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	config := func(conns int) string {
		return writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "warn"
[shop]
url = %q
secret = "whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz"
connections = %d
[pipeline]
outbox_retry_base = "20ms"
outbox_retry_cap = "60ms"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, srv.URL, conns, secret))
	}
	cfg := config(16)
	cmd, _ := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir, cfg: cfg}
	post := signedPoster(t, func() string { return d.addr("public") }, secret)

	const orders = 150
	var wg sync.WaitGroup
	for step, ev := range []struct {
		typ, txn, amount string
	}{{"payment.completed", "T", "10.00"}, {"payment.refunded", "RA", "3.00"}, {"payment.refunded", "RB", "7.00"}} {
		for i := range orders {
			wg.Go(func() {
				o := fmt.Sprintf("R-%d", i)
				data := map[string]any{"order_id": o, "txn_id": ev.txn + "-" + o, "amount": ev.amount, "currency": "EUR"}
				if step > 0 {
					data["parent_txn_id"] = "T-" + o
				}
				if code := post(fmt.Sprintf("%s-%d", ev.txn, i), ev.typ, data); code != 200 {
					t.Errorf("%s %s: HTTP %d", ev.typ, o, code)
				}
			})
		}
		if step == 0 {
			wg.Wait()
		}
		if step == 1 {
			// Reloads under load, each changing the callback slots,
			// while the refunds come.
			for r, conns := range []int{2, 7, 16} {
				config(conns)
				if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				waitFor(t, fmt.Sprintf("reload %d", r+1), 20*time.Second, func() bool {
					return metricValue(d, `ipnd_config_reloads_total{result="success"}`) == strconv.Itoa(r+1)
				})
			}
		}
	}
	wg.Wait()
	waitFor(t, "every order's three callbacks accepted", 60*time.Second, func() bool {
		n, calls := shop.accepts()
		return n == orders && calls >= 3*orders
	})
	waitFor(t, "the outbox settled", 20*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=pending&kind=shop_callback", nil, &pending)
		return len(pending.Items) == 0
	})
	shop.mu.Lock()
	defer shop.mu.Unlock()
	arrivals, refused := 0, 0
	for _, cs := range shop.arrived {
		for _, c := range cs {
			arrivals++
			if !c.ok {
				refused++
			}
		}
	}
	t.Logf("%d orders: %d callbacks arrived, %d refused", orders, arrivals, refused)
	for _, w := range shop.wrong {
		t.Error(w)
	}
	for o, cs := range shop.arrived {
		var types []string
		for _, c := range cs {
			if c.ok {
				types = append(types, c.typ)
			}
		}
		if strings.Join(types, ",") != "order.paid,order.partially_refunded,order.refunded" {
			t.Errorf("%s: accepted %v", o, types)
		}
	}
}

// authSMTP is an SMTP server (go-smtp) that asks for AUTH PLAIN, takes
// any user whose password is "pw-" + the user, and keeps, per message,
// the user its session authenticated as and when it arrived.
type authSMTP struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	srv  *smtp.Server
	got  []authMsg
	n    int // sessions opened
}

type authMsg struct {
	user, to string
	at       time.Time
}

func newAuthSMTP(t *testing.T) *authSMTP {
	s := &authSMTP{t: t}
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *authSMTP) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.n++
		s.mu.Unlock()
		return &authSession{s: s}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln)
}

func (s *authSMTP) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (s *authSMTP) port() string { _, p, _ := net.SplitHostPort(s.addr); return p }

func (s *authSMTP) messages() []authMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

type authSession struct {
	s        *authSMTP
	user, to string
}

func (a *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (a *authSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if pass != "pw-"+user {
			return smtp.ErrAuthFailed
		}
		a.user = user
		return nil
	}), nil
}
func (a *authSession) Mail(string, *smtp.MailOptions) error {
	if a.user == "" {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (a *authSession) Rcpt(to string, _ *smtp.RcptOptions) error { a.to = to; return nil }
func (a *authSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	a.s.mu.Lock()
	a.s.got = append(a.s.got, authMsg{a.user, a.to, time.Now()})
	a.s.mu.Unlock()
	return nil
}
func (a *authSession) Reset()        {}
func (a *authSession) Logout() error { return nil }

// TestReview23bSMTPReloadAndRestart: ipnd keeps its SMTP connections
// open between bursts. A reload that changes the SMTP user, then the
// server (port), must send nothing over a connection of the previous
// settings once it is acknowledged (ipnd_config_reloads_total); and once
// the server restarts, the kept connections are dead: the next emails go
// over new ones, none charged a failed attempt for it.
func TestReview23bSMTPReloadAndRestart(t *testing.T) {
	s1, s2 := newAuthSMTP(t), newAuthSMTP(t)
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	config := func(port, user string) string {
		return writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "warn"
[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
username = %q
password = "pw-%s"
from = "shop@example.com"
timeout = "5s"
[email]
connections = 4
[pipeline]
outbox_retry_base = "20ms"
outbox_retry_cap = "100ms"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, port, user, user, secret))
	}
	cfg := config(s1.port(), "u1")
	cmd, _ := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir, cfg: cfg}
	post := signedPoster(t, func() string { return d.addr("public") }, secret)
	sent := 0
	pay := func(phase string, n int) {
		for i := range n {
			o := fmt.Sprintf("%s-%d", phase, i)
			if code := post("m-"+o, "payment.completed", map[string]any{"order_id": o, "txn_id": "T-" + o,
				"amount": "5.00", "currency": "EUR", "customer_email": o + "@example.com"}); code != 200 {
				t.Fatalf("%s: HTTP %d", o, code)
			}
		}
		sent += n
	}
	delivered := func(what string, s *authSMTP, want int) {
		waitFor(t, what, 30*time.Second, func() bool { return len(s.messages()) >= want })
	}
	reloads := 0
	reload := func(cfg string) time.Time {
		reloads++
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("reload %d", reloads), 20*time.Second, func() bool {
			return metricValue(d, `ipnd_config_reloads_total{result="success"}`) == strconv.Itoa(reloads)
		})
		return time.Now()
	}

	pay("a", 12)
	delivered("the first emails, as u1", s1, 12)
	// Bursts keep the connections; the user changes.
	acked := reload(config(s1.port(), "u2"))
	pay("b", 12)
	delivered("the next emails, as u2", s1, 24)
	for _, m := range s1.messages() {
		if m.user != "u2" && m.at.After(acked) {
			t.Errorf("email to %s sent as %s after the reload to u2 was acknowledged", m.to, m.user)
		}
	}
	// The server changes.
	acked = reload(config(s2.port(), "u2"))
	pay("c", 12)
	delivered("the emails to the new server", s2, 12)
	for _, m := range s1.messages() {
		if m.at.After(acked) {
			t.Errorf("email to %s sent to the old server after the reload to the new one was acknowledged", m.to)
		}
	}
	// The server restarts while ipnd keeps connections to it: RSET
	// finds them dead, new ones are dialed, nothing is charged.
	s2.stop()
	s2.start(s2.addr)
	pay("d", 12)
	delivered("the emails after the server's restart", s2, 24)
	waitFor(t, "the outbox settled", 20*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		return len(pending.Items) == 0
	})
	var all struct{ Items []ipn.OutboxItem }
	d.api("GET", "/api/outbox?kind=email_customer&limit=100", nil, &all)
	if len(all.Items) != sent {
		t.Errorf("%d customer emails listed, want %d", len(all.Items), sent)
	}
	for _, it := range all.Items {
		if it.State != ipn.OutboxSent || it.Attempts != 1 || it.LastError != "" {
			t.Errorf("item %d (%s): %s after %d attempts, last error %q; want sent at the first", it.ID, it.Effect.OrderID,
				it.State, it.Attempts, it.LastError)
		}
	}
	s1.mu.Lock()
	s2.mu.Lock()
	t.Logf("sessions: %d on the first server, %d on the second (restarted once), for %d emails", s1.n, s2.n, sent)
	s2.mu.Unlock()
	s1.mu.Unlock()
	if n := len(s1.messages()) + len(s2.messages()); n != sent {
		t.Errorf("%d emails received, want %d", n, sent)
	}
}

// TestReview23bKill9PerCrashBound: kill -9 at random moments while a slow
// SMTP server (2 connections, 3 unrecorded each) and a slow shop (4
// callback slots) take 300 orders' emails and callbacks. The copies
// counted per crash (against the crash that ended the process which sent
// the copy before) stay within the documented bound (6 emails, 4
// callbacks), not only on average. Some orders' callbacks fail for good (dead); one
// is discarded and one retried by hand across kills: at the end the
// outbox gauges on /metrics say what the lists say.
func TestReview23bKill9PerCrashBound(t *testing.T) {
	// Each SMTP session and each HTTP connection is tagged with the
	// number of kills when it opened: the process that sent a copy. A
	// copy is counted against the crash that ended the process which
	// sent the copy before it: that one's result was not recorded when
	// it died (a message still in flight from a killed process is not
	// counted against the next, nor an item one process did not get to
	// send again before it was killed in turn).
	var mu sync.Mutex
	period := 0
	emailCopies, callCopies := map[string][]int{}, map[string][]int{}
	smtpd := &periodSMTP{t: t, period: func() int { mu.Lock(); defer mu.Unlock(); return period },
		got: func(msgID string, p int) {
			mu.Lock()
			emailCopies[msgID] = append(emailCopies[msgID], p)
			mu.Unlock()
		}}
	smtpd.start()
	bad := func(order string) bool { n, _ := strconv.Atoi(strings.TrimPrefix(order, "K-")); return n%50 == 7 }
	connPeriod := map[string]int{}
	shop := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Data struct{ Order struct{ ID string } }
		}
		json.Unmarshal(body, &ev)
		if bad(ev.Data.Order.ID) {
			w.WriteHeader(500)
			return
		}
		mu.Lock()
		id := r.Header.Get("Webhook-Id")
		callCopies[id] = append(callCopies[id], connPeriod[r.RemoteAddr])
		mu.Unlock()
		time.Sleep(60 * time.Millisecond) // a slow shop
	}))
	shop.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			mu.Lock()
			connPeriod[c.RemoteAddr().String()] = period
			mu.Unlock()
		}
	}
	shop.Start()
	defer shop.Close()
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	const emailConns, unrecorded, slots = 2, 3, 4
	mail := strings.Replace(mailConfig(smtpd.port(), fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\nconnections = %d\nmax_attempts = 2\n",
		shop.URL, shopSecret, slots)), "max_attempts = 3",
		fmt.Sprintf("max_attempts = 1000\nconnections = %d\nunrecorded = %d", emailConns, unrecorded), 1)
	cfg := writeTestConfig(t, dir, fmt.Sprintf("[log]\nlevel = \"warn\"\n%s\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = %q\n", mail, secret))
	cmd, exited := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir, cfg: cfg}
	const n, kills = 300, 6
	postAll(t, signedPoster(t, func() string { return d.addr("public") }, secret), "K", n, nil)
	kill := func() {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
		mu.Lock()
		period++
		mu.Unlock()
		cmd, exited = startChild(t, dir, cfg)
	}
	for range kills {
		<-time.After(time.Duration(700+rand.IntN(900)) * time.Millisecond)
		kill()
	}
	good := 0
	for i := range n {
		if !bad(fmt.Sprintf("K-%d", i)) {
			good++
		}
	}
	distinct := func(m map[string][]int) int { mu.Lock(); defer mu.Unlock(); return len(m) }
	pendingItems := func() int {
		var pending struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		return len(pending.Items)
	}
	waitFor(t, "every email and callback", 120*time.Second, func() bool {
		return distinct(emailCopies) >= n && distinct(callCopies) >= good && pendingItems() == 0
	})
	perCrash := func(m map[string][]int) []int {
		out := make([]int, period+1)
		for id, ps := range m {
			for i := 1; i < len(ps); i++ {
				if ps[i] == ps[i-1] {
					t.Errorf("%s sent twice by one process (after kill %d)", id, ps[i])
					continue
				}
				out[ps[i-1]+1]++
			}
		}
		return out
	}
	mu.Lock()
	emailDups, callDups := perCrash(emailCopies), perCrash(callCopies)
	mu.Unlock()
	t.Logf("copies caused by each crash (index k: kill k): emails %v, callbacks %v", emailDups, callDups)
	for k := range emailDups {
		if emailDups[k] > emailConns*unrecorded {
			t.Errorf("kill %d: %d email copies, more than %d (%d connections × %d unrecorded)", k, emailDups[k],
				emailConns*unrecorded, emailConns, unrecorded)
		}
		if callDups[k] > slots {
			t.Errorf("kill %d: %d callback copies, more than %d (callback slots)", k, callDups[k], slots)
		}
	}

	// The gauges across retries, discards and crashes.
	var dead struct{ Items []ipn.OutboxItem }
	d.api("GET", "/api/outbox?state=dead", nil, &dead)
	if len(dead.Items) != n-good {
		t.Fatalf("%d dead items, want %d (the callbacks the shop refuses)", len(dead.Items), n-good)
	}
	gauge := func(state, kind string) float64 { return d.scrape(fmt.Sprintf("ipnd_outbox_%s{kind=%q}", state, kind)) }
	if p, dd := gauge("pending", ipn.EffectShopCallback), gauge("dead", ipn.EffectShopCallback); p != 0 || dd != float64(n-good) {
		t.Errorf("callbacks: ipnd_outbox_pending %v, ipnd_outbox_dead %v; want 0, %d", p, dd, n-good)
	}
	if p := gauge("pending", ipn.EffectEmailCustomer); p != 0 {
		t.Errorf("customer emails: ipnd_outbox_pending %v, want 0", p)
	}
	if code := d.api("POST", fmt.Sprintf("/api/outbox/%d/discard", dead.Items[0].ID), map[string]any{"note": "test"}, nil); code != 200 {
		t.Fatalf("discard: HTTP %d", code)
	}
	if code := d.api("POST", fmt.Sprintf("/api/outbox/%d/retry", dead.Items[1].ID), nil, nil); code/100 != 2 {
		t.Fatalf("retry: HTTP %d", code)
	}
	kill()
	waitFor(t, "the retried callback dead again", 30*time.Second, func() bool {
		var it struct{ Item ipn.OutboxItem }
		d.api("GET", fmt.Sprintf("/api/outbox/%d", dead.Items[1].ID), nil, &it)
		return it.Item.State == ipn.OutboxDead && pendingItems() == 0
	})
	kill()
	waitFor(t, "the daemon back", 20*time.Second, func() bool { return pendingItems() == 0 })
	d.api("GET", "/api/outbox?state=dead", nil, &dead)
	if dd, disc := gauge("dead", ipn.EffectShopCallback), gauge("discarded", ipn.EffectShopCallback); dd != float64(len(dead.Items)) ||
		dd != float64(n-good-1) || disc != 1 {
		t.Errorf("after a discard, a retry and kills: ipnd_outbox_dead %v (the list: %d), ipnd_outbox_discarded %v; want %d, 1",
			dd, len(dead.Items), disc, n-good-1)
	}
}

// periodSMTP is an SMTP server (go-smtp) that is slow to accept each
// message (30 ms) and tells got each message's Message-Id with the value
// period had when its session opened.
type periodSMTP struct {
	t      *testing.T
	addr   string
	period func() int
	got    func(msgID string, period int)
}

func (s *periodSMTP) start() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &periodSession{s: s, period: s.period()}, nil
	}))
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(ln)
	s.t.Cleanup(func() { srv.Close() })
}

func (s *periodSMTP) port() string { _, p, _ := net.SplitHostPort(s.addr); return p }

type periodSession struct {
	s      *periodSMTP
	period int
}

func (p *periodSession) Mail(string, *smtp.MailOptions) error { return nil }
func (p *periodSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (p *periodSession) Data(r io.Reader) error {
	m, err := netmail.ReadMessage(r)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, m.Body)
	p.s.got(m.Header.Get("Message-Id"), p.period)
	time.Sleep(30 * time.Millisecond) // a slow server, not a synchronisation
	return nil
}
func (p *periodSession) Reset()        {}
func (p *periodSession) Logout() error { return nil }

// TestReview23bDiscardedCallbackIsNotSent: an operator discards a pending
// callback ("do not send it") while the shop is slow and the lane has
// more due callbacks than slots. The discarded callback must not reach
// the shop afterwards (the lane must not deliver what it read before
// the discard), and the other orders' callbacks all arrive.
func TestReview23bDiscardedCallbackIsNotSent(t *testing.T) {
	var mu sync.Mutex
	var got []string // order ids, in arrival order
	tokens, all := make(chan struct{}), make(chan struct{})
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Data struct{ Order struct{ ID string } }
		}
		json.Unmarshal(body, &ev)
		mu.Lock()
		got = append(got, ev.Data.Order.ID)
		mu.Unlock()
		select { // a shop that answers when the test lets it
		case <-tokens:
		case <-all:
		}
	}))
	defer shop.Close()
	var open sync.Once
	defer open.Do(func() { close(all) })
	arrived := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
	d, post := webhookDaemon(t, fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\nconnections = 1\ntimeout = \"30s\"\n", shop.URL, shopSecret))
	const orders = 6
	for i := range orders {
		o := fmt.Sprintf("Q-%d", i)
		if code := post("m-"+o, "payment.completed", map[string]any{"order_id": o, "txn_id": "T-" + o, "amount": "5.00", "currency": "EUR"}); code != 200 {
			t.Fatalf("%s: HTTP %d", o, code)
		}
	}
	d.drained(orders)
	waitFor(t, "the first callback at the shop", 20*time.Second, func() bool { return len(arrived()) == 1 })
	tokens <- struct{}{}
	waitFor(t, "the second callback at the shop", 20*time.Second, func() bool { return len(arrived()) == 2 })
	// The lane has read the due callbacks; one of those not yet sent
	// is discarded.
	var pending struct{ Items []ipn.OutboxItem }
	d.api("GET", "/api/outbox?state=pending", nil, &pending)
	var victim ipn.OutboxItem
	for _, it := range pending.Items {
		if it.Effect.Kind == ipn.EffectShopCallback && !slices.Contains(arrived(), it.Effect.OrderID) {
			victim = it
		}
	}
	if victim.ID == 0 {
		t.Fatalf("no pending callback left to discard: %+v", pending.Items)
	}
	if code := d.api("POST", fmt.Sprintf("/api/outbox/%d/discard", victim.ID), map[string]any{"note": "do not send"}, nil); code != 200 {
		t.Fatalf("discard: HTTP %d", code)
	}
	open.Do(func() { close(all) }) // the shop answers at once from now on
	waitFor(t, "the outbox settled", 20*time.Second, func() bool {
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		return len(pending.Items) == 0
	})
	if slices.Contains(arrived(), victim.Effect.OrderID) {
		t.Errorf("the shop received %s's callback (outbox %d) after it was discarded; it received %v",
			victim.Effect.OrderID, victim.ID, arrived())
	}
	if n := len(arrived()); n != orders-1 {
		t.Errorf("the shop received %d callbacks (%v), want %d", n, arrived(), orders-1)
	}
}
