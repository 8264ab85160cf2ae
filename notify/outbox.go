package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"ipnd/ipn"
)

// Outbox is the store as the worker sees it.
type Outbox interface {
	DueOutbox(now time.Time, max int) ([]ipn.OutboxItem, error)
	FinishOutbox(results []ipn.OutboxResult, now time.Time) error
	NextOutboxDue() (time.Time, bool)
	OutboxWake() <-chan struct{}
	GetOrder(id string) (*ipn.Order, error)
}

// WorkerObserver is told each delivery outcome. result is "sent",
// "retry" or "dead".
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
	Concurrency  int           // callbacks and scripts at once (default 4)
	Batch        int           // items taken at once (default 100)
	// BatchDelay lets queued items gather after a wake-up (default 50 ms),
	// so that a trickle of events does not cost a commit each.
	BatchDelay time.Duration
	Observer   WorkerObserver
	Logger     *slog.Logger
	Now        func() time.Time
}

// Worker delivers outbox items: emails in bursts over one connection,
// shop callbacks and script runs with bounded concurrency; failures are
// retried with backoff and jitter until the kind's attempt limit, then the
// item is dead (listed by the API, retryable by hand).
type Worker struct {
	o   WorkerOptions
	log *slog.Logger
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
	if o.Concurrency <= 0 {
		o.Concurrency = 4
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
	return &Worker{o: o, log: o.Logger}
}

// Run delivers until ctx is done, sleeping until items are queued or a
// retry is due. It returns nil on cancellation.
func (w *Worker) Run(ctx context.Context) error {
	failures := 0
	for {
		items, err := w.o.Outbox.DueOutbox(w.o.Now(), w.o.Batch)
		if err == nil && len(items) > 0 {
			results := w.deliver(ctx, items)
			if ctx.Err() != nil {
				// Shutting down: record what was delivered (the store
				// closes last); attempts cut short are made again.
				var done []ipn.OutboxResult
				for _, r := range results {
					if r.State != ipn.OutboxPending {
						done = append(done, r)
					}
				}
				results = done
			}
			if !w.record(ctx, results) {
				return nil
			}
			failures = 0
			if len(items) < w.o.Batch && !ipn.Sleep(ctx, w.o.BatchDelay) {
				return nil // a short batch: let the next one fill first
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			failures++
			w.log.Error("outbox step failed", "error", err, "failures", failures)
			if failures >= 10 {
				return fmt.Errorf("outbox: %w", err)
			}
		}
		var due <-chan time.Time
		var timer *time.Timer
		if at, ok := w.o.Outbox.NextOutboxDue(); ok && err == nil {
			timer = time.NewTimer(max(time.Until(at), time.Millisecond))
			due = timer.C
		} else if err != nil {
			timer = time.NewTimer(time.Duration(failures) * time.Second)
			due = timer.C
		}
		woken := false
		select {
		case <-ctx.Done():
		case <-w.o.Outbox.OutboxWake():
			woken = true
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
		if woken && !ipn.Sleep(ctx, w.o.BatchDelay) {
			return nil
		}
	}
}

// record stores delivery results, retrying with backoff while the store
// fails: delivering the batch again would send it twice. It returns false
// when it gave up because the worker is stopping.
func (w *Worker) record(ctx context.Context, results []ipn.OutboxResult) bool {
	for try := 1; ; try++ {
		err := w.o.Outbox.FinishOutbox(results, w.o.Now())
		if err == nil {
			return ctx.Err() == nil
		}
		w.log.Error("recording outbox results failed", "error", err, "try", try)
		t := time.NewTimer(min(time.Duration(try)*time.Second, time.Minute))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			// One last try: the store closes after the worker stops.
			if err := w.o.Outbox.FinishOutbox(results, w.o.Now()); err != nil {
				w.log.Error("outbox results not recorded; those items will be delivered again", "error", err, "items", len(results))
			}
			return false
		}
	}
}

// deliver makes one attempt at each item and returns the results.
func (w *Worker) deliver(ctx context.Context, items []ipn.OutboxItem) []ipn.OutboxResult {
	results := make([]ipn.OutboxResult, len(items))
	orders := map[string]*ipn.Order{}
	for _, it := range items {
		if id := it.Effect.OrderID; id != "" && orders[id] == nil {
			if o, err := w.o.Outbox.GetOrder(id); err == nil {
				orders[id] = o
			}
		}
	}
	var mailIdx []int
	var msgs []Message
	var wg sync.WaitGroup
	sem := make(chan struct{}, w.o.Concurrency)
	for i, it := range items {
		switch it.Effect.Kind {
		case ipn.EffectEmailCustomer, ipn.EffectEmailMerchant:
			msg, err := w.message(it, orders[it.Effect.OrderID])
			if err != nil {
				results[i] = w.result(it, err, true)
				continue
			}
			if msg == nil { // template disabled or no recipient: nothing to send
				results[i] = ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: it.Attempts, Error: "skipped: disabled or no recipient"}
				continue
			}
			mailIdx = append(mailIdx, i)
			msgs = append(msgs, *msg)
		case ipn.EffectShopCallback, ipn.EffectShopScript:
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				results[i] = w.result(it, w.shop(ctx, it, orders[it.Effect.OrderID]), false)
			}()
		default:
			results[i] = w.result(it, fmt.Errorf("unknown effect kind %q", it.Effect.Kind), true)
		}
	}
	if len(msgs) > 0 {
		if w.o.Mailer == nil {
			for _, i := range mailIdx {
				results[i] = w.result(items[i], errors.New("no mailer configured"), false)
			}
		} else {
			errs := w.o.Mailer.Send(ctx, msgs)
			for k, i := range mailIdx {
				var err error
				if k < len(errs) {
					err = errs[k]
				}
				results[i] = w.result(items[i], err, err != nil && Permanent(err))
			}
		}
	}
	wg.Wait()
	for i, it := range items {
		w.report(it, results[i])
	}
	return results
}

// message renders an email item; nil when there is nothing to send.
func (w *Worker) message(it ipn.OutboxItem, order *ipn.Order) (*Message, error) {
	e := it.Effect
	if w.o.Enabled != nil && !w.o.Enabled[e.Template] {
		return nil, nil
	}
	to := e.To
	if e.Kind == ipn.EffectEmailMerchant {
		to = w.o.MerchantTo
	}
	if to == "" {
		return nil, nil
	}
	if w.o.Templates == nil {
		return nil, fmt.Errorf("%w: no templates", ErrPermanent)
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
		if order != nil {
			d.Description, d.DownloadURL = order.Description, order.Metadata["download_url"]
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
	}
	subject, text, html, err := w.o.Templates.Render(e.Template, d)
	if err != nil {
		return nil, fmt.Errorf("%w: template %s: %v", ErrPermanent, e.Template, err)
	}
	return &Message{From: w.o.From, To: to, ReplyTo: w.o.ReplyTo, Subject: subject, Text: text, HTML: html,
		MessageID: MessageID(e.Cause, w.o.Domain), Date: w.o.Now()}, nil
}

func (w *Worker) shop(ctx context.Context, it ipn.OutboxItem, order *ipn.Order) error {
	if w.o.Shop == nil {
		return errors.New("no shop configured")
	}
	se, body, err := shopEvent(it, order)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPermanent, err)
	}
	id := "ipnd_" + strconv.FormatUint(it.ID, 10)
	if it.Effect.Kind == ipn.EffectShopScript {
		return w.o.Shop.Run(ctx, id, se, body)
	}
	return w.o.Shop.Post(ctx, id, body)
}

// emailAddress matches what looks like an email address in an error text.
var emailAddress = regexp.MustCompile(`[^\s<>"',;:()\[\]]+@[^\s<>"',;:()\[\]]+`)

// redact removes email addresses from an error text: SMTP errors name the
// recipient, and customer addresses stay out of logs and the API.
func redact(s string) string { return emailAddress.ReplaceAllString(s, "<address>") }

// result turns one attempt's error into the item's next state.
func (w *Worker) result(it ipn.OutboxItem, err error, permanent bool) ipn.OutboxResult {
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
		r.RetryAt = w.o.Now().Add(ipn.Backoff(w.o.RetryBase, w.o.RetryCap, r.Attempts))
	}
	return r
}

func (w *Worker) report(it ipn.OutboxItem, r ipn.OutboxResult) {
	result := map[string]string{ipn.OutboxSent: "sent", ipn.OutboxDead: "dead", ipn.OutboxPending: "retry"}[r.State]
	skipped := strings.HasPrefix(r.Error, "skipped")
	switch {
	case skipped: // nothing was sent: not counted as an email
		result = "skipped"
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
	if r.State == ipn.OutboxDead {
		w.log.Warn("outbox item dead", attrs...)
	} else {
		w.log.Info("outbox delivery", attrs...)
	}
}

type nopObserver struct{}

func (nopObserver) EmailSent(string, string) {}
func (nopObserver) Callback(string)          {}
