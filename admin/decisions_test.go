package admin

import (
	"net/http"
	"strings"
	"testing"
)

// Bad decision requests are refused with a status that says why, and
// nothing needs the token less than the rest of /api.
func TestDecisionRequestErrors(t *testing.T) {
	srv, _ := newAPI(t)
	for _, c := range []struct {
		method, path, body string
		token              bool
		want               int
	}{
		{"POST", "/api/orders/NOPE/approve", "", true, http.StatusNotFound},
		{"POST", "/api/orders/NOPE/approve", "", false, http.StatusUnauthorized},
		{"POST", "/api/orders/NOPE/cancel", `{"version": -1}`, true, http.StatusBadRequest},
		{"POST", "/api/orders/NOPE/cancel", `{"nope": 1}`, true, http.StatusBadRequest},
		{"POST", "/api/orders/NOPE/cancel", `not json`, true, http.StatusBadRequest},
		{"POST", "/api/orders/NOPE/dispute", `{"outcome": "maybe"}`, true, http.StatusBadRequest},
		{"POST", "/api/orders/NOPE/notes", `{"text": "  "}`, true, http.StatusBadRequest},
		{"POST", "/api/orders/NOPE/notes", `{"text": "` + strings.Repeat("x", 5000) + `"}`, true, http.StatusBadRequest},
		{"POST", "/api/outbox/7/discard", "", true, http.StatusNotFound},
		{"POST", "/api/outbox/x/discard", "", true, http.StatusBadRequest},
		{"POST", "/api/outbox/7/resend", "", true, http.StatusNotFound},
		{"POST", "/api/outbox/retry?state=pending", "", true, http.StatusBadRequest},
		{"POST", "/api/outbox/retry?state=dead&kind=fax", "", true, http.StatusBadRequest},
		{"POST", "/api/outbox/retry?state=dead", "", true, http.StatusAccepted},
		{"POST", "/api/outbox/7", "", true, http.StatusNotFound},
		{"GET", "/api/outbox/7", "", true, http.StatusNotFound},
		{"GET", "/api/outbox?state=discarded", "", true, http.StatusOK},
		{"GET", "/api/events", "", false, http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		if c.token {
			req.Header.Set("Authorization", "Bearer tok")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s %.40s: %d, want %d", c.method, c.path, c.body, resp.StatusCode, c.want)
		}
	}
}
