package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"ipnd/ipn"
)

// fulfilConfig writes dir/ipnd.toml for the delivery tests: loopback
// listeners, public_url https://dl.example.com (the tests send the
// links' paths to the real listener), the in-process SMTP server, the
// shop, products (extra) and the paypal gateway verified at verifyURL.
func fulfilConfig(t *testing.T, dir, smtpPort, shopURL, verifyURL, extra string) string {
	t.Helper()
	files := filepath.Join(dir, "files")
	os.MkdirAll(files, 0o700)
	cfg := filepath.Join(dir, "ipnd.toml")
	body := fmt.Sprintf(`[server]
listen = "127.0.0.1:0"
rate_limit = 0
public_url = "https://dl.example.com"
[admin]
listen = "127.0.0.1:0"
token = "t"
%s[log]
level = "warn"
[pipeline]
verify_timeout = "1s"
retry_base = "20ms"
retry_cap = "80ms"
outbox_retry_base = "20ms"
outbox_retry_cap = "100ms"
[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "Shop <shop@example.com>"
timeout = "2s"
[email]
merchant_to = "owner@example.com"
merchant_name = "Example Shop"
[shop]
url = %q
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[fulfilment]
files_dir = %q
%s
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = %q
receivers = ["shop@example.com"]
`, testStore(t, dir), smtpPort, shopURL, files, extra, verifyURL)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeProductFile writes n random bytes to dir/files/name.
func writeProductFile(t testing.TB, dir, name string, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "files", name), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	linkRE = regexp.MustCompile(`https://dl\.example\.com(/dl/[A-Za-z0-9_-]+)`)
	keyRE  = regexp.MustCompile(`License key: ([A-Za-z0-9/_.=-]+)`)
)

// mailPlain returns the messages to one recipient, quoted-printable
// decoded.
func mailPlain(t *testing.T, f *fakeSMTP, to string) []string {
	var out []string
	for _, raw := range mailText(t, f, to) {
		b, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(raw)))
		if err != nil {
			b = []byte(raw)
		}
		out = append(out, string(b))
	}
	return out
}

// get fetches path on the daemon's public listener.
func (d *daemon) get(path string, hdr ...string) (*http.Response, []byte) {
	d.t.Helper()
	req, _ := http.NewRequest("GET", d.addr("public")+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// license posts to the License API (JSON when asJSON, else a form).
func (d *daemon) license(action string, asJSON bool, fields ...string) (int, map[string]any) {
	d.t.Helper()
	var body []byte
	ctype := "application/x-www-form-urlencoded"
	if asJSON {
		m := map[string]string{}
		for i := 0; i+1 < len(fields); i += 2 {
			m[fields[i]] = fields[i+1]
		}
		body, _ = json.Marshal(m)
		ctype = "application/json"
	} else {
		v := url.Values{}
		for i := 0; i+1 < len(fields); i += 2 {
			v.Set(fields[i], fields[i+1])
		}
		body = []byte(v.Encode())
	}
	resp, err := http.Post(d.addr("public")+"/v1/licenses/"+action, ctype, bytes.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func licenseStatus(m map[string]any) string {
	lk, _ := m["license_key"].(map[string]any)
	s, _ := lk["status"].(string)
	return s
}

// TestFulfilmentPayPalEndToEnd is issue 22's acceptance flow: an order
// registered with a product, paid through PayPal (postback to a local
// verifier), the email read from the SMTP server, the file downloaded
// (bytes, a range, the sixth download of a five-download link refused),
// the license activated to its limit, validated and deactivated, then
// the payment refunded: the link is gone and the license disabled.
func TestFulfilmentPayPalEndToEnd(t *testing.T) {
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	file := writeProductFile(t, dir, "engine.epub", 300<<10)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr", `[[product]]
id = "engine-book"
name = "The Analytical Engine"
file = "engine.epub"
license = "generated"
`)
	d := startDaemon(t, dir, cfg)

	if code := d.api("POST", "/api/orders", map[string]any{"id": "O-1", "amount": "19.95", "currency": "USD",
		"customer_email": "buyer@example.com", "items": []map[string]any{{"product": "engine-book", "quantity": 1}}}, nil); code != 201 {
		t.Fatalf("register = %d", code)
	}
	if code := d.api("POST", "/api/orders", map[string]any{"id": "O-X", "amount": "19.95", "currency": "USD",
		"customer_email": "buyer@example.com", "items": []map[string]any{{"product": "nope"}}}, nil); code != 400 {
		t.Errorf("register with an unknown product = %d, want 400", code)
	}
	pay := ipnBody("txn_id", "T1", "invoice", "O-1")
	fake.remember(pay)
	if code := d.postIPN("paypal", pay); code != 200 {
		t.Fatalf("IPN = %d", code)
	}
	waitOrder(t, d, "O-1", ipn.OrderPaid)

	// The email carries the link and the key.
	var mail string
	waitFor(t, "the payment email", 10*time.Second, func() bool {
		m := mailPlain(t, smtpd, "buyer@example.com")
		if len(m) > 0 {
			mail = m[0]
		}
		return len(m) == 1
	})
	links, keys := linkRE.FindAllStringSubmatch(mail, -1), keyRE.FindAllStringSubmatch(mail, -1)
	if len(links) == 0 || len(keys) == 0 {
		t.Fatalf("no link or key in the email:\n%s", mail)
	}
	link, key := links[0][1], keys[0][1]
	if !regexp.MustCompile(`^[A-Z0-9]{5}(-[A-Z0-9]{5}){3}$`).MatchString(key) {
		t.Errorf("license key %q is not XXXXX-XXXXX-XXXXX-XXXXX", key)
	}

	// The shop's order.paid carries the same deliveries.
	var paid map[string]any
	waitFor(t, "order.paid callback", 10*time.Second, func() bool {
		for _, b := range shop.forOrder("O-1") {
			if b["type"] == "order.paid" {
				paid = b
				return true
			}
		}
		return false
	})
	dels, _ := paid["data"].(map[string]any)["order"].(map[string]any)["deliveries"].([]any)
	if len(dels) != 1 {
		t.Fatalf("order.paid deliveries = %v", paid["data"])
	}
	d0 := dels[0].(map[string]any)
	if d0["product"] != "engine-book" || d0["download_url"] != "https://dl.example.com"+link || d0["license_key"] != key ||
		d0["downloads_left"] != float64(5) || d0["expires_at"] == "" {
		t.Errorf("delivery in the callback = %v", d0)
	}
	var shown struct {
		Deliveries []ipn.Delivered `json:"deliveries"`
	}
	d.api("GET", "/api/orders/O-1", nil, &shown)
	if len(shown.Deliveries) != 1 || shown.Deliveries[0].LicenseKey != key || shown.Deliveries[0].DownloadURL != "" {
		t.Errorf("GET /api/orders/O-1 deliveries = %+v", shown.Deliveries)
	}

	// Downloads: the whole file, a range (not counted), a resumed
	// download to the end (counted), up to the limit of 5; the 6th: 410.
	resp, body := d.get(link)
	if resp.StatusCode != 200 || !bytes.Equal(body, file) || resp.ContentLength != int64(len(file)) ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "engine.epub") || resp.Header.Get("Content-Type") != "application/epub+zip" {
		t.Fatalf("download: %d %v (%d bytes)", resp.StatusCode, resp.Header, len(body))
	}
	resp, body = d.get(link, "Range", "bytes=100-199")
	if resp.StatusCode != 206 || !bytes.Equal(body, file[100:200]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = d.get(link, "Range", "bytes=1000-")
	if resp.StatusCode != 206 || !bytes.Equal(body, file[1000:]) {
		t.Fatalf("resume: %d, %d bytes", resp.StatusCode, len(body))
	}
	for i := 3; i <= 5; i++ {
		if resp, _ := d.get(link); resp.StatusCode != 200 {
			t.Fatalf("download %d = %d", i, resp.StatusCode)
		}
	}
	resp, body = d.get(link)
	if resp.StatusCode != 410 || !strings.Contains(string(body), "no longer works") {
		t.Errorf("6th download = %d %s, want 410 with a page", resp.StatusCode, body)
	}
	if resp, _ := d.get("/dl/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); resp.StatusCode != 404 {
		t.Errorf("unknown token = %d, want 404", resp.StatusCode)
	}

	// License: three activations, the fourth refused.
	var instances []string
	for i := 1; i <= 3; i++ {
		code, out := d.license("activate", i%2 == 0, "license_key", key, "instance_name", fmt.Sprintf("laptop-%d", i))
		in, _ := out["instance"].(map[string]any)
		if code != 200 || out["activated"] != true || out["error"] != nil || in == nil || licenseStatus(out) != "active" {
			t.Fatalf("activation %d: %d %v", i, code, out)
		}
		instances = append(instances, in["id"].(string))
	}
	code, out := d.license("activate", true, "license_key", key, "instance_name", "laptop-4")
	if code != 422 || out["activated"] != false || out["error"] == nil {
		t.Errorf("4th activation: %d %v, want 422", code, out)
	}
	code, out = d.license("validate", false, "license_key", key, "instance_id", instances[1])
	meta, _ := out["meta"].(map[string]any)
	lk, _ := out["license_key"].(map[string]any)
	if code != 200 || out["valid"] != true || out["instance"] == nil || meta["order_id"] != "O-1" || meta["product_id"] != "engine-book" ||
		lk["activation_usage"] != float64(3) || lk["activation_limit"] != float64(3) || lk["key"] != key {
		t.Errorf("validate: %d %v", code, out)
	}
	code, out = d.license("deactivate", true, "license_key", key, "instance_id", instances[1])
	if code != 200 || out["deactivated"] != true {
		t.Errorf("deactivate: %d %v", code, out)
	}
	if code, _ = d.license("validate", false, "license_key", key, "instance_id", instances[1]); code != 404 {
		t.Errorf("validate a deactivated instance = %d, want 404", code)
	}
	if code, out = d.license("validate", false, "license_key", "WRONG-KEY"); code != 404 || out["error"] == nil {
		t.Errorf("unknown key: %d %v", code, out)
	}
	if code, _ = d.license("activate", false, "license_key", key); code != 400 {
		t.Errorf("activate without instance_name = %d, want 400", code)
	}

	// A reissue gives new links (the old one is gone) and a new email.
	var re struct{ Deliveries []ipn.Delivered }
	if code := d.api("POST", "/api/orders/O-1/deliveries/reissue", nil, &re); code != 200 || len(re.Deliveries) != 1 {
		t.Fatalf("reissue = %d %+v", code, re)
	}
	newLink := strings.TrimPrefix(re.Deliveries[0].DownloadURL, "https://dl.example.com")
	if resp, _ := d.get(link); resp.StatusCode != 404 {
		t.Errorf("old link after reissue = %d, want 404", resp.StatusCode)
	}
	if resp, body := d.get(newLink); resp.StatusCode != 200 || !bytes.Equal(body, file) {
		t.Errorf("reissued link = %d", resp.StatusCode)
	}
	waitFor(t, "the reissue email", 10*time.Second, func() bool {
		m := mailPlain(t, smtpd, "buyer@example.com")
		return len(m) == 2 && strings.Contains(m[1], newLink)
	})

	// Refund in full: the link is gone, the license disabled.
	refund := ipnBody("txn_id", "T2", "parent_txn_id", "T1", "payment_status", "Refunded", "mc_gross", "-19.95", "invoice", "O-1")
	fake.remember(refund)
	if code := d.postIPN("paypal", refund); code != 200 {
		t.Fatalf("refund IPN = %d", code)
	}
	waitOrder(t, d, "O-1", ipn.OrderRefunded)
	if resp, body := d.get(newLink); resp.StatusCode != 410 || !strings.Contains(string(body), "revoked") {
		t.Errorf("link after the refund = %d %s, want 410", resp.StatusCode, body)
	}
	code, out = d.license("validate", true, "license_key", key)
	if code != 200 || out["valid"] != false || licenseStatus(out) != "disabled" {
		t.Errorf("validate after the refund: %d %v, want disabled", code, out)
	}
	if code, out = d.license("activate", false, "license_key", key, "instance_name", "x"); code != 422 {
		t.Errorf("activate after the refund: %d %v, want 422", code, out)
	}

	// Metrics.
	req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	mresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`ipnd_downloads_total{result="ok"} 6`, `ipnd_downloads_total{result="limit"} 1`,
		`ipnd_downloads_total{result="unknown"} 2`, `ipnd_downloads_total{result="revoked"} 1`, `ipnd_downloads_total{result="partial"} 1`,
		`ipnd_license_requests_total{action="activate",result="refused"} 2`, `ipnd_license_requests_total{action="validate",result="unknown_key"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestFulfilmentFromPayment: the items come from the payment itself (a
// PayPal cart with two products, a Stripe Checkout's metadata.products,
// the generic kinds' data.items is covered by the kill -9 test); pool
// keys are each handed out once; an unknown product or an empty pool
// puts the order in review (the customer is not told it is paid).
func TestFulfilmentFromPayment(t *testing.T) {
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	book := writeProductFile(t, dir, "engine.epub", 10<<10)
	font := writeProductFile(t, dir, "font.zip", 20<<10)
	pool := filepath.Join(dir, "pool.txt")
	os.WriteFile(pool, []byte("FONT-KEY-1\nFONT-KEY-2\nFONT-KEY-3\n"), 0o600)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr", fmt.Sprintf(`[[product]]
id = "engine-book"
file = "engine.epub"
[[product]]
id = "font"
name = "Grotesk font"
file = "font.zip"
license = "pool"
license_pool = %q
%s`, pool, stripeGatewayConfig))
	d := startDaemon(t, dir, cfg)
	payPal := func(fields ...string) {
		t.Helper()
		b := ipnBody(fields...)
		fake.remember(b)
		if code := d.postIPN("paypal", b); code != 200 {
			t.Fatalf("IPN = %d", code)
		}
	}
	deliveries := func(id string) []ipn.Delivered {
		var got struct{ Deliveries []ipn.Delivered }
		d.api("GET", "/api/orders/"+id, nil, &got)
		return got.Deliveries
	}
	keys := map[string]bool{}
	checkLinks := func(to string, want map[string][]byte, n int) {
		t.Helper()
		var mail string
		waitFor(t, "the email to "+to, 10*time.Second, func() bool {
			m := mailPlain(t, smtpd, to)
			if len(m) > 0 {
				mail = m[0]
			}
			return len(m) == 1
		})
		var links [][]string
		seen := map[string]bool{}
		for _, l := range linkRE.FindAllStringSubmatch(mail, -1) {
			if !seen[l[1]] {
				seen[l[1]] = true
				links = append(links, l)
			}
		}
		if len(links) != n {
			t.Fatalf("%d links in the email, want %d:\n%s", len(links), n, mail)
		}
		got := map[string]int{}
		for _, l := range links {
			_, body := d.get(l[1])
			for name, b := range want {
				if bytes.Equal(body, b) {
					got[name]++
				}
			}
		}
		for name := range want {
			if got[name] == 0 {
				t.Errorf("no link in the email downloads %s", name)
			}
		}
		for _, k := range keyRE.FindAllStringSubmatch(mail, -1) {
			if keys[k[1]] {
				t.Errorf("pool key %s handed out twice", k[1])
			}
			keys[k[1]] = true
		}
	}

	// A PayPal cart: one book, two fonts (two pool keys).
	payPal("txn_type", "cart", "txn_id", "T-C", "invoice", "C-1", "payer_email", "cart@example.com", "num_cart_items", "2",
		"item_number1", "engine-book", "quantity1", "1", "item_number2", "font", "quantity2", "2")
	waitOrder(t, d, "C-1", ipn.OrderPaid)
	if ds := deliveries("C-1"); len(ds) != 3 || ds[0].Product != "engine-book" || ds[1].LicenseKey == "" || ds[2].LicenseKey == "" {
		t.Errorf("cart deliveries = %+v", ds)
	}
	checkLinks("cart@example.com", map[string][]byte{"book": book, "font": font}, 3)

	// A Stripe Checkout naming its products in metadata.products: the last pool key.
	post := stripePoster(t, d, "stripe", "whsec_trust")
	post("evt_1", "checkout.session.completed", `{"id":"cs_1","object":"checkout.session","client_reference_id":"S-1","payment_intent":"pi_1","amount_total":2500,"currency":"usd","mode":"payment","payment_status":"paid","status":"complete","customer_details":{"email":"jenny@example.com","name":"Jenny Rosen"},"metadata":{"products":"engine-book, font"}}`)
	waitOrder(t, d, "S-1", ipn.OrderPaid)
	checkLinks("jenny@example.com", map[string][]byte{"book": book, "font": font}, 2)
	if len(keys) != 3 {
		t.Errorf("pool keys handed out: %v, want the three", keys)
	}

	// The pool is empty: the next font order goes to review.
	payPal("txn_id", "T-E", "invoice", "E-1", "payer_email", "empty@example.com", "item_number", "font")
	o := waitOrder(t, d, "E-1", ipn.OrderReview)
	if !strings.Contains(strings.Join(o.Flags, ","), "license_pool_empty") {
		t.Errorf("flags = %v", o.Flags)
	}
	// An unknown product: review, flag unknown_product, the merchant told,
	// the shop hears order.review, the customer nothing.
	payPal("txn_id", "T-U", "invoice", "U-1", "payer_email", "unknown@example.com", "item_number", "no-such-product")
	o = waitOrder(t, d, "U-1", ipn.OrderReview)
	if strings.Join(o.Flags, ",") != ipn.FlagUnknownProduct {
		t.Errorf("flags = %v, want unknown_product", o.Flags)
	}
	waitFor(t, "the merchant's review email", 10*time.Second, func() bool {
		for _, m := range mailPlain(t, smtpd, "owner@example.com") {
			if strings.Contains(m, "U-1") && strings.Contains(m, "unknown_product") {
				return true
			}
		}
		return false
	})
	waitFor(t, "order.review callback", 10*time.Second, func() bool {
		for _, b := range shop.forOrder("U-1") {
			if b["type"] == "order.review" {
				return true
			}
		}
		return false
	})
	for _, b := range shop.forOrder("U-1") {
		if b["type"] == "order.paid" {
			t.Errorf("the shop was told U-1 is paid: %v", b)
		}
	}
	if m := mailPlain(t, smtpd, "unknown@example.com"); len(m) != 0 {
		t.Errorf("the customer of an undeliverable order was emailed: %v", m)
	}
	if ds := deliveries("U-1"); len(ds) != 0 {
		t.Errorf("U-1 deliveries = %+v", ds)
	}

	req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `ipnd_license_pool_remaining{product="font"} 0`) {
		t.Errorf("metrics lack the empty pool")
	}
}

// verifySignedKey is the offline check README.md shows a merchant's
// software: split "key/<claims>.<signature>", verify the Ed25519
// signature of the claims' bytes with the public key ipnd licenses
// pubkey prints, then read the claims.
func verifySignedKey(pubB64, key string) (map[string]any, bool) {
	pub, err := base64.StdEncoding.DecodeString(pubB64)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, false
	}
	body, sig, ok := strings.Cut(strings.TrimPrefix(key, "key/"), ".")
	claims, err1 := base64.RawURLEncoding.DecodeString(body)
	signature, err2 := base64.RawURLEncoding.DecodeString(sig)
	if !ok || err1 != nil || err2 != nil || !ed25519.Verify(pub, claims, signature) {
		return nil, false
	}
	var c map[string]any
	return c, json.Unmarshal(claims, &c) == nil
}

// TestFulfilmentSignedKeysAndCLI: a signed key verifies offline with the
// printed public key (and one with a byte changed does not); the key
// pair is kept 0600 in the data directory; the CLI shows, reissues and
// disables.
func TestFulfilmentSignedKeysAndCLI(t *testing.T) {
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "app.dmg", 4<<10)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr", `[[product]]
id = "app"
name = "The App"
file = "app.dmg"
license = "generated"
license_format = "signed"
license_activations = 2
`)
	d := startDaemon(t, dir, cfg)
	// bbolt's signing key is a file in the data directory; PostgreSQL's
	// database keeps it for every ipnd (ipnd licenses pubkey reads it
	// there, below).
	if !onPG() {
		st, err := os.Stat(filepath.Join(dir, "license-signing.key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("signing key file: %v %v", err, st)
		}
	}
	pay := ipnBody("txn_id", "T-S", "invoice", "SIG-1", "payer_email", "signed@example.com", "item_number", "app")
	fake.remember(pay)
	if code := d.postIPN("paypal", pay); code != 200 {
		t.Fatal(code)
	}
	waitOrder(t, d, "SIG-1", ipn.OrderPaid)
	var got struct{ Deliveries []ipn.Delivered }
	d.api("GET", "/api/orders/SIG-1", nil, &got)
	if len(got.Deliveries) != 1 || !strings.HasPrefix(got.Deliveries[0].LicenseKey, "key/") {
		t.Fatalf("deliveries = %+v", got.Deliveries)
	}
	key := got.Deliveries[0].LicenseKey

	pub, err := runCmd(t, envFunc(), "licenses", "pubkey", "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	pub = strings.TrimSpace(pub)
	claims, ok := verifySignedKey(pub, key)
	if !ok || claims["product"] != "app" || claims["order"] != "SIG-1" || claims["activations"] != float64(2) {
		t.Errorf("signed key does not verify: %v %v", ok, claims)
	}
	for _, i := range []int{len("key/") + 3, len(key) - 2} {
		b := []byte(key)
		b[i] ^= 0x01
		if _, ok := verifySignedKey(pub, string(b)); ok {
			t.Errorf("a key with byte %d changed verifies", i)
		}
	}
	if code, out := d.license("activate", true, "license_key", key, "instance_name", "mac"); code != 200 || out["activated"] != true {
		t.Errorf("activate a signed key: %d %v", code, out)
	}

	// The CLI.
	out, err := runCmd(t, envFunc(), "downloads", "-config", cfg, "SIG-1")
	if err != nil || !strings.Contains(out, "app") || !strings.Contains(out, key) {
		t.Errorf("ipnd downloads: %v\n%s", err, out)
	}
	out, err = runCmd(t, envFunc(), "downloads", "-config", cfg, "-reissue", "SIG-1")
	if err != nil || !strings.Contains(out, "https://dl.example.com/dl/") {
		t.Errorf("ipnd downloads -reissue: %v\n%s", err, out)
	}
	out, err = runCmd(t, envFunc(), "licenses", "-config", cfg, "SIG-1")
	if err != nil || !strings.Contains(out, key) || !strings.Contains(out, "active") || !strings.Contains(out, "1/2") {
		t.Errorf("ipnd licenses ORDER: %v\n%s", err, out)
	}
	out, err = runCmd(t, envFunc(), "licenses", "-config", cfg, key)
	if err != nil || !strings.Contains(out, "SIG-1") || !strings.Contains(out, "mac") {
		t.Errorf("ipnd licenses KEY: %v\n%s", err, out)
	}
	if out, err = runCmd(t, envFunc(), "licenses", "disable", "-config", cfg, key); err != nil {
		t.Errorf("ipnd licenses disable: %v\n%s", err, out)
	}
	if code, out := d.license("validate", false, "license_key", key); code != 200 || licenseStatus(out) != "disabled" {
		t.Errorf("validate a disabled key: %d %v", code, out)
	}
	if _, err = runCmd(t, envFunc(), "licenses", "-config", cfg, "NO-SUCH"); err == nil {
		t.Errorf("ipnd licenses of nothing succeeded")
	}
}

// TestFulfilmentDisputeRevokesAndRestores: a reversal (chargeback)
// revokes the links and disables the key; PayPal's Canceled_Reversal
// (the dispute won) returns the order to paid and restores both; a key
// the merchant disabled stays disabled.
func TestFulfilmentDisputeRevokesAndRestores(t *testing.T) {
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 1000)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr", `[[product]]
id = "app"
file = "app.zip"
license = "generated"
`)
	d := startDaemon(t, dir, cfg)
	payPal := func(fields ...string) {
		t.Helper()
		b := ipnBody(fields...)
		fake.remember(b)
		if code := d.postIPN("paypal", b); code != 200 {
			t.Fatalf("IPN = %d", code)
		}
	}
	payPal("txn_id", "T1", "invoice", "D-1", "item_number", "app", "quantity", "2")
	waitOrder(t, d, "D-1", ipn.OrderPaid)
	var re struct{ Deliveries []ipn.Delivered }
	if code := d.api("POST", "/api/orders/D-1/deliveries/reissue", nil, &re); code != 200 || len(re.Deliveries) != 2 {
		t.Fatalf("reissue = %d %+v", code, re)
	}
	link := strings.TrimPrefix(re.Deliveries[0].DownloadURL, "https://dl.example.com")
	key, manual := re.Deliveries[0].LicenseKey, re.Deliveries[1].LicenseKey
	if code := d.api("POST", "/api/licenses/"+manual+"/disable", nil, nil); code != 200 {
		t.Fatalf("disable = %d", code)
	}

	payPal("txn_id", "T2", "parent_txn_id", "T1", "invoice", "D-1", "payment_status", "Reversed", "mc_gross", "-19.95", "reason_code", "chargeback")
	waitOrder(t, d, "D-1", ipn.OrderReversed)
	if resp, _ := d.get(link); resp.StatusCode != 410 {
		t.Errorf("link while reversed = %d, want 410", resp.StatusCode)
	}
	if _, out := d.license("validate", false, "license_key", key); licenseStatus(out) != "disabled" {
		t.Errorf("key while reversed: %v", out)
	}
	if code := d.api("POST", "/api/orders/D-1/deliveries/reissue", nil, nil); code != 409 {
		t.Errorf("reissue while reversed = %d, want 409", code)
	}

	payPal("txn_id", "T3", "parent_txn_id", "T1", "invoice", "D-1", "payment_status", "Canceled_Reversal", "mc_gross", "19.95")
	waitOrder(t, d, "D-1", ipn.OrderPaid)
	if resp, _ := d.get(link); resp.StatusCode != 200 {
		t.Errorf("link after the dispute was won = %d, want 200", resp.StatusCode)
	}
	if code, out := d.license("validate", false, "license_key", key); code != 200 || out["valid"] != true {
		t.Errorf("key after the dispute was won: %d %v", code, out)
	}
	if _, out := d.license("validate", false, "license_key", manual); licenseStatus(out) != "disabled" {
		t.Errorf("the key the merchant disabled came back: %v", out)
	}
	var got struct{ Deliveries []ipn.Delivered }
	d.api("GET", "/api/orders/D-1", nil, &got)
	if len(got.Deliveries) != 2 {
		t.Errorf("a restored order has %d deliveries, want the 2 it had", len(got.Deliveries))
	}
}

// TestFulfilmentSubscriptionLicense: a subscription's first payment
// gives a license active until its period's end plus license_grace; a
// renewal extends it; a cancellation lets it run; without a renewal it
// is expired once the grace is over. The test moves the clock of the
// License API (no sleeps).
func TestFulfilmentSubscriptionLicense(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	fulfilClock = func() time.Time { return time.Unix(0, clock.Load()) }
	t.Cleanup(func() { fulfilClock = time.Now })
	at := func(d time.Duration) { clock.Store(start.Add(d).UnixNano()) }

	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 1000)
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", `license_grace = "1h"
[[product]]
id = "app"
file = "app.zip"
license = "generated"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = "`+secret+`"
`)
	d := startDaemon(t, dir, cfg)
	post := signedPoster(t, func() string { return d.addr("public") }, secret)
	day := 24 * time.Hour
	pay := func(msg, txn string, periodEnd time.Time) {
		t.Helper()
		if code := post(msg, "subscription.payment", map[string]any{"order_id": "SUB-1", "subscription_id": "sub-1", "txn_id": txn,
			"amount": "9.00", "currency": "USD", "customer_email": "sub@example.com", "period_end": periodEnd.Format(time.RFC3339),
			"items": []map[string]any{{"product": "app", "quantity": 1}}}); code != 200 {
			t.Fatalf("post %s = %d", msg, code)
		}
	}
	expiresAt := func(out map[string]any) string {
		lk, _ := out["license_key"].(map[string]any)
		s, _ := lk["expires_at"].(string)
		return s
	}

	pay("m-1", "P-1", start.Add(30*day))
	waitOrder(t, d, "SUB-1", ipn.OrderPaid)
	var got struct{ Deliveries []ipn.Delivered }
	d.api("GET", "/api/orders/SUB-1", nil, &got)
	if len(got.Deliveries) != 1 || got.Deliveries[0].LicenseKey == "" {
		t.Fatalf("deliveries = %+v", got.Deliveries)
	}
	key := got.Deliveries[0].LicenseKey
	code, out := d.license("activate", true, "license_key", key, "instance_name", "desk")
	if code != 200 || expiresAt(out) != start.Add(30*day+time.Hour).Format(time.RFC3339) {
		t.Fatalf("activate: %d %v (want expires_at = period end + 1h grace)", code, out)
	}

	// The renewal extends it; a cancellation does not cut it short.
	pay("m-2", "P-2", start.Add(60*day))
	waitFor(t, "the renewal", 10*time.Second, func() bool {
		_, out := d.license("validate", true, "license_key", key)
		return expiresAt(out) == start.Add(60*day+time.Hour).Format(time.RFC3339)
	})
	if code := post("m-3", "subscription.canceled", map[string]any{"order_id": "SUB-1", "subscription_id": "sub-1"}); code != 200 {
		t.Fatal(code)
	}
	d.drained(3)
	at(45 * day)
	if _, out := d.license("validate", false, "license_key", key); out["valid"] != true || licenseStatus(out) != "active" {
		t.Errorf("mid-period after a cancellation: %v", out)
	}
	at(60*day + 30*time.Minute)
	if _, out := d.license("validate", false, "license_key", key); out["valid"] != true {
		t.Errorf("within the grace: %v", out)
	}
	at(60*day + time.Hour)
	if code, out := d.license("validate", false, "license_key", key); code != 200 || out["valid"] != false || licenseStatus(out) != "expired" {
		t.Errorf("after the grace: %d %v, want expired", code, out)
	}
	if code, _ := d.license("activate", false, "license_key", key, "instance_name", "late"); code != 422 {
		t.Errorf("activate an expired key = %d, want 422", code)
	}
}

// TestFulfilmentRateLimited: /dl and the License API spend from the
// public listener's rate limit (429 + Retry-After), and a client sending
// unknown license keys is refused after 20 in a minute, while another
// client is not.
func TestFulfilmentRateLimited(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 10)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", "[[product]]\nid = \"a\"\nfile = \"a.bin\"\n")
	raw, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(raw, []byte("rate_limit = 0\n"), []byte("rate_limit = 0.001\nrate_burst = 25\ntrusted_proxies = [\"127.0.0.1\"]\n"), 1), 0o600)
	d := startDaemon(t, dir, cfg)
	from := func(client string, path string, body string) *http.Response {
		method := "GET"
		if body != "" {
			method = "POST"
		}
		req, _ := http.NewRequest(method, d.addr("public")+path, strings.NewReader(body))
		req.Header.Set("X-Forwarded-For", client)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// Unknown keys: 20 answered 404, then 429 for that client only.
	for i := 1; i <= 21; i++ {
		resp := from("198.51.100.1", "/v1/licenses/validate", "license_key=WRONG-"+fmt.Sprint(i))
		if want := map[bool]int{true: 404, false: 429}[i <= 20]; resp.StatusCode != want {
			t.Fatalf("wrong key %d = %d, want %d", i, resp.StatusCode, want)
		}
	}
	if resp := from("198.51.100.2", "/v1/licenses/validate", "license_key=WRONG"); resp.StatusCode != 404 {
		t.Errorf("another client's wrong key = %d, want 404", resp.StatusCode)
	}
	// The rate limit (burst 25 from 198.51.100.3): then 429 with Retry-After.
	var last *http.Response
	for range 26 {
		last = from("198.51.100.3", "/dl/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "")
	}
	if last.StatusCode != 429 || last.Header.Get("Retry-After") == "" {
		t.Errorf("download past the rate limit = %d %v, want 429 with Retry-After", last.StatusCode, last.Header)
	}
}
