package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/admin"
	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// The outbox settings of the fault tests, and the duplicate bound they
// give (README "The duplicate bound"): a crash, or a leader losing its
// lease, repeats at most the emails each SMTP connection of a lane has
// sent and not yet recorded (connections × unrecorded, per email lane)
// and one callback per callback slot.
const (
	faultEmailConns  = 4 // the defaults (config.example.toml)
	faultUnrecorded  = 8
	faultShopSlots   = 16
	faultEmailBound  = faultEmailConns * faultUnrecorded
	faultCallBound   = faultShopSlots
	faultClients     = 32
	faultAmount      = "19.99"
	faultMerchantTo  = "owner@example.com"
	faultClientLimit = 20 * time.Second // the load balancer's (and gateway's) timeout
)

// sender names the process that sent a copy: its slot (0 or 1) and its
// incarnation there (how many times that slot's process was killed
// before).
type sender struct{ slot, inc int }

func (s sender) String() string { return fmt.Sprintf("%c%d", 'A'+s.slot, s.inc) }

// pgSlot is one of the fleet's two places for an ipnd process: its data
// directory, config, log file, and the process running there now.
type pgSlot struct {
	dir, cfg, log string
	d             *daemon
	cmd           *exec.Cmd
	exited        chan struct{}
	public        string // the running process's public URL (fleet.mu)
}

// pgFleet is two ipnd processes on one PostgreSQL database behind the
// test's own round-robin. Each slot has its own SMTP server and shop
// listener (the same collection behind them), so that every email and
// callback is tagged with the process that sent it: the slot, and the
// slot's incarnation when the SMTP session or HTTP connection opened.
type pgFleet struct {
	t     *testing.T
	slots [2]*pgSlot
	key   []byte // the "shop" gateway's signing key
	http  *http.Client

	mu        sync.Mutex
	inc       [2]int
	emails    map[string][]sender // per Message-Id, in arrival order
	emailTo   map[string]string   // Message-Id -> recipient
	calls     map[string][]sender // per webhook-id
	callOrder map[string]string   // webhook-id -> order id
	sentBy    map[sender]int      // copies (emails and callbacks) each process sent
	bad       []string            // what the receivers could not read
}

// newPGFleet writes both slots' configs on dsn and starts both processes.
func newPGFleet(t *testing.T, dsn string) *pgFleet {
	f := &pgFleet{t: t, emails: map[string][]sender{}, emailTo: map[string]string{}, calls: map[string][]sender{},
		callOrder: map[string]string{}, sentBy: map[sender]int{},
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * faultClients}, Timeout: faultClientLimit}}
	f.key, _ = gateway.DecodeWebhookSecret(pgGatewaySecret)
	t.Cleanup(f.http.CloseIdleConnections)
	for i := range f.slots {
		dir := t.TempDir()
		smtpPort := f.startSMTP(i)
		shopURL := f.startShop(i)
		extra := strings.Replace(mailConfig(smtpPort, fmt.Sprintf(`[shop]
url = %q
secret = %q
connections = %d
timeout = "5s"
[log]
level = "info"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, shopURL, pgShopSecret, faultShopSlots, pgGatewaySecret)), "max_attempts = 3",
			fmt.Sprintf("max_attempts = 1000\nconnections = %d\nunrecorded = %d", faultEmailConns, faultUnrecorded), 1)
		cfg := writePGTestConfig(t, dir, "dsn = "+strconv.Quote(dsn)+"\n", extra)
		f.slots[i] = &pgSlot{dir: dir, cfg: cfg, log: filepath.Join(dir, "ipnd.log"), d: &daemon{t: t, dir: dir, cfg: cfg}}
	}
	t.Cleanup(func() {
		if t.Failed() { // the processes' changes of leadership, warnings and errors
			for i, s := range f.slots {
				b, _ := os.ReadFile(s.log)
				var keep []string
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, `"component":"leader"`) || strings.Contains(l, `"level":"WARN"`) ||
						strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "listening") {
						keep = append(keep, l)
					}
				}
				t.Logf("slot %c's log (leadership, warnings, errors; %d lines):\n%s", 'A'+i, len(keep), strings.Join(keep[max(0, len(keep)-80):], "\n"))
			}
		}
	})
	for i := range f.slots {
		f.start(i)
	}
	return f
}

// start runs slot i's process (again) and waits until it listens.
func (f *pgFleet) start(i int) {
	f.t.Helper()
	s := f.slots[i]
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	s.cmd, s.exited = startChildTo(f.t, s.dir, s.cfg, logf)
	logf.Close() // the child has its own
	f.mu.Lock()
	s.public = s.d.addr("public")
	f.mu.Unlock()
}

// kill sends SIGKILL to slot i's process and waits until it is gone; it
// returns the process killed.
func (f *pgFleet) kill(i int) sender {
	f.t.Helper()
	s := f.slots[i]
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		f.t.Fatal(err)
	}
	<-s.exited
	f.mu.Lock()
	defer f.mu.Unlock()
	killed := sender{i, f.inc[i]}
	f.inc[i]++
	return killed
}

func (f *pgFleet) tag(i int) sender {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sender{i, f.inc[i]}
}

// startSMTP starts slot i's SMTP server (go-smtp) and returns its port.
func (f *pgFleet) startSMTP(i int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &fleetSession{f: f, by: f.tag(i)}, nil
	}))
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0) // killed clients hang up mid-session
	go srv.Serve(ln)
	f.t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

type fleetSession struct {
	f  *pgFleet
	by sender
}

func (s *fleetSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *fleetSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *fleetSession) Reset()                               {}
func (s *fleetSession) Logout() error                        { return nil }
func (s *fleetSession) Data(r io.Reader) error {
	m, err := netmail.ReadMessage(r)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, m.Body)
	id := m.Header.Get("Message-Id")
	to, err := netmail.ParseAddress(m.Header.Get("To"))
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" || err != nil {
		f.bad = append(f.bad, fmt.Sprintf("email with Message-Id %q, To %q", id, m.Header.Get("To")))
		return nil
	}
	f.emails[id] = append(f.emails[id], s.by)
	f.emailTo[id] = strings.ToLower(to.Address)
	f.sentBy[s.by]++
	return nil
}

// startShop starts slot i's shop listener and returns its URL.
func (f *pgFleet) startShop(i int) string {
	var connMu sync.Mutex
	conns := map[string]sender{} // remote address -> the process that opened it
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Data struct{ Order struct{ ID string } }
		}
		json.Unmarshal(body, &ev)
		id := r.Header.Get("Webhook-Id")
		connMu.Lock()
		by := conns[r.RemoteAddr]
		connMu.Unlock()
		f.mu.Lock()
		defer f.mu.Unlock()
		if id == "" || ev.Data.Order.ID == "" {
			f.bad = append(f.bad, fmt.Sprintf("callback with webhook-id %q: %.200s", id, body))
			return
		}
		f.calls[id] = append(f.calls[id], by)
		f.callOrder[id] = ev.Data.Order.ID
		f.sentBy[by]++
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			by := f.tag(i)
			connMu.Lock()
			conns[c.RemoteAddr().String()] = by
			connMu.Unlock()
		}
	}
	srv.Start()
	f.t.Cleanup(srv.Close)
	return srv.URL
}

// sent is how many copies process by has sent.
func (f *pgFleet) sent(by sender) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sentBy[by]
}

// health is slot i's admin /healthz (err: no answer: the process is
// down or starting, or it hung past the client's timeout).
func (f *pgFleet) health(i int) (int, pgHealth, error) {
	var h pgHealth
	code, err := f.get(i, "/healthz", &h)
	return code, h, err
}

// get is an admin API GET on slot i's process, decoding the answer into
// out; it never fails the test (callers decide).
func (f *pgFleet) get(i int, path string, out any) (int, error) {
	req, _ := http.NewRequest("GET", f.slots[i].d.addr("admin")+path, nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := f.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("GET %s: HTTP %d %.200q: %v", path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, nil
}

// leader is the slot whose process leads now, by its /healthz (-1: none
// says so). Two saying so at once is an error.
func (f *pgFleet) leader() int {
	lead := -1
	for i := range f.slots {
		if _, h, err := f.health(i); err == nil && h.Leading {
			if lead >= 0 {
				f.t.Errorf("both processes say they lead")
			}
			lead = i
		}
	}
	return lead
}

// lbResult is one payment posted through the round-robin: the status of
// the answer (0: none within the tries), the tries (a try the process did
// not answer, because it was dead or died meanwhile, is made again on the
// other, as a load balancer does), when it was sent and answered.
type lbResult struct {
	order      string
	code       int
	tries      int
	err        error
	sent, done time.Time
}

// pay posts order's payment (signed, with the customer's email) through
// the round-robin.
func (f *pgFleet) pay(rr *atomic.Uint64, order string) lbResult {
	body, _ := json.Marshal(map[string]any{"type": "payment.completed", "data": map[string]any{"order_id": order,
		"txn_id": "T-" + order, "amount": faultAmount, "currency": "USD", "customer_email": faultEmail(order),
		"customer_name": "Ann Lee"}})
	res := lbResult{order: order, sent: time.Now()}
	for res.tries < 20 {
		res.tries++
		i := int(rr.Add(1) % 2)
		f.mu.Lock()
		base := f.slots[i].public
		f.mu.Unlock()
		ts := time.Now().Unix()
		req, _ := http.NewRequest("POST", base+"/ipn/shop", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Webhook-Id", "m-"+order)
		req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("Webhook-Signature", gateway.SignWebhook(f.key, "m-"+order, ts, body))
		resp, err := f.http.Do(req)
		if err != nil {
			res.err = err
			var ue *url.Error
			if errors.As(err, &ue) && ue.Timeout() {
				break // a hang is not retried: the test reports it
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.code, res.err = resp.StatusCode, nil
		break
	}
	res.done = time.Now()
	return res
}

func faultEmail(order string) string { return strings.ToLower(order) + "@example.com" }

// load runs faultClients clients posting payments of orders prefix-1,
// prefix-2, ... through the round-robin until stop is closed; each answer
// goes to got. The returned function waits for the clients.
func (f *pgFleet) load(prefix string, stop <-chan struct{}, got func(lbResult)) func() {
	var rr, seq atomic.Uint64
	var wg sync.WaitGroup
	for range faultClients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got(f.pay(&rr, fmt.Sprintf("%s-%d", prefix, seq.Add(1))))
			}
		})
	}
	return wg.Wait
}

// tally keeps the load's answers.
type tally struct {
	mu      sync.Mutex
	results []lbResult
	acked   map[string]bool
	codes   map[int]int // 0: no answer
	retried int         // payments that needed another try
}

func newTally() *tally { return &tally{acked: map[string]bool{}, codes: map[int]int{}} }

func (y *tally) add(r lbResult) {
	y.mu.Lock()
	defer y.mu.Unlock()
	y.results = append(y.results, r)
	y.codes[r.code]++
	if r.code == 200 {
		y.acked[r.order] = true
	}
	if r.tries > 1 {
		y.retried++
	}
}

func (y *tally) count(code int) int {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.codes[code]
}

// settle waits until every acknowledged payment has been applied and its
// customer email and callback delivered, and nothing is pending, then
// checks, through slot i's admin API, that each acknowledged
// notification is there and applied once (its order paid once, one
// history entry for it), and that no payment (acknowledged or not) was
// applied twice.
func (f *pgFleet) settle(i int, y *tally, within time.Duration) {
	f.t.Helper()
	y.mu.Lock()
	acked := make([]string, 0, len(y.acked))
	for o := range y.acked {
		acked = append(acked, o)
	}
	posted := len(y.results)
	y.mu.Unlock()
	sort.Strings(acked)
	began := time.Now()
	defer func() {
		f.t.Logf("settled and checked %d acknowledged payments in %.1fs", len(acked), time.Since(began).Seconds())
	}()
	delivered := func() (missing int, what string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		mailed, called := map[string]bool{}, map[string]bool{}
		for _, to := range f.emailTo {
			mailed[to] = true
		}
		for _, o := range f.callOrder {
			called[o] = true
		}
		for _, o := range acked {
			switch {
			case !mailed[faultEmail(o)]:
				missing++
				what = o + "'s email"
			case !called[o]:
				missing++
				what = o + "'s callback"
			}
		}
		return missing, what
	}
	idle := func() bool {
		var out struct{ Items []ipn.OutboxItem }
		var list admin.NotificationList
		for _, q := range []string{"/api/notifications?state=received&limit=1", "/api/notifications?state=verified&limit=1"} {
			if code, err := f.get(i, q, &list); code != 200 || err != nil || len(list.Notifications) > 0 {
				return false
			}
		}
		code, err := f.get(i, "/api/outbox?state=pending&limit=1", &out)
		return code == 200 && err == nil && len(out.Items) == 0
	}
	for deadline := time.Now().Add(within); ; {
		n, what := delivered()
		if n == 0 && idle() {
			break
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("after %s: %d of %d acknowledged payments' deliveries missing (%s), or still pending", within, n, len(acked), what)
		}
		time.Sleep(50 * time.Millisecond) // polling, as waitFor
	}

	// Every stored notification, by order.
	type stored struct {
		id    uint64
		state ipn.State
	}
	byOrder := map[string][]stored{}
	orderOf := map[uint64]string{}
	var dups []admin.Notification
	before := uint64(0)
	for {
		var list admin.NotificationList
		q := "/api/notifications?limit=1000"
		if before > 0 {
			q += "&before=" + strconv.FormatUint(before, 10)
		}
		if code, err := f.get(i, q, &list); code != 200 || err != nil {
			f.t.Fatalf("GET %s: %d %v", q, code, err)
		}
		for _, n := range list.Notifications {
			if n.Event == nil {
				dups = append(dups, n)
				continue
			}
			byOrder[n.Event.OrderID] = append(byOrder[n.Event.OrderID], stored{n.ID, n.State})
			orderOf[n.ID] = n.Event.OrderID
		}
		if before = list.NextBefore; before == 0 {
			break
		}
	}
	for _, n := range dups { // without an event of their own: duplicates of one that has
		o, ok := orderOf[n.DuplicateOf]
		if !ok || n.State != ipn.StateDuplicate {
			f.t.Errorf("notification %d: state %s, no event, duplicate of %d", n.ID, n.State, n.DuplicateOf)
			continue
		}
		byOrder[o] = append(byOrder[o], stored{n.ID, n.State})
	}
	applied := map[string]uint64{}
	for o, ns := range byOrder {
		for _, n := range ns {
			switch n.state {
			case ipn.StateApplied:
				if applied[o] != 0 {
					f.t.Errorf("order %s: notifications %d and %d both applied", o, applied[o], n.id)
				}
				applied[o] = n.id
			case ipn.StateDuplicate:
			default:
				f.t.Errorf("order %s: notification %d %s", o, n.id, n.state)
			}
		}
	}
	for _, o := range acked {
		if applied[o] == 0 {
			f.t.Errorf("acknowledged payment %s: no applied notification (stored: %v)", o, byOrder[o])
		}
	}
	if len(byOrder) > posted {
		f.t.Errorf("%d orders have notifications, but only %d payments were posted", len(byOrder), posted)
	}

	// Each order with a payment applied: paid once, one history entry
	// for its notification (read in parallel: thousands of orders).
	orders := make([]string, 0, len(applied))
	for o := range applied {
		orders = append(orders, o)
	}
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var problems []string
	next := make(chan string)
	for range 8 {
		wg.Go(func() {
			for o := range next {
				var ord ipn.Order
				code, err := f.get(i, "/api/orders/"+url.PathEscape(o), &ord)
				p := ""
				switch {
				case code != 200 || err != nil:
					p = fmt.Sprintf("order %s: HTTP %d %v", o, code, err)
				case ord.Status != ipn.OrderPaid || ord.Paid != faultAmount || !slices.Equal(ord.TxnIDs, []string{"T-" + o}):
					p = fmt.Sprintf("order %s: status %s, paid %s, txn ids %v; want paid %s once", o, ord.Status, ord.Paid, ord.TxnIDs, faultAmount)
				default:
					entries := 0
					for _, h := range ord.History {
						if h.Notification == applied[o] {
							entries++
						}
					}
					if entries != 1 || len(ord.History) != 1 {
						p = fmt.Sprintf("order %s: %d history entries, %d of them for notification %d; want one: %+v", o, len(ord.History), entries, applied[o], ord.History)
					}
				}
				if p != "" {
					errMu.Lock()
					problems = append(problems, p)
					errMu.Unlock()
				}
			}
		})
	}
	for _, o := range orders {
		next <- o
	}
	close(next)
	wg.Wait()
	for k, p := range problems {
		if k == 20 {
			f.t.Errorf("... and %d more", len(problems)-k)
			break
		}
		f.t.Error(p)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bad {
		f.t.Errorf("receivers: %s", b)
	}
}

// repeats are the copies beyond the first, each counted against the
// process that had sent the copy before it (a repeat is made because
// that process's result was not recorded when it stopped leading), by
// lane; twice is the copies sent twice by one process.
type repeats struct {
	customer, merchant, callback map[sender]int
	twice                        []string
	twiceBy                      map[string]int // per lane
	mostCopies                   int
	customerMails, merchantMails int
	callbacks                    int
}

func (f *pgFleet) repeats() repeats {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := repeats{customer: map[sender]int{}, merchant: map[sender]int{}, callback: map[sender]int{}, twiceBy: map[string]int{}}
	count := func(id string, copies []sender, lane map[sender]int) {
		r.mostCopies = max(r.mostCopies, len(copies))
		for k := 1; k < len(copies); k++ {
			if copies[k] == copies[k-1] {
				r.twice = append(r.twice, fmt.Sprintf("%s sent twice by %s", id, copies[k]))
				switch {
				case f.calls[id] != nil:
					r.twiceBy[ipn.EffectShopCallback]++
				case f.emailTo[id] == faultMerchantTo:
					r.twiceBy[ipn.EffectEmailMerchant]++
				default:
					r.twiceBy[ipn.EffectEmailCustomer]++
				}
				continue
			}
			lane[copies[k-1]]++
		}
	}
	for id, copies := range f.emails {
		if f.emailTo[id] == faultMerchantTo {
			r.merchantMails++
			count(id, copies, r.merchant)
		} else {
			r.customerMails++
			count(id, copies, r.customer)
		}
	}
	for id, copies := range f.calls {
		r.callbacks++
		count(id, copies, r.callback)
	}
	return r
}

// TestPGKillLeaderUnderLoad (issue 24, acceptance): two ipnd processes on
// one database behind the test's round-robin (a try the process does not
// answer is made again on the other); 32 clients post signed payments,
// each with an email and a shop callback, for at least 20 s while the
// leader (by /healthz) is killed with SIGKILL three times, each killed
// process started again. Every payment answered 200 is stored and
// applied once (paid once, one history entry); the repeats of emails and
// callbacks caused by each kill stay within the outbox's in-flight bound
// (email.connections × email.unrecorded per email lane, shop.connections
// callbacks), no process sends one twice, and every acknowledged
// payment's email and callback arrive.
func TestPGKillLeaderUnderLoad(t *testing.T) {
	c := pgtest.Start(t)
	f := newPGFleet(t, c.DSN())
	y := newTally()
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	defer halt()
	began := time.Now()
	wait := f.load("K", stop, y.add)
	defer wait()

	const kills = 3
	var killed []sender
	var takeovers []time.Duration
	for k := 1; k <= kills; k++ {
		// The leader, once it has delivered a good part of a batch of its own.
		lead := -1
		var by sender
		var from int
		waitFor(t, fmt.Sprintf("a leader to kill (%d)", k), 30*time.Second, func() bool {
			if l := f.leader(); l >= 0 && (l != lead || by != f.tag(l)) {
				lead, by, from = l, f.tag(l), f.sent(f.tag(l))
			}
			return lead >= 0 && f.leader() == lead && f.sent(by) >= from+40
		})
		killed = append(killed, f.kill(lead))
		at := time.Now()
		f.start(lead) // two keep running
		waitFor(t, fmt.Sprintf("a new leader after kill %d", k), 30*time.Second, func() bool { return f.leader() >= 0 })
		takeovers = append(takeovers, time.Since(at))
		t.Logf("kill %d: %s (leading since the previous kill) killed after %.1fs of load; %s leads %.2fs later",
			k, killed[k-1], time.Since(began).Seconds(), f.tag(f.leader()), takeovers[k-1].Seconds())
	}
	// The load window: at least 20 s, and a while after the last takeover
	// (the newest leader's own deliveries under way).
	last := f.tag(f.leader())
	from := f.sent(last)
	waitFor(t, "the newest leader delivering", 30*time.Second, func() bool { return f.sent(last) >= from+40 })
	<-time.After(time.Until(began.Add(20 * time.Second)))
	halt()
	wait()
	window := time.Since(began)

	if n := y.count(0); n > 0 {
		for _, r := range y.results {
			if r.code == 0 {
				t.Errorf("payment %s: no answer after %d tries (%.1fs): %v", r.order, r.tries, r.done.Sub(r.sent).Seconds(), r.err)
				break
			}
		}
		t.Errorf("%d payments got no answer", n)
	}
	for code, n := range y.codes {
		if code != 200 && code != 503 && code != 0 {
			t.Errorf("%d payments answered HTTP %d", n, code)
		}
	}
	f.settle(0, y, 300*time.Second)

	r := f.repeats()
	victims := map[sender]int{} // killed process -> kill number
	for k, s := range killed {
		victims[s] = k + 1
	}
	perKill := func(lane map[sender]int, bound int, what string) []int {
		out := make([]int, kills)
		for s, n := range lane {
			k, ok := victims[s]
			if !ok {
				t.Errorf("%d %s repeated after %s, which was never killed (it lost its lease?)", n, what, s)
				continue
			}
			out[k-1] = n
			if n > bound {
				t.Errorf("kill %d (%s): %d %s repeated, more than the bound %d", k, s, n, what, bound)
			}
		}
		return out
	}
	cust := perKill(r.customer, faultEmailBound, "customer emails")
	merch := perKill(r.merchant, faultEmailBound, "merchant emails")
	calls := perKill(r.callback, faultCallBound, "callbacks")
	for k, s := range r.twice {
		if k == 10 {
			break
		}
		t.Error(s)
	}
	if r.mostCopies > 1+kills {
		t.Errorf("an item was delivered %d times; at most %d (once, and once per kill)", r.mostCopies, 1+kills)
	}
	var tk []string
	for _, d := range takeovers {
		tk = append(tk, fmt.Sprintf("%.2fs", d.Seconds()))
	}
	t.Logf("%.1fs of load from %d clients: %d payments posted, %d answered 200, %d 503, %d needed another try (a process that died); "+
		"%d customer emails, %d merchant emails, %d callbacks; repeats per kill (bound %d, %d, %d): customer emails %v, merchant emails %v, callbacks %v; "+
		"most copies of one item %d; takeovers after each kill (lease %s) %s",
		window.Seconds(), faultClients, len(y.results), len(y.acked), y.count(503), y.retried,
		r.customerMails, r.merchantMails, r.callbacks, faultEmailBound, faultEmailBound, faultCallBound, cust, merch, calls,
		r.mostCopies, leaseTTL, strings.Join(tk, ", "))
}

// TestPGDatabaseStoppedUnderLoad (issue 24, acceptance): PostgreSQL
// stopped for 10 s under two ipnd processes behind the round-robin, 32
// clients posting throughout. Every payment sent while it is down is
// answered 503, none 200 or anything else, none left without an answer
// within the client's timeout; the admin /healthz of both is 503 with
// the reason, the public one 503. Started again, without a restart of
// ipnd: payments are answered 200 again, /healthz is 200, a process
// leads, every acknowledged payment is stored and applied once, and its
// email and callback arrive (the repeats within the in-flight bound of
// the one term the outage ended).
func TestPGDatabaseStoppedUnderLoad(t *testing.T) {
	c := pgtest.Start(t)
	f := newPGFleet(t, c.DSN())
	lead := -1
	waitFor(t, "a leader", 30*time.Second, func() bool { lead = f.leader(); return lead >= 0 })
	y := newTally()
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	defer halt()
	wait := f.load("D", stop, y.add)
	defer wait()
	waitFor(t, "deliveries under way", 60*time.Second, func() bool { return f.sent(f.tag(lead)) >= 40 })

	c.Stop()
	down := time.Now()
	publicDown := func(i int) bool {
		f.mu.Lock()
		base := f.slots[i].public
		f.mu.Unlock()
		resp, err := f.http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	}
	for i := range f.slots {
		waitFor(t, fmt.Sprintf("%c's /healthz 503 with the reason", 'A'+i), 20*time.Second, func() bool {
			code, h, err := f.health(i)
			return err == nil && code == 503 && strings.Contains(h.Error, "ingest answers 503") &&
				strings.Contains(h.Error, "postgres unavailable") && publicDown(i)
		})
	}
	sawDown := time.Since(down)
	<-time.After(time.Until(down.Add(10 * time.Second))) // the outage: 10 s of load
	for i := range f.slots {
		if code, h, err := f.health(i); err != nil || code != 503 {
			t.Errorf("%c's /healthz at the end of the outage: %d %+v %v, want 503", 'A'+i, code, h, err)
		}
	}
	up := time.Now()
	c.Start()
	back := time.Now()
	healthy := make([]time.Duration, len(f.slots))
	for i := range f.slots {
		waitFor(t, fmt.Sprintf("%c's /healthz 200 again", 'A'+i), 60*time.Second, func() bool {
			code, _, err := f.health(i)
			return err == nil && code == 200
		})
		healthy[i] = time.Since(back)
	}
	waitFor(t, "a leader again", 60*time.Second, func() bool { lead = f.leader(); return lead >= 0 })
	leads := time.Since(back)
	acksAfter := func() int {
		y.mu.Lock()
		defer y.mu.Unlock()
		n := 0
		for _, r := range y.results {
			if r.code == 200 && r.sent.After(back) {
				n++
			}
		}
		return n
	}
	waitFor(t, "payments answered 200 again", 60*time.Second, func() bool { return acksAfter() >= 200 })
	from := f.sent(f.tag(lead))
	waitFor(t, "the leader delivering again", 60*time.Second, func() bool { return f.sent(f.tag(lead)) >= from+40 })
	halt()
	wait()

	// While it was down (sent after the stop, answered before the
	// start): 503 only. Each answered within the client's timeout (none
	// without an answer) and only 200 or 503 at any time.
	var during int
	var firstAck, last503, slowest time.Duration
	var noAnswer []lbResult
	other := map[int]int{}
	y.mu.Lock()
	for _, r := range y.results {
		if r.code == 0 {
			noAnswer = append(noAnswer, r)
		}
		if r.code != 0 && r.code != 200 && r.code != 503 {
			other[r.code]++
		}
		if r.sent.After(down) && r.done.Before(up) {
			during++
			slowest = max(slowest, r.done.Sub(r.sent))
			if r.code != 503 {
				t.Errorf("payment %s sent %.2fs into the outage: HTTP %d (%d tries, %v), want 503",
					r.order, r.sent.Sub(down).Seconds(), r.code, r.tries, r.err)
			}
		}
		if r.code == 503 {
			last503 = max(last503, r.done.Sub(up))
		}
		if r.code == 200 && r.done.After(up) && (firstAck == 0 || r.done.Sub(up) < firstAck) {
			firstAck = r.done.Sub(up)
		}
	}
	y.mu.Unlock()
	if during < 100 {
		t.Errorf("only %d payments sent and answered while PostgreSQL was down: not under load", during)
	}
	for k, r := range noAnswer {
		if k == 5 {
			break
		}
		t.Errorf("payment %s (sent %.2fs after the stop): no answer after %d tries: %v", r.order, r.sent.Sub(down).Seconds(), r.tries, r.err)
	}
	for code, n := range other {
		t.Errorf("%d payments answered HTTP %d", n, code)
	}
	if len(noAnswer) > 0 {
		t.Fatalf("%d payments without an answer", len(noAnswer))
	}
	f.settle(0, y, 300*time.Second)

	r := f.repeats()
	sum := func(m map[sender]int) int {
		n := 0
		for _, v := range m {
			n += v
		}
		return n
	}
	// The process that led before the outage may lead after it: its own
	// repeats count too.
	cust := sum(r.customer) + r.twiceBy[ipn.EffectEmailCustomer]
	merch := sum(r.merchant) + r.twiceBy[ipn.EffectEmailMerchant]
	calls := sum(r.callback) + r.twiceBy[ipn.EffectShopCallback]
	if cust > faultEmailBound || merch > faultEmailBound || calls > faultCallBound || r.mostCopies > 2 {
		t.Errorf("repeats after the outage: customer emails %d, merchant emails %d, callbacks %d (bounds %d, %d, %d); most copies of one item %d (want at most 2)",
			cust, merch, calls, faultEmailBound, faultEmailBound, faultCallBound, r.mostCopies)
	}
	t.Logf("%d clients: %d payments posted, %d answered 200, %d 503 (%d of them sent and answered during the 10s outage, the slowest in %.2fs), %d needed another try; "+
		"/healthz 503 %.2fs after the stop; from the start of PostgreSQL (pg_ctl start returned after %.2fs): first 200 after %.2fs, last 503 after %.2fs; "+
		"after pg_ctl start returned: /healthz 200 on A %.2fs and B %.2fs, a leader %.2fs (%s); "+
		"%d customer emails, %d merchant emails, %d callbacks; repeated: %d customer emails, %d merchant emails, %d callbacks",
		faultClients, len(y.results), len(y.acked), y.count(503), during, slowest.Seconds(), y.retried, sawDown.Seconds(), back.Sub(up).Seconds(), firstAck.Seconds(), last503.Seconds(),
		healthy[0].Seconds(), healthy[1].Seconds(), leads.Seconds(), f.tag(lead), r.customerMails, r.merchantMails, r.callbacks, cust, merch, calls)
}
