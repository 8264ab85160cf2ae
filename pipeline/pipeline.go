package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"ipnd/internal/backoff"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// Verifier is implemented by gateways whose authenticity is checked after
// the message is stored (PayPal's postback). Verify returns nil when the
// gateway confirms the message, an error wrapping ipn.ErrInvalid when it
// denies it, and any other error when the answer is unknown (network,
// 5xx, timeout, garbage): the pipeline then retries with backoff.
type Verifier interface {
	Verify(ctx context.Context, n *ipn.Notification) error
}

// Journal is the store as the pipeline sees it.
type Journal interface {
	Pending(now time.Time, max int) ([]ipn.Work, error)
	// Finish records outcomes and moves the cursor in one transaction.
	Finish(outs []ipn.Outcome, cursor uint64, now time.Time) ([]ipn.Recorded, error)
	NextDue() (time.Time, bool)
	Wake() <-chan struct{}
}

// parkedExpirer is a Journal that fails the events parked too long for
// their payment (the store's ExpireParked).
type parkedExpirer interface {
	ExpireParked(now time.Time) (int, error)
}

// Observer is told each processing result and verification time.
// result is one of applied, invalid, failed, duplicate.
type Observer interface {
	Processed(gateway, result string)
	Verified(gateway string, took time.Duration)
}

// Options configure a Pipeline. Journal and Gateways are required.
type Options struct {
	Journal  Journal
	Gateways []gateway.Gateway
	// Sandbox names the gateways configured as sandbox/test: a test
	// message on any other gateway is not applied.
	Sandbox map[string]bool
	// Receivers lists, per gateway, the merchant identities a payment may
	// be addressed to (the gateway's receivers plus orders.receivers);
	// none: not checked.
	Receivers map[string][]string
	// RequireRegistered: events for orders not registered in advance are
	// not applied.
	RequireRegistered bool
	Workers           int           // concurrent notifications (default 8)
	VerifyTimeout     time.Duration // one postback (default 30 s)
	RetryBase         time.Duration // first retry delay (default 10 s), doubling
	RetryCap          time.Duration // longest delay (default 1 h)
	RetryFor          time.Duration // give up (state failed) this long after receipt (default 72 h)
	// BatchDelay is how long the pipeline lets new notifications gather
	// after a wake-up before it processes them (default 20 ms): at a
	// trickle each would otherwise cost a commit of its own, competing
	// with ingest for the store. Ingest never waits for it.
	BatchDelay time.Duration
	Observer   Observer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Pipeline takes stored notifications in log order, verifies those whose
// gateway verifies asynchronously, normalizes them and records the outcome.
// It resumes from the store's durable cursor after a restart.
type Pipeline struct {
	o      Options
	routes atomic.Pointer[pipelineRoutes] // replaced whole by Reconfigure
	log    *slog.Logger

	// Postbacks in the background. Only Run's goroutine touches inflight.
	inflight map[uint64]*verifying
	slots    chan struct{} // one per worker
	verified chan struct{} // a background postback finished
	running  sync.WaitGroup
	stepWait time.Duration // how long a step waits for the postbacks it started

	degraded atomic.Pointer[error] // the store's last error while it fails, nil once a step succeeds
}

// storeRetryCap is the longest wait between two steps while the store
// fails (the waits start at a second and double).
const storeRetryCap = 30 * time.Second

// Degraded reports the store error that keeps the pipeline from making
// progress (it retries with capped backoff), or nil.
func (p *Pipeline) Degraded() error {
	if e := p.degraded.Load(); e != nil {
		return fmt.Errorf("pipeline degraded (retrying): %w", *e)
	}
	return nil
}

// New applies defaults and builds a Pipeline.
func New(o Options) *Pipeline {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.VerifyTimeout <= 0 {
		o.VerifyTimeout = 30 * time.Second
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 10 * time.Second
	}
	if o.RetryCap <= 0 {
		o.RetryCap = time.Hour
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 72 * time.Hour
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = 20 * time.Millisecond
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
	p := &Pipeline{o: o, log: o.Logger,
		inflight: map[uint64]*verifying{}, slots: make(chan struct{}, o.Workers),
		verified: make(chan struct{}, 1), stepWait: 2 * time.Second}
	p.Reconfigure(o.Gateways, o.Sandbox, o.Receivers, o.RequireRegistered)
	return p
}

// pipelineRoutes is what the pipeline knows of the configured gateways,
// read once per notification: a reload swaps it whole.
type pipelineRoutes struct {
	gateways          map[string]gateway.Gateway
	sandbox           map[string]bool
	receivers         map[string][]string
	requireRegistered bool
}

// Reconfigure replaces the gateways and the order rules (see
// Options) on a config reload. A notification being decided
// finishes with the ones it started with; notifications of a gateway no
// longer configured end failed (replay them once it is back).
func (p *Pipeline) Reconfigure(gateways []gateway.Gateway, sandbox map[string]bool, receivers map[string][]string, requireRegistered bool) {
	rt := &pipelineRoutes{gateways: make(map[string]gateway.Gateway, len(gateways)), sandbox: sandbox, receivers: receivers,
		requireRegistered: requireRegistered}
	for _, g := range gateways {
		rt.gateways[g.Name()] = g
	}
	p.routes.Store(rt)
}

// Run processes notifications until ctx is done. It sleeps when there is
// nothing to do, until the store signals new notifications or a retry is
// due. A step the store fails is retried forever with capped backoff
// (Degraded reports it meanwhile). It returns nil on cancellation.
func (p *Pipeline) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer p.running.Wait() // postbacks end with ctx
	defer cancel()
	failures := 0
	for {
		did, err := p.step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			failures++
			wait := backoff.Delay(time.Second, storeRetryCap, failures)
			p.degraded.Store(&err)
			p.log.Error("pipeline step failed; retrying", "error", err, "failures", failures,
				"retry_in", wait.Round(time.Millisecond).String())
			if !backoff.Sleep(ctx, wait) {
				return nil
			}
			continue
		}
		if failures > 0 {
			p.degraded.Store(nil)
			p.log.Info("pipeline steps succeed again", "failures", failures)
		}
		failures = 0
		if did > 0 {
			// A short batch: let the next one fill before taking it, so
			// that one transaction records many notifications.
			if did < p.batch() && !backoff.Sleep(ctx, p.o.BatchDelay) {
				return nil
			}
			continue
		}
		var (
			timer *time.Timer
			due   <-chan time.Time
		)
		if at, ok := p.o.Journal.NextDue(); ok && (len(p.inflight) == 0 || time.Until(at) > 0) {
			// (A retry already due is being verified: its end wakes us.)
			timer = time.NewTimer(max(time.Until(at), time.Millisecond))
			due = timer.C
		}
		woken := false
		select {
		case <-ctx.Done():
		case <-p.o.Journal.Wake():
			woken = true
		case <-due:
		case <-p.verified:
		}
		if timer != nil {
			timer.Stop()
		}
		if woken && !backoff.Sleep(ctx, p.o.BatchDelay) {
			return nil
		}
	}
}

// step processes one batch and records every outcome decided, with the
// cursor move, in one transaction. Normalization runs inline; postbacks
// (Verifier gateways) run in the background, up to Workers at a time. The
// step starts postbacks and waits for them for up to stepWait in all,
// then records what is decided: a slow postback does not hold up the notifications
// around it, which are recorded (out of order; applying tolerates that)
// while the cursor waits at the slow one. Its result is taken by a later
// step. step returns how many notifications it recorded or moved the
// cursor over.
func (p *Pipeline) step(ctx context.Context) (int, error) {
	now := p.o.Now()
	if e, ok := p.o.Journal.(parkedExpirer); ok {
		// Events parked past orders.park_for fail (NextDue wakes Run for them).
		n, err := e.ExpireParked(now)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			p.log.Warn("parked events waited too long for their payment; failed, the merchant is told", "count", n)
		}
	}
	work, err := p.o.Journal.Pending(now, p.batch())
	if err != nil || len(work) == 0 {
		return 0, err
	}
	outs := make([]ipn.Outcome, len(work))
	decided := make([]bool, len(work))
	var started []*verifying
	deadline := time.NewTimer(p.stepWait) // for starting postbacks and waiting for them
	defer deadline.Stop()
	expired := false
	for i, w := range work {
		id := w.Notification.ID
		if _, busy := p.inflight[id]; busy {
			continue
		}
		if w.Fresh && w.Processing.Settled(now) {
			// Recorded earlier (out of order, or before a crash moved the
			// cursor): final, or its retry is scheduled and the retry
			// queue takes it when due. The cursor passes it.
			decided[i] = true
			continue
		}
		if _, slow := p.routes.Load().gateways[w.Notification.Gateway].(Verifier); !slow {
			outs[i], decided[i] = p.decide(ctx, w)
			continue
		}
		if expired || !p.takeWorker(ctx, deadline.C, len(started) > 0) {
			expired = true // a later step takes the rest
			continue
		}
		v := &verifying{done: make(chan struct{})}
		p.inflight[id] = v
		started = append(started, v)
		p.running.Add(1)
		go func() {
			defer p.running.Done()
			v.out, v.decided = p.decide(ctx, w)
			<-p.slots
			close(v.done)
			select {
			case p.verified <- struct{}{}:
			default:
			}
		}()
	}
	if !expired {
	wait:
		for _, v := range started {
			select {
			case <-v.done:
			case <-deadline.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
	}
	for i, w := range work {
		v, ok := p.inflight[w.Notification.ID]
		if !ok {
			continue
		}
		select {
		case <-v.done:
			delete(p.inflight, w.Notification.ID)
			outs[i], decided[i] = v.out, v.decided
		default:
		}
	}
	// The cursor moves over the fresh notifications decided without a gap;
	// one not decided (being verified, or shutting down) is taken again.
	var upTo uint64
	moved := 0
	for i, w := range work {
		if !w.Fresh {
			continue
		}
		if !decided[i] {
			break
		}
		upTo = w.Notification.ID
		if outs[i].ID == 0 {
			moved++ // final already: only the cursor passes it
		}
	}
	var record []ipn.Outcome
	var recorded []ipn.Work
	for i, w := range work {
		if decided[i] && outs[i].ID != 0 {
			record = append(record, outs[i])
			recorded = append(recorded, w)
		}
	}
	if len(record) == 0 && moved == 0 {
		return 0, nil
	}
	recs, err := p.o.Journal.Finish(record, upTo, p.o.Now())
	if err != nil {
		return 0, err
	}
	for i, o := range record {
		p.report(recorded[i].Notification, o, recs[i])
	}
	return len(record) + moved, nil
}

// takeWorker reserves a worker for a postback. Only when workers are busy
// with this step's own postbacks (wait), which free up soon, does it wait
// for one, until deadline; workers held by earlier steps' (slow)
// postbacks are not waited for: a finished one wakes Run.
func (p *Pipeline) takeWorker(ctx context.Context, deadline <-chan time.Time, wait bool) bool {
	select {
	case p.slots <- struct{}{}:
		return true
	default:
	}
	if !wait {
		return false
	}
	select {
	case p.slots <- struct{}{}:
		return true
	case <-deadline:
	case <-ctx.Done():
	}
	return false
}

// batch is the most unfinished notifications one step takes.
func (p *Pipeline) batch() int { return max(64, 4*p.o.Workers) }

// verifying is a postback running in the background.
type verifying struct {
	done    chan struct{} // closed when out and decided are set
	out     ipn.Outcome
	decided bool
}

// report logs and counts one recorded outcome.
func (p *Pipeline) report(n *ipn.Notification, o ipn.Outcome, rec ipn.Recorded) {
	state := rec.State
	if rec.OrderTo != "" && rec.OrderTo != rec.OrderFrom {
		p.log.Info("order transition", "order_id", rec.OrderID, "from", string(rec.OrderFrom), "to", string(rec.OrderTo),
			"reason", rec.Reason, "notification", n.ID, "gateway", n.Gateway)
	}
	attrs := []any{"id", n.ID, "gateway", n.Gateway, "state", string(state)}
	if detail := cmp.Or(rec.Detail, o.Detail); detail != "" {
		attrs = append(attrs, "detail", detail) // the words of the notification's history
	}
	if state == ipn.StateReceived {
		// A postback that failed (network, 5xx, timeout): retried later.
		p.log.Warn("notification verification failed; retrying later", append(attrs, "attempts", o.Attempts,
			"retry_in_seconds", o.RetryAt.Sub(p.o.Now()).Seconds())...)
		return
	}
	if o.Event != nil {
		attrs = append(attrs, "type", string(o.Event.Type), "order_id", cmp.Or(rec.OrderID, o.Event.OrderID))
	}
	attrs = append(attrs, "since_received_seconds", p.o.Now().Sub(n.ReceivedAt).Seconds())
	if state == ipn.StateFailed {
		p.log.Warn("notification failed", attrs...)
	} else {
		p.log.Info("notification processed", attrs...)
	}
	p.o.Observer.Processed(n.Gateway, string(state))
}

// decide verifies (where asynchronous) and normalizes a notification.
func (p *Pipeline) decide(ctx context.Context, w ipn.Work) (ipn.Outcome, bool) {
	n := w.Notification
	o := ipn.Outcome{ID: n.ID, Attempts: w.Processing.Attempts}
	rt := p.routes.Load()
	g, known := rt.gateways[n.Gateway]
	if !known {
		o.State, o.Detail = ipn.StateFailed, "gateway is no longer configured"
		return o, true
	}
	if v, ok := g.(Verifier); ok && w.Processing.WasVerified() {
		o.Verified = true // a replay: confirmed once, not asked again
	} else if ok {
		vctx, cancel := context.WithTimeout(ctx, p.o.VerifyTimeout)
		start := time.Now()
		err := v.Verify(vctx, n)
		cancel()
		p.o.Observer.Verified(n.Gateway, time.Since(start))
		switch {
		case err == nil:
			o.Verified = true
		case errors.Is(err, ipn.ErrInvalid):
			o.State, o.Detail = ipn.StateInvalid, err.Error()
			return o, true
		case ctx.Err() != nil:
			return o, false // shutting down: not an attempt
		default:
			o.Attempts++
			now := p.o.Now()
			if now.Sub(n.ReceivedAt) >= p.o.RetryFor {
				o.State = ipn.StateFailed
				o.Detail = fmt.Sprintf("verification failed for %s (%d attempts): %v", p.o.RetryFor, o.Attempts, err)
				return o, true
			}
			o.State, o.RetryAt = ipn.StateReceived, now.Add(backoff.Delay(p.o.RetryBase, p.o.RetryCap, o.Attempts))
			o.Detail = fmt.Sprintf("verification attempt %d failed: %v", o.Attempts, err)
			return o, true
		}
	}
	ev, err := g.Normalize(n)
	if err != nil {
		o.State, o.Detail = ipn.StateInvalid, "cannot normalize: "+err.Error()
		return o, true
	}
	pol := ipn.Policy{Gateway: n.Gateway, Sandbox: rt.sandbox[n.Gateway], Receivers: rt.receivers[n.Gateway],
		RequireRegistered: rt.requireRegistered}
	return ipn.Assess(o, ev, pol, receiverOK(g, n, ev, pol.Receivers)), true
}

// receiverOK checks the payment's receiver against the configured ones (want):
// the gateway's own check where it has one (PayPal looks at three fields),
// else the event's receiver, when the gateway reports one.
func receiverOK(g gateway.Gateway, n *ipn.Notification, ev *ipn.Event, want []string) bool {
	if len(want) == 0 {
		return true
	}
	if rc, ok := g.(interface {
		ReceiverOK(*ipn.Notification, []string) bool
	}); ok {
		return rc.ReceiverOK(n, want)
	}
	return ipn.ReceiverAccepted(ev, want)
}

type nopObserver struct{}

func (nopObserver) Processed(string, string)       {}
func (nopObserver) Verified(string, time.Duration) {}
