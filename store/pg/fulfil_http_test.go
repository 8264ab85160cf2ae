package pg

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/public"
	"ipnd/store"
)

// fulfilHTTP drives, from outside, the public listener's download links
// and License API on b's store: a payment through the real pipeline,
// downloads (a range among them) to the link's limit, four concurrent
// activations of a key allowing three, a validation, then a full refund:
// the link answers 410 and the key is disabled. It returns what the
// client saw, as text to compare.
func fulfilHTTP(t *testing.T, b *backend, app public.Appender, fs fulfilStore) string {
	t.Helper()
	fs.SetCatalog(fulfilCatalog(t, "POOL-A"))
	rcv := public.NewReceiver(public.ReceiverOptions{Store: app})
	rcv.SetFulfilment(&public.Fulfilment{Store: fs, Rand: rand.Reader, Now: time.Now})
	srv := httptest.NewServer(rcv.Handler())
	defer srv.Close()
	verify := verifier(t)
	if _, err := b.append(webhook("h1", "payment.completed", `"txn_id":"T1","order_id":"O1","amount":"10.00","currency":"USD",`+
		`"customer_email":"a@example.com","items":[{"product":"app","quantity":1}]`)); err != nil {
		t.Fatal(err)
	}
	runUntilIdle(t, b, verify, 1)
	items, err := b.outbox()
	if err != nil {
		t.Fatal(err)
	}
	var d ipn.Delivered
	for _, it := range items {
		if it.Effect.Template == ipn.TemplatePaymentReceived && it.Effect.Order != nil && len(it.Effect.Order.Deliveries) == 1 {
			d = it.Effect.Order.Deliveries[0]
		}
	}
	if d.DownloadURL == "" || d.LicenseKey == "" {
		t.Fatalf("%s: the payment email carries no link and key", b.name)
	}
	link := srv.URL + strings.TrimPrefix(d.DownloadURL, "https://shop.example")
	var out strings.Builder
	get := func(rng string) {
		req, _ := http.NewRequest(http.MethodGet, link, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			body = nil
		}
		fmt.Fprintf(&out, "GET %q: %d %q\n", rng, resp.StatusCode, body)
	}
	license := func(action string, form url.Values) (int, map[string]any) {
		resp, err := http.PostForm(srv.URL+"/v1/licenses/"+action, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	get("")
	get("bytes=0-2")
	get("")
	get("")

	var mu sync.Mutex
	var wg sync.WaitGroup
	var seen []string
	var instance string
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, v := license("activate", url.Values{"license_key": {d.LicenseKey}, "instance_name": {fmt.Sprintf("host-%d", i)}})
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("%d activated=%v error=%v", code, v["activated"], v["error"]))
			if in, ok := v["instance"].(map[string]any); ok && code == http.StatusOK {
				instance, _ = in["id"].(string)
			}
		}()
	}
	wg.Wait()
	sort.Strings(seen)
	fmt.Fprintf(&out, "4 concurrent activations: %q\n", seen)
	code, v := license("validate", url.Values{"license_key": {d.LicenseKey}, "instance_id": {instance}})
	lk, _ := v["license_key"].(map[string]any)
	fmt.Fprintf(&out, "validate: %d valid=%v status=%v usage=%v\n", code, v["valid"], lk["status"], lk["activation_usage"])

	if _, err := b.append(webhook("h2", "payment.refunded", `"txn_id":"R1","parent_txn_id":"T1","amount":"10.00","currency":"USD"`)); err != nil {
		t.Fatal(err)
	}
	runUntilIdle(t, b, verify, 2)
	get("")
	code, v = license("validate", url.Values{"license_key": {d.LicenseKey}})
	lk, _ = v["license_key"].(map[string]any)
	fmt.Fprintf(&out, "after the refund, validate: %d valid=%v status=%v error=%v\n", code, v["valid"], lk["status"], v["error"])
	code, _ = license("activate", url.Values{"license_key": {"NOT-A-KEY"}, "instance_name": {"x"}})
	fmt.Fprintf(&out, "unknown key: %d\n", code)
	return out.String()
}

// TestPGFulfilmentHTTP: the download links and the License API served
// from the PostgreSQL store answer as from the bbolt store: the file and
// its range, 410 past the limit and after a full refund, three of four
// concurrent activations of a key allowing three, the key disabled by
// the refund.
func TestPGFulfilmentHTTP(t *testing.T) {
	c := pgtest.Start(t)
	bolt := boltBackend(t)
	bdb := bolt.journal.(*store.DB)
	want := fulfilHTTP(t, bolt, bdb, bdb)
	db := open(t, c.DSN())
	got := fulfilHTTP(t, pgBackend(t, db), db, db.Dashboard())
	if got != want {
		t.Errorf("postgres differs from bbolt:\n--- bbolt\n%s--- postgres\n%s", want, got)
	}
	for _, must := range []string{`GET "": 200 "app.zip"`, `GET "bytes=0-2": 206 "app"`, `: 410 ""`,
		`"200 activated=true error=<nil>" "200 activated=true error=<nil>" "200 activated=true error=<nil>" "422 activated=false`,
		"validate: 200 valid=true status=active usage=3", "after the refund, validate: 200 valid=false status=disabled", "unknown key: 404"} {
		if !strings.Contains(want, must) {
			t.Errorf("the scenario does not reach %q", must)
		}
	}
	t.Logf("both backends:\n%s", want)
}
