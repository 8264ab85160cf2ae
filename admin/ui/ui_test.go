package ui_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
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
	"ipnd/admin/ui"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/store"
)

type failures struct {
	mu             sync.Mutex
	wrong, limited int
}

func (f *failures) count(limited bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if limited {
		f.limited++
	} else {
		f.wrong++
	}
}

func newDashboard(t *testing.T) (*httptest.Server, *store.DB, *failures) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	f := &failures{}
	srv := httptest.NewServer(admin.Handler(admin.Options{Store: db, Token: "s3cret-admin-token",
		Gateways: []gateway.Gateway{g}, AuthFailed: f.count}))
	t.Cleanup(func() { srv.Close(); db.Close() })
	return srv, db, f
}

func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func signIn(t *testing.T, srv *httptest.Server, c *http.Client) string {
	t.Helper()
	resp, _ := do(t, c, "POST", srv.URL+"/login", url.Values{"token": {"s3cret-admin-token"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("sign in: %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := do(t, c, "GET", srv.URL+"/", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("overview after sign in: %d\n%s", resp.StatusCode, page)
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("overview has no CSRF field")
	}
	return m[1]
}

// TestDashboardSignIn: the pages need a session; a wrong token is 401
// and counted, past the limit 429; the right one sets an HttpOnly,
// SameSite=Strict cookie; sign out ends the session.
func TestDashboardSignIn(t *testing.T) {
	srv, _, f := newDashboard(t)
	c := browser(t)
	resp, _ := do(t, c, "GET", srv.URL+"/", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("GET / without a session: %d to %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := do(t, c, "GET", srv.URL+"/login", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `<label for="token">`) {
		t.Fatalf("GET /login: %d\n%s", resp.StatusCode, page)
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
		"X-Content-Type-Options":  "nosniff", "Referrer-Policy": "no-referrer"} {
		if got := resp.Header.Get(h); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	resp, page = do(t, c, "POST", srv.URL+"/login", url.Values{"token": {"wrong"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "Wrong token") || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	if f.wrong != 1 {
		t.Errorf("wrong tokens counted: %d, want 1", f.wrong)
	}
	for range 12 {
		resp, _ = do(t, c, "POST", srv.URL+"/login", url.Values{"token": {"wrong"}})
	}
	if resp.StatusCode != http.StatusTooManyRequests || f.wrong != 10 || f.limited != 3 {
		t.Errorf("13 wrong tokens: last %d, counted %d wrong and %d limited; want 429, 10 and 3", resp.StatusCode, f.wrong, f.limited)
	}
}

func TestDashboardSession(t *testing.T) {
	srv, _, _ := newDashboard(t)
	c := browser(t)
	resp, _ := do(t, c, "POST", srv.URL+"/login", url.Values{"token": {"s3cret-admin-token"}})
	var ck *http.Cookie
	for _, x := range resp.Cookies() {
		if x.Name == "ipnd_session" {
			ck = x
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || len(ck.Value) < 40 || ck.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, random, not Secure over plain HTTP", ck)
	}
	for _, p := range []string{"/", "/notifications", "/orders", "/outbox", "/static/style.css", "/static/live.js"} {
		if resp, page := do(t, c, "GET", srv.URL+p, nil); resp.StatusCode != 200 {
			t.Errorf("GET %s: %d\n%s", p, resp.StatusCode, page)
		}
	}
	m := csrfRE.FindStringSubmatch(func() string { _, p := do(t, c, "GET", srv.URL+"/", nil); return p }())
	if m == nil {
		t.Fatal("no CSRF token on the overview")
	}
	// Sign out without the CSRF token: refused; with it: the session ends.
	if resp, _ := do(t, c, "POST", srv.URL+"/logout", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign out without CSRF: %d, want 403", resp.StatusCode)
	}
	if resp, _ := do(t, c, "POST", srv.URL+"/logout", url.Values{"csrf": {m[1]}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign out: %d, want 303", resp.StatusCode)
	}
	// The old cookie is dead on the server, even if a browser kept it.
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.AddCookie(ck)
	r2, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusSeeOther {
		t.Errorf("old session cookie after sign out: %d, want 303 to /login", r2.StatusCode)
	}
}

// TestDashboardCSRF: a state-changing POST without the session's CSRF
// token, or with another's, is 403 and changes nothing.
func TestDashboardCSRF(t *testing.T) {
	srv, db, _ := newDashboard(t)
	id, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
		ContentType: "application/json", Body: []byte(`{"type":"x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	csrf := signIn(t, srv, c)
	other := signIn(t, srv, browser(t))
	path := srv.URL + "/notifications/" + itoa(id) + "/replay"
	for name, form := range map[string]url.Values{"none": {}, "other session's": {"csrf": {other}}, "empty": {"csrf": {""}}} {
		if resp, _ := do(t, c, "POST", path, form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("replay with %s CSRF token: %d, want 403", name, resp.StatusCode)
		}
	}
	if resp, _ := do(t, c, "POST", path, url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("replay with the CSRF token: %d, want 303", resp.StatusCode)
	}
	resp, page := do(t, c, "GET", srv.URL+"/notifications/"+itoa(id), nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `&#34;type&#34;: &#34;x&#34;`) {
		t.Errorf("notification page: %d, want the pretty-printed body\n%s", resp.StatusCode, page)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// TestDashboardTokenRotation: the sessions are kept across handlers (a
// config reload), but one opened with the old admin token is refused
// once the token changed.
func TestDashboardTokenRotation(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sessions := ui.NewSessions(0)
	h := &swap{h: admin.Handler(admin.Options{Store: db, Token: "s3cret-admin-token", Sessions: sessions})}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := browser(t)
	signIn(t, srv, c)
	h.set(admin.Handler(admin.Options{Store: db, Token: "s3cret-admin-token", Sessions: sessions}))
	if resp, _ := do(t, c, "GET", srv.URL+"/", nil); resp.StatusCode != 200 {
		t.Errorf("after a reload with the same token: %d, want 200 (still signed in)", resp.StatusCode)
	}
	h.set(admin.Handler(admin.Options{Store: db, Token: "rotated-token", Sessions: sessions}))
	if resp, _ := do(t, c, "GET", srv.URL+"/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after the token changed: %d, want 303 to /login", resp.StatusCode)
	}
}

type swap struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *swap) set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }

func (s *swap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	h.ServeHTTP(w, r)
}

// TestDashboardSearch: the search is posted (the term stays out of
// URLs) and finds notifications by customer email, txn id or order id.
func TestDashboardSearch(t *testing.T) {
	srv, db, _ := newDashboard(t)
	for i, email := range []string{"alice@example.com", "bob@example.com", "alice@example.com"} {
		body := `{"type":"payment.completed","data":{"order_id":"O` + strconv.Itoa(i) + `","txn_id":"T` + strconv.Itoa(i) +
			`","amount":"1.00","currency":"USD","customer_email":"` + email + `"}}`
		if _, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
			ContentType: "application/json", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	c := browser(t)
	csrf := signIn(t, srv, c)
	for term, want := range map[string][]string{"ALICE@example.com": {"O0", "O2"}, "T1": {"O1"}, "O2": {"O2"}, "nobody@example.com": nil} {
		resp, page := do(t, c, "POST", srv.URL+"/notifications", url.Values{"csrf": {csrf}, "q": {term}})
		if resp.StatusCode != 200 {
			t.Fatalf("search %q: %d", term, resp.StatusCode)
		}
		got := regexp.MustCompile(`<a href="/orders/(O\d)">`).FindAllStringSubmatch(page, -1)
		var ids []string
		for _, m := range got {
			ids = append(ids, m[1])
		}
		if strings.Join(ids, ",") != strings.Join(reverse(want), ",") {
			t.Errorf("search %q: orders %v, want %v", term, ids, reverse(want))
		}
		if strings.Contains(page, "?q=") {
			t.Errorf("search %q: the page links the term in a URL", term)
		}
	}
	if resp, _ := do(t, c, "POST", srv.URL+"/notifications", url.Values{"q": {"alice@example.com"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("search without the CSRF token: %d, want 403", resp.StatusCode)
	}
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// TestDashboardNoInline: no page carries an inline script, an event
// handler attribute or a style attribute (the CSP would block them), and
// every form control has a label.
func TestDashboardNoInline(t *testing.T) {
	srv, db, _ := newDashboard(t)
	id, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
		ContentType: "application/x-www-form-urlencoded", Body: []byte("txn_id=T1&mc_gross=1.00&invoice=O1")})
	if err != nil {
		t.Fatal(err)
	}
	o, err := ipn.NewRegisteredOrder("O-1", "1.00", "USD", "a@example.com", "", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	signIn(t, srv, c)
	inlineAttr := regexp.MustCompile(`(?i)\son[a-z]+=|\sstyle=|<style`)
	script := regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)
	inline := func(page string) string {
		if m := inlineAttr.FindString(page); m != "" {
			return m
		}
		for _, m := range script.FindAllStringSubmatch(page, -1) {
			if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
				return m[0]
			}
		}
		return ""
	}
	control := regexp.MustCompile(`<(?:input|select|textarea)\b[^>]*>`)
	for _, p := range []string{"/", "/notifications", "/notifications/" + itoa(id), "/orders", "/orders/O-1", "/outbox", "/outbox?state=",
		"/subscriptions", "/rejections", "/notifications-replay?state=received"} {
		_, page := do(t, c, "GET", srv.URL+p, nil)
		if m := inline(page); m != "" {
			t.Errorf("%s: inline script or style: %q", p, m)
		}
		for _, ctl := range control.FindAllString(page, -1) {
			if strings.Contains(ctl, `type="hidden"`) {
				continue
			}
			idm := regexp.MustCompile(`id="([^"]+)"`).FindStringSubmatch(ctl)
			if idm == nil || !strings.Contains(page, `<label for="`+idm[1]+`"`) {
				t.Errorf("%s: control without a label: %s", p, ctl)
			}
		}
	}
	_, login := do(t, browser(t), "GET", srv.URL+"/login", nil)
	if inline(login) != "" {
		t.Error("/login has inline script or style")
	}
}
