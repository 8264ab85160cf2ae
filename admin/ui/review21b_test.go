package ui_test

import (
	"fmt"
	"html"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestSubscriptionIDsWithURLCharacters: a subscription id comes from the
// gateway and may hold "/", "#" or "?" as an order id may; the links to
// a subscription (the subscriptions list, the order's facts, the
// notification's "what decided it") and from it to its order put the id
// in the path as it was: they led to another page or nowhere. Each
// link now escapes the id, and following it opens the right page.
func TestSubscriptionIDsWithURLCharacters(t *testing.T) {
	srv, db, _ := newDashboard(t)
	ran := runPipeline(t, db)
	subs := []string{"SUB/2024/7", "S#1", "S?x=1", "S%2F"}
	orders := []string{"#1001", "INV/7", "A?b=1", "a b"}
	var batch []*ipn.Notification
	for i, sub := range subs {
		body := fmt.Sprintf(`{"type":"subscription.payment","data":{"order_id":%q,"txn_id":"T%d","amount":"1.00","currency":"USD","customer_email":"c@example.com","subscription_id":%q}}`,
			orders[i], i, sub)
		batch = append(batch, &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(), ContentType: "application/json",
			Body: []byte(body), DedupKey: fmt.Sprint("m", i)})
	}
	if err := db.BulkAppend(batch); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); db.Cursor() < uint64(len(batch)); {
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline processed %d of %d", db.Cursor(), len(batch))
		}
		select {
		case err := <-ran:
			t.Fatalf("pipeline stopped: %v", err)
		case <-db.Wake():
		case <-time.After(5 * time.Millisecond):
		}
	}
	c := browser(t)
	signIn(t, srv, c)
	// follow finds the links whose text is text under prefix in page and
	// checks that each opens the page whose heading is want.
	follow := func(from, page, prefix, text, want string) {
		t.Helper()
		re := regexp.MustCompile(`<a href="(` + regexp.QuoteMeta(prefix) + `[^"]*)">(?:subscription )?([^<]*)</a>`)
		found := false
		for _, m := range re.FindAllStringSubmatch(page, -1) {
			if html.UnescapeString(m[2]) != text {
				continue
			}
			found = true
			href := html.UnescapeString(m[1])
			resp, got := do(t, c, "GET", srv.URL+href, nil)
			if resp.StatusCode != http.StatusOK || !strings.Contains(got, "<h1>"+html.EscapeString(want)) {
				t.Errorf("%s: the link to %q (%s) answers %d, not the page %q", from, text, href, resp.StatusCode, want)
			}
		}
		if !found {
			t.Errorf("%s: no link to %q", from, text)
		}
	}
	_, list := do(t, c, "GET", srv.URL+"/subscriptions", nil)
	for i, sub := range subs {
		follow("/subscriptions", list, "/subscriptions/", sub, "Subscription "+sub)
		follow("/subscriptions", list, "/orders/", orders[i], "Order "+orders[i])
		_, page := do(t, c, "GET", srv.URL+"/notifications/"+fmt.Sprint(i+1), nil)
		follow("notification", page, "/subscriptions/", sub, "Subscription "+sub)
		follow("notification", page, "/orders/", orders[i], "Order "+orders[i])
	}
	_, page := do(t, c, "GET", srv.URL+"/orders/%231001", nil)
	follow("order #1001", page, "/subscriptions/", subs[0], "Subscription "+subs[0])
	for _, sub := range subs {
		_, sp := do(t, c, "GET", srv.URL+"/subscriptions/"+strings.NewReplacer("/", "%2F", "#", "%23", "?", "%3F", "%", "%25").Replace(sub), nil)
		follow("subscription "+sub, sp, "/orders/", orders[slicesIndex(subs, sub)], "Order "+orders[slicesIndex(subs, sub)])
	}
}

func slicesIndex(s []string, v string) int {
	for i := range s {
		if s[i] == v {
			return i
		}
	}
	return -1
}

// TestDecodedBodiesAreEscaped: a body in an odd charset whose bytes
// decode to markup (UTF-16, windows-1252, a form's fields) is shown as
// text, and malformed or large bodies in multi-byte charsets render.
func TestDecodedBodiesAreEscaped(t *testing.T) {
	srv, db, _ := newDashboard(t)
	utf16 := func(s string) []byte {
		var b []byte
		for _, r := range s {
			b = append(b, byte(r), 0)
		}
		return b
	}
	var many strings.Builder
	for i := range 9000 {
		fmt.Fprintf(&many, "k%d=%%3Cscript%%3E&", i)
	}
	bodies := []struct{ ct, body string }{
		{"text/plain; charset=utf-16le", string(utf16("<script>alert(1)</script>"))},
		{"text/plain; charset=windows-1252", "<script>alert(1)</script>\x93"},
		{"application/x-www-form-urlencoded", "charset=utf-16le&%3Cscript%3E=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E"},
		{"application/x-www-form-urlencoded; charset=shift_jis", many.String()},
		{"text/plain; charset=shift_jis", strings.Repeat("\xff\x81<", 20000)},
		{"text/plain; charset=iso-2022-jp", strings.Repeat("\x1b$B<script>", 5000)},
		{"text/plain; charset=replacement", "<script>"},
		{"text/plain; charset=\x00\xff<b>", "<script>"},
	}
	var batch []*ipn.Notification
	for i, b := range bodies {
		batch = append(batch, &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(), ContentType: b.ct, Body: []byte(b.body),
			DedupKey: fmt.Sprint("x", i)})
	}
	if err := db.BulkAppend(batch); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	signIn(t, srv, c)
	for i := range bodies {
		resp, page := do(t, c, "GET", fmt.Sprintf("%s/notifications/%d", srv.URL, i+1), nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("body %d (%s): %d", i+1, bodies[i].ct, resp.StatusCode)
		}
		for _, bad := range []string{"<script>", "<img", "<b>"} {
			if strings.Contains(page, bad) {
				t.Errorf("body %d (%s): %q unescaped in the page", i+1, bodies[i].ct, bad)
			}
		}
	}
}
