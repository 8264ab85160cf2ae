package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ipnd/ipn"
)

// chromiumPath finds the browser for the dashboard tests: $IPND_CHROMIUM,
// else chromium (Debian's package) or chromium-browser on the PATH. The
// tests fail without one: `make test` leaves them out on a machine
// without chromium and says so; .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("IPND_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("dashboard browser tests: chromium not found: install Debian's chromium (apt-get install chromium) " +
		"or set IPND_CHROMIUM; `make test` leaves these tests out on a machine without it, .ci/run installs it")
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile and returns
// a context driving one tab at 1200x800.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1200, 800)); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// browse runs browser actions with a deadline; a failure names the step.
func browse(t *testing.T, ctx context.Context, step string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatalf("browser: %s: %v", step, err)
	}
}

// read runs one browser action that reads a value, with a deadline.
func read[T any](t *testing.T, ctx context.Context, step string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", step, err)
	}
	return v
}

// shot writes a screenshot of the page to $IPND_SCREENSHOTS (when set:
// docs/ is made from these) or the test's temporary directory.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("IPND_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	png := read(t, ctx, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(dir, "dashboard-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardBrowser drives the dashboard in a real headless Chromium:
// a wrong token cannot sign in, the right one can; a simulated
// notification appears in the list without a reload (Server-Sent
// Events); an order in review is approved and becomes paid with its
// customer email in the outbox; a POST without the CSRF token is
// refused; each page is captured as a screenshot.
func TestDashboardBrowser(t *testing.T) {
	chromiumPath(t)
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "shop database is down", http.StatusInternalServerError)
	}))
	t.Cleanup(shop.Close)
	d, post := webhookDaemon(t, fmt.Sprintf(`[orders]
receivers = ["shop@example.com"]
[shop]
url = %q
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
max_attempts = 1
[[gateway]]
name = "test"
kind = "standard-webhooks"
sandbox = true
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
`, shop.URL))
	admin := d.addr("admin")
	// Some history for the charts and lists: paid orders, one in review.
	for i := range 6 {
		id := fmt.Sprintf("ORDER-%d", 100+i)
		d.api("POST", "/api/orders", map[string]any{"id": id, "amount": "19.99", "currency": "USD", "customer_email": "buyer@example.com"}, nil)
		post(fmt.Sprintf("m-%d", i), "payment.completed", map[string]any{"order_id": id, "txn_id": fmt.Sprintf("T%d", i), "amount": "19.99", "currency": "USD"})
	}
	d.api("POST", "/api/orders", map[string]any{"id": "ORDER-REVIEW", "amount": "19.99", "currency": "USD", "customer_email": "reviewed@example.com"}, nil)
	post("m-review", "payment.completed", map[string]any{"order_id": "ORDER-REVIEW", "txn_id": "TR", "amount": "9.99", "currency": "USD"})
	d.drained(7)
	waitFor(t, "ORDER-REVIEW in review", 10*time.Second, func() bool {
		var o ipn.Order
		d.api("GET", "/api/orders/ORDER-REVIEW", nil, &o)
		return o.Status == ipn.OrderReview
	})

	ctx := newBrowser(t)
	t.Run("wrong token cannot sign in", func(t *testing.T) {
		browse(t, ctx, "wrong token", chromedp.Navigate(admin+"/"),
			chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#login-error")))
		msg := read(t, ctx, "login error", chromedp.Text(chromedp.CSS("#login-error")))
		if !strings.Contains(msg, "Wrong token") {
			t.Errorf("after a wrong token: %q", msg)
		}
		shot(t, ctx, "login")
	})
	if !t.Run("sign in", func(t *testing.T) {
		browse(t, ctx, "sign in", chromedp.Clear(chromedp.CSS("#token")),
			chromedp.SendKeys(chromedp.CSS("#token"), "t"),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#health")))
		h1 := read(t, ctx, "overview title", chromedp.Text(chromedp.CSS("h1")))
		if h1 != "Overview" {
			t.Fatalf("after signing in: h1 %q", h1)
		}
		shot(t, ctx, "overview")
	}) {
		return
	}
	t.Run("overview updates without reload", func(t *testing.T) {
		browse(t, ctx, "overview", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.CSS("#health")),
			chromedp.Poll[chromedp.Void](`document.getElementById("live-status").textContent.includes("on.")`,
				chromedp.WithPollingTimeout(10*time.Second)))
		read(t, ctx, "marking the page", chromedp.Evaluate[string](`window.ipndMarker = "same page"`))
		post("m-live", "payment.completed", map[string]any{"order_id": "ORDER-LIVE", "txn_id": "TL", "amount": "5.00", "currency": "USD"})
		browse(t, ctx, "the overview counts the new notification",
			chromedp.Poll[chromedp.Void](`document.getElementById("main").textContent.includes("Last 24 hours: 8 received, 8 applied")`,
				chromedp.WithPollingTimeout(10*time.Second)))
		if marker := read(t, ctx, "marker", chromedp.Evaluate[string](`window.ipndMarker || "reloaded"`)); marker != "same page" {
			t.Errorf("the overview was reloaded (%q), want it updated in place", marker)
		}
	})
	t.Run("notification appears without reload", func(t *testing.T) {
		browse(t, ctx, "notifications list", chromedp.Navigate(admin+"/notifications"),
			chromedp.WaitVisible(chromedp.CSS("#notifications")),
			chromedp.Poll[chromedp.Void](`document.getElementById("live-status").textContent.includes("on.")`,
				chromedp.WithPollingTimeout(10*time.Second)))
		read(t, ctx, "marking the page", chromedp.Evaluate[string](`window.ipndMarker = "same page"`))
		env := envFunc("IPND_CONFIG", d.cfg)
		if out, err := runCmd(t, env, "simulate", "test", "-order", "SIM-LIVE", "-wait", "0"); err != nil {
			t.Fatalf("ipnd simulate: %v\n%s", err, out)
		}
		browse(t, ctx, "the simulated notification in the list",
			chromedp.WaitVisible(chromedp.Search(`//table[@id="notifications"]//a[text()="SIM-LIVE"]`)))
		marker := read(t, ctx, "marker", chromedp.Evaluate[string](`window.ipndMarker || "reloaded"`))
		if marker != "same page" {
			t.Errorf("the list was reloaded (%q), want it updated in place", marker)
		}
		shot(t, ctx, "notifications")
		browse(t, ctx, "notification detail",
			chromedp.Click(chromedp.Search(`//table[@id="notifications"]//tr[.//a[text()="SIM-LIVE"]]/td[1]/a`)),
			chromedp.WaitVisible(chromedp.CSS("#replay")))
		shot(t, ctx, "notification")
	})
	t.Run("approve an order in review", func(t *testing.T) {
		browse(t, ctx, "order in review", chromedp.Navigate(admin+"/"),
			chromedp.WaitVisible(chromedp.Search(`//ul[@id="review-list"]//a[text()="ORDER-REVIEW"]`)),
			chromedp.Click(chromedp.Search(`//ul[@id="review-list"]//a[text()="ORDER-REVIEW"]`)),
			chromedp.WaitVisible(chromedp.CSS("#approve")),
			chromedp.SendKeys(chromedp.CSS("#approve-note"), "customer paid the rest by bank transfer"))
		shot(t, ctx, "order-review")
		// The approve form as the browser would send it (a second time: a
		// double click, or the form sent again from the history).
		form := read(t, ctx, "approve form", chromedp.Evaluate[string](
			`new URLSearchParams(new FormData(document.getElementById("approve").form)).toString()`))
		browse(t, ctx, "approve", chromedp.Click(chromedp.CSS("#approve")),
			chromedp.WaitVisible(chromedp.CSS("#flash")))
		status := read(t, ctx, "order status", chromedp.Text(chromedp.CSS("#order-status")))
		outbox := read(t, ctx, "order outbox", chromedp.Text(chromedp.CSS("table.outbox")))
		if status != "paid" {
			t.Errorf("after approving: status %q, want paid", status)
		}
		if !strings.Contains(outbox, "payment_received to reviewed@example.com") {
			t.Errorf("after approving, the order's outbox lacks the customer's payment email:\n%s", outbox)
		}
		shot(t, ctx, "order-approved")
		again := read(t, ctx, "approve again", chromedp.Evaluate[int](`fetch(location.pathname + "/decide", {method: "POST",
				credentials: "same-origin", headers: {"Content-Type": "application/x-www-form-urlencoded"},
				body: `+strconv.Quote(form)+`}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if again != http.StatusOK { // 303 to the order page, followed
			t.Errorf("the approve form sent again: %d, want the order page (nothing repeated)", again)
		}
		var o ipn.Order
		d.api("GET", "/api/orders/ORDER-REVIEW", nil, &o)
		approvals := 0
		for _, h := range o.History {
			if strings.Contains(h.Reason, "approved") {
				approvals++
			}
		}
		if o.Status != ipn.OrderPaid || approvals != 1 || !strings.Contains(o.History[len(o.History)-1].Reason, "bank transfer") {
			t.Errorf("API after approving in the browser (twice): %s, %d approvals, history %+v", o.Status, approvals, o.History)
		}
		var ob struct{ Items []struct{ Effect ipn.Effect } }
		d.api("GET", "/api/outbox", nil, &ob)
		emails := 0
		for _, it := range ob.Items {
			if it.Effect.OrderID == "ORDER-REVIEW" && it.Effect.Template == ipn.TemplatePaymentReceived {
				emails++
			}
		}
		if emails != 1 {
			t.Errorf("payment_received emails for ORDER-REVIEW after approving twice: %d, want 1", emails)
		}
	})
	t.Run("discard a dead item", func(t *testing.T) {
		var dead struct{ Items []struct{ ID uint64 } }
		waitFor(t, "dead shop callbacks", 10*time.Second, func() bool {
			d.api("GET", "/api/outbox?state=dead", nil, &dead)
			return len(dead.Items) >= 2
		})
		deadCount := func() string {
			browse(t, ctx, "overview", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.CSS("#outbox-counts")))
			return read(t, ctx, "dead count", chromedp.Text(chromedp.CSS(`td.dead-count[data-lane="shop_callback"]`)))
		}
		before := deadCount()
		shot(t, ctx, "overview-dead")
		id := dead.Items[0].ID
		browse(t, ctx, "dead items", chromedp.Navigate(admin+"/outbox?state=dead&lane=shop_callback"),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf("#discard-%d", id))))
		shot(t, ctx, "outbox-dead")
		browse(t, ctx, "attempts of a dead item", chromedp.Navigate(fmt.Sprintf("%s/outbox/%d", admin, id)),
			chromedp.WaitVisible(chromedp.CSS("table.attempts")))
		attempts := read(t, ctx, "attempts", chromedp.Text(chromedp.CSS("table.attempts")))
		if !strings.Contains(attempts, "HTTP 500") || !strings.Contains(attempts, "shop database is down") {
			t.Errorf("the dead callback's attempts lack the shop's status and body:\n%s", attempts)
		}
		shot(t, ctx, "outbox-item")
		browse(t, ctx, "discard", chromedp.Click(chromedp.CSS(fmt.Sprintf("#discard-%d", id))),
			chromedp.WaitVisible(chromedp.CSS("#flash")))
		if state := read(t, ctx, "state", chromedp.Text(chromedp.CSS("#item-state"))); state != "discarded" {
			t.Errorf("after discarding: item state %q", state)
		}
		after := deadCount()
		b, _ := strconv.Atoi(before)
		if a, err := strconv.Atoi(after); err != nil || a != b-1 {
			t.Errorf("dead shop callbacks on the overview: %s before discarding one, %s after", before, after)
		}
	})
	t.Run("a decision from a stale page is refused", func(t *testing.T) {
		browse(t, ctx, "order page", chromedp.Navigate(admin+"/orders/ORDER-101"), chromedp.WaitVisible(chromedp.CSS("#cancel")))
		// Meanwhile the order changes (a note through the API).
		if st := d.api("POST", "/api/orders/ORDER-101/notes", map[string]any{"text": "called the customer"}, nil); st != 200 {
			t.Fatalf("note through the API: %d", st)
		}
		browse(t, ctx, "cancel from the stale page", chromedp.Click(chromedp.CSS("#cancel")), chromedp.WaitVisible(chromedp.CSS("#problem")))
		if msg := read(t, ctx, "problem", chromedp.Text(chromedp.CSS("#problem"))); !strings.Contains(msg, "changed since you opened it") {
			t.Errorf("cancel from a stale page: %q", msg)
		}
		var o ipn.Order
		if d.api("GET", "/api/orders/ORDER-101", nil, &o); o.Status != ipn.OrderPaid {
			t.Errorf("ORDER-101 after a cancel from a stale page: %s, want paid (unchanged)", o.Status)
		}
	})
	t.Run("resend an email once on a double click", func(t *testing.T) {
		sel := `//table[contains(@class,"outbox")]//tr[.//td[contains(.,"payment_received")]]//form[contains(@action,"/resend")]//button`
		browse(t, ctx, "order page", chromedp.Navigate(admin+"/orders/ORDER-102"), chromedp.WaitVisible(chromedp.Search(sel)))
		form := read(t, ctx, "resend form", chromedp.Evaluate[string](
			`new URLSearchParams(new FormData(document.querySelector("form[action$='/resend']"))).toString()`))
		action := read(t, ctx, "resend action", chromedp.Evaluate[string](`document.querySelector("form[action$='/resend']").getAttribute("action")`))
		for i := range 2 {
			st := read(t, ctx, "resend", chromedp.Evaluate[int](`fetch(`+strconv.Quote(action)+`, {method: "POST", credentials: "same-origin",
				headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: `+strconv.Quote(form)+`}).then(r => r.status)`, chromedp.EvalAwaitPromise))
			if st != http.StatusOK {
				t.Errorf("resend #%d: %d, want the new item's page", i+1, st)
			}
		}
		var ob struct{ Items []struct{ Effect ipn.Effect } }
		d.api("GET", "/api/outbox", nil, &ob)
		n := 0
		for _, it := range ob.Items {
			if it.Effect.OrderID == "ORDER-102" && it.Effect.Template == ipn.TemplatePaymentReceived {
				n++
			}
		}
		if n != 2 {
			t.Errorf("payment_received items for ORDER-102 after a resend sent twice: %d, want 2 (the original and one resend)", n)
		}
	})
	t.Run("POST without CSRF token is refused", func(t *testing.T) {
		browse(t, ctx, "outbox page", chromedp.Navigate(admin+"/outbox"), chromedp.WaitVisible(chromedp.CSS("h1")))
		status := read(t, ctx, "POST without CSRF", chromedp.Evaluate[int](`fetch("/orders/ORDER-100/decide", {method: "POST",
				credentials: "same-origin", headers: {"Content-Type": "application/x-www-form-urlencoded"},
				body: "decision=cancel"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if status != http.StatusForbidden {
			t.Errorf("POST from the signed-in browser without the CSRF token: %d, want 403", status)
		}
		var o ipn.Order
		if d.api("GET", "/api/orders/ORDER-100", nil, &o); o.Status != ipn.OrderPaid {
			t.Errorf("ORDER-100 after the refused POST: %s, want paid (unchanged)", o.Status)
		}
		shot(t, ctx, "outbox")
	})
}
