package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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
	// PendingExcept returns the notifications to process now: the next
	// ones in the log (Fresh), then the retries due, leaving out the due
	// retries skip names (see Skip).
	PendingExcept(now time.Time, max int, skip func(gateway string, id uint64, state func() *ipn.Processing) bool) ([]ipn.Work, error)
	// Finish records outcomes and moves the cursor in one transaction.
	Finish(outs []ipn.Outcome, cursor uint64, now time.Time) ([]ipn.Recorded, error)
	// NextDueExcept is when the first retry skip does not name is due.
	NextDueExcept(skip func(gateway string, id uint64, state func() *ipn.Processing) bool) (time.Time, bool)
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
	Workers           int           // postbacks at once per gateway (default 8)
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
//
// Postbacks run apart from the log order, in one lane per gateway (see
// lane): a notification whose postback cannot start at once, or is still
// under way when its step ends, is recorded as received with a retry due
// (it waits in the store's retry schedule, under its gateway's name), so
// that the cursor moves on and the notifications of other gateways are
// processed at full speed while one gateway's verify URL hangs. A due
// retry is left where it is while its lane takes no postback.
type Pipeline struct {
	o      Options
	routes atomic.Pointer[pipelineRoutes] // replaced whole by Reconfigure
	log    *slog.Logger

	// Postbacks in the background. Only Run's goroutine touches inflight
	// and the lanes' state (mu guards lanes for Holdups).
	inflight map[uint64]*verifying
	mu       sync.Mutex
	lanes    map[string]*lane // by gateway name, made on first use
	verified chan struct{}    // a background postback finished
	sweepAt  time.Time        // when skip next lets through the held retries past retry_for (Run's goroutine only)
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
		inflight: map[uint64]*verifying{}, lanes: map[string]*lane{},
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
	names             []string // of the gateways (ipn.Policy.Gateways)
}

// Reconfigure replaces the gateways and the order rules (see
// Options) on a config reload. A notification being decided
// finishes with the ones it started with. The notifications of a gateway
// no longer configured wait, received, with the reason in their history,
// until a reload adds the gateway again (they are processed then) or
// they are replayed; they hold up no other gateway.
func (p *Pipeline) Reconfigure(gateways []gateway.Gateway, sandbox map[string]bool, receivers map[string][]string, requireRegistered bool) {
	rt := &pipelineRoutes{gateways: make(map[string]gateway.Gateway, len(gateways)), sandbox: sandbox, receivers: receivers,
		requireRegistered: requireRegistered}
	for _, g := range gateways {
		rt.gateways[g.Name()] = g
		rt.names = append(rt.names, g.Name())
	}
	p.routes.Store(rt)
	select { // the notifications waiting for a gateway just added are due
	case p.verified <- struct{}{}:
	default:
	}
}

// notConfigured is the history's reason for a notification that waits
// for its gateway to be configured again.
func notConfigured(gw string) string {
	return fmt.Sprintf("gateway %q is not configured: waiting until a reload adds it again (or replay it then)", gw)
}

// waitsForGateway reports whether processing record st says already
// that its notification waits for gateway gw to be configured.
func waitsForGateway(st *ipn.Processing, gw string) bool {
	if st == nil || st.State != ipn.StateReceived || len(st.History) == 0 {
		return false
	}
	return strings.HasPrefix(st.History[len(st.History)-1].Detail, fmt.Sprintf("gateway %q is not configured", gw))
}

// skip names the due retries a step leaves where they are: one whose
// postback is under way, one whose gateway's lane takes no postback now,
// and one that says already that its gateway is not configured (one that
// does not, a replay or a postback that was under way when the gateway
// went, is taken so that its history says why it waits).
func (p *Pipeline) skip(now time.Time, sweep bool) func(gw string, id uint64, state func() *ipn.Processing) bool {
	rt := p.routes.Load()
	return func(gw string, id uint64, state func() *ipn.Processing) bool {
		if _, busy := p.inflight[id]; busy {
			return true
		}
		g, ok := rt.gateways[gw]
		if !ok {
			return waitsForGateway(state(), gw)
		}
		if _, slow := g.(Verifier); !slow {
			return false
		}
		st := state()
		if st != nil && st.WasVerified() {
			return false // a replay: not asked again
		}
		l := p.lane(gw)
		if l.free(now) {
			return false
		}
		// Now and then, the ones that have waited retry_for behind a
		// failing lane are taken: they fail (see step).
		return !(sweep && l.failing && st != nil && len(st.History) > 0 && now.Sub(st.History[0].At) >= p.o.RetryFor)
	}
}

// sweepEvery is how often a step takes the notifications that waited
// retry_for behind a failing lane, to fail them.
func (p *Pipeline) sweepEvery() time.Duration { return min(time.Minute, p.o.RetryFor/10) }

// pastSkipWait is how long an idle Run waits before it looks again when
// a retry is due already that no step took (a look reads up to skipScan
// held retries: 85 ms past 20,000 held was measured when it came every
// 100 ms). What frees held retries (a postback that ends, a reload, a
// probe's time, new notifications) wakes Run anyway.
const pastSkipWait = time.Second

// Run processes notifications until ctx is done. It sleeps when there is
// nothing to do, until the store signals new notifications, a retry is
// due, a postback ends or a lane may probe again. A step the store fails
// is retried forever with capped backoff (Degraded reports it meanwhile).
// It returns nil on cancellation.
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
		now := p.o.Now()
		at, ok := p.o.Journal.NextDueExcept(p.skip(now, false))
		if probe, pok := p.nextProbe(now); pok && (!ok || probe.Before(at)) {
			at, ok = probe, true
		}
		if ok {
			// A retry due already that no step took lies past the
			// retries skipped: look again a little later.
			wait := at.Sub(now)
			if wait <= 0 {
				wait = pastSkipWait
			}
			timer = time.NewTimer(wait)
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

// Why a step records a notification as received, waiting.
const (
	waitNone       = iota
	waitWorker     // its gateway's lane takes no postback now
	waitAnswer     // its postback is under way when the step ends
	waitGateway    // its gateway is not configured
	waitVerifyFail // its postback failed (an attempt): retried later
)

// step processes one batch and records every outcome decided, with the
// cursor move, in one transaction. Normalization runs inline; postbacks
// (Verifier gateways) run in the background, in their gateway's lane.
// The step starts postbacks and waits for them for up to stepWait in
// all, then records what is decided, with the postbacks of earlier steps
// that ended meanwhile. A fresh notification whose postback cannot start
// or has not ended is recorded as waiting (received, a retry due) so
// that the cursor passes it: no notification of another gateway waits
// behind it. step returns how many notifications it recorded or moved the
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
			p.log.Warn("parked events waited orders.park_for: failed and the merchant told, or a payment made an order of its own", "count", n)
		}
	}
	sweep := !now.Before(p.sweepAt)
	work, err := p.o.Journal.PendingExcept(now, p.batch(), p.skip(now, sweep))
	if err != nil {
		return 0, err
	}
	if sweep {
		p.sweepAt = now.Add(p.sweepEvery())
	}
	outs := make([]ipn.Outcome, len(work))
	why := make([]int, len(work))
	decided := make([]bool, len(work))
	collected := make([]bool, len(work)) // its postback's outcome is recorded with the postbacks that ended
	var started []*verifying
	// For starting postbacks and waiting for them (closed once passed).
	deadline, cancel := context.WithTimeout(ctx, p.stepWait)
	defer cancel()
	rt := p.routes.Load()
	for i, w := range work {
		id := w.Notification.ID
		if _, busy := p.inflight[id]; busy {
			if w.Fresh && !w.Processing.Settled(now) {
				// Under way since a step whose record failed: record it
				// as waiting again, so that the cursor passes it.
				outs[i], decided[i], why[i] = p.waiting(w, now, waitAnswer, ""), true, waitAnswer
			}
			continue
		}
		if w.Fresh && w.Processing.Settled(now) {
			// Recorded earlier (out of order, or before a crash moved the
			// cursor): final, or its retry is scheduled and the retry
			// queue takes it when due. The cursor passes it.
			decided[i] = true
			continue
		}
		g, known := rt.gateways[w.Notification.Gateway]
		if !known {
			outs[i], decided[i], why[i] = p.waiting(w, now, waitGateway, ""), true, waitGateway
			continue
		}
		if _, slow := g.(Verifier); !slow || w.Processing.WasVerified() {
			outs[i], decided[i] = p.decide(ctx, w)
			continue
		}
		l := p.lane(w.Notification.Gateway)
		if !l.take(now, deadline.Done(), l.startedIn(started)) {
			switch {
			case l.failing && now.Sub(w.Notification.ReceivedAt) >= p.o.RetryFor:
				// Waited retry_for behind the failing lane: it fails as
				// one whose own postbacks kept failing does.
				o := ipn.Outcome{ID: id, State: ipn.StateFailed, Attempts: w.Processing.Attempts}
				o.Detail = fmt.Sprintf("verification failed for %s (%d attempts): %s's postbacks fail: %s",
					p.o.RetryFor, o.Attempts, w.Notification.Gateway, l.lastErr)
				outs[i], decided[i] = o, true
			case w.Fresh:
				// Waits in the retry schedule until the lane takes it.
				outs[i], decided[i], why[i] = p.waiting(w, now, waitWorker, l.why(w.Notification.Gateway, p.o.Workers)), true, waitWorker
			}
			continue // a due retry: left for a later step
		}
		v := &verifying{done: make(chan struct{}), w: w, lane: l, probe: l.failing}
		if l.failing {
			l.probing = true
		}
		p.inflight[id] = v
		started = append(started, v)
		p.running.Add(1)
		go func() {
			defer p.running.Done()
			v.out, v.decided, v.answered, v.err = p.verifyAndDecide(ctx, w)
			<-l.slots
			close(v.done)
			select {
			case p.verified <- struct{}{}:
			default:
			}
		}()
	}
wait:
	for _, v := range started {
		select {
		case <-v.done:
		case <-deadline.Done():
			break wait
		}
	}
	// The postbacks that ended, of this step or earlier ones.
	var record []recording
	for id, v := range p.inflight {
		select {
		case <-v.done:
		default:
			continue
		}
		delete(p.inflight, id)
		p.ended(v, now)
		if !v.decided {
			continue // shutting down: not an attempt, taken again
		}
		o, reason := v.out, waitNone
		if o.State == ipn.StateReceived && o.Detail != notConfigured(v.w.Notification.Gateway) {
			reason = waitVerifyFail
			if _, ok := p.routes.Load().gateways[v.w.Notification.Gateway]; !ok {
				// Its gateway went while its postback was under way.
				o = p.waiting(v.w, now, waitGateway, o.Detail)
				o.Attempts = v.out.Attempts
				reason = waitGateway
			}
		}
		record = append(record, recording{o, v.w, reason})
		if i := slices.IndexFunc(work, func(w ipn.Work) bool { return w.Notification.ID == id }); i >= 0 {
			// Recorded above: the cursor may pass it (and it is not
			// recorded as waiting again).
			outs[i], why[i], decided[i], collected[i] = ipn.Outcome{}, waitNone, true, true
		}
	}
	// Those of this step still under way wait as received (their result
	// is recorded by a later step): the cursor passes them.
	for i, w := range work {
		if v, ok := p.inflight[w.Notification.ID]; ok && w.Fresh && !decided[i] && slices.Contains(started, v) {
			outs[i], decided[i], why[i] = p.waiting(w, now, waitAnswer, ""), true, waitAnswer
		}
	}
	// The cursor moves over the fresh notifications decided without a gap;
	// one not decided (shutting down) is taken again.
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
		if outs[i].ID == 0 && !collected[i] {
			moved++ // final already: only the cursor passes it
		}
	}
	for i, w := range work {
		if decided[i] && outs[i].ID != 0 {
			record = append(record, recording{outs[i], w, why[i]})
		}
	}
	if len(record) == 0 && moved == 0 {
		return 0, nil
	}
	// Applied in log order: postbacks that ended in one step (taken
	// above in map order) and decisions made inline are recorded by id,
	// so that of two notifications of one payment fact the earlier one
	// is applied and the later one is its duplicate. Only a postback
	// still under way when a later one's step ends lets the later apply
	// first (the disorder a gateway produces too).
	slices.SortFunc(record, func(a, b recording) int { return cmp.Compare(a.out.ID, b.out.ID) })
	outcomes := make([]ipn.Outcome, len(record))
	for i, r := range record {
		outcomes[i] = r.out
	}
	recs, err := p.o.Journal.Finish(outcomes, upTo, p.o.Now())
	if err != nil {
		return 0, err
	}
	var quiet stepSummary
	for i, r := range record {
		var sum *stepSummary
		if i >= reportLines {
			sum = &quiet
		}
		p.report(r.w.Notification, r.out, recs[i], r.why, sum)
	}
	quiet.log(p.log)
	return len(record) + moved, nil
}

// recording is one outcome a step records, with its notification and
// why it waits (waitNone when it does not).
type recording struct {
	out ipn.Outcome
	w   ipn.Work
	why int
}

// waiting is the outcome of a notification that waits, received, for the
// reason why (detail adds to it): its retry is due at once (a step leaves
// it where it is while the reason lasts: see skip), and its attempts stay.
func (p *Pipeline) waiting(w ipn.Work, now time.Time, why int, detail string) ipn.Outcome {
	gw := w.Notification.Gateway
	o := ipn.Outcome{ID: w.Notification.ID, State: ipn.StateReceived, Attempts: w.Processing.Attempts, RetryAt: now}
	switch why {
	case waitGateway:
		o.Detail = notConfigured(gw)
	case waitAnswer:
		o.Detail = fmt.Sprintf("waiting for %s to answer its verification postback", gw)
	default:
		o.Detail = detail
		detail = ""
	}
	if detail != "" {
		o.Detail += " (" + detail + ")"
	}
	return o
}

// lane is one gateway's postbacks: up to Workers at a time while the
// gateway answers. Once a postback fails (no answer, 5xx, garbage), the
// lane probes: one postback at a time, the next one after the failed
// probe's backoff (retry_base doubling to retry_cap), until one is
// answered. The notifications that wait meanwhile stay in the store's
// retry schedule, each with its own backoff. Only Run's goroutine changes
// a lane; mu guards what Holdups reads.
type lane struct {
	slots   chan struct{} // one per postback under way
	failing bool          // a postback failed since the last answer
	since   time.Time     // when it started failing
	probing bool          // a probe is under way
	probes  int           // probes failed in a row
	probeAt time.Time     // no probe before
	lastErr string
}

// lane returns gateway gw's lane.
func (p *Pipeline) lane(gw string) *lane {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.lanes[gw]
	if !ok {
		l = &lane{slots: make(chan struct{}, p.o.Workers)}
		p.lanes[gw] = l
	}
	return l
}

// free reports whether the lane would start a postback now.
func (l *lane) free(now time.Time) bool {
	if l.failing {
		return !l.probing && !now.Before(l.probeAt) && len(l.slots) < cap(l.slots)
	}
	return len(l.slots) < cap(l.slots)
}

// take reserves a worker for a postback. Only while the gateway answers
// and workers are busy with this step's own postbacks (wait), which free
// up soon, does it wait for one, until deadline (closed when passed, or
// at shutdown); workers held by earlier
// steps' (slow) postbacks are not waited for: a finished one wakes Run.
func (l *lane) take(now time.Time, deadline <-chan struct{}, wait bool) bool {
	if !l.free(now) {
		if l.failing || !wait {
			return false
		}
		select {
		case l.slots <- struct{}{}:
			return true
		case <-deadline:
		}
		return false
	}
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// startedIn reports whether this step started one of the lane's
// postbacks.
func (l *lane) startedIn(started []*verifying) bool {
	return slices.ContainsFunc(started, func(v *verifying) bool { return v.lane == l })
}

// why is the history's reason for a notification the lane does not take
// now.
func (l *lane) why(gw string, workers int) string {
	if l.failing {
		return fmt.Sprintf("waiting for %s's verification: its postbacks fail (%s), so they are tried one at a time until one is answered",
			gw, l.lastErr)
	}
	return fmt.Sprintf("waiting for a %s verification worker (all %d busy)", gw, workers)
}

// ended updates v's lane with how v's postback ended.
func (p *Pipeline) ended(v *verifying, now time.Time) {
	l := v.lane
	p.mu.Lock()
	defer p.mu.Unlock()
	if v.probe {
		l.probing = false
	}
	switch {
	case v.answered:
		if l.failing {
			p.log.Info("gateway answers its verification postbacks again", "gateway", v.w.Notification.Gateway,
				"failing_seconds", now.Sub(l.since).Seconds())
		}
		l.failing, l.probes, l.probeAt, l.lastErr = false, 0, time.Time{}, ""
	case v.err != nil:
		l.lastErr = v.err.Error()
		if v.probe {
			l.probes++
			l.probeAt = now.Add(backoff.Delay(p.o.RetryBase, p.o.RetryCap, l.probes))
		} else if !l.failing {
			l.failing, l.since, l.probes, l.probeAt = true, now, 0, now
			p.log.Warn("gateway verification postbacks fail: trying one at a time until one is answered",
				"gateway", v.w.Notification.Gateway, "error", l.lastErr)
		}
	}
}

// nextProbe is when a failing lane with notifications waiting may probe
// next, if that is later than now.
func (p *Pipeline) nextProbe(now time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var at time.Time
	ok := false
	for _, l := range p.lanes {
		if l.failing && !l.probing && l.probeAt.After(now) && (!ok || l.probeAt.Before(at)) {
			at, ok = l.probeAt, true
		}
	}
	return at, ok
}

// Holdup is a gateway that holds up its notifications: its verification
// postbacks fail, or it is not configured.
type Holdup struct {
	Gateway string
	Reason  string
}

// Holdups lists the configured gateways whose verification postbacks
// fail now. (Those whose notifications wait because the gateway is not
// configured are the store's to find.)
func (p *Pipeline) Holdups() []Holdup {
	rt := p.routes.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Holdup
	for gw, l := range p.lanes {
		if _, configured := rt.gateways[gw]; configured && l.failing {
			out = append(out, Holdup{Gateway: gw, Reason: fmt.Sprintf("its verification postbacks fail since %s (last error: %s)",
				l.since.UTC().Format(time.RFC3339), l.lastErr)})
		}
	}
	slices.SortFunc(out, func(a, b Holdup) int { return strings.Compare(a.Gateway, b.Gateway) })
	return out
}

// batch is the most unfinished notifications one step takes. A step is
// one bbolt transaction (two fdatasyncs and the branch pages written
// again): under a backlog on a shared 2-CPU VM the store's part went
// from 979-1,379 notifications/s at 64 a step to 1,130-2,208 at 256
// (store BenchmarkStep, several runs, issue 23) for the same CPU per
// notification: fewer fsync waits. A step with less waits BatchDelay.
func (p *Pipeline) batch() int { return max(256, 4*p.o.Workers) }

// verifying is a postback running in the background.
type verifying struct {
	done     chan struct{} // closed when the results below are set
	w        ipn.Work
	lane     *lane
	probe    bool // the lane was failing: this one probes
	out      ipn.Outcome
	decided  bool
	answered bool  // the gateway answered (VERIFIED or INVALID)
	err      error // the postback failed (no answer, 5xx, garbage)
}

// report logs and counts one recorded outcome.
func (p *Pipeline) report(n *ipn.Notification, o ipn.Outcome, rec ipn.Recorded, why int, sum *stepSummary) {
	state := rec.State
	if sum != nil && (state == ipn.StateApplied || state == ipn.StateDuplicate) {
		// Past the step's first reportLines: counted, not logged one by one.
		sum.add(n.ID, string(state), rec.OrderTo != "" && rec.OrderTo != rec.OrderFrom)
		p.o.Observer.Processed(n.Gateway, string(state))
		return
	}
	if rec.OrderTo != "" && rec.OrderTo != rec.OrderFrom {
		p.log.Info("order transition", "order_id", rec.OrderID, "from", string(rec.OrderFrom), "to", string(rec.OrderTo),
			"reason", rec.Reason, "notification", n.ID, "gateway", n.Gateway)
	}
	attrs := []any{"id", n.ID, "gateway", n.Gateway, "state", string(state)}
	if detail := cmp.Or(rec.Detail, o.Detail); detail != "" {
		attrs = append(attrs, "detail", detail) // the words of the notification's history
	}
	if state == ipn.StateReceived {
		switch why {
		case waitGateway:
			p.log.Warn("notification waits: its gateway is not configured", attrs...)
		case waitVerifyFail:
			// A postback that failed (network, 5xx, timeout): retried later.
			p.log.Warn("notification verification failed; retrying later", append(attrs, "attempts", o.Attempts,
				"retry_in_seconds", o.RetryAt.Sub(p.o.Now()).Seconds())...)
		default:
			p.log.Debug("notification waits for its verification", attrs...)
		}
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

// reportLines is how many notifications a step logs one by one ("order
// transition", "notification processed"); past them, in a busy step, the
// applied and duplicate ones are counted in one "notifications
// processed" line (failures and waits are always logged one by one), so
// that a burst does not cost two JSON lines per notification. Each one's
// history and its order's are in the store (ipnd show, ipnd orders).
const reportLines = 20

// stepSummary counts the notifications of a step not logged one by one.
type stepSummary struct {
	count       int
	low, high   uint64
	states      map[string]int
	transitions int
}

func (s *stepSummary) add(id uint64, state string, transition bool) {
	if s.count == 0 {
		s.low, s.high, s.states = id, id, map[string]int{}
	}
	s.count++
	s.low, s.high = min(s.low, id), max(s.high, id)
	s.states[state]++
	if transition {
		s.transitions++
	}
}

func (s *stepSummary) log(l *slog.Logger) {
	if s.count == 0 {
		return
	}
	l.Info("notifications processed", "count", s.count, "lowest_id", s.low, "highest_id", s.high,
		"applied", s.states[string(ipn.StateApplied)],
		"duplicate", s.states[string(ipn.StateDuplicate)], "order_transitions", s.transitions,
		"note", fmt.Sprintf("more than %d in one step: the rest are counted here; each one's history is in the store", reportLines))
}

// verifyAndDecide is decide for a postback in a lane: it reports too
// whether the gateway answered, or the postback's error.
func (p *Pipeline) verifyAndDecide(ctx context.Context, w ipn.Work) (o ipn.Outcome, decided, answered bool, err error) {
	o, decided, err = p.decideVerify(ctx, w)
	return o, decided, err == nil && decided, err
}

// decide verifies (where asynchronous) and normalizes a notification.
func (p *Pipeline) decide(ctx context.Context, w ipn.Work) (ipn.Outcome, bool) {
	o, decided, _ := p.decideVerify(ctx, w)
	return o, decided
}

// decideVerify is decide; it returns too the error of a postback that
// failed (no answer, 5xx, garbage: the outcome schedules a retry).
func (p *Pipeline) decideVerify(ctx context.Context, w ipn.Work) (ipn.Outcome, bool, error) {
	n := w.Notification
	o := ipn.Outcome{ID: n.ID, Attempts: w.Processing.Attempts}
	rt := p.routes.Load()
	g, known := rt.gateways[n.Gateway]
	if !known {
		return p.waiting(w, p.o.Now(), waitGateway, ""), true, nil
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
			return o, true, nil
		case ctx.Err() != nil:
			return o, false, nil // shutting down: not an attempt
		default:
			o.Attempts++
			now := p.o.Now()
			if now.Sub(n.ReceivedAt) >= p.o.RetryFor {
				o.State = ipn.StateFailed
				o.Detail = fmt.Sprintf("verification failed for %s (%d attempts): %v", p.o.RetryFor, o.Attempts, err)
				return o, true, err
			}
			o.State, o.RetryAt = ipn.StateReceived, now.Add(backoff.Delay(p.o.RetryBase, p.o.RetryCap, o.Attempts))
			o.Detail = fmt.Sprintf("verification attempt %d failed: %v", o.Attempts, err)
			return o, true, err
		}
	}
	ev, err := g.Normalize(n)
	if err != nil {
		o.State, o.Detail = ipn.StateInvalid, "cannot normalize: "+err.Error()
		return o, true, nil
	}
	pol := ipn.Policy{Gateway: n.Gateway, Sandbox: rt.sandbox[n.Gateway], Receivers: rt.receivers[n.Gateway],
		RequireRegistered: rt.requireRegistered, Gateways: rt.names}
	return ipn.Assess(o, ev, pol, receiverOK(g, n, ev, pol.Receivers)), true, nil
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
