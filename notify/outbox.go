package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"ipnd/internal/backoff"
	"ipnd/ipn"
)

// Outbox is the store as the worker sees it.
type Outbox interface {
	// DueLaneSkipping returns up to max pending items of one kind due at
	// now, earliest first, passing over those for which skip returns
	// true (those in flight, still pending in the store), and when the
	// next one after them is due (zero: none).
	DueLaneSkipping(kind string, now time.Time, max int, skip func(id uint64) bool) ([]ipn.OutboxItem, time.Time, error)
	FinishOutbox(results []ipn.OutboxResult, now time.Time) error
	OutboxWake() <-chan struct{}
	// OrderHeader returns an order without the facts and history kept
	// apart from it (what rendering an email needs).
	OrderHeader(id string) (*ipn.Order, error)
}

// WorkerObserver is told each delivery outcome. result is "sent",
// "failed" or "dead" (skipped items are counted by the store's gauges).
type WorkerObserver interface {
	EmailSent(template, result string)
	Callback(result string)
}

// WorkerOptions configure a Worker. Outbox is required; Mailer and
// Templates when emails are queued; Shop when callbacks or scripts are.
type WorkerOptions struct {
	Outbox       Outbox
	Mailer       Mailer
	Templates    *Templates
	From         string
	ReplyTo      string
	MerchantTo   string // the merchant's address for merchant emails
	MerchantName string
	Domain       string          // right-hand side of Message-IDs
	Enabled      map[string]bool // templates to send; nil: all
	Shop         *Shop
	EmailMax     int           // attempts before an email is dead (default 20)
	ShopMax      int           // attempts before a callback is dead (default 50)
	RetryBase    time.Duration // first retry (default 30 s), doubling with jitter
	RetryCap     time.Duration // longest wait (default 1 h)
	// EmailConnections is the number of SMTP connections of each email
	// lane (customer, merchant; default 1). Concurrency is the number of
	// callbacks at once, and of script runs at once (default 4 each).
	EmailConnections int
	Concurrency      int
	// ShopConnections is the number of callbacks at once (default
	// Concurrency): each slot's callback is recorded before it takes
	// the next, so a crash repeats at most one callback per slot.
	ShopConnections int
	// EmailUnrecorded is how many emails one connection may have sent
	// whose results are not yet recorded (default 1): the next email
	// goes while the results before it are committed, and a crash
	// repeats at most that many emails per connection.
	EmailUnrecorded int
	Batch           int // emails a lane takes at once (default 100), shared by its connections
	// BatchDelay lets queued items gather after a wake-up (default 50 ms),
	// so that a trickle of events does not cost a commit each.
	BatchDelay time.Duration
	Observer   WorkerObserver
	Logger     *slog.Logger
	Now        func() time.Time
}

// notAttemptedWait is the wait of an item that was not attempted (the
// connection broke on an earlier message), unless RetryBase is shorter.
const notAttemptedWait = 5 * time.Second

// storeRetryCap is the longest wait between two tries of a store that
// fails (the waits start at a second and double).
const storeRetryCap = 30 * time.Second

// Worker delivers outbox items, each kind on its own lane (ipn.OutboxLanes):
// customer emails and merchant emails each over their own SMTP
// connections, shop callbacks and script runs each with their own bounded
// concurrency. A lane scans only its own due items, so a slow or dead
// destination delays nothing but its own lane. Each result is recorded as
// soon as it is known (the results of every lane arriving together share
// a transaction), and a connection sends its next email only while at
// most EmailUnrecorded-1 of its sent ones wait for their record: a crash
// repeats at most EmailUnrecorded emails per SMTP connection and one
// item per concurrent callback or script slot. Failures are
// retried with backoff and jitter until the kind's attempt limit, then
// the item is dead (listed by the API, retryable by hand); an item with
// nothing to send to is skipped. The store hands out the callbacks and
// script runs of one order one at a time, in queue order (see the
// store's order queues), so a lane delivers other orders in parallel,
// one item of each at a time (a manual retry of an older item while a
// later one is under way is the exception). A store that fails is retried forever,
// with capped backoff; meanwhile Degraded reports it.
type Worker struct {
	o      WorkerOptions
	log    *slog.Logger
	faults faults
	// The results handed to the recorder and not yet taken by it; a
	// value in recordWake says there are some. A slot hands a result over
	// without waiting, also while a commit is under way (see
	// slotRecords.add): the results that arrive meanwhile go together in
	// the next one.
	recordMu   sync.Mutex
	recordQ    []recordReq
	recordWake chan struct{}

	drain     chan struct{} // closed by Drain
	drainOnce sync.Once
	started   atomic.Bool
	stopped   chan struct{} // closed when Run returns
}

// NewWorker applies defaults.
func NewWorker(o WorkerOptions) *Worker {
	if o.EmailMax <= 0 {
		o.EmailMax = 20
	}
	if o.ShopMax <= 0 {
		o.ShopMax = 50
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 30 * time.Second
	}
	if o.RetryCap <= 0 {
		o.RetryCap = time.Hour
	}
	if o.EmailConnections <= 0 {
		o.EmailConnections = 1
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.ShopConnections <= 0 {
		o.ShopConnections = o.Concurrency
	}
	if o.EmailUnrecorded <= 0 {
		o.EmailUnrecorded = 1
	}
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = 50 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Domain == "" {
		o.Domain = "ipnd.invalid"
	}
	return &Worker{o: o, log: o.Logger, faults: faults{m: map[string]error{}},
		drain: make(chan struct{}), stopped: make(chan struct{})}
}

// Drain makes Run take no new item, let the deliveries under way finish
// (each within its own timeout; an email burst stops after the message
// being sent), record their results and return; Drain returns when Run
// has. A reload drains the running worker before the one with the new
// settings starts, so that no delivery is cut short and made again. It
// returns at once when Run was never started.
func (w *Worker) Drain() {
	w.drainOnce.Do(func() { close(w.drain) })
	if w.started.Load() {
		<-w.stopped
	}
}

// draining reports whether Drain was called.
func (w *Worker) draining() bool {
	select {
	case <-w.drain:
		return true
	default:
		return false
	}
}

// Degraded reports why the worker cannot make progress right now (the
// store fails its scans or the recording of results; it is being retried),
// or nil.
func (w *Worker) Degraded() error { return w.faults.err() }

// lane is the delivery of one kind of item: slots deliver at once, each
// taking up to burst items (emails over one connection; one callback).
type lane struct {
	kind  string
	slots int
	burst int
	wake  chan struct{}
}

// Run delivers until ctx is done or Drain is called, each lane sleeping
// until items are queued or a retry is due. When ctx is done the attempts
// under way are cut short (as by a crash: they are made again later);
// after Drain they finish. Either way Run returns nil once the results of
// the attempts under way are recorded; it does not return otherwise (a
// failing store is retried). Run must be called once.
func (w *Worker) Run(ctx context.Context) error {
	w.started.Store(true)
	defer close(w.stopped)
	w.recordWake = make(chan struct{}, 1)
	stop, recorded := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(recorded)
		w.recorder(ctx, stop)
	}()
	var lanes []*lane
	for _, kind := range ipn.OutboxLanes {
		l := &lane{kind: kind, slots: w.o.Concurrency, burst: 1, wake: make(chan struct{}, 1)}
		if kind == ipn.EffectShopCallback {
			l.slots = w.o.ShopConnections
		}
		if kind == ipn.EffectEmailCustomer || kind == ipn.EffectEmailMerchant {
			// Each connection takes its share of a batch, so that one
			// does not take all while the others wait.
			l.slots, l.burst = w.o.EmailConnections, max(1, w.o.Batch/w.o.EmailConnections)
		}
		lanes = append(lanes, l)
	}
	var wg sync.WaitGroup
	for _, l := range lanes {
		wg.Go(func() { w.runLane(ctx, l) })
	}
	for ctx.Err() == nil && !w.draining() {
		select {
		case <-ctx.Done():
		case <-w.drain:
		case <-w.o.Outbox.OutboxWake():
			for _, l := range lanes {
				select {
				case l.wake <- struct{}{}:
				default:
				}
			}
		}
	}
	wg.Wait() // the lanes' last results are with the recorder
	close(stop)
	<-recorded
	if c, ok := w.o.Mailer.(interface{ CloseIdle() }); ok {
		c.CloseIdle() // the SMTP connections kept between bursts
	}
	if w.o.Shop != nil && w.o.Shop.Client != nil {
		w.o.Shop.Client.CloseIdleConnections()
	}
	return nil
}

// runLane feeds the lane's slots with its due items until ctx is done,
// then waits for the slots.
func (w *Worker) runLane(ctx context.Context, l *lane) {
	free := l.slots
	finished := make(chan []ipn.OutboxItem, l.slots)
	inflight := map[uint64]bool{}
	var queue []ipn.OutboxItem
	var next time.Time // when to look again (zero: when woken)
	failures := 0
	for ctx.Err() == nil && !w.draining() {
		if free > 0 && len(queue) == 0 {
			// In-flight items are still pending in the store: passed over.
			// No more than the free slots take at once: an item read
			// and left waiting here would be delivered as it was read,
			// even after a discard, or after its order's next item.
			items, at, err := w.o.Outbox.DueLaneSkipping(l.kind, w.o.Now(), min(w.o.Batch, free*l.burst), func(id uint64) bool { return inflight[id] })
			if err != nil {
				failures++
				wait := backoff.Delay(time.Second, storeRetryCap, failures)
				w.faults.set("lane "+l.kind, err)
				w.log.Error("outbox lane cannot read its queue; retrying", "lane", l.kind, "error", err,
					"failures", failures, "retry_in", wait.Round(time.Millisecond).String())
				next = w.o.Now().Add(wait)
			} else {
				if failures > 0 {
					w.faults.set("lane "+l.kind, nil)
					w.log.Info("outbox lane reads its queue again", "lane", l.kind, "failures", failures)
					failures = 0
				}
				next = at
				for _, it := range items {
					if !inflight[it.ID] {
						queue = append(queue, it)
					}
				}
			}
		}
		for free > 0 && len(queue) > 0 {
			n := min(l.burst, len(queue))
			take := queue[:n:n]
			queue = queue[n:]
			for _, it := range take {
				inflight[it.ID] = true
			}
			free--
			go func() {
				w.deliver(ctx, l.kind, take)
				finished <- take
			}()
		}
		var timer *time.Timer
		var due <-chan time.Time
		if free > 0 && !next.IsZero() {
			timer = time.NewTimer(max(next.Sub(w.o.Now()), time.Millisecond))
			due = timer.C
		}
		woken := false
		select {
		case <-ctx.Done():
		case <-w.drain:
		case done := <-finished:
			free++
			for _, it := range done {
				delete(inflight, it.ID)
			}
		case <-l.wake:
			woken = true
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
		if woken && free == l.slots {
			// Idle until now: let what is being queued gather. (A busy
			// lane goes on: it would otherwise leave its slots idle for
			// the delay at every wake-up, which come with every commit
			// of the pipeline under load.)
			select {
			case <-ctx.Done():
			case <-w.drain:
			case <-time.After(w.o.BatchDelay):
			}
		}
	}
	for ; free < l.slots; free++ {
		<-finished
	}
}

// deliver makes one attempt at each of items, all of the lane's kind,
// and records each result.
func (w *Worker) deliver(ctx context.Context, kind string, items []ipn.OutboxItem) {
	rec := &slotRecords{w: w, ctx: ctx}
	defer rec.wait()
	switch kind {
	case ipn.EffectEmailCustomer, ipn.EffectEmailMerchant:
		w.sendEmails(ctx, items, rec)
	case ipn.EffectShopCallback, ipn.EffectShopScript:
		for _, it := range items {
			start := time.Now()
			var order *ipn.Order
			if it.Effect.Order == nil { // queued by an older version: the order as it is now stands in
				order = w.order(it)
			}
			d, err := w.shop(ctx, it, order)
			r := w.result(it, err, false)
			r.Detail, r.Duration = d, time.Since(start)
			rec.add(it, r)
			rec.wait()
		}
	default:
		for _, it := range items {
			rec.add(it, w.result(it, fmt.Errorf("unknown effect kind %q", it.Effect.Kind), true))
		}
	}
}

// sendEmails renders items and sends them over one connection; before
// each email goes, at most EmailUnrecorded-1 sent ones wait for their
// result to be recorded (1: each is durable before the next goes).
func (w *Worker) sendEmails(ctx context.Context, items []ipn.OutboxItem, rec *slotRecords) {
	orders := map[string]*ipn.Order{}
	var msgs []Message
	var sending []ipn.OutboxItem
	for _, it := range items {
		id := it.Effect.OrderID
		if _, ok := orders[id]; !ok {
			orders[id] = w.order(it)
		}
		msg, skip, err := w.message(it, orders[id])
		switch {
		case err != nil:
			rec.add(it, w.result(it, err, true))
		case skip != "":
			rec.add(it, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSkipped, Attempts: it.Attempts + 1, Error: skip})
		case w.o.Mailer == nil:
			rec.add(it, w.result(it, errors.New("no mailer configured"), false))
		default:
			msgs, sending = append(msgs, *msg), append(sending, it)
		}
	}
	if len(msgs) == 0 {
		return
	}
	w.o.Mailer.SendEach(ctx, msgs, func(k int, err error) bool {
		if errors.Is(err, ErrBurstStopped) {
			return false // not tried and still due: the next worker takes it
		}
		it := sending[k]
		r := w.result(it, err, err != nil && Permanent(err))
		if err != nil && !r.NotAttempted {
			r.Detail.SMTPReply = clipText(redact(err.Error()), 1024)
		}
		rec.add(it, r)
		if err == nil {
			// Sent: at most EmailUnrecorded sent emails of this
			// connection wait for their record while the next one goes.
			rec.waitFor(w.o.EmailUnrecorded - 1)
		}
		return !w.draining() // a reload: stop at this message boundary
	})
}

// order returns the order an item is about, nil when none or unreadable.
func (w *Worker) order(it ipn.OutboxItem) *ipn.Order {
	if it.Effect.OrderID == "" {
		return nil
	}
	o, err := w.o.Outbox.OrderHeader(it.Effect.OrderID)
	if err != nil {
		return nil
	}
	return o
}

// recordReq is one result for the recorder; done receives the outcome
// of the transaction that recorded it.
type recordReq struct {
	r    ipn.OutboxResult
	done chan error
}

// recorder writes the results the slots hand it, all those waiting in one
// transaction (one commit for every lane's results that arrive together),
// until stop is closed (after the lanes have stopped).
func (w *Worker) recorder(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case <-w.recordWake:
		case <-stop:
			return
		}
		w.recordMu.Lock()
		batch := w.recordQ
		w.recordQ = nil
		w.recordMu.Unlock()
		if len(batch) == 0 {
			continue
		}
		results := make([]ipn.OutboxResult, len(batch))
		for i, q := range batch {
			results[i] = q.r
		}
		err := w.commit(ctx, results)
		for _, q := range batch {
			q.done <- err
		}
	}
}

// toRecorder hands q to the recorder without waiting.
func (w *Worker) toRecorder(q recordReq) {
	w.recordMu.Lock()
	w.recordQ = append(w.recordQ, q)
	w.recordMu.Unlock()
	select {
	case w.recordWake <- struct{}{}:
	default:
	}
}

// commit records results, retrying with capped backoff while the store
// fails: delivering the items again would send them twice. Once ctx is
// done it makes one last try (the store closes after the worker) and
// returns its error.
func (w *Worker) commit(ctx context.Context, results []ipn.OutboxResult) error {
	for try := 1; ; try++ {
		err := w.o.Outbox.FinishOutbox(results, w.o.Now())
		if err == nil {
			if try > 1 {
				w.faults.set("recording results", nil)
				w.log.Info("outbox results recorded again", "tries", try)
			}
			return nil
		}
		wait := backoff.Delay(time.Second, storeRetryCap, try)
		w.faults.set("recording results", err)
		w.log.Error("recording outbox results failed; retrying", "error", err, "try", try,
			"items", len(results), "retry_in", wait.Round(time.Millisecond).String())
		if !backoff.Sleep(ctx, wait) {
			if err := w.o.Outbox.FinishOutbox(results, w.o.Now()); err != nil {
				w.log.Error("outbox results not recorded; those items will be delivered again", "error", err, "items", len(results))
				return err
			}
			return nil
		}
	}
}

// slotRecords are the results one slot handed to the recorder and has
// not yet seen recorded.
type slotRecords struct {
	w       *Worker
	ctx     context.Context
	waiting []recorded
}

type recorded struct {
	it   ipn.OutboxItem
	r    ipn.OutboxResult
	done chan error
}

// add hands r to the recorder without waiting. Once ctx is done, an
// attempt that did not succeed was cut short: it is not recorded, and the
// item is tried again after the restart.
func (s *slotRecords) add(it ipn.OutboxItem, r ipn.OutboxResult) {
	if s.ctx.Err() != nil && r.State != ipn.OutboxSent && r.State != ipn.OutboxSkipped {
		return
	}
	q := recordReq{r: r, done: make(chan error, 1)}
	s.w.toRecorder(q)
	s.waiting = append(s.waiting, recorded{it: it, r: r, done: q.done})
}

// wait returns once every result handed over is recorded (or given up
// on at shutdown), and reports the recorded ones.
func (s *slotRecords) wait() { s.waitFor(0) }

// waitFor returns once at most n results handed over are not yet
// recorded (the oldest are waited for first).
func (s *slotRecords) waitFor(n int) {
	k := 0
	for ; len(s.waiting)-k > n; k++ {
		q := s.waiting[k]
		if err := <-q.done; err == nil {
			s.w.report(q.it, q.r)
		}
	}
	s.waiting = append(s.waiting[:0], s.waiting[k:]...)
}

// faults are the store errors that keep parts of the worker from making
// progress, by part; a part's next success clears its entry.
type faults struct {
	mu sync.Mutex
	m  map[string]error
}

func (f *faults) set(part string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.m, part)
	} else {
		f.m[part] = err
	}
}

// err is nil when no part fails, else one error naming them.
func (f *faults) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) == 0 {
		return nil
	}
	parts := slices.Sorted(maps.Keys(f.m))
	msgs := make([]string, len(parts))
	for i, p := range parts {
		msgs[i] = p + ": " + f.m[p].Error()
	}
	return fmt.Errorf("outbox degraded (retrying): %s", strings.Join(msgs, "; "))
}

// message renders an email item. skip, when not empty, says why there
// is nothing to send (no recipient, the template not enabled).
func (w *Worker) message(it ipn.OutboxItem, order *ipn.Order) (msg *Message, skip string, err error) {
	e := it.Effect
	if w.o.Enabled != nil && !w.o.Enabled[e.Template] {
		return nil, "template " + e.Template + " is not in email.enabled", nil
	}
	to := e.To
	if e.Kind == ipn.EffectEmailMerchant {
		to = w.o.MerchantTo
		if to == "" {
			return nil, "no recipient: email.merchant_to is empty", nil
		}
	}
	if to == "" {
		return nil, "no recipient: the customer's email address is unknown", nil
	}
	if w.o.Templates == nil {
		return nil, "", fmt.Errorf("%w: no templates", ErrPermanent)
	}
	d := TemplateData{MerchantName: w.o.MerchantName, OrderID: e.OrderID, Reason: e.Reason, Notification: it.Notification}
	if ev := e.Event; ev != nil {
		d.Amount, d.Currency, d.CustomerName, d.CustomerEmail, d.Status, d.TxnID =
			ev.Amount, ev.Currency, ev.CustomerName, ev.CustomerEmail, string(ev.Status), ev.TxnID
	}
	if snap := e.Order; snap != nil {
		// The amounts as of the change that queued the email: the
		// payment's or the refund's own amount, the totals then.
		d.Amount, d.Paid, d.Refunded = strings.TrimPrefix(d.Amount, "-"), snap.Paid, snap.Refunded
		if e.Amount != "" {
			d.Amount, d.Currency = e.Amount, snap.Currency
		}
		if d.CustomerName == "" {
			d.CustomerName = snap.Customer.Name
		}
		if d.Status == "" {
			d.Status = string(snap.Status)
		}
		d.Deliveries = expiryInLocal(snap.Deliveries)
		d.OrderStatus, d.ReviewReasons = string(snap.Status), ReviewReasons(snap.Flags)
		if snap.Registered {
			d.Expected, d.ExpectedCurrency = snap.Amount, snap.Currency
		}
		if order != nil {
			d.Description, d.DownloadURL, d.Gateway = order.Description, order.Metadata["download_url"], order.Gateway
		}
	} else if order != nil { // queued by an older version
		if order.Amount != "" {
			d.Amount, d.Currency = order.Amount, order.Currency
		}
		d.Paid, d.Refunded, d.Description = order.Paid, order.Refunded, order.Description
		d.DownloadURL = order.Metadata["download_url"]
		if d.CustomerName == "" {
			d.CustomerName = order.CustomerName
		}
		if d.Status == "" {
			d.Status = string(order.Status)
		}
		d.OrderStatus, d.ReviewReasons, d.Gateway = string(order.Status), ReviewReasons(order.Flags), order.Gateway
		if order.Registered {
			d.Expected, d.ExpectedCurrency = order.Amount, order.Currency
		}
	}
	subject, text, html, err := w.o.Templates.Render(e.Template, d)
	if err != nil {
		return nil, "", fmt.Errorf("%w: template %s: %v", ErrPermanent, e.Template, err)
	}
	return &Message{From: w.o.From, To: to, ReplyTo: w.o.ReplyTo, Subject: subject, Text: text, HTML: html,
		MessageID: MessageID(e.Cause, w.o.Domain), Date: w.o.Now()}, "", nil
}

func (w *Worker) shop(ctx context.Context, it ipn.OutboxItem, order *ipn.Order) (ipn.AttemptDetail, error) {
	if w.o.Shop == nil {
		return ipn.AttemptDetail{}, errors.New("no shop configured")
	}
	se, body, err := shopEvent(it, order)
	if err != nil {
		return ipn.AttemptDetail{}, fmt.Errorf("%w: %v", ErrPermanent, err)
	}
	id := it.Key()
	if it.Effect.Kind == ipn.EffectShopScript {
		return w.o.Shop.RunDetail(ctx, id, se, body)
	}
	return w.o.Shop.PostDetail(ctx, id, body)
}

// clipText shortens s to at most n bytes, on a rune boundary.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// emailAddress matches what looks like an email address in an error text.
var emailAddress = regexp.MustCompile(`[^\s<>"',;:()\[\]]+@[^\s<>"',;:()\[\]]+`)

// redact removes email addresses from an error text: SMTP errors name the
// recipient, and customer addresses stay out of logs and the API.
func redact(s string) string { return emailAddress.ReplaceAllString(s, "<address>") }

// result turns one attempt's error into the item's next state.
func (w *Worker) result(it ipn.OutboxItem, err error, permanent bool) ipn.OutboxResult {
	if errors.Is(err, ErrNotAttempted) {
		// Another message broke the connection before this one was
		// tried: no attempt is charged, it goes again after a short wait
		// (the server may need a moment), and says why it was not tried.
		wait := backoff.Delay(min(w.o.RetryBase, notAttemptedWait), w.o.RetryCap, 1)
		return ipn.OutboxResult{ID: it.ID, State: ipn.OutboxPending, Attempts: it.Attempts, NotAttempted: true,
			RetryAt: w.o.Now().Add(wait), Error: redact(err.Error())}
	}
	if err != nil {
		err = errors.New(redact(err.Error()))
	}
	r := ipn.OutboxResult{ID: it.ID, Attempts: it.Attempts + 1}
	limit := w.o.EmailMax
	if it.Effect.Kind == ipn.EffectShopCallback || it.Effect.Kind == ipn.EffectShopScript {
		limit = w.o.ShopMax
	}
	switch {
	case err == nil:
		r.State = ipn.OutboxSent
	case permanent || r.Attempts >= limit:
		r.State, r.Error = ipn.OutboxDead, err.Error()
	default:
		r.State, r.Error = ipn.OutboxPending, err.Error()
		r.RetryAt = w.o.Now().Add(backoff.Delay(w.o.RetryBase, w.o.RetryCap, r.Attempts))
	}
	return r
}

func (w *Worker) report(it ipn.OutboxItem, r ipn.OutboxResult) {
	var result string
	switch {
	case r.NotAttempted:
		result = "not_attempted"
	case r.State == ipn.OutboxSent:
		result = "sent"
	case r.State == ipn.OutboxDead:
		result = "dead"
	case r.State == ipn.OutboxPending:
		result = "failed"
	case r.State == ipn.OutboxSkipped:
		result = "skipped"
	}
	switch {
	case r.State == ipn.OutboxSkipped: // nothing was sent: counted by the store's gauge
	case r.NotAttempted: // nothing was tried: not a failed delivery
	case it.Effect.Kind == ipn.EffectEmailCustomer || it.Effect.Kind == ipn.EffectEmailMerchant:
		w.o.Observer.EmailSent(it.Effect.Template, result)
	default:
		w.o.Observer.Callback(result)
	}
	attrs := []any{"outbox_id", it.ID, "kind", it.Effect.Kind, "template", it.Effect.Template,
		"order_id", it.Effect.OrderID, "result", result, "attempts", r.Attempts}
	if r.Error != "" {
		attrs = append(attrs, "error", r.Error)
	}
	switch {
	case r.NotAttempted:
		w.log.Info("outbox item not attempted; trying again shortly", append(attrs, "retry_in_seconds", time.Until(r.RetryAt).Seconds())...)
	case r.State == ipn.OutboxDead:
		w.log.Warn("outbox item dead", attrs...)
	case r.State == ipn.OutboxPending:
		w.log.Warn("outbox delivery failed; retrying later", append(attrs, "retry_in_seconds", time.Until(r.RetryAt).Seconds())...)
	default:
		w.log.Info("outbox delivery", attrs...)
	}
}

type nopObserver struct{}

func (nopObserver) EmailSent(string, string) {}
func (nopObserver) Callback(string)          {}

// expiryInLocal returns deliveries with each link's expiry in the
// daemon's local zone, as the customer's email shows it: the store keeps
// times as instants (the binary outbox layout reads them back in UTC),
// and the expiry was decided in the local zone.
func expiryInLocal(ds []ipn.Delivered) []ipn.Delivered {
	if len(ds) == 0 {
		return ds
	}
	out := make([]ipn.Delivered, len(ds))
	for i, d := range ds {
		if !d.ExpiresAt.IsZero() {
			d.ExpiresAt = d.ExpiresAt.Local()
		}
		out[i] = d
	}
	return out
}
