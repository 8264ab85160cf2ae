package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestCLIEscapesTerminalControls: text from outside (an order id a
// buyer chose, as PayPal's invoice or Stripe's client_reference_id, a
// notification's reason, the shop's answer to a callback) reached the
// merchant's terminal as it was through ipnd tail, ipnd orders, ipnd ls
// and ipnd outbox show: an ESC sequence in it could retitle the
// window, clear the screen, move the cursor over earlier lines or hide
// text. Control characters (C0 but tab and newline, DEL, C1) are now
// printed as visible escapes.
func TestCLIEscapesTerminalControls(t *testing.T) {
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, "upstream down\x1b[2J\x1b]0;owned\x07\r\u009b31m")
	}))
	defer shop.Close()
	d, post := webhookDaemon(t, fmt.Sprintf("[shop]\nurl = %q\nsecret = \"whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz\"\n"+
		"timeout = \"5s\"\nmax_attempts = 1\n", shop.URL))
	env := envFunc()
	evil := "E-1\x1b]0;owned\x07\x1b[1A\x1b[2K"
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"tail", "-config", d.cfg, "-n", "3"}, env, &stdout, &stderr) }()
	waitFor(t, "ipnd tail connected", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "following events") })
	if st := post("esc1", "payment.completed", map[string]any{"order_id": evil, "txn_id": "T\x1b[31mX", "amount": "5.00",
		"currency": "EUR", "status": "completed"}); st != 200 {
		t.Fatalf("post: %d", st)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("tail printed only:\n%q", stdout.String())
	}
	var items []ipn.OutboxItem
	waitFor(t, "the callback dead", 20*time.Second, func() bool {
		items = outboxOf(t, d, evil)
		return len(items) > 0 && items[0].State == ipn.OutboxDead
	})
	outputs := map[string]string{"tail": stdout.String()}
	for name, args := range map[string][]string{
		"orders":      {"orders", "-config", d.cfg},
		"ls":          {"ls", "-config", d.cfg},
		"outbox":      {"outbox", "-config", d.cfg, "dead"},
		"outbox show": {"outbox", "show", "-config", d.cfg, fmt.Sprint(items[0].ID)},
	} {
		out, errOut, code := runCode(t, env, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d %s", name, code, errOut)
		}
		outputs[name] = out
	}
	for name, out := range outputs {
		if strings.ContainsAny(out, "\x1b\x07\r\u009b") {
			t.Errorf("%s printed raw control characters:\n%q", name, out)
		}
		if !strings.Contains(out, `E-1\x1b]0;owned\x07`) {
			t.Errorf("%s does not show the order id with its escapes visible:\n%s", name, out)
		}
	}
	if !strings.Contains(outputs["outbox show"], `upstream down\x1b[2J`) {
		t.Errorf("outbox show does not show the shop's answer:\n%s", outputs["outbox show"])
	}
}
