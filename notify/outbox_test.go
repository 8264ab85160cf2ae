package notify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"ipnd/ipn"
	"ipnd/store"
)

// faultyOutbox is the real store with a fault injected at the seam the
// worker reads and writes through: while failing says so, reading a
// lane's queue and recording results fail as a full disk would.
type faultyOutbox struct {
	*store.DB
	failing      func(op string) bool
	scans, saves atomic.Int64 // failed calls
}

var errInjected = errors.New("no space left on device (injected)")

func (f *faultyOutbox) DueLaneSkipping(kind string, now time.Time, max int, skip func(uint64) bool) ([]ipn.OutboxItem, time.Time, error) {
	if f.failing("scan") {
		f.scans.Add(1)
		return nil, time.Time{}, errInjected
	}
	return f.DB.DueLaneSkipping(kind, now, max, skip)
}

func (f *faultyOutbox) FinishOutbox(results []ipn.OutboxResult, now time.Time) error {
	if f.failing("record") {
		f.saves.Add(1)
		return errInjected
	}
	return f.DB.FinishOutbox(results, now)
}

// countingMailer is the file mailer, counting what it wrote per
// Message-ID.
type countingMailer struct {
	*FileMailer
	mu   sync.Mutex
	sent map[string]int
}

func (m *countingMailer) SendEach(ctx context.Context, msgs []Message, done func(int, error) bool) {
	m.FileMailer.SendEach(ctx, msgs, func(i int, err error) bool {
		if err == nil {
			m.mu.Lock()
			m.sent[msgs[i].MessageID]++
			m.mu.Unlock()
		}
		return done(i, err)
	})
}

func (m *countingMailer) copies() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, v := range m.sent {
		out[k] = v
	}
	return out
}

// payOrder stores a notification and records it as an applied payment of
// order id, as the pipeline does: a payment_received email to email and a
// shop callback are queued.
func payOrder(t *testing.T, db *store.DB, id, email string) {
	t.Helper()
	ctx := context.Background()
	n := &ipn.Notification{Gateway: "g", ReceivedAt: time.Now(), Body: []byte("{}"), DedupKey: id}
	nid, _, err := db.Append(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pending(time.Now(), 1000); err != nil {
		t.Fatal(err)
	}
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T-" + id, OrderID: id,
		Amount: "5.00", Currency: "USD", CustomerEmail: email}
	if _, err := db.Finish([]ipn.Outcome{{ID: nid, State: ipn.StateApplied, Event: ev, EventKey: "k-" + id,
		ApplyOrder: true}}, nid, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func openStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{
		EffectKinds: map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectEmailMerchant: true}})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestWorkerOutlivesAFailingStore: the store fails for five minutes
// (reading the queue, or recording results); the worker neither stops nor
// sends twice, says it is degraded meanwhile, and delivers by itself once
// the store works again. Virtual time (synctest) stands for the minutes.
func TestWorkerOutlivesAFailingStore(t *testing.T) {
	for _, op := range []string{"scan", "record"} {
		t.Run(op, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				db := openStore(t)
				defer db.Close()
				healed := time.Now().Add(5 * time.Minute)
				ob := &faultyOutbox{DB: db, failing: func(o string) bool { return o == op && time.Now().Before(healed) }}
				tpl, err := LoadTemplates("")
				if err != nil {
					t.Fatal(err)
				}
				mailer := &countingMailer{FileMailer: NewFileMailer(filepath.Join(t.TempDir(), "mail")), sent: map[string]int{}}
				w := NewWorker(WorkerOptions{Outbox: ob, Mailer: mailer, Templates: tpl, From: "shop@example.com",
					RetryBase: time.Second, RetryCap: time.Second})
				ctx, cancel := context.WithCancel(context.Background())
				ran := make(chan error, 1)
				go func() { ran <- w.Run(ctx) }()
				payOrder(t, db, "O-1", "ann@example.com")

				time.Sleep(time.Minute)
				synctest.Wait()
				if err := w.Degraded(); err == nil {
					t.Errorf("a minute into the outage: not degraded (%d scans, %d records failed)", ob.scans.Load(), ob.saves.Load())
				}
				time.Sleep(5 * time.Minute)
				synctest.Wait()
				select {
				case err := <-ran:
					t.Fatalf("the worker stopped during the outage: %v", err)
				default:
				}
				t.Logf("failed calls: %d scans, %d records", ob.scans.Load(), ob.saves.Load())
				if failed := ob.scans.Load() + ob.saves.Load(); failed < 10 {
					t.Errorf("only %d failed store calls: the outage was not long enough to test giving up", failed)
				}
				sent, _ := db.ListOutbox(ipn.OutboxSent, 10)
				if len(sent) != 1 {
					t.Errorf("after the outage: %d items sent, want 1", len(sent))
				}
				for id, n := range mailer.copies() {
					if n != 1 {
						t.Errorf("email %s sent %d times", id, n)
					}
				}
				if len(mailer.copies()) != 1 {
					t.Errorf("emails sent: %v, want one", mailer.copies())
				}
				if err := w.Degraded(); err != nil {
					t.Errorf("still degraded after the store healed: %v", err)
				}
				cancel()
				if err := <-ran; err != nil {
					t.Errorf("Run = %v", err)
				}
			})
		})
	}
}

// TestWorkerRecordsEachEmail: a connection sends an email only once the
// previous one is recorded, so a store that stops recording after the
// first result holds back every later email of the burst (a crash then
// would repeat one, not the burst).
func TestWorkerRecordsEachEmail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		defer db.Close()
		var recorded atomic.Int64
		ob := &faultyOutbox{DB: db}
		ob.failing = func(op string) bool { return op == "record" && recorded.Load() >= 1 }
		tpl, _ := LoadTemplates("")
		mailer := &countingMailer{FileMailer: NewFileMailer(filepath.Join(t.TempDir(), "mail")), sent: map[string]int{}}
		for i := range 5 {
			payOrder(t, db, fmt.Sprintf("O-%d", i), fmt.Sprintf("c%d@example.com", i))
		}
		w := NewWorker(WorkerOptions{Outbox: &recordCounter{faultyOutbox: ob, n: &recorded}, Mailer: mailer,
			Templates: tpl, From: "shop@example.com"})
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- w.Run(ctx) }()
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(mailer.copies()); n != 2 {
			t.Errorf("%d emails went while only the first result could be recorded; want 2 (the recorded one and the one in flight)", n)
		}
		cancel()
		<-ran
		entries, _ := os.ReadDir(mailer.Dir())
		if len(entries) != 2 {
			t.Errorf("%d files in the mail directory, want 2", len(entries))
		}
	})
}

// TestWorkerUnrecordedBound: with EmailUnrecorded B, a connection sends
// the next email while up to B-1 sent ones wait for their record, never
// more: a store that records nothing holds the burst after B emails
// (what a crash would then repeat), not after 1 and not after all.
func TestWorkerUnrecordedBound(t *testing.T) {
	for _, b := range []int{1, 3} {
		t.Run(fmt.Sprint(b), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				db := openStore(t)
				defer db.Close()
				ob := &faultyOutbox{DB: db, failing: func(op string) bool { return op == "record" }}
				tpl, _ := LoadTemplates("")
				mailer := &countingMailer{FileMailer: NewFileMailer(filepath.Join(t.TempDir(), "mail")), sent: map[string]int{}}
				for i := range 8 {
					payOrder(t, db, fmt.Sprintf("O-%d", i), fmt.Sprintf("c%d@example.com", i))
				}
				w := NewWorker(WorkerOptions{Outbox: ob, Mailer: mailer, Templates: tpl, From: "shop@example.com",
					EmailUnrecorded: b})
				ctx, cancel := context.WithCancel(context.Background())
				ran := make(chan error, 1)
				go func() { ran <- w.Run(ctx) }()
				time.Sleep(time.Minute)
				synctest.Wait()
				if n := len(mailer.copies()); n != b {
					t.Errorf("%d emails went over one connection while none could be recorded; want %d", n, b)
				}
				cancel()
				<-ran
			})
		})
	}
}

// recordCounter counts the transactions that recorded results.
type recordCounter struct {
	*faultyOutbox
	n *atomic.Int64
}

func (r *recordCounter) FinishOutbox(results []ipn.OutboxResult, now time.Time) error {
	err := r.faultyOutbox.FinishOutbox(results, now)
	if err == nil {
		r.n.Add(1)
	}
	return err
}

// A message another one's broken connection kept from being tried is not
// charged an attempt: with max_attempts 3, an item at 2 attempts stays
// pending (a charged failure would make it dead).
func TestNotAttemptedIsNotCharged(t *testing.T) {
	w := NewWorker(WorkerOptions{EmailMax: 3})
	it := ipn.OutboxItem{ID: 7, Attempts: 2, Effect: ipn.Effect{Kind: ipn.EffectEmailCustomer}}
	r := w.result(it, fmt.Errorf("%w: smtp: connection lost after message m1", ErrNotAttempted), false)
	if r.State != ipn.OutboxPending || r.Attempts != 2 || r.RetryAt.IsZero() {
		t.Errorf("not attempted: %+v, want pending at 2 attempts with a retry time", r)
	}
	if r := w.result(it, errors.New("smtp: 451 try later"), false); r.State != ipn.OutboxDead || r.Attempts != 3 {
		t.Errorf("a real failure at the limit: %+v, want dead at 3", r)
	}
}

// TestNotAttemptedWaitsAndSaysWhy: the SMTP server drops the connection
// on the first email of a burst; the emails after it were not attempted.
// Their results are recorded: no attempt charged, a short wait before the
// next try (not due again at once), and the reason in last_error.
func TestNotAttemptedWaitsAndSaysWhy(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{})
	srv.setReject(func(stage, arg string) int {
		if stage == "DATA" && arg == "c0@example.com" {
			return smtpDrop
		}
		return 0
	})
	mailer, err := NewSMTPMailer(srv.config(t))
	if err != nil {
		t.Fatal(err)
	}
	db := openStore(t)
	defer db.Close()
	for i := range 4 {
		payOrder(t, db, fmt.Sprintf("O-%d", i), fmt.Sprintf("c%d@example.com", i))
	}
	tpl, _ := LoadTemplates("")
	obs := &countingObserver{}
	w := NewWorker(WorkerOptions{Outbox: db, Mailer: mailer, Templates: tpl, From: "shop@example.com",
		RetryBase: time.Minute, RetryCap: time.Hour, Observer: obs})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { cancel(); <-ran }) }
	defer stop()
	start := time.Now()
	var pending []ipn.OutboxItem
	deadline := time.Now().Add(10 * time.Second)
	for {
		pending, _ = db.ListOutbox(ipn.OutboxPending, 10)
		tried := 0
		for _, it := range pending {
			if it.Attempts > 0 || it.LastError != "" {
				tried++
			}
		}
		if tried == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: pending %+v", pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, it := range pending {
		switch {
		case it.Effect.To == "c0@example.com":
			if it.Attempts != 1 {
				t.Errorf("the dropped email: %d attempts, want 1", it.Attempts)
			}
		case it.Attempts != 0 || !strings.Contains(it.LastError, "not attempted") || it.NextAttempt.Before(start.Add(3*time.Second)):
			t.Errorf("an email after the dropped one: attempts %d, last_error %q, next attempt in %s; want 0, why, a few seconds",
				it.Attempts, it.LastError, it.NextAttempt.Sub(start))
		}
	}
	if n := len(srv.received()); n != 0 {
		t.Errorf("%d emails were received, want none yet", n)
	}
	// Only the dropped email was an attempt: the others are not counted
	// as failed deliveries (Run returns once every result is reported).
	stop()
	if got := obs.String(); got != "[payment_received/failed]" {
		t.Errorf("delivery results counted: %s, want the dropped email's failure only", got)
	}
}

// countingObserver records the delivery results a worker reports.
type countingObserver struct {
	mu  sync.Mutex
	got []string
}

func (o *countingObserver) EmailSent(template, result string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, template+"/"+result)
}

func (o *countingObserver) Callback(result string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, "callback/"+result)
}

func (o *countingObserver) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprint(o.got)
}

// TestDrainFinishesTheMessageUnderWay: Drain while the SMTP server holds
// the first email of a burst: that email is accepted and recorded as
// sent, the rest of the burst is not tried and stays due as it was (no
// attempt, no error), and Run returns. A worker started afterwards sends
// the rest: every email once.
func TestDrainFinishesTheMessageUnderWay(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{})
	held, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv.setReject(func(stage, _ string) int {
		if stage == "DATA" {
			once.Do(func() { close(held); <-proceed })
		}
		return 0
	})
	mailer, err := NewSMTPMailer(srv.config(t))
	if err != nil {
		t.Fatal(err)
	}
	db := openStore(t)
	defer db.Close()
	for i := range 5 {
		payOrder(t, db, fmt.Sprintf("O-%d", i), fmt.Sprintf("c%d@example.com", i))
	}
	tpl, _ := LoadTemplates("")
	opts := WorkerOptions{Outbox: db, Mailer: mailer, Templates: tpl, From: "shop@example.com", RetryBase: time.Minute}
	w := NewWorker(opts)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	<-held
	drained := make(chan struct{})
	go func() { w.Drain(); close(drained) }()
	for !w.draining() {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned while an email was under way")
	default:
	}
	close(proceed)
	<-drained
	if err := <-ran; err != nil {
		t.Fatalf("Run = %v", err)
	}
	sent, _ := db.ListOutbox(ipn.OutboxSent, 10)
	pending, _ := db.ListOutbox(ipn.OutboxPending, 10)
	if len(srv.received()) != 1 || len(sent) != 1 || len(pending) != 4 {
		t.Fatalf("after the drain: %d received, %d sent, %d pending; want 1, 1, 4", len(srv.received()), len(sent), len(pending))
	}
	for _, it := range pending {
		if it.Attempts != 0 || it.LastError != "" || it.NextAttempt.After(time.Now()) {
			t.Errorf("an email after the drain: %+v, want untouched and due", it)
		}
	}

	w2 := NewWorker(opts)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ran <- w2.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); len(srv.received()) < 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the next worker sent %d of the 5 emails", len(srv.received()))
		}
	}
	cancel()
	<-ran
	seen := map[string]int{}
	for _, m := range srv.received() {
		seen[m.To[0]]++
	}
	if len(seen) != 5 || len(srv.received()) != 5 {
		t.Errorf("received %v, want each of the 5 once", seen)
	}
}
