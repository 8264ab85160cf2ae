package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/store"
)

func newAPI(t *testing.T) (*httptest.Server, *store.DB) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok", Gateways: []gateway.Gateway{g}}))
	t.Cleanup(func() { srv.Close(); db.Close() })
	return srv, db
}

func getJSON(t *testing.T, srv *httptest.Server, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: not JSON: %s", path, b)
	}
	return resp.StatusCode
}

func TestNotificationsAPI(t *testing.T) {
	srv, db := newAPI(t)
	for i := 1; i <= 5; i++ {
		body := fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":"O%d"}}`, i%2)
		if i == 3 {
			body = "\xff\xfe not utf-8"
		}
		db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(), Body: []byte(body),
			ContentType: "application/json", DedupKey: fmt.Sprint(i)})
	}
	var one Notification
	if code := getJSON(t, srv, "/api/notifications/3", &one); code != 200 || one.Body != nil ||
		one.BodyBase64 != base64.StdEncoding.EncodeToString([]byte("\xff\xfe not utf-8")) {
		t.Errorf("non-UTF-8 body: %d %+v", code, one)
	}
	if code := getJSON(t, srv, "/api/notifications/2", &one); code != 200 || one.Body == nil ||
		!strings.Contains(*one.Body, "O0") || one.Event == nil || one.Event.OrderID != "O0" || one.State != ipn.StateReceived {
		t.Errorf("notification 2: %d %+v", code, one)
	}
	var page NotificationList
	getJSON(t, srv, "/api/notifications?limit=2", &page)
	if len(page.Notifications) != 2 || page.Notifications[0].ID != 5 || page.NextBefore != 4 {
		t.Errorf("page 1 = %+v", page)
	}
	getJSON(t, srv, fmt.Sprintf("/api/notifications?limit=2&before=%d", page.NextBefore), &page)
	if len(page.Notifications) != 2 || page.Notifications[0].ID != 3 || page.Notifications[1].ID != 2 {
		t.Errorf("page 2 = %+v", page)
	}
	getJSON(t, srv, "/api/notifications?order=O1", &page)
	if len(page.Notifications) != 2 || page.Notifications[0].ID != 5 || page.Notifications[1].ID != 1 {
		t.Errorf("order filter = %+v", page)
	}
	var e map[string]string
	if code := getJSON(t, srv, "/api/notifications/77", &e); code != 404 || e["error"] == "" {
		t.Errorf("missing id = %d %v", code, e)
	}
	if code := getJSON(t, srv, "/api/nothing", &e); code != 404 || e["error"] == "" {
		t.Errorf("unknown route = %d %v", code, e)
	}
}

// /healthz answers 503 with a JSON reason when a worker has stopped or
// the store is closed.
func TestHealthz(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var stopped error
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok", OpenMetrics: true, Healthy: func() error { return stopped }}))
	defer srv.Close()
	get := func() (int, map[string]string) {
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]string
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if code, m := get(); code != 200 || m["status"] != "ok" {
		t.Errorf("healthy: %d %v", code, m)
	}
	stopped = errors.New("outbox worker has stopped")
	if code, m := get(); code != 503 || m["error"] != "outbox worker has stopped" {
		t.Errorf("worker stopped: %d %v", code, m)
	}
	stopped = nil
	db.Close()
	if code, m := get(); code != 503 || m["error"] == "" {
		t.Errorf("store closed: %d %v", code, m)
	}
}

// The Authorization scheme is case-insensitive (RFC 9110 §11.1): "bearer"
// and "BEARER" work like "Bearer"; a wrong token or scheme does not.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	srv, _ := newAPI(t)
	for _, c := range []struct {
		header string
		code   int
	}{
		{"Bearer tok", 200},
		{"bearer tok", 200},
		{"BEARER tok", 200},
		{"Bearer  tok ", 200},
		{"bearer tok2", 401},
		{"Basic tok", 401},
		{"Bearertok", 401},
		{"tok", 401},
		{"", 401},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/api/notifications", nil)
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("Authorization %q: %d, want %d", c.header, resp.StatusCode, c.code)
		}
	}
}
