package ui_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
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
