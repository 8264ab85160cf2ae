package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

var serveCommand = command{
	name:    "serve",
	args:    "[flags] [CONFIG]",
	summary: "run the appliance (the default command)",
	run:     cmdServe,
}

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// SIGHUP from here on is a reload, never the default (which would end
	// the process without a word): one that comes during the start is
	// handled once ipnd runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fs := newCmdline("serve", getenv, stdout)
	if err := fs.parseConfigArg(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, getenv, newLogger(cfg.Log, stderr), hup)
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	text := c.Format == "text"
	if c.Format == "auto" {
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				text = true
			}
		}
	}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serve runs the appliance until ctx is done, then shuts down in reverse:
// public listener (in-flight requests finish their commits), admin
// listener, workers, store last. SIGHUP reloads the config (reload).
func serve(ctx context.Context, cfg *Config, getenv func(string) string, log *slog.Logger, hup <-chan os.Signal) error {
	a, err := newApp(ctx, cfg, getenv, log)
	if err != nil {
		return err
	}
	return a.run(ctx, hup)
}
