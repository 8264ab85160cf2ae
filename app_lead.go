package main

import (
	"context"
	"time"

	"ipnd/ipn/gateway"
	"ipnd/notify"
	"ipnd/pipeline"
)

// term is one term of leadership of this process on a sharedStore: the
// pipeline and the outbox worker it runs (ws), on the term's outbox.
type term struct {
	outbox notify.Outbox
	ws     workers
}

// lead runs one term of leadership (sharedStore.Lead): a fresh pipeline
// on j and outbox worker on o, built from the config of now, until ctx
// ends (the lease is lost, or ipnd stops). Each term starts from what the
// database holds, as after a crash: the items the last leader had in
// flight are made again, nothing applied is applied twice (the writes of
// an ended term are fenced). A reload meanwhile reconfigures the term's
// pipeline and replaces its outbox worker (reload).
func (a *app) lead(ctx context.Context, j pipeline.Journal, o notify.Outbox) {
	log := a.log.With("component", "leader")
	a.termMu.Lock()
	cfg := a.cfg.Load()
	gateways, err := buildGateways(cfg)
	var worker *notify.Worker
	if err == nil {
		worker, err = newOutboxWorker(cfg, o, a.m, a.log.With("component", "outbox"))
	}
	if err != nil {
		// Checked at the start and by each reload: not expected.
		a.termMu.Unlock()
		log.Error("leading, but the pipeline and the outbox cannot be built from the config: they do not run", "error", err)
		<-ctx.Done()
		return
	}
	pipe := a.newPipeline(cfg, gateways, j)
	t := &term{outbox: o, ws: workers{log: a.log}}
	a.pipe.Store(pipe)
	a.outbox.Store(worker)
	a.term.Store(t)
	t.ws.start("outbox worker", worker.Run)
	t.ws.start("pipeline", pipe.Run)
	a.termMu.Unlock()
	began := time.Now()
	log.Info("leading: this ipnd runs the pipeline and the outbox")

	<-ctx.Done()
	a.termMu.Lock()
	a.term.Store(nil)
	a.pipe.Store(nil)
	a.outbox.Store(nil)
	a.termMu.Unlock()
	t.ws.stopAll()
	log.Info("no longer leading: the pipeline and the outbox stopped", "led_seconds", time.Since(began).Seconds())
}

// newPipeline builds the pipeline of cfg on j.
func (a *app) newPipeline(cfg *Config, gateways []gateway.Gateway, j pipeline.Journal) *pipeline.Pipeline {
	sandbox, receivers := orderRules(cfg)
	pl := cfg.Pipeline
	return pipeline.New(pipeline.Options{
		Journal: j, Gateways: gateways, Sandbox: sandbox, Receivers: receivers,
		RequireRegistered: cfg.Orders.RequireRegistered, Workers: pl.Workers,
		VerifyTimeout: time.Duration(pl.VerifyTimeout), RetryBase: time.Duration(pl.RetryBase),
		RetryCap: time.Duration(pl.RetryCap), RetryFor: time.Duration(pl.RetryFor),
		Observer: a.m, Logger: a.log.With("component", "pipeline"),
	})
}

// workerFailed reports whether the worker of that name (the app's, or
// the current term's) has stopped by itself.
func (a *app) workerFailed(name string) bool {
	if a.workers.failed(name) {
		return true
	}
	t := a.term.Load()
	return t != nil && t.ws.failed(name)
}

// leaderGauge reads ipnd_leader (nil on a localStore: no such metric).
func leaderGauge(db Store) func() float64 {
	shared, ok := db.(sharedStore)
	if !ok {
		return nil
	}
	return func() float64 {
		if shared.Leading() {
			return 1
		}
		return 0
	}
}

// storeName names the store for the start's log line (never the DSN,
// which may hold a password).
func storeName(cfg *Config) string {
	if cfg.postgres() {
		if cfg.Store.DSNFile != "" {
			return "postgres (store.dsn_file " + cfg.Store.DSNFile + ")"
		}
		return "postgres (store.dsn)"
	}
	return cfg.Store.Path
}
