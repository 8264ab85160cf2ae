package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"ipnd/store"
)

// TestTailPrintsSimulatedNotification: ipnd tail follows the admin
// listener's event stream: a notification sent with ipnd simulate shows
// as it is stored and recorded, and its order's transition; -json prints
// the events' JSON.
func TestTailPrintsSimulatedNotification(t *testing.T) {
	d, _ := webhookDaemon(t, "")
	env := envFunc()
	for _, asJSON := range []bool{false, true} {
		var stdout, stderr lockedBuffer
		args := []string{"tail", "-config", d.cfg, "-n", "3"}
		if asJSON {
			args = append(args, "-json")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, args, env, &stdout, &stderr) }()
		waitFor(t, "ipnd tail connected", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "following events") })
		if out, errOut, code := runCode(t, env, "simulate", "-config", d.cfg, "-live", "shop"); code != 0 {
			t.Fatalf("simulate: exit %d %s %s", code, out, errOut)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("tail: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("tail printed only:\n%s", stdout.String())
		}
		cancel()
		out := stdout.String()
		want := []string{"notification 1  shop  received", "notification 1  shop  invalid  test_payment", "order ORDER-", "awaiting_payment -> review"}
		if asJSON {
			want = []string{`"type":"notification"`, `"state":"received"`, `"type":"order"`}
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("tail (json %v) lacks %q:\n%s", asJSON, w, out)
			}
		}
		if strings.Count(strings.TrimSpace(out), "\n") != 2 {
			t.Errorf("tail -n 3 printed:\n%s", out)
		}
	}
}

// TestTailDoesNotHoldShutdown: a follower of the event stream ends with
// the admin listener's shutdown (its stream closes at once) rather than
// holding it up until its connection is cut.
func TestTailDoesNotHoldShutdown(t *testing.T) {
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, "[log]\nformat = \"json\"\n"+stripeGatewayConfig)
	d, logs := startLogged(t, dir, cfg)
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go run(ctx, []string{"tail", "-config", cfg}, envFunc(), &stdout, &stderr)
	waitFor(t, "ipnd tail connected", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "following events") })
	d.stop()
	if strings.Contains(logs.String(), "closing busy connections") {
		t.Errorf("the shutdown waited for the event stream:\n%s", logs)
	}
	waitFor(t, "ipnd tail told the stream ended", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "reconnecting") })
}

// TestTailWaitsForAFollowerSlot: with every follower slot of the event
// stream taken (503), ipnd tail keeps retrying rather than exiting, and
// follows once a slot frees.
func TestTailWaitsForAFollowerSlot(t *testing.T) {
	d, _ := webhookDaemon(t, "")
	var held []*http.Response
	defer func() {
		for _, r := range held {
			r.Body.Close()
		}
	}()
	for range store.MaxFollowers {
		req, _ := http.NewRequest("GET", d.addr("admin")+"/api/events", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("follower %d: %v %v", len(held)+1, resp, err)
		}
		held = append(held, resp)
	}
	env := envFunc()
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"tail", "-config", d.cfg, "-n", "1"}, env, &stdout, &stderr) }()
	waitFor(t, "ipnd tail refused a slot and retrying", 10*time.Second, func() bool {
		return strings.Contains(stderr.String(), "503") && strings.Contains(stderr.String(), "reconnecting")
	})
	select {
	case err := <-done:
		t.Fatalf("ipnd tail ended while the followers' slots were full: %v\n%s", err, stderr.String())
	default:
	}
	held[0].Body.Close()
	held = held[1:]
	waitFor(t, "ipnd tail connected", 20*time.Second, func() bool { return strings.Contains(stderr.String(), "following events") })
	if out, errOut, code := runCode(t, env, "simulate", "-config", d.cfg, "-live", "shop"); code != 0 {
		t.Fatalf("simulate: exit %d %s %s", code, out, errOut)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("tail printed only:\n%s\n%s", stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "notification 1") {
		t.Errorf("tail printed %q", stdout.String())
	}
}
