package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"ipnd/metrics"
	"ipnd/store"
)

// workerRun is one worker goroutine: started by startWorker, stopped
// (cancelled and waited for) by stop.
type workerRun struct {
	cancel  context.CancelFunc
	done    chan struct{}
	stopped atomic.Bool // Run returned by itself (an error), not by stop
}

// startWorker runs run in a goroutine until stop; an error it returns is
// logged as the worker stopping.
func startWorker(name string, log *slog.Logger, run func(context.Context) error) *workerRun {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		if err := run(ctx); err != nil && ctx.Err() == nil {
			log.Error(name+" stopped", "error", err)
			w.stopped.Store(true)
		}
	}()
	return w
}

// stop cancels the worker and waits until it has returned.
func (w *workerRun) stop() { w.cancel(); <-w.done }

// purgeLoop applies store.raw_retention (keep) until ctx ends: every
// keep/10 (at least a second, at most 10 minutes) it purges what grew
// older than keep, in transactions of 200 records with a pause between
// them, so that ingest never waits long behind it. Store errors are
// logged and tried again next time.
func purgeLoop(ctx context.Context, db *store.DB, m *metrics.Metrics, log *slog.Logger, keep time.Duration, now func() time.Time) error {
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
func watchStore(ctx context.Context, db *store.DB, log *slog.Logger, every, repeat time.Duration) {
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
