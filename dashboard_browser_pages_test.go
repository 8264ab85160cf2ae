package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"ipnd/ipn"
)

// axProblems reads the page's accessibility tree as Chromium computes
// it and returns the controls and links that have no accessible name.
func axProblems(t *testing.T, ctx context.Context) []string {
	t.Helper()
	nodes := read(t, ctx, "accessibility tree", func(ctx context.Context, tg *chromedp.Target) ([]*accessibility.Node, error) {
		res, err := cdp.Call(ctx, tg, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
		return res.Nodes, err
	})
	str := func(v *accessibility.Value) string {
		if v == nil || len(v.Value) == 0 {
			return ""
		}
		var s string
		if json.Unmarshal(v.Value, &s) != nil {
			return string(v.Value)
		}
		return s
	}
	controls := map[string]bool{"button": true, "link": true, "textbox": true, "searchbox": true, "combobox": true,
		"checkbox": true, "radio": true, "listbox": true, "spinbutton": true, "slider": true, "switch": true, "menuitem": true}
	var out []string
	for _, n := range nodes {
		if n.Ignored {
			continue
		}
		if role := str(n.Role); controls[role] && strings.TrimSpace(str(n.Name)) == "" {
			out = append(out, fmt.Sprintf("%s without a name (node %s)", role, n.NodeID))
		}
	}
	return out
}

// divButtons counts elements that act as controls without being ones
// (click handlers or button roles on non-controls), which the keyboard
// cannot reach.
const divButtons = `document.querySelectorAll('[onclick], div[role=button], span[role=button], a:not([href])').length`

// checkPage asserts the accessibility basics of the page shown: every
// control and link has an accessible name, no pseudo-buttons, and the
// first Tab reaches the "Skip to content" link; then it writes a
// screenshot.
func checkPage(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	for _, p := range axProblems(t, ctx) {
		t.Errorf("%s: %s", name, p)
	}
	if n := read(t, ctx, "pseudo-buttons", chromedp.Evaluate[int](divButtons)); n != 0 {
		t.Errorf("%s: %d elements act as controls without being ones", name, n)
	}
	browse(t, ctx, "focus reset", chromedp.Evaluate[chromedp.Void](
		`document.body.setAttribute("tabindex", "-1"); document.body.focus(); document.body.removeAttribute("tabindex"); window.scrollTo(0, 0)`))
	browse(t, ctx, "tab", chromedp.KeyEvent("\t"))
	if cls := read(t, ctx, "focused", chromedp.Evaluate[string](`document.activeElement.className`)); cls != "skip" {
		t.Errorf("%s: the first Tab focuses %q, want the skip link", name, cls)
	}
	browse(t, ctx, "blur", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	shot(t, ctx, name)
}

// TestDashboardBrowserPages drives the pages added for issue 21's rest
// in Chromium: a windows-1252 PayPal IPN decoded on its page with what
// decided it, subscriptions and rejections (from the navigation, by
// keyboard), bulk replay with its confirmation, an order's deliveries
// reissued by the button; every page passes the accessibility checks
// (checkPage) and reads without JavaScript; each is captured.
func TestDashboardBrowserPages(t *testing.T) {
	chromiumPath(t)
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 1000)
	d := startDaemon(t, dir, fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr",
		"[[product]]\nid = \"app\"\nname = \"The App\"\nfile = \"app.zip\"\nlicense = \"generated\"\n"))
	admin := d.addr("admin")
	invalid := map[string]bool{"T-BAD1": true, "T-BAD2": true}
	fake.setAnswer(func(txn string, _ int) (int, string, time.Duration) {
		if invalid[txn] {
			return 200, "INVALID", 0
		}
		return 200, "VERIFIED", 0
	})
	n := 0
	payPal := func(fields ...string) uint64 {
		t.Helper()
		b := ipnBody(fields...)
		fake.remember(b)
		if code := d.postIPN("paypal", b); code != 200 {
			t.Fatalf("IPN = %d", code)
		}
		n++
		return uint64(n)
	}
	paid := payPal("txn_id", "T1", "invoice", "D-1", "item_number", "app", "item_name", "Caf\xe9 cr\xe8me app")
	payPal("txn_type", "subscr_signup", "subscr_id", "I-SUB1", "invoice", "S-1", "payment_status", "", "txn_id", "")
	payPal("txn_type", "subscr_payment", "subscr_id", "I-SUB1", "invoice", "S-1", "txn_id", "T-S1")
	payPal("txn_id", "T-BAD1", "invoice", "B-1")
	payPal("txn_id", "T-BAD2", "invoice", "B-2")
	d.waitState(uint64(n), "invalid")
	waitOrder(t, d, "D-1", ipn.OrderPaid)
	for _, path := range []string{"/ipn/nowhere", "/ipn/nowhere", "/ipn/paypal"} {
		ct := "application/x-www-form-urlencoded"
		if path == "/ipn/paypal" {
			ct = "application/json" // PayPal never sends JSON: refused
		}
		resp, err := http.Post(d.addr("public")+path, ct, strings.NewReader("a=b"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	ctx := newBrowser(t)
	if !t.Run("sign in with the keyboard", func(t *testing.T) {
		browse(t, ctx, "login", chromedp.Navigate(admin+"/login"), chromedp.WaitVisible(chromedp.CSS("#token")))
		checkPage(t, ctx, "login-a11y")
		browse(t, ctx, "type the token and press Enter", chromedp.Focus(chromedp.CSS("#token")),
			chromedp.KeyEvent("t"), chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS("#health")))
	}) {
		return
	}
	t.Run("notification: charset and what decided it", func(t *testing.T) {
		browse(t, ctx, "notification", chromedp.Navigate(fmt.Sprintf("%s/notifications/%d", admin, paid)),
			chromedp.WaitVisible(chromedp.CSS("#decided")))
		body := read(t, ctx, "body", chromedp.Text(chromedp.CSS("table.kv")))
		if !strings.Contains(body, "José") || !strings.Contains(body, "Café crème app") {
			t.Errorf("the windows-1252 body is not decoded:\n%s", body)
		}
		decided := read(t, ctx, "decided", chromedp.Text(chromedp.CSS("#decided")))
		if !strings.Contains(decided, "verified: applied") || !strings.Contains(decided, "paid: order created by this event; payment T1 completed") {
			t.Errorf("what decided it: %q", decided)
		}
		checkPage(t, ctx, "notification-decided")
		browse(t, ctx, "follow the transition", chromedp.Click(chromedp.CSS("#decided-transitions a")),
			chromedp.WaitVisible(chromedp.CSS("#transitions")))
	})
	t.Run("subscriptions from the navigation", func(t *testing.T) {
		browse(t, ctx, "nav", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.CSS("#health")),
			chromedp.Click(chromedp.Search(`//nav//a[text()="Subscriptions"]`)),
			chromedp.WaitVisible(chromedp.CSS("#subscriptions")))
		list := read(t, ctx, "list", chromedp.Text(chromedp.CSS("#subscriptions")))
		if !strings.Contains(list, "I-SUB1") || !strings.Contains(list, "active") {
			t.Errorf("subscriptions: %q", list)
		}
		checkPage(t, ctx, "subscriptions")
		browse(t, ctx, "detail", chromedp.Click(chromedp.Search(`//table[@id="subscriptions"]//a[text()="I-SUB1"]`)),
			chromedp.WaitVisible(chromedp.CSS("#sub-events")))
		if ev := read(t, ctx, "events", chromedp.Text(chromedp.CSS("#sub-events"))); !strings.Contains(ev, "T-S1") {
			t.Errorf("subscription events: %q", ev)
		}
		checkPage(t, ctx, "subscription")
	})
	t.Run("rejections by reason", func(t *testing.T) {
		browse(t, ctx, "nav", chromedp.Click(chromedp.Search(`//nav//a[text()="Rejections"]`)),
			chromedp.WaitVisible(chromedp.CSS("#rejection-reasons")))
		if r := read(t, ctx, "reasons", chromedp.Text(chromedp.CSS("#rejection-reasons"))); !strings.Contains(r, "unknown_gateway") || !strings.Contains(r, "2") {
			t.Errorf("rejections by reason: %q", r)
		}
		checkPage(t, ctx, "rejections")
	})
	t.Run("bulk replay of the invalid ones", func(t *testing.T) {
		fake.setAnswer(func(string, int) (int, string, time.Duration) { return 200, "VERIFIED", 0 })
		browse(t, ctx, "filtered list", chromedp.Navigate(admin+"/notifications?gateway=paypal&state=invalid"),
			chromedp.WaitVisible(chromedp.CSS("#bulk-replay")))
		checkPage(t, ctx, "notifications-filtered")
		browse(t, ctx, "confirmation", chromedp.Click(chromedp.CSS("#bulk-replay")), chromedp.WaitVisible(chromedp.CSS("#bulk-confirm")))
		if c := read(t, ctx, "count", chromedp.Text(chromedp.CSS("#bulk-count"))); c != "2" {
			t.Errorf("bulk replay selects %q, want 2", c)
		}
		checkPage(t, ctx, "bulk-replay")
		browse(t, ctx, "confirm", chromedp.Click(chromedp.CSS("#bulk-confirm")), chromedp.WaitVisible(chromedp.CSS("#flash")))
		d.waitState(uint64(n-1), "applied")
		d.waitState(uint64(n), "applied")
	})
	t.Run("reissue an order's downloads", func(t *testing.T) {
		browse(t, ctx, "order", chromedp.Navigate(admin+"/orders/D-1"), chromedp.WaitVisible(chromedp.CSS("#reissue")))
		checkPage(t, ctx, "order-deliveries")
		browse(t, ctx, "scroll", chromedp.Evaluate[chromedp.Void](`document.getElementById("deliveries").scrollIntoView({block: "start"})`))
		shot(t, ctx, "order-deliveries")
		browse(t, ctx, "reissue", chromedp.Click(chromedp.CSS("#reissue")), chromedp.WaitVisible(chromedp.CSS("#flash")))
		if f := read(t, ctx, "flash", chromedp.Text(chromedp.CSS("#flash"))); !strings.Contains(f, "Downloads reissued") {
			t.Errorf("after reissuing: %q", f)
		}
		waitFor(t, "the reissue email sent", 10*time.Second, func() bool {
			var ob struct {
				Items []struct {
					State  string
					Effect ipn.Effect
				}
			}
			d.api("GET", "/api/outbox?state=sent", nil, &ob)
			for _, it := range ob.Items {
				if it.Effect.OrderID == "D-1" && it.Effect.Kind == ipn.EffectEmailCustomer && strings.Contains(it.Effect.Cause, "/deliveries/reissue/") {
					return true
				}
			}
			return false
		})
	})
	t.Run("a live update keeps the keyboard focus", func(t *testing.T) {
		browse(t, ctx, "list", chromedp.Navigate(admin+"/notifications"), chromedp.WaitVisible(chromedp.CSS("#notifications")),
			chromedp.Poll[chromedp.Void](`document.getElementById("live-status").textContent.includes("on.")`,
				chromedp.WithPollingTimeout(10*time.Second)),
			chromedp.Focus(chromedp.CSS(`#notifications a[href="/notifications/1"]`)))
		payPal("txn_id", "T-LIVE", "invoice", "L-1")
		browse(t, ctx, "the new notification in the list",
			chromedp.WaitVisible(chromedp.Search(`//table[@id="notifications"]//a[text()="L-1"]`)))
		if f := read(t, ctx, "focus", chromedp.Evaluate[string](`document.activeElement.getAttribute("href") || document.activeElement.tagName`)); f != "/notifications/1" {
			t.Errorf("after a live update the focus is on %q, want the link it was on", f)
		}
	})
	t.Run("every page: accessibility basics", func(t *testing.T) {
		for _, p := range []struct{ path, name string }{{"/", "overview-a11y"}, {"/notifications", "notifications-a11y"},
			{"/orders", "orders-a11y"}, {"/outbox?state=", "outbox-a11y"}, {"/outbox/1", "outbox-item-a11y"}} {
			browse(t, ctx, p.path, chromedp.Navigate(admin+p.path), chromedp.WaitVisible(chromedp.CSS("h1")))
			checkPage(t, ctx, p.name)
		}
	})
	t.Run("readable without JavaScript", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		// The tab's first action runs without a deadline: the tab lives
		// as long as the context of its first run.
		if _, err := chromedp.Run(tab, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
			return chromedp.Void{}, err
		}); err != nil {
			t.Fatalf("disabling scripts: %v", err)
		}
		for path, want := range map[string]string{"/": "Orders waiting for a decision", "/notifications": "SIM",
			"/subscriptions": "I-SUB1", "/subscriptions/I-SUB1": "T-S1", "/rejections": "unknown_gateway",
			"/orders/D-1": "Reissue downloads", fmt.Sprintf("/notifications/%d", paid): "José"} {
			if path == "/notifications" {
				want = "D-1"
			}
			browse(t, tab, path, chromedp.Navigate(admin+path), chromedp.WaitReady(chromedp.CSS("main")))
			text := read(t, tab, "main", chromedp.Text(chromedp.CSS("main")))
			if !strings.Contains(text, want) {
				t.Errorf("%s without JavaScript lacks %q", path, want)
			}
			if path == "/" {
				// live.js did not run: its status line says so.
				if live := read(t, tab, "live status", chromedp.Text(chromedp.CSS("#live-status"))); !strings.Contains(live, "off") {
					t.Errorf("the overview's live status with scripts disabled: %q", live)
				}
			}
		}
	})
}
