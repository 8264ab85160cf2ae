package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// postDecision posts body to path with the admin token and an
// Idempotency-Key, and returns the status and the answer.
func postDecision(t *testing.T, srv *httptest.Server, path, body, key string) (int, DecisionAnswer, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans DecisionAnswer
	json.Unmarshal(b, &ans)
	return resp.StatusCode, ans, string(b)
}

// TestIdempotencyKeyWithAnotherBody: an Idempotency-Key sent again with
// another body for the same order and decision (another note's text)
// answered 200 "repeated" and silently dropped the second request; it
// is refused (409), as a key reused for another order or decision is.
// The same body again is still the repeat it was.
func TestIdempotencyKeyWithAnotherBody(t *testing.T) {
	srv, _ := newAPI(t)
	req, _ := http.NewRequest("POST", srv.URL+"/api/orders", strings.NewReader(
		`{"id":"K-1","amount":"5.00","currency":"USD","customer_email":"kim@example.com"}`))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create order: %d", resp.StatusCode)
	}
	if st, ans, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"first"}`, "k-1"); st != 200 || ans.Repeated {
		t.Fatalf("first note: %d %s", st, b)
	}
	if st, ans, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"first"}`, "k-1"); st != 200 || !ans.Repeated {
		t.Fatalf("the same note again: %d %s, want 200 repeated", st, b)
	}
	st, ans, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"second, another one"}`, "k-1")
	if st != http.StatusConflict || !strings.Contains(b, "idempotency key reused") {
		t.Errorf("the key again with another note: %d repeated=%v %s, want 409", st, ans.Repeated, b)
	}
	if st, _, b := postDecision(t, srv, "/api/orders/K-1/cancel", `{"note":"x"}`, "k-1"); st != http.StatusConflict {
		t.Errorf("the key again for a cancel: %d %s, want 409", st, b)
	}
	if st, _, b := postDecision(t, srv, "/api/orders/K-1/notes", `{"text":"k"}`, strings.Repeat("k", 256)); st != http.StatusBadRequest {
		t.Errorf("a 256-byte key: %d %s, want 400", st, b)
	}
}
