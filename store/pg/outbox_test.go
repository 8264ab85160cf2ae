package pg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/notify"
	"ipnd/pipeline"
	"ipnd/record"
	"ipnd/store"
)

// mailbox is an in-process SMTP server (go-smtp on 127.0.0.1:0) that
// keeps the Message-ID, recipient and subject of each message it
// accepts, and refuses the first message to each address in refuse
// (451, to retry).
type mailbox struct {
	port   int
	mu     sync.Mutex
	got    []string // "message-id to subject"
	refuse map[string]int
}

func startMailbox(t testing.TB, refuse ...string) *mailbox {
	t.Helper()
	m := &mailbox{refuse: map[string]int{}}
	for _, a := range refuse {
		m.refuse[a] = 1
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{m: m}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0) // clients that hang up at the end are not news
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.port = ln.Addr().(*net.TCPAddr).Port
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return m
}

func (m *mailbox) messages() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.got)
}

type mailSession struct {
	m    *mailbox
	rcpt string
}

func (s *mailSession) Reset()                                    {}
func (s *mailSession) Logout() error                             { return nil }
func (s *mailSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.rcpt = to; return nil }
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg, err := netmail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		return err
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.m.refuse[s.rcpt] > 0 {
		s.m.refuse[s.rcpt]--
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	s.m.got = append(s.m.got, msg.Header.Get("Message-Id")+" "+s.rcpt+" "+msg.Header.Get("Subject"))
	return nil
}

// shopServer is an httptest shop that keeps each callback it answers 200
// (its webhook-id, event type, order and txn), and answers 500 to the
// first fail[order] callbacks of each order. hold, when set, is called with
// each callback before it is answered (it may block).
type shopServer struct {
	*httptest.Server
	mu    sync.Mutex
	got   []shopCall
	fails []shopCall
	fail  map[string]int
	hold  func(c shopCall)
}

type shopCall struct {
	ID, Type, Order, Txn string
}

func startShop(t testing.TB, fail map[string]int) *shopServer {
	s := &shopServer{fail: maps.Clone(fail)}
	if s.fail == nil {
		s.fail = map[string]int{}
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev notify.ShopEvent
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c := shopCall{ID: r.Header.Get("Webhook-Id"), Type: ev.Type, Order: ev.Data.Order.ID, Txn: ev.Data.Event.TxnID}
		if s.hold != nil {
			s.hold(c)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail[c.Order] > 0 {
			s.fail[c.Order]--
			s.fails = append(s.fails, c)
			http.Error(w, "shop down", http.StatusInternalServerError)
			return
		}
		s.got = append(s.got, c)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *shopServer) calls() []shopCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// runWorker runs the real outbox worker on o, emails to mb and callbacks
// to shop (1 SMTP connection per lane, 4 callbacks at once, retries after
// 10 to 40 ms, a callback dead after 3 attempts), until the returned stop is called; stop returns when Run
// has.
func runWorker(t testing.TB, o notify.Outbox, mb *mailbox, shop *shopServer, enabled map[string]bool) (stop func()) {
	t.Helper()
	mailer, err := notify.NewSMTPMailer(notify.SMTPConfig{Host: "127.0.0.1", Port: mb.port, TLS: notify.SMTPNoTLS,
		Timeout: 10 * time.Second, HelloName: "ipnd.test"})
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := notify.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	w := notify.NewWorker(notify.WorkerOptions{Outbox: o, Mailer: mailer, Templates: tpl, From: "shop@example.com",
		MerchantTo: "merchant@example.com", MerchantName: "Example", Domain: "example.com", Enabled: enabled,
		Shop: &notify.Shop{URL: shop.URL, Key: []byte("0123456789abcdef0123456789abcdef"), Timeout: 10 * time.Second,
			Client: notify.NewShopClient(4)},
		ShopMax: 3, RetryBase: 10 * time.Millisecond, RetryCap: 40 * time.Millisecond, BatchDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-ran; err != nil {
				t.Errorf("worker Run = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls ok until it holds, failing the test after 60 s.
func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not in 60 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// noneQueued reports whether every outbox item of b is delivered, dead
// or skipped.
func noneQueued(t *testing.T, b *backend) func() bool {
	return func() bool {
		items, err := b.outbox()
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if it.State == ipn.OutboxPending {
				return false
			}
		}
		return len(items) > 0
	}
}

// deliveryScenario runs the outbox worker on b while the pipeline
// processes payments (one with a customer address the mail server
// refuses once) and a refund of the first payment (its email is not
// enabled: skipped); the shop answers the first callback of that order
// with a 500 once, and fails another order's callback until it is dead.
// It returns what the mail server and the shop received and the outbox
// as it ends, as text to compare.
func deliveryScenario(t *testing.T, b *backend) string {
	t.Helper()
	b.setKinds(map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectEmailMerchant: true, ipn.EffectShopCallback: true})
	mb := startMailbox(t, "refuse@example.com")
	shop := startShop(t, map[string]int{"O1": 1, "O2": 3})
	// The worker starts first: what the pipeline queues wakes it.
	// Refund emails are not enabled: skipped, said in the order's history.
	stop := runWorker(t, b.deliveries(), mb, shop, map[string]bool{ipn.TemplatePaymentReceived: true})
	notes := []*ipn.Notification{
		webhook("d1", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"10.00","currency":"USD","customer_email":"a@example.com"`),
		webhook("d2", "payment.completed", `"txn_id":"T2","order_id":"O2","amount":"20.00","currency":"USD","customer_email":"refuse@example.com"`),
		webhook("d3", "payment.refunded", `"txn_id":"R1","parent_txn_id":"T1","amount":"3.00","currency":"USD"`),
		webhook("d4", "payment.completed", `"txn_id":"T3","order_id":"O3","amount":"5.00","currency":"USD"`),
	}
	for _, n := range notes {
		if _, err := b.append(n); err != nil {
			t.Fatal(err)
		}
	}
	runUntilIdle(t, b, verifier(t), uint64(len(notes)))
	waitFor(t, b.name+": every outbox item delivered, dead or skipped", noneQueued(t, b))
	stop()

	var out strings.Builder
	msgs := mb.messages()
	slices.Sort(msgs)
	for _, m := range msgs {
		fmt.Fprintf(&out, "email %s\n", m)
	}
	seen := map[string]int{}
	byOrder := map[string][]string{}
	for _, c := range shop.calls() {
		seen[c.ID]++
		byOrder[c.Order] = append(byOrder[c.Order], c.Type+"/"+c.Txn)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s: callback %s received %d times", b.name, id, n)
		}
	}
	for _, o := range []string{"O1", "O2", "O3"} {
		fmt.Fprintf(&out, "callbacks of %s: %v\n", o, byOrder[o])
	}
	fmt.Fprintf(&out, "callbacks answered 500: %d\n", len(shop.fails))
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		fmt.Fprintf(&out, "outbox %d: %s %s attempts=%d order=%s template=%s error=%q\n",
			it.ID, it.Effect.Kind, it.State, it.Attempts, it.Effect.OrderID, it.Effect.Template, it.LastError)
		as, err := b.attempts(it.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			fmt.Fprintf(&out, "  attempt %d (%d): %s error=%q http=%d smtp=%q\n", a.Seq, a.Attempt, a.Result, a.Error, a.HTTPStatus, a.SMTPReply)
		}
	}
	o, err := b.order("O1")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range o.History {
		fmt.Fprintf(&out, "order O1: %s>%s by %d: %s\n", h.From, h.To, h.Notification, h.Reason)
	}
	return out.String()
}

// TestPGOutboxConformance runs the real outbox worker (SMTP to an
// in-process go-smtp server, callbacks to an httptest shop) on the bbolt
// store and on PostgreSQL through one scenario (payments, a refund, an
// email refused once, a callback answered 500 once, an email skipped) and compares what the mail server and the shop received
// (each once, the callbacks of an order in order) and the outbox as it
// ends, with the attempts kept.
func TestPGOutboxConformance(t *testing.T) {
	c := pgtest.Start(t)
	want := deliveryScenario(t, boltBackend(t))
	db := open(t, c.DSN())
	got := deliveryScenario(t, pgBackend(t, db))
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	checkOutboxCounts(t, db) // outboxcounts_test.go
	for _, must := range []string{
		"callbacks of O1: [order.paid/T1 order.partially_refunded/R1]", "callbacks answered 500: 4",
		"shop_callback dead attempts=3 order=O2", "callbacks of O2: []",
		"email_customer sent attempts=2 order=O2", "http=500", "4.3.0 try again later",
		"email_customer skipped attempts=1 order=O1 template=refund_issued",
		"order O1: partially_refunded>partially_refunded by 3: outbox 5 (email_customer refund_issued) skipped: template refund_issued is not in email.enabled",
	} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q:\n%s", must, want)
		}
	}
	if attemptsKept != store.AttemptsKept {
		t.Errorf("attemptsKept = %d, the bbolt store keeps %d", attemptsKept, store.AttemptsKept)
	}
	t.Logf("both backends:\n%s", want)
}

// queue stores and processes n payments (orders O0..On-1, each an email
// to the customer and a callback) on b.
func queue(t *testing.T, b *backend, n int) {
	t.Helper()
	b.setKinds(map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectEmailMerchant: true, ipn.EffectShopCallback: true})
	for i := range n {
		if _, err := b.append(webhook(fmt.Sprintf("k%d", i), "payment.completed",
			fmt.Sprintf(`"txn_id":"T%d","order_id":"O%d","amount":"1.00","currency":"USD","customer_email":"c%d@example.com"`, i, i, i))); err != nil {
			t.Fatal(err)
		}
	}
	runUntilIdle(t, b, verifier(t), uint64(n))
}

// TestPGOutboxStaleLeaderRefused: a process whose lease ended while
// another took over cannot record delivery results: FinishOutbox fails
// with ErrNotLeader and the items stay as they were; the new leader's
// results are recorded.
func TestPGOutboxStaleLeaderRefused(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db, other := open(t, c.DSN()), open(t, c.DSN())
	b := pgBackend(t, db)
	queue(t, b, 2)
	stale := b.deliveries()
	items, _, err := stale.DueLaneSkipping(ipn.EffectShopCallback, time.Now(), 10, nil)
	if err != nil || len(items) != 2 {
		t.Fatalf("due callbacks: %d %v", len(items), err)
	}
	sent := func(it ipn.OutboxItem) ipn.OutboxResult {
		return ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: it.Attempts + 1}
	}
	if err := stale.FinishOutbox([]ipn.OutboxResult{sent(items[0])}, time.Now()); err != nil {
		t.Fatalf("FinishOutbox while leading: %v", err)
	}
	if _, err := db.pool.Exec(ctx, `UPDATE ipnd_leader SET expires_at = now()`); err != nil {
		t.Fatal(err)
	}
	fresh := pgBackend(t, other).deliveries()
	if err := stale.FinishOutbox([]ipn.OutboxResult{sent(items[1])}, time.Now()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("the stale leader's FinishOutbox = %v, want ErrNotLeader", err)
	}
	state := func(id uint64) string {
		var s string
		if err := db.pool.QueryRow(ctx, `SELECT state FROM outbox WHERE id = $1`, int64(id)).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := state(items[1].ID); s != ipn.OutboxPending {
		t.Fatalf("item %d after the refused result: %s", items[1].ID, s)
	}
	due, _, err := fresh.DueLaneSkipping(ipn.EffectShopCallback, time.Now(), 10, nil)
	if err != nil || len(due) != 1 || due[0].ID != items[1].ID {
		t.Fatalf("the new leader's due callbacks: %+v %v", due, err)
	}
	if err := fresh.FinishOutbox([]ipn.OutboxResult{sent(due[0])}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if s := state(items[1].ID); s != ipn.OutboxSent {
		t.Errorf("item %d after the new leader's result: %s", items[1].ID, s)
	}
}

// TestPGOutboxWokenByOtherProcess: the leader's worker is woken by the
// commit of another process's transaction that queued outbox items
// (NOTIFY from that transaction).
func TestPGOutboxWokenByOtherProcess(t *testing.T) {
	c := pgtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, other := open(t, c.DSN()), open(t, c.DSN())
	d := db.Deliveries(ctx, nil, 0)
	waitFor(t, "the worker's connection listens", func() bool {
		var n int
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN `+outboxChannel+`'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	select {
	case <-d.OutboxWake(): // the wake-up of its connecting
	case <-time.After(30 * time.Second):
		t.Fatal("no wake-up when the listener connected")
	}
	b := pgBackend(t, other)
	if _, err := b.append(webhook("w1", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"1.00","currency":"USD"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.journal.Finish([]ipn.Outcome{payment(1, "T1", "O1")}, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.OutboxWake():
	case <-time.After(30 * time.Second):
		t.Fatal("the worker is not woken by the items another process queued")
	}
	items, _, err := d.DueLaneSkipping(ipn.EffectShopCallback, time.Now(), 10, nil)
	if err != nil || len(items) != 1 {
		t.Fatalf("due callbacks: %+v %v", items, err)
	}
}

// TestPGOutboxKillResume: the leader's database goes away (closed) in
// the middle of the deliveries, while a callback is under way; its
// worker stops. Another process takes over and delivers the rest: every
// email and callback is received, and only those in flight at the kill
// (at most one per SMTP connection and per callback slot) twice.
func TestPGOutboxKillResume(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db, err := Open(ctx, c.DSN(), Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			db.Close()
		}
	}()
	const n = 40
	b := pgBackend(t, db)
	queue(t, b, n)
	mb := startMailbox(t)
	shop := startShop(t, nil)
	held, release := make(chan shopCall, 1), make(chan struct{})
	var holdOnce sync.Once
	shop.hold = func(c shopCall) {
		if c.Order != "O20" {
			return
		}
		holdOnce.Do(func() {
			held <- c
			<-release
		})
	}
	stop := runWorker(t, b.deliveries(), mb, shop, nil)
	var inflight shopCall
	select {
	case inflight = <-held:
	case <-time.After(60 * time.Second):
		t.Fatal("the callback of O20 did not come")
	}
	db.Close() // the kill: nothing more is recorded
	closed = true
	close(release)
	stop()
	before := len(shop.calls()) + len(mb.messages())
	if before >= 2*n {
		t.Fatalf("everything was delivered before the kill (%d)", before)
	}
	t.Logf("%d of %d deliveries before the kill", before, 2*n)

	again := open(t, c.DSN())
	if _, err := again.pool.Exec(ctx, `UPDATE ipnd_leader SET expires_at = now()`); err != nil {
		t.Fatal(err) // the dead leader's lease runs out
	}
	b2 := pgBackend(t, again)
	stop2 := runWorker(t, b2.deliveries(), mb, shop, nil)
	waitFor(t, "every outbox item delivered after the takeover", noneQueued(t, b2))
	stop2()

	items, err := b2.outbox()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2*n {
		t.Fatalf("%d outbox items, want %d", len(items), 2*n)
	}
	calls := map[string]int{}
	for _, c := range shop.calls() {
		calls[c.ID]++
	}
	mails := map[string]int{}
	for _, m := range mb.messages() {
		mails[strings.Fields(m)[0]]++
	}
	repeated := 0
	for _, it := range items {
		if it.State != ipn.OutboxSent {
			t.Errorf("item %d: %s (%s)", it.ID, it.State, it.LastError)
		}
		var got int
		if it.Effect.Kind == ipn.EffectShopCallback {
			got = calls[it.Key()]
		} else {
			got = mails[notify.MessageID(it.Effect.Cause, "example.com")]
		}
		if got == 0 {
			t.Errorf("item %d (%s) never received", it.ID, it.Effect.Kind)
		}
		if got > 1 {
			repeated += got - 1
			t.Logf("item %d (%s of %s) received %d times", it.ID, it.Effect.Kind, it.Effect.OrderID, got)
		}
	}
	// In flight at most: a callback per slot (4), an email per SMTP
	// connection of each email lane (1 each).
	if repeated > 4+1+1 {
		t.Errorf("%d deliveries repeated, more than the items in flight", repeated)
	}
	if calls[inflight.ID] != 2 {
		t.Errorf("the callback under way at the kill was received %d times, want 2 (its result was not recorded)", calls[inflight.ID])
	}
	checkOutboxCounts(t, again) // outboxcounts_test.go
}

// TestPGOutboxSkipNoteAndPipelineShareTheOrder: the line a skipped item
// adds to its order's history and a change of the order by the pipeline
// meanwhile are both kept: recording the skip waits for the pipeline's
// transaction that read the order, then adds its line to what that
// transaction wrote.
func TestPGOutboxSkipNoteAndPipelineShareTheOrder(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db := open(t, c.DSN())
	b := pgBackend(t, db)
	queue(t, b, 1)
	d := b.deliveries()
	items, _, err := d.DueLaneSkipping(ipn.EffectEmailCustomer, time.Now(), 10, nil)
	if err != nil || len(items) != 1 {
		t.Fatalf("due emails: %+v %v", items, err)
	}
	j := b.journal.(*Journal)
	read, finished := make(chan struct{}), make(chan error, 1)
	err = j.update(func(tx record.Tx) error {
		o, st, err := tx.OrderState("O0", nil, ipn.ApplyContext{})
		if err != nil || o == nil || st != nil {
			return fmt.Errorf("order O0: %+v %+v %v", o, st, err)
		}
		close(read)
		go func() {
			finished <- d.FinishOutbox([]ipn.OutboxResult{{ID: items[0].ID, State: ipn.OutboxSkipped, Attempts: 1,
				Error: "no recipient"}}, time.Now())
		}()
		// The skip waits for this transaction (its lock), or has gone
		// by it (no lock).
		deadline := time.Now().Add(30 * time.Second)
		for {
			select {
			case err := <-finished:
				finished <- err
				goto write
			default:
			}
			var waiting bool
			if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT record, tally FROM orders%')`).Scan(&waiting); err != nil {
				return err
			}
			if waiting {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("the skip neither waits nor finishes")
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
	write:
		next := *o
		next.Description = "changed by the pipeline"
		return tx.PutOrder(o, &next, nil, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
	o, err := db.GetOrder(ctx, "O0")
	if err != nil {
		t.Fatal(err)
	}
	if o.Description != "changed by the pipeline" {
		t.Errorf("the pipeline's change is lost: %q", o.Description)
	}
	if h := o.History[len(o.History)-1]; !strings.Contains(h.Reason, "skipped: no recipient") {
		t.Errorf("the skip's history line is lost: %+v", o.History)
	}
}

// attemptsScenario fails one callback 25 times, then records it sent
// (a success with nothing to say): the attempts kept are the last 20
// failures and the success, as the item's state tells it.
func attemptsScenario(t *testing.T, b *backend) string {
	t.Helper()
	queue(t, b, 1)
	d := b.deliveries()
	var out strings.Builder
	for i := 1; i <= 26; i++ {
		items, _, err := d.DueLaneSkipping(ipn.EffectShopCallback, time.Now().Add(time.Hour), 10, nil)
		if err != nil || len(items) != 1 {
			t.Fatalf("%s: due callbacks: %+v %v", b.name, items, err)
		}
		it := items[0]
		r := ipn.OutboxResult{ID: it.ID, State: ipn.OutboxPending, Attempts: it.Attempts + 1, RetryAt: time.Now(),
			Error: fmt.Sprintf("shop callback: HTTP 500 (%d)", i), Detail: ipn.AttemptDetail{HTTPStatus: 500}}
		if i == 26 {
			r = ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: it.Attempts + 1}
		}
		// A result recorded twice (a retry of the commit) counts once.
		if err := d.FinishOutbox([]ipn.OutboxResult{r, r}, time.Now()); err != nil {
			t.Fatal(err)
		}
		if i == 26 {
			as, err := b.attempts(it.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range as {
				fmt.Fprintf(&out, "attempt %d (%d): %s %q http=%d\n", a.Seq, a.Attempt, a.Result, a.Error, a.HTTPStatus)
			}
		}
	}
	return out.String()
}

// TestPGOutboxAttemptsKept: the attempts kept of an item on PostgreSQL
// are the bbolt store's: the last 20, a quiet success made from the
// item.
func TestPGOutboxAttemptsKept(t *testing.T) {
	c := pgtest.Start(t)
	want := attemptsScenario(t, boltBackend(t))
	got := attemptsScenario(t, pgBackend(t, open(t, c.DSN())))
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	if !strings.HasPrefix(want, `attempt 6 (6): pending "shop callback: HTTP 500 (6)" http=500`) || !strings.HasSuffix(want, "attempt 26 (26): sent \"\" http=0\n") ||
		strings.Count(want, "\n") != 21 {
		t.Errorf("the attempts kept:\n%s", want)
	}
}

// TestPGOutboxDamagedItem: a pending callback whose stored effect does
// not decode is made dead, saying so, and the next callback of its order
// is due: it stalls nothing.
func TestPGOutboxDamagedItem(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	db := open(t, c.DSN())
	b := pgBackend(t, db)
	b.setKinds(map[string]bool{ipn.EffectShopCallback: true})
	for _, n := range []*ipn.Notification{
		webhook("x1", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"10.00","currency":"USD"`),
		webhook("x2", "payment.refunded", `"txn_id":"R1","parent_txn_id":"T1","amount":"3.00","currency":"USD"`),
	} {
		if _, err := b.append(n); err != nil {
			t.Fatal(err)
		}
	}
	runUntilIdle(t, b, verifier(t), 2)
	if _, err := db.pool.Exec(ctx, `UPDATE outbox SET effect = '{"kind": 5}' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	d := b.deliveries()
	if items, _, err := d.DueLaneSkipping(ipn.EffectShopCallback, time.Now(), 10, nil); err != nil || len(items) != 0 {
		t.Fatalf("due callbacks with the first damaged: %+v %v", items, err)
	}
	items, _, err := d.DueLaneSkipping(ipn.EffectShopCallback, time.Now(), 10, nil)
	if err != nil || len(items) != 1 || items[0].ID != 2 || items[0].Effect.Event.TxnID != "R1" {
		t.Fatalf("due callbacks after: %+v %v", items, err)
	}
	var state, why string
	if err := db.pool.QueryRow(ctx, `SELECT state, last_error FROM outbox WHERE id = 1`).Scan(&state, &why); err != nil {
		t.Fatal(err)
	}
	if state != ipn.OutboxDead || !strings.Contains(why, "does not decode") {
		t.Errorf("the damaged item: %s %q", state, why)
	}
	checkOutboxCounts(t, db) // outboxcounts_test.go
}

// BenchmarkPGDeliveries: the real worker delivers b.N payments' email
// and callback (to the in-process SMTP server and httptest shop) on
// each backend; deliveries/s counts both.
func BenchmarkPGDeliveries(b *testing.B) {
	for _, name := range []string{"bbolt", "postgres"} {
		b.Run(name, func(b *testing.B) {
			var be *backend
			if name == "bbolt" {
				be = boltBackend(b)
			} else {
				be = pgBackend(b, open(b, pgtest.Start(b).DSN()))
			}
			be.setKinds(map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectShopCallback: true})
			for i := range b.N {
				if _, err := be.append(webhook(fmt.Sprintf("k%d", i), "payment.completed",
					fmt.Sprintf(`"txn_id":"T%d","order_id":"O%d","amount":"1.00","currency":"USD","customer_email":"c%d@example.com"`, i, i, i))); err != nil {
					b.Fatal(err)
				}
			}
			g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			p := pipeline.New(pipeline.Options{Journal: be.journal, Gateways: []gateway.Gateway{g}, BatchDelay: time.Millisecond,
				Logger: slog.New(slog.DiscardHandler)})
			ran := make(chan error, 1)
			go func() { ran <- p.Run(ctx) }()
			last := uint64(b.N)
			waitFor(b, "every payment applied", func() bool {
				st, err := be.state(last)
				return err == nil && st != nil && st.State == ipn.StateApplied && be.cursor() >= last
			})
			cancel()
			<-ran
			o := be.deliveries()
			pending := func() int {
				switch o := o.(type) {
				case *store.DB:
					counts, err := o.OutboxCounts()
					if err != nil {
						b.Fatal(err)
					}
					n := 0
					for _, c := range counts[ipn.OutboxPending] {
						n += c
					}
					return n
				case *Deliveries:
					var n int
					if err := o.db.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE state = 'pending'`).Scan(&n); err != nil {
						b.Fatal(err)
					}
					return n
				}
				b.Fatalf("%T", o)
				return 0
			}
			mb, shop := startMailbox(b), startShop(b, nil)
			b.ResetTimer()
			start := time.Now()
			stop := runWorker(b, o, mb, shop, nil)
			waitFor(b, "every item delivered", func() bool { return pending() == 0 })
			el := time.Since(start)
			b.StopTimer()
			stop()
			if got := len(mb.messages()) + len(shop.calls()); got < 2*b.N {
				b.Fatalf("%d deliveries, want %d", got, 2*b.N)
			}
			b.ReportMetric(float64(2*b.N)/el.Seconds(), "deliveries/s")
		})
	}
}
