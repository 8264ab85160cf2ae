package ui_test

import (
	"bufio"
	"context"
	"errors"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/store"
)

// TestCrossSiteSignInCannotLockOut: any web page the merchant visited
// while the admin listener was reachable (the SSH tunnel open) could
// post wrong tokens to /login from the merchant's own browser: they
// were counted against the merchant's address, and past the limit the
// merchant (and ipnd's CLI over the same tunnel) was answered 429. A
// cross-origin POST is refused before the token is compared or
// counted; the merchant still signs in.
func TestCrossSiteSignInCannotLockOut(t *testing.T) {
	srv, _, f := newDashboard(t)
	c := browser(t)
	for range 15 {
		req, _ := http.NewRequest("POST", srv.URL+"/login", strings.NewReader(url.Values{"token": {"guess"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-site POST /login: %d, want 403", resp.StatusCode)
		}
	}
	if f.wrong != 0 || f.limited != 0 {
		t.Errorf("cross-site sign-ins counted as %d wrong and %d limited tokens, want none", f.wrong, f.limited)
	}
	csrf := signIn(t, srv, c)
	// A cross-origin POST with the session's cookie and CSRF token (a
	// browser would not send the cookie with SameSite=Strict; this is
	// the second line) is refused too.
	req, _ := http.NewRequest("POST", srv.URL+"/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST /logout: %d, want 403", resp.StatusCode)
	}
	// A same-origin one (what the pages send) works.
	req, _ = http.NewRequest("POST", srv.URL+"/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", srv.URL)
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("same-origin POST /logout: %d, want 303", resp.StatusCode)
	}
}

// TestDashboardEscapesStoredText: text from outside (a notification's
// body, form fields and headers, an order id a buyer chose, its
// description, a note) is shown as text on every page that shows it,
// never as markup: no stored XSS.
func TestDashboardEscapesStoredText(t *testing.T) {
	srv, db, _ := newDashboard(t)
	const xss = `<script>alert(1)</script><img src=x onerror=alert(2)>`
	orderID := `O"><svg onload=alert(3)>` // printable: a valid order id
	jsonBody := `{"type":"payment.completed","data":{"order_id":` + strconv.Quote(orderID) + `,"txn_id":"T1","amount":"1.00","currency":"USD","customer_email":"a@example.com","customer_name":` + strconv.Quote(xss) + `}}`
	jid, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
		ContentType: "application/json", Body: []byte(jsonBody), RemoteAddr: "203.0.113.1:1",
		Headers: http.Header{"X-Evil": {xss}}})
	if err != nil {
		t.Fatal(err)
	}
	fid, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
		ContentType: "application/x-www-form-urlencoded", Body: []byte(url.Values{"invoice": {xss}, xss: {"v"}}.Encode()),
		DedupKey: "f"})
	if err != nil {
		t.Fatal(err)
	}
	o, err := ipn.NewRegisteredOrder(orderID, "1.00", "USD", "a@example.com", xss, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	csrf := signIn(t, srv, c)
	orderPath := "/orders/" + url.PathEscape(orderID)
	if resp, page := do(t, c, "POST", srv.URL+orderPath+"/decide", url.Values{"csrf": {csrf}, "decision": {"note"},
		"note": {xss}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("note: %d\n%s", resp.StatusCode, page)
	}
	for _, p := range []string{"/notifications", "/notifications/" + itoa(jid), "/notifications/" + itoa(fid), orderPath, "/orders", "/"} {
		resp, page := do(t, c, "GET", srv.URL+p, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", p, resp.StatusCode)
		}
		for _, raw := range []string{"<script>alert", "<img src=x", "<svg onload", `"><svg`} {
			if strings.Contains(page, raw) {
				t.Errorf("GET %s: %q unescaped in the page", p, raw)
			}
		}
	}
	_, page := do(t, c, "GET", srv.URL+orderPath, nil)
	if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the order page does not show the note and description as text:\n%s", page)
	}
}

// TestOrderIDsWithURLCharacters: an order id with "#" (a Shopify-style
// "#1001"), "?" or "/" ("INV/2024/7") was linked as it was: the link
// led to the orders list (a fragment), another order or nowhere (404),
// the decision forms posted to the wrong URL, and with "/" neither the
// dashboard nor the API (GET /api/orders/INV%2F2024%2F7, which the CLI
// sends) found the order. Every link and form now escapes the id, and
// an escaped "/" is routed as part of the id.
func TestOrderIDsWithURLCharacters(t *testing.T) {
	srv, db, _ := newDashboard(t)
	c := browser(t)
	signIn(t, srv, c)
	hrefRE := regexp.MustCompile(`<a href="(/orders/[^"]*)">([^<]*)</a>`)
	for _, id := range []string{"#1001", "INV/2024/7", "A?b=1", "a b%2F"} {
		o, err := ipn.NewRegisteredOrder(id, "1.00", "USD", "a@example.com", "", nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateOrder(o); err != nil {
			t.Fatal(err)
		}
		_, list := do(t, c, "GET", srv.URL+"/orders", nil)
		var href string
		for _, m := range hrefRE.FindAllStringSubmatch(list, -1) {
			if html.UnescapeString(m[2]) == id {
				href = html.UnescapeString(m[1])
			}
		}
		if href == "" {
			t.Fatalf("%q: no link in the orders list", id)
		}
		resp, page := do(t, c, "GET", srv.URL+href, nil)
		if resp.StatusCode != 200 || !strings.Contains(page, "<h1>Order "+html.EscapeString(id)) {
			t.Errorf("%q: its link %s answers %d, not its page", id, href, resp.StatusCode)
			continue
		}
		action := regexp.MustCompile(`<form method="post" action="([^"]*)">\s*<input type="hidden" name="csrf" value="([^"]*)"><input type="hidden" name="key" value="([^"]*)">\s*<input type="hidden" name="decision" value="note">`).FindStringSubmatch(page)
		if action == nil {
			t.Fatalf("%q: no note form", id)
		}
		resp, _ = do(t, c, "POST", srv.URL+html.UnescapeString(action[1]), url.Values{"csrf": {action[2]}, "key": {action[3]},
			"decision": {"note"}, "note": {"checked"}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("%q: the note form (action %s) answers %d, want 303", id, action[1], resp.StatusCode)
		}
		got, _ := db.GetOrder(id)
		if n := len(got.History); n == 0 || !strings.Contains(got.History[n-1].Reason, "checked") {
			t.Errorf("%q: the note is not in its history: %+v", id, got.History)
		}
		req, _ := http.NewRequest("GET", srv.URL+"/api/orders/"+url.PathEscape(id), nil)
		req.Header.Set("Authorization", "Bearer s3cret-admin-token")
		r2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r2.Body.Close()
		if r2.StatusCode != 200 {
			t.Errorf("%q: GET /api/orders/%s: %d, want 200", id, url.PathEscape(id), r2.StatusCode)
		}
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestSessionLifetime: a session kept busy lived for ever on the
// server (only its idle time was limited), though its cookie expires
// 12 hours after sign-in: a copied cookie kept working as long as it
// was used. It ends ui.SessionMax after sign-in now. And signing in
// again ends the session the browser had (its id is not kept beside
// the new one).
func TestSessionLifetime(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv := httptest.NewServer(admin.Handler(admin.Options{Store: db, Token: "s3cret-admin-token", Now: clk.Now}))
	defer srv.Close()
	c := browser(t)
	signIn(t, srv, c)
	u, _ := url.Parse(srv.URL)
	first := c.Jar.Cookies(u)
	var ck *http.Cookie
	for _, x := range first {
		if x.Name == "ipnd_session" {
			ck = x
		}
	}
	if ck == nil {
		t.Fatal("no session cookie")
	}
	stolen := func() int {
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.AddCookie(ck)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 4 { // busy: a request every 3 hours, 12 hours long
		clk.add(3 * time.Hour)
		if st := stolen(); st != 200 {
			t.Fatalf("within the session's life: %d", st)
		}
	}
	clk.add(time.Hour)
	if st := stolen(); st != http.StatusSeeOther {
		t.Errorf("13 hours after sign-in, used every 3 hours: %d, want 303 to /login", st)
	}
	// Signing in again ends the previous session.
	clk.add(time.Hour)
	c2 := browser(t)
	signIn(t, srv, c2)
	ck = nil
	for _, x := range c2.Jar.Cookies(u) {
		if x.Name == "ipnd_session" {
			ck = x
		}
	}
	signIn(t, srv, c2) // the same browser, again
	if st := stolen(); st != http.StatusSeeOther {
		t.Errorf("the session before signing in again: %d, want 303 to /login", st)
	}
}

// TestOverviewWhenDegraded: with the appliance unhealthy the overview
// still renders, says "Degraded" with the reason /healthz gives, and the
// other pages work; a closed store gives a 503 page that says so, not a
// blank or a stack.
func TestOverviewWhenDegraded(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.Handler(admin.Options{Store: db, Token: "s3cret-admin-token",
		Healthy: func() error { return errors.New("ingest answers 503: no space left on device <data dir>") }}))
	defer srv.Close()
	c := browser(t)
	signIn(t, srv, c)
	resp, page := do(t, c, "GET", srv.URL+"/", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, "Degraded: ingest answers 503: no space left on device &lt;data dir&gt;") {
		t.Errorf("degraded overview: %d\n%s", resp.StatusCode, page)
	}
	db.Close()
	for _, p := range []string{"/", "/notifications", "/orders", "/outbox"} {
		resp, page := do(t, c, "GET", srv.URL+p, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(page, "The store is closed.") {
			t.Errorf("GET %s with the store closed: %d\n%s", p, resp.StatusCode, page)
		}
	}
}

// TestEventsEndOnSignOut: a browser's live stream (/events) went on
// after its session ended (signed out, or from a copied cookie): it
// ends now at the next event.
func TestEventsEndOnSignOut(t *testing.T) {
	srv, db, _ := newDashboard(t)
	c := browser(t)
	csrf := signIn(t, srv, c)
	req, _ := http.NewRequest("GET", srv.URL+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /events: %d", resp.StatusCode)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	if l := <-lines; l == "" {
		t.Fatal("no first line")
	}
	if r, _ := do(t, c, "POST", srv.URL+"/logout", url.Values{"csrf": {csrf}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", r.StatusCode)
	}
	if _, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
		Body: []byte("{}"), DedupKey: "after-sign-out"}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return // ended
			}
			if strings.HasPrefix(l, "event:") {
				t.Fatalf("an event after sign out: %q", l)
			}
		case <-timeout:
			t.Fatal("the stream is still open 10 s after sign out and an event")
		}
	}
}

// TestBackIsLocal: the "back" field of the outbox forms refused
// "//host" and "/\host" but let "/<tab>/evil.example" through, which a
// browser reads as //evil.example (it drops tabs and newlines from
// URLs): a redirect off the dashboard. Only a local path is followed.
func TestBackIsLocal(t *testing.T) {
	srv, _, _ := newDashboard(t)
	c := browser(t)
	csrf := signIn(t, srv, c)
	u, _ := url.Parse(srv.URL)
	for _, back := range []string{"/\t/evil.example", "/\x00/evil.example", "/\n/evil.example", "https://evil.example", "//evil.example", "/\\evil.example"} {
		// Not through the client: it refuses to read such a Location.
		req, _ := http.NewRequest("POST", srv.URL+"/outbox-retry-dead", strings.NewReader(url.Values{"csrf": {csrf}, "back": {back}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, ck := range c.Jar.Cookies(u) {
			req.AddCookie(ck)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/outbox?") {
			t.Errorf("back %q: %d to %q, want 303 to /outbox", back, resp.StatusCode, loc)
		}
	}
	resp, _ := do(t, c, "POST", srv.URL+"/outbox-retry-dead", url.Values{"csrf": {csrf}, "back": {"/orders/INV%2F1"}})
	if loc := resp.Header.Get("Location"); loc != "/orders/INV%2F1?done=retry" {
		t.Errorf("a local back: to %q", loc)
	}
}

// TestGetChangesNothing: every state-changing route takes POST only: a
// GET (a link, an <img> on another site, a prefetch) is refused and
// changes nothing, sign-out included.
func TestGetChangesNothing(t *testing.T) {
	srv, db, _ := newDashboard(t)
	id, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
		ContentType: "application/json", Body: []byte(`{"type":"x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	o, err := ipn.NewRegisteredOrder("G-1", "1.00", "USD", "g@example.com", "", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	signIn(t, srv, c)
	_, p0, _ := db.Get(id)
	for _, p := range []string{"/logout", "/orders/G-1/decide?decision=cancel", "/notifications/" + itoa(id) + "/replay",
		"/outbox/1/retry", "/outbox/1/discard", "/outbox/1/resend", "/outbox-retry-dead"} {
		if resp, _ := do(t, c, "GET", srv.URL+p, nil); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: %d, want 405", p, resp.StatusCode)
		}
	}
	if resp, _ := do(t, c, "GET", srv.URL+"/", nil); resp.StatusCode != 200 {
		t.Errorf("after GET /logout: %d, want still signed in", resp.StatusCode)
	}
	got, _ := db.GetOrder("G-1")
	_, p1, _ := db.Get(id)
	if got.Status != o.Status || len(got.History) != len(o.History) || len(p1.History) != len(p0.History) {
		t.Errorf("GETs changed the order (%s, %d entries) or the notification (%d entries)", got.Status, len(got.History), len(p1.History))
	}
}
