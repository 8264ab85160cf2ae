package admin

import (
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
	"ipnd/public"
	"ipnd/store"
)

// GET /api/rejections is bounded and filtered, newest first.
func TestRejectionsLimitAndFilter(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var all []public.Rejection // newest first, as the receiver keeps them
	for i := 1000; i > 0; i-- {
		reason := "bad_signature"
		if i%10 == 0 {
			reason = "rate_limited"
		}
		all = append(all, public.Rejection{At: time.Unix(int64(i), 0), Gateway: "test", Reason: reason, Detail: fmt.Sprint(i)})
	}
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok", Rejections: func() []public.Rejection { return all }}))
	defer srv.Close()
	var got struct{ Rejections []public.Rejection }
	if code := getJSON(t, srv, "/api/rejections", &got); code != 200 || len(got.Rejections) != 100 || got.Rejections[0].Detail != "1000" {
		t.Errorf("default: HTTP %d, %d entries, first %+v; want the newest 100", code, len(got.Rejections), got.Rejections[0])
	}
	got.Rejections = nil
	if code := getJSON(t, srv, "/api/rejections?reason=rate_limited&limit=5", &got); code != 200 || len(got.Rejections) != 5 ||
		got.Rejections[0].Detail != "1000" || got.Rejections[4].Detail != "960" {
		t.Errorf("filtered: HTTP %d %+v", code, got.Rejections)
	}
	var e struct{ Error string }
	if code := getJSON(t, srv, "/api/rejections?limit=0", &e); code != 400 || !strings.Contains(e.Error, "limit") {
		t.Errorf("limit=0: HTTP %d %q", code, e.Error)
	}
}

// Internal keys with NUL separators never reach the API's JSON.
func TestOrderKeysHaveNoNUL(t *testing.T) {
	srv, db := newAPI(t)
	o, err := ipn.NewRegisteredOrder("K-1", "5.00", "USD", "k@example.com", "", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	o.Facts = []ipn.OrderFact{{Key: "test\x00T1\x00payment\x00completed\x005.00", Type: ipn.TypePayment}}
	if err := db.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/orders/K-1", "/api/orders"} {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), `\u0000`) || !strings.Contains(string(b), "test|T1|payment|completed|5.00") {
			t.Errorf("GET %s: %s", path, b)
		}
	}
}

// With /healthz open (admin.open_metrics), a caller without the token
// gets only the short reason; with the token, the details.
func TestHealthzDetailsNeedTheToken(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok", OpenMetrics: true,
		Healthy: func() error {
			return errors.New("ingest answers 503: write /var/lib/ipnd/ipnd.db.wal-01: no space left on device")
		}}))
	defer srv.Close()
	var e struct{ Error string }
	if code := getJSONAs(t, srv, "/healthz", "", &e); code != 503 || e.Error != "ingest answers 503 (details with the admin token)" {
		t.Errorf("without the token: %d %q", code, e.Error)
	}
	if code := getJSONAs(t, srv, "/healthz", "tok", &e); code != 503 || !strings.Contains(e.Error, "no space left") {
		t.Errorf("with the token: %d %q", code, e.Error)
	}
}

func getJSONAs(t *testing.T, srv *httptest.Server, path, token string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(v)
	return resp.StatusCode
}
