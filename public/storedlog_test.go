package public_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"ipnd/public"
)

// TestStoredLogIsSampledUnderABurst: a burst of notifications within one
// second gives StoredLogPerSecond "notification stored" lines, one per
// notification, and one "notifications stored" line counting the rest
// (written when the second ends, or by the next line after it), so that
// the log stays honest (every notification is in a line) at a line a
// second past the first ones; duplicates alike.
func TestStoredLogIsSampledUnderABurst(t *testing.T) {
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	logs := &lockedBuffer{}
	r := newRig(t, func(o *public.ReceiverOptions) {
		o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		o.Now = clk.Now
		o.StoredLogPerSecond = 5
	})
	post := func(id string) {
		t.Helper()
		body := fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":%q}}`, id)
		if resp, text := r.do(t, "POST", "/ipn/test", jsonHeader(webhookHeader(swSecret, id, clk.Now().Unix(), body)), body); resp.StatusCode != 200 {
			t.Fatalf("post %s = %d %s", id, resp.StatusCode, text)
		}
	}
	const burst = 200
	for i := range burst {
		post(fmt.Sprintf("msg_%d", i))
	}
	post("msg_0") // a duplicate
	count := func(msg string) (lines, notifications int, last map[string]any) {
		for _, l := range logs.lines(t) {
			if l["msg"] == msg {
				lines++
				last = l
				if c, ok := l["count"].(float64); ok {
					notifications += int(c)
				} else {
					notifications++
				}
			}
		}
		return
	}
	if lines, n, _ := count("notification stored"); lines != 5 || n != 5 {
		t.Errorf("%d %q lines, want 5 (StoredLogPerSecond)", lines, "notification stored")
	}
	// The rest of the second, in one line when it ends (a timer).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if lines, n, l := count("notifications stored"); lines == 1 {
			if n != burst-5 || l["lowest_id"] != float64(6) || l["highest_id"] != float64(burst) || l["gateway"] != "test" {
				t.Errorf("summary line %v, want count %d, ids 6..%d", l, burst-5, burst)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line 10 s after the burst's second; lines: %d", "notifications stored", len(logs.lines(t)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lines, n, _ := count("notification duplicate"); lines != 1 || n != 1 {
		t.Errorf("%d duplicate lines, want 1", lines)
	}
	// The next second logs one by one again.
	clk.Set(clk.Now().Add(time.Second))
	post("msg_next")
	if lines, _, l := count("notification stored"); lines != 6 || l["id"] != float64(burst+1) {
		t.Errorf("after the second: %d stored lines (last %v), want 6, the last for id %d", lines, l, burst+1)
	}
	if got := r.obs.get("received/test"); got != burst+1 {
		t.Errorf("counted %d received, want %d: every notification is counted", got, burst+1)
	}
}
