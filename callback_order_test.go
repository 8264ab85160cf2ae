package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/ipn"
)

// shopCall is one callback as the shop received it, and its answer.
type shopCall struct {
	order, typ, id string
	code           int
}

// TestCallbacksOfAnOrderInQueueOrder: the shop fails order A's
// order.paid with 500 until it has served order B's payment (and the
// notification script exits 1 for it until it has run for B's);
// meanwhile A's refund is queued. The shop must get A's order.paid (2xx)
// before A's order.refunded, and the script run in the same order, also
// across a restart of ipnd while A's payment waits for its retry; B's
// callback and script run are not held up by A's failing ones.
func TestCallbacksOfAnOrderInQueueOrder(t *testing.T) {
	var mu sync.Mutex
	var calls []shopCall
	served := func(order, typ string) bool {
		for _, c := range calls {
			if c.order == order && c.typ == typ && c.code == 200 {
				return true
			}
		}
		return false
	}
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Type string
			Data struct{ Order struct{ ID string } }
		}
		json.Unmarshal(body, &ev)
		mu.Lock()
		defer mu.Unlock()
		code := 200
		if ev.Data.Order.ID == "A" && ev.Type == "order.paid" && !served("B", "order.paid") {
			code = 500
		}
		calls = append(calls, shopCall{ev.Data.Order.ID, ev.Type, r.Header.Get("Webhook-Id"), code})
		w.WriteHeader(code)
	}))
	defer shop.Close()
	// The notification script is held to the same rule: it fails A's
	// order.paid until it has run for B's, and logs each run.
	script := filepath.Join(t.TempDir(), "notify.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
log="$0.log"
if [ "$IPND_ORDER_ID" = A ] && [ "$IPND_EVENT_TYPE" = order.paid ] && ! grep -q "^B order.paid 0" "$log" 2>/dev/null; then
  echo "A order.paid 1" >> "$log"; exit 1
fi
echo "$IPND_ORDER_ID $IPND_EVENT_TYPE 0" >> "$log"
`), 0o700)
	scriptLog := func() string { b, _ := os.ReadFile(script + ".log"); return string(b) }
	d, post := webhookDaemon(t, fmt.Sprintf("[shop]\nurl = %q\nsecret = \"whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz\"\n"+
		"command = [%q]\ntimeout = \"5s\"\n[pipeline]\noutbox_retry_base = \"50ms\"\noutbox_retry_cap = \"200ms\"\n", shop.URL, script))
	seen := func(what string, cond func() bool) {
		t.Helper()
		waitFor(t, what, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return cond() })
	}

	post("pa", "payment.completed", map[string]any{"order_id": "A", "txn_id": "TA", "amount": "5.00", "currency": "EUR"})
	seen("A's order.paid refused once", func() bool { return len(calls) > 0 })
	waitFor(t, "A's script run failed once", 20*time.Second, func() bool { return strings.Contains(scriptLog(), "A order.paid 1") })
	post("ra", "payment.refunded", map[string]any{"order_id": "A", "txn_id": "RA", "parent_txn_id": "TA", "amount": "5.00", "currency": "EUR"})
	waitFor(t, "A refunded", 20*time.Second, func() bool {
		var o ipn.Order
		return d.api("GET", "/api/orders/A", nil, &o) == 200 && o.Status == ipn.OrderRefunded
	})
	// A restart in between: the order of A's callbacks holds from the
	// stored state.
	d.stop()
	d = startDaemon(t, d.dir, d.cfg)
	post("pb", "payment.completed", map[string]any{"order_id": "B", "txn_id": "TB", "amount": "7.00", "currency": "EUR"})
	seen("B's order.paid", func() bool { return served("B", "order.paid") })
	seen("A's order.refunded", func() bool { return served("A", "order.refunded") })
	waitFor(t, "the script's run for A's order.refunded", 20*time.Second, func() bool {
		return strings.Contains(scriptLog(), "A order.refunded 0")
	})
	runs := strings.Split(strings.TrimSpace(scriptLog()), "\n")
	if i, j := slices.Index(runs, "A order.paid 0"), slices.Index(runs, "A order.refunded 0"); i < 0 || j < i ||
		slices.Index(runs, "B order.paid 0") > i {
		t.Errorf("script runs in this order:\n%s\nwant A's order.paid to fail, B's to run, then A's paid, then A's refunded", scriptLog())
	}

	mu.Lock()
	defer mu.Unlock()
	var log []string
	paidA := false
	for _, c := range calls {
		log = append(log, fmt.Sprintf("%s %s %d", c.order, c.typ, c.code))
		switch {
		case c.order == "A" && c.typ == "order.paid" && c.code == 200:
			paidA = true
		case c.order == "A" && c.typ == "order.refunded" && !paidA:
			t.Errorf("A's order.refunded reached the shop before A's order.paid was accepted")
		}
	}
	if !paidA {
		t.Errorf("A's order.paid never accepted")
	}
	if t.Failed() {
		t.Logf("the shop received:\n%s", strings.Join(log, "\n"))
	}
}
