package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/store"
)

// TestFulfilmentKill9Loop: ipnd is killed with SIGKILL three times while
// paid orders (each a pool-key product and a generated-key product,
// items in the generic kind's data.items) pour in. After a last restart
// every acknowledged order is paid with exactly one set of links and
// keys, no pool key went to two units, and every customer got an email
// whose links are the ones stored (an email in flight at a kill may be
// sent twice: the outbox's documented bound).
func TestFulfilmentKill9Loop(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "font.zip", 1000)
	writeProductFile(t, dir, "book.epub", 1000)
	var pool strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&pool, "POOL-%05d\n", i)
	}
	os.WriteFile(filepath.Join(dir, "pool.txt"), []byte(pool.String()), 0o600)
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", fmt.Sprintf(`[[product]]
id = "font"
file = "font.zip"
license = "pool"
license_pool = %q
[[product]]
id = "book"
file = "book.epub"
license = "generated"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, filepath.Join(dir, "pool.txt"), secret))
	key, _ := gateway.DecodeWebhookSecret(secret)
	d := &daemon{t: t, dir: dir}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}

	var (
		mu    sync.Mutex
		acked []string
		seq   atomic.Int64
	)
	for round := range 3 {
		child, exited := startChild(t, dir, cfg)
		url := d.addr("public") + "/ipn/shop"
		var oks atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					n := seq.Add(1)
					id := fmt.Sprintf("K-%d", n)
					body, _ := json.Marshal(map[string]any{"type": "payment.completed", "data": map[string]any{
						"order_id": id, "txn_id": "T-" + id, "amount": "5.00", "currency": "USD",
						"customer_email": fmt.Sprintf("k%d@example.com", n),
						"items":          []map[string]any{{"product": "font", "quantity": 1}, {"product": "book", "quantity": 1}}}})
					ts := time.Now().Unix()
					req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Webhook-Id", "m-"+id)
					req.Header.Set("Webhook-Timestamp", fmt.Sprint(ts))
					req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, "m-"+id, ts, body))
					resp, err := client.Do(req)
					if err != nil {
						return // killed
					}
					resp.Body.Close()
					if resp.StatusCode == 200 {
						mu.Lock()
						acked = append(acked, id)
						mu.Unlock()
						oks.Add(1)
					}
				}
			}()
		}
		waitFor(t, fmt.Sprintf("round %d: 80 acknowledged", round), 30*time.Second, func() bool { return oks.Load() >= 80 })
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
		wg.Wait()
	}

	cmd, exited := startChild(t, dir, cfg)
	mu.Lock()
	orders := append([]string(nil), acked...)
	mu.Unlock()
	waitFor(t, "every acknowledged order paid", 60*time.Second, func() bool {
		for _, id := range orders {
			var o ipn.Order
			if d.api("GET", "/api/orders/"+id, nil, &o); o.Status != ipn.OrderPaid {
				return false
			}
		}
		return true
	})
	waitFor(t, "an email to every customer", 60*time.Second, func() bool {
		got := map[string]bool{}
		for _, m := range smtpd.messages() {
			got[m.Header.Get("To")] = true
		}
		for _, id := range orders {
			n := strings.TrimPrefix(id, "K-")
			if !got["<k"+n+"@example.com>"] && !got["k"+n+"@example.com"] {
				return false
			}
		}
		return true
	})
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited

	db := openTestStore(t, cfg)
	poolKeys := map[string]string{}
	tokens := map[string]string{} // token hash -> order
	// Every order the store holds (also those whose 200 the kill cut
	// off) has one set; the acknowledged ones are all there.
	var all []string
	for before := ""; ; {
		page, err := db.ListOrders("", before, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page {
			all = append(all, o.ID)
		}
		if len(page) < 1000 {
			break
		}
		before = store.OrderCursor(page[len(page)-1])
	}
	if len(all) < len(orders) {
		t.Errorf("%d orders stored, %d acknowledged", len(all), len(orders))
	}
	for _, id := range all {
		rec, lic, err := db.Deliveries(id)
		if err != nil {
			t.Fatalf("order %s: %v", id, err)
		}
		if len(rec.Deliveries) != 2 || rec.Deliveries[0].Product != "font" || rec.Deliveries[1].Product != "book" || len(lic) != 2 {
			t.Errorf("order %s: %d deliveries, %d licenses, want one set of 2", id, len(rec.Deliveries), len(lic))
			continue
		}
		for _, dl := range rec.Deliveries {
			tokens[dl.TokenHash] = id
		}
		k := lic[rec.Deliveries[0].LicenseHash].Key
		if other, dup := poolKeys[k]; dup {
			t.Errorf("pool key %s went to %s and %s", k, other, id)
		}
		poolKeys[k] = id
	}
	// The emails carry the stored links.
	sent := map[string]int{}
	for _, m := range smtpd.messages() {
		var b bytes.Buffer
		b.ReadFrom(m.Body)
		sent[m.Header.Get("To")]++
		to := strings.Trim(m.Header.Get("To"), "<>")
		id := "K-" + strings.TrimSuffix(strings.TrimPrefix(to, "k"), "@example.com")
		if rec, _, err := db.Deliveries(id); err == nil { // also orders whose 200 the kill cut off
			for _, dl := range rec.Deliveries {
				tokens[dl.TokenHash] = id
			}
		}
		for _, l := range linkRE.FindAllStringSubmatch(b.String(), -1) {
			if tokens[fulfil.Hash(strings.TrimPrefix(l[1], "/dl/"))] != id {
				t.Errorf("an email to %s carries a link that is not stored: %s", m.Header.Get("To"), l[1])
			}
		}
	}
	dups := 0
	for _, n := range sent {
		dups += n - 1
	}
	t.Logf("%d orders acknowledged (%d stored) across 3 kills: one set each, %d pool keys, %d emails sent twice", len(orders), len(all), len(poolKeys), dups)
	if len(orders) < 240 {
		t.Errorf("only %d orders acknowledged", len(orders))
	}
}

// TestFulfilmentReload: products added by a config reload (SIGHUP) are
// delivered from then on; before, nothing is (no [[product]]: none of
// SPEC §11 applies, /v1/licenses is not served).
func TestFulfilmentReload(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 100)
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	gw := "[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \"" + secret + "\"\n"
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", gw)
	cmd, _ := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	post := signedPoster(t, func() string { return d.addr("public") }, secret)
	pay := func(id string) {
		t.Helper()
		if code := post("m-"+id, "payment.completed", map[string]any{"order_id": id, "txn_id": "T-" + id, "amount": "1.00",
			"currency": "USD", "items": []map[string]any{{"product": "a"}}}); code != 200 {
			t.Fatalf("post = %d", code)
		}
		waitOrder(t, d, id, ipn.OrderPaid)
	}
	deliveries := func(id string) int {
		var got struct{ Deliveries []ipn.Delivered }
		d.api("GET", "/api/orders/"+id, nil, &got)
		return len(got.Deliveries)
	}
	pay("BEFORE")
	if n := deliveries("BEFORE"); n != 0 {
		t.Errorf("delivered %d without products", n)
	}
	if code, _ := d.license("validate", false, "license_key", "X"); code != 404 {
		t.Errorf("License API without products = %d", code)
	}
	raw, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(raw, []byte(gw), []byte("[[product]]\nid = \"a\"\nfile = \"a.bin\"\nlicense = \"generated\"\n"+gw), 1), 0o600)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload", 10*time.Second, func() bool {
		code, out := d.license("validate", false, "license_key", "X")
		return code == 404 && out["error"] != nil // the License API answers now
	})
	pay("AFTER")
	if n := deliveries("AFTER"); n != 1 {
		t.Errorf("delivered %d after the reload, want 1", n)
	}
}

// TestFulfilmentMerchantDecisions: an order in review (the amount
// differs) gets nothing; once the merchant approves it, it is paid and
// delivered; an undeliverable order the merchant approves stays
// approved (no review again) with nothing delivered; a dispute the
// merchant closes as won restores the links.
func TestFulfilmentMerchantDecisions(t *testing.T) {
	fake := newFakePayPal(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 100)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, fake.srv.URL+"/cgi-bin/webscr", "[[product]]\nid = \"a\"\nfile = \"a.bin\"\nlicense = \"generated\"\n")
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
	d.api("POST", "/api/orders", map[string]any{"id": "M-1", "amount": "10.00", "currency": "USD", "customer_email": "m@example.com",
		"items": []map[string]any{{"product": "a"}}}, nil)
	payPal("txn_id", "T-M1", "invoice", "M-1")
	waitOrder(t, d, "M-1", ipn.OrderReview)
	if n := len(deliveries("M-1")); n != 0 {
		t.Fatalf("an order in review was delivered %d units", n)
	}
	if code := d.api("POST", "/api/orders/M-1/approve", map[string]any{}, nil); code != 200 {
		t.Fatalf("approve = %d", code)
	}
	o := waitOrder(t, d, "M-1", ipn.OrderPaid)
	if ds := deliveries("M-1"); len(ds) != 1 || ds[0].LicenseKey == "" {
		t.Errorf("approved order deliveries = %+v (%s)", ds, o.Status)
	}
	waitFor(t, "the payment email with the link", 10*time.Second, func() bool {
		for _, m := range mailPlain(t, smtpd, "m@example.com") {
			if linkRE.MatchString(m) {
				return true
			}
		}
		return false
	})

	payPal("txn_id", "T-U2", "invoice", "U-2", "item_number", "nope")
	waitOrder(t, d, "U-2", ipn.OrderReview)
	if code := d.api("POST", "/api/orders/U-2/approve", map[string]any{}, nil); code != 200 {
		t.Fatalf("approve U-2 = %d", code)
	}
	waitOrder(t, d, "U-2", ipn.OrderPaid)
	if n := len(deliveries("U-2")); n != 0 {
		t.Errorf("an unknown product was delivered %d units", n)
	}

	payPal("txn_id", "T-D", "invoice", "D-2", "item_number", "a")
	waitOrder(t, d, "D-2", ipn.OrderPaid)
	var re struct{ Deliveries []ipn.Delivered }
	if code := d.api("POST", "/api/orders/D-2/deliveries/reissue", nil, &re); code != 200 || len(re.Deliveries) == 0 {
		t.Fatalf("reissue: HTTP %d, %d deliveries", code, len(re.Deliveries))
	}
	link := strings.TrimPrefix(re.Deliveries[0].DownloadURL, "https://dl.example.com")
	payPal("txn_id", "CASE-1", "parent_txn_id", "T-D", "invoice", "D-2", "txn_type", "new_case", "case_type", "chargeback", "case_id", "CASE-1", "payment_status", "")
	waitFor(t, "D-2 disputed or reversed", 10*time.Second, func() bool {
		var o ipn.Order
		d.api("GET", "/api/orders/D-2", nil, &o)
		return o.Status == ipn.OrderDisputed
	})
	if resp, _ := d.get(link); resp.StatusCode != 410 {
		t.Errorf("link while disputed = %d", resp.StatusCode)
	}
	if code := d.api("POST", "/api/orders/D-2/dispute", map[string]any{"outcome": "won"}, nil); code != 200 {
		t.Fatalf("dispute decision route answered %d", code)
	}
	waitOrder(t, d, "D-2", ipn.OrderPaid)
	if resp, _ := d.get(link); resp.StatusCode != 200 {
		t.Errorf("link after the merchant won the dispute = %d", resp.StatusCode)
	}
}
