package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"ipnd/metrics"
	"ipnd/store"
)

// workers are the goroutines an app runs besides its listeners: the
// outbox worker, the pipeline, retention and the store watch. Each is
// started by start and stopped by stopAll, which cancels them in the
// reverse order of their start and waits for each to return. A worker
// whose run returns an error by itself is logged as stopped and reported
// by failed (the admin API's /healthz).
type workers struct {
	log *slog.Logger
	mu  sync.Mutex
	all []*workerRun // in start order
}

// workerRun is one worker's goroutine.
type workerRun struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	failed atomic.Bool // run returned by itself (an error), not by stop
}

// start runs run in a goroutine until stopAll. A worker of the same name
// that runs already is stopped first and replaced in its place (a reload
// with new delivery settings replaces the outbox worker).
func (ws *workers) start(name string, run func(context.Context) error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerRun{name: name, cancel: cancel, done: make(chan struct{})}
	if i := slices.IndexFunc(ws.all, func(o *workerRun) bool { return o.name == name }); i >= 0 {
		ws.all[i].stop()
		ws.all[i] = w
	} else {
		ws.all = append(ws.all, w)
	}
	go func() {
		defer close(w.done)
		if err := run(ctx); err != nil && ctx.Err() == nil {
			ws.log.Error(name+" stopped", "error", err)
			w.failed.Store(true)
		}
	}()
}

// stopAll stops every worker, the last started first.
func (ws *workers) stopAll() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range slices.Backward(ws.all) {
		w.stop()
	}
}

// failed reports whether the worker of that name has stopped by itself.
func (ws *workers) failed(name string) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	i := slices.IndexFunc(ws.all, func(w *workerRun) bool { return w.name == name })
	return i >= 0 && ws.all[i].failed.Load()
}

// stop cancels the worker and waits until it has returned.
func (w *workerRun) stop() { w.cancel(); <-w.done }

// purgeLoop applies store.raw_retention (keep) until ctx ends: every
// keep/10 (at least a second, at most 10 minutes) it purges what grew
// older than keep, in transactions of 200 records with a pause between
// them, so that ingest never waits long behind it. Store errors are
// logged and tried again next time.
func purgeLoop(ctx context.Context, db purger, m *metrics.Metrics, log *slog.Logger, keep time.Duration, now func() time.Time) error {
	every := min(max(keep/10, time.Second), 10*time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for {
			p, err := db.Purge(now().Add(-keep), 200)
			if err != nil {
				if !errors.Is(err, store.ErrClosed) {
					log.Warn("retention purge failed; trying again later", "error", err)
				}
				break
			}
			m.Purged(p.Notifications, p.OutboxItems, p.Orders)
			if p.Notifications+p.OutboxItems+p.Orders > 0 {
				log.Info("retention purged", "notifications", p.Notifications, "outbox_items", p.OutboxItems, "orders", p.Orders)
			}
			if !p.More {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// watchStore logs, at ERROR, when the store stops taking notifications
// (ingest answers 503) and why, then once every repeat while that lasts
// with the count of requests refused meanwhile, and at WARN when it takes
// them again: a few lines for an outage, not one per request.
func watchStore(ctx context.Context, db watched, log *slog.Logger, every, repeat time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var (
		since, told time.Time
		refused     int64
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := db.Writable()
		switch {
		case err != nil && errors.Is(err, store.ErrClosed):
			return
		case err != nil && since.IsZero():
			since, told, refused = time.Now(), time.Now(), db.Refused()
			log.Error("store is not taking notifications: ingest answers 503 until this is fixed", "error", err)
		case err != nil && time.Since(told) >= repeat:
			told = time.Now()
			log.Error("store still not taking notifications", "error", err, "for_seconds", time.Since(since).Seconds(),
				"refused", db.Refused()-refused)
		case err == nil && !since.IsZero():
			log.Warn("store takes notifications again", "after_seconds", time.Since(since).Seconds(),
				"refused", db.Refused()-refused)
			since = time.Time{}
		}
	}
}
