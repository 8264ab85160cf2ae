package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWorkersLifecycle checks the one helper that starts and stops the
// app's workers: stopAll stops them last started first and waits for
// each; starting a name that runs replaces that worker in its place; a
// worker that returns an error by itself is logged and reported failed,
// one stopped by stopAll is not.
func TestWorkersLifecycle(t *testing.T) {
	var logBuf bytes.Buffer
	ws := &workers{log: slog.New(slog.NewTextHandler(&logBuf, nil))}
	var mu sync.Mutex
	var stopped []string
	blocking := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			<-ctx.Done()
			mu.Lock()
			stopped = append(stopped, name)
			mu.Unlock()
			return ctx.Err() // an error, but after the cancel: not a failure
		}
	}
	ws.start("a", blocking("a1"))
	ws.start("b", blocking("b"))
	ws.start("a", blocking("a2")) // replaces a1, which stops now
	mu.Lock()
	if want := []string{"a1"}; !slices.Equal(stopped, want) {
		t.Errorf("after replacing a: stopped %v, want %v", stopped, want)
	}
	mu.Unlock()

	boom := errors.New("boom")
	ws.start("c", func(context.Context) error { return boom })
	for deadline := time.Now().Add(10 * time.Second); !ws.failed("c"); {
		if time.Now().After(deadline) {
			t.Fatal("worker c returned an error but failed(c) is false")
		}
		time.Sleep(time.Millisecond) // polling for the goroutine, with a deadline
	}

	ws.stopAll()
	mu.Lock()
	// a2 holds a1's place (started before b), so it stops after b.
	if want := []string{"a1", "b", "a2"}; !slices.Equal(stopped, want) {
		t.Errorf("stop order %v, want %v", stopped, want)
	}
	mu.Unlock()
	for _, name := range []string{"a", "b", "nosuch"} {
		if ws.failed(name) {
			t.Errorf("failed(%q) = true, want false (stopped by stopAll or never started)", name)
		}
	}
	if log := logBuf.String(); !strings.Contains(log, "c stopped") || !strings.Contains(log, "boom") || strings.Contains(log, "a stopped") {
		t.Errorf("log = %q, want one line for c (c stopped, error boom) and none for a or b", log)
	}
	ws.stopAll() // a second time does nothing
}
