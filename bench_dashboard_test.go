package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
	"ipnd/store"
)

// dashBenchSecret signs nothing here (the receiver checks signatures;
// the store holds what it accepted) but builds the gateways.
const dashBenchSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// dashFill describes what fillDashboard stored: the old notification
// the searches look for and the order with many facts.
type dashFill struct {
	oldID                     uint64
	oldTxn, oldOrder, oldMail string
	bigOrder                  string
	bigFacts                  int
	states                    map[string]int
	fill                      time.Duration
}

// dashNotification is notification i of the mix: three gateways (two in
// ipnd's Standard Webhooks envelope, one Stripe), received over the last
// 30 days; most orders are one completed payment, some pending then
// completed, refunded, sent twice (a duplicate) or unreadable
// (invalid); every 500th notification is one more payment of one of
// ten big orders. Customers repeat (an email names many orders), with
// the case of their emails varying.
func dashNotification(i, total int, start time.Time, span time.Duration) *ipn.Notification {
	at := start.Add(time.Duration(int64(span) / int64(total) * int64(i)))
	gw := []string{"shop", "shop", "shop", "shop", "shop", "market", "market", "market", "stripe", "stripe"}[i%10]
	// Orders 0-22 of each hundred are pairs: pending then completed,
	// completed then refunded, or completed sent twice (the second a
	// duplicate); the others one completed payment each.
	k := (i / 2) % 100
	order, txn, status := fmt.Sprintf("ORD-%07d", i), "T"+dashID("txn", i, 12), "completed"
	if k < 23 {
		order, txn = fmt.Sprintf("ORD-%07d", i/2*2), "T"+dashID("txn", i/2*2, 12)
		switch {
		case k < 15 && i%2 == 0:
			status = "pending"
		case k >= 15 && k < 20 && i%2 == 1:
			status = "refunded"
		}
	}
	big := i%500 == 250
	if big {
		order, txn = fmt.Sprintf("BIG-%d", (i/500)%10), "T"+dashID("txn", i, 12)
	}
	email := fmt.Sprintf("customer%d@example.com", (i/2)%150000)
	if i%3 == 0 {
		email = strings.ToUpper(email[:1]) + email[1:]
	}
	amount := "149.90"
	if k == 42 && i%2 == 1 {
		amount = "abc" // unreadable: invalid
	}
	var body []byte
	h := http.Header{"Content-Type": {"application/json"}, "User-Agent": {"bench/1.0"}}
	msg := "msg_" + dashID("msg", i, 24)
	if gw == "stripe" {
		minor := strings.Replace(amount, ".", "", 1)
		pi := "pi_" + txn
		switch status {
		case "refunded":
			body = fmt.Appendf(nil, `{"id":"evt_%s","object":"event","type":"charge.refunded","livemode":true,"created":%d,"data":{"object":{"id":"ch_%s","object":"charge","payment_intent":"%s","amount":%s,"amount_refunded":%s,"currency":"eur","receipt_email":"%s","metadata":{"order_id":"%s"}}}}`,
				msg, at.Unix(), txn, pi, minor, minor, email, order)
		case "pending":
			body = fmt.Appendf(nil, `{"id":"evt_%s","object":"event","type":"payment_intent.processing","livemode":true,"created":%d,"data":{"object":{"id":"%s","object":"payment_intent","amount":%s,"currency":"eur","receipt_email":"%s","metadata":{"order_id":"%s"}}}}`,
				msg, at.Unix(), pi, minor, email, order)
		default:
			body = fmt.Appendf(nil, `{"id":"evt_%s","object":"event","type":"checkout.session.completed","livemode":true,"created":%d,"data":{"object":{"id":"cs_%s","object":"checkout.session","client_reference_id":"%s","payment_intent":"%s","amount_total":%s,"currency":"eur","payment_status":"paid","mode":"payment","customer_details":{"email":"%s"}}}}`,
				msg, at.Unix(), txn, order, pi, minor, email)
		}
		h.Set("Stripe-Signature", fmt.Sprintf("t=%d,v1=%s", at.Unix(), dashID("sig", i, 64)))
	} else {
		body = fmt.Appendf(nil, `{"type":"payment.%s","timestamp":"%s","data":{"txn_id":"%s","order_id":"%s","amount":"%s","currency":"EUR","status":"%s","customer_email":"%s","customer_name":"Jo Doe"}}`,
			status, at.UTC().Format(time.RFC3339), txn, order, amount, status, email)
		h.Set("Webhook-Id", msg)
		h.Set("Webhook-Timestamp", strconv.FormatInt(at.Unix(), 10))
		h.Set("Webhook-Signature", "v1,"+dashID("sig", i, 43))
	}
	return &ipn.Notification{Gateway: gw, ReceivedAt: at, RemoteAddr: "203.0.113.7:48212", ContentType: "application/json",
		Body: body, DedupKey: msg, Headers: h}
}

// fillDashboard stores total notifications of the mix at path through
// the store's bulk loader (one bbolt transaction per 10,000, without
// fsync) and processes them with the real pipeline (orders, facts,
// outbox items, which are then recorded as sent, 1% dead).
func fillDashboard(b *testing.B, path string, total int) dashFill {
	start := time.Now()
	kinds := map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectShopCallback: true}
	db, err := store.Open(path, store.Options{EffectKinds: kinds})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetNoSync(true)
	var gws []gateway.Gateway
	for _, c := range []gateway.Config{{Name: "shop", Kind: "standard-webhooks"}, {Name: "market", Kind: "standard-webhooks"},
		{Name: "stripe", Kind: "stripe"}} {
		c.Secrets = []string{dashBenchSecret}
		g, err := gateway.New(c)
		if err != nil {
			b.Fatal(err)
		}
		gws = append(gws, g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := pipeline.New(pipeline.Options{Journal: db, Gateways: gws, BatchDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	span := 30 * 24 * time.Hour
	t0 := time.Now().Add(-span)
	f := dashFill{states: map[string]int{}}
	oldAt := total / 100 // 1% in: older than all but the first 1%
	batch := make([]*ipn.Notification, 0, 10000)
	for i := 1; i <= total; i++ {
		n := dashNotification(i, total, t0, span)
		if i == oldAt|1 { // an odd i: a completed payment with a customer of its own
			n.Body = []byte(strings.ReplaceAll(string(n.Body), `email":"`, `email":"Old.Target.`))
		}
		batch = append(batch, n)
		if len(batch) == cap(batch) || i == total {
			if err := db.BulkAppend(batch); err != nil {
				b.Fatal(err)
			}
			for _, n := range batch {
				if n.ID == 0 {
					continue
				}
				if strings.Contains(string(n.Body), "Old.Target.") {
					f.oldID = n.ID
				}
			}
			batch = batch[:0]
			// Keep the pipeline within 50,000 of the log.
			last, _ := db.Stats()
			for db.Cursor()+50000 < last.LastID {
				select {
				case err := <-ran:
					b.Fatalf("pipeline stopped: %v", err)
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	}
	st, _ := db.Stats()
	for db.Cursor() < st.LastID {
		select {
		case err := <-ran:
			b.Fatalf("pipeline stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	<-ran
	var sent int
	for _, kind := range ipn.OutboxLanes {
		for {
			items, _, err := db.DueLane(kind, time.Now().Add(time.Hour), 1000)
			if err != nil {
				b.Fatal(err)
			}
			if len(items) == 0 {
				break
			}
			res := make([]ipn.OutboxResult, len(items))
			for i, it := range items {
				res[i] = ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1}
				if sent++; sent%100 == 0 {
					res[i] = ipn.OutboxResult{ID: it.ID, State: ipn.OutboxDead, Attempts: 8, Error: "HTTP 500"}
				}
			}
			if err := db.FinishOutbox(res, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	}
	n, p2, err := db.Get(f.oldID)
	if err != nil || p2.Event == nil {
		b.Fatalf("the old notification %d: %v %+v", f.oldID, err, p2)
	}
	_ = n
	f.oldTxn, f.oldOrder, f.oldMail = p2.Event.TxnID, p2.Event.OrderID, strings.ToLower(p2.Event.CustomerEmail)
	f.bigOrder = "BIG-3"
	if o, err := db.GetOrder(f.bigOrder); err == nil {
		f.bigFacts = len(o.Facts)
	}
	for before := uint64(0); ; {
		items, err := db.List(store.Filter{Before: before, Limit: 1000})
		if err != nil {
			b.Fatal(err)
		}
		if len(items) == 0 || len(f.states) > 0 && before > 0 && before < st.LastID-20000 {
			break // the newest 20,000 are enough for the mix
		}
		for _, it := range items {
			f.states[string(it.Processing.State)]++
		}
		before = items[len(items)-1].Notification.ID
	}
	if err := db.SetNoSync(false); err != nil {
		b.Fatal(err)
	}
	f.fill = time.Since(start)
	return f
}

// BenchmarkDashboard fills a store with IPND_BENCH_NOTIFICATIONS
// notifications (default 1,000,000; see fillDashboard), starts the
// daemon on it, signs in to the dashboard and prints p50 and p99 of the
// render time (the whole response, read by a client on loopback) of
// each page, IPND_BENCH_PAGES times each (default 50), and whether the
// searches for an old notification find it. make bench runs it.
func BenchmarkDashboard(b *testing.B) {
	total := 1_000_000
	if n, err := strconv.Atoi(os.Getenv("IPND_BENCH_NOTIFICATIONS")); err == nil && n > 0 {
		total = n
	}
	reps := 50
	if n, err := strconv.Atoi(os.Getenv("IPND_BENCH_PAGES")); err == nil && n > 0 {
		reps = n
	}
	for range b.N {
		dir := b.TempDir()
		f := fillDashboard(b, filepath.Join(dir, "ipnd.db"), total)
		gws := ""
		for _, g := range [][2]string{{"shop", "standard-webhooks"}, {"market", "standard-webhooks"}, {"stripe", "stripe"}} {
			gws += fmt.Sprintf("[[gateway]]\nname = %q\nkind = %q\nsecret = %q\n", g[0], g[1], dashBenchSecret)
		}
		cfg := writeTestConfig(b, dir, "[log]\nlevel = \"warn\"\n"+gws)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		opened := time.Now()
		go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
		for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "admin.addr")); err == nil {
				break
			}
			select {
			case err := <-done:
				b.Fatalf("ipnd stopped: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				b.Fatal("ipnd did not start")
			}
		}
		startup := time.Since(opened)
		addr, _ := os.ReadFile(filepath.Join(dir, "admin.addr"))
		base := "http://" + strings.TrimSpace(string(addr))
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		if resp, err := client.PostForm(base+"/login", url.Values{"token": {"t"}}); err != nil {
			b.Fatal(err)
		} else {
			resp.Body.Close()
		}
		// page fails when the page does not come whole (the admin
		// listener's write timeout cuts a page that takes longer).
		page := func(method, path string, form url.Values) (string, time.Duration, error) {
			t0 := time.Now()
			var resp *http.Response
			var err error
			if method == "POST" {
				resp, err = client.PostForm(base+path, form)
			} else {
				resp, err = client.Get(base + path)
			}
			if err != nil {
				return "", time.Since(t0), err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(t0)
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("%s %s: %d: %.200s", method, path, resp.StatusCode, body)
			}
			return string(body), took, err
		}
		list, _, err := page("GET", "/notifications", nil)
		if err != nil {
			b.Fatal(err)
		}
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(list)
		if m == nil {
			b.Fatal("no CSRF token on the notifications page")
		}
		csrf := m[1]
		search := func(q string) url.Values { return url.Values{"csrf": {csrf}, "q": {q}} }
		oldLink := fmt.Sprintf(`href="/notifications/%d"`, f.oldID)
		type probe struct {
			name, method, path string
			form               url.Values
			want               string // the page must contain it (the old notification found)
		}
		probes := []probe{
			{"overview", "GET", "/", nil, ""},
			{"notifications, page 1", "GET", "/notifications", nil, ""},
			{"notifications, gateway+state filter (market, invalid)", "GET", "/notifications?gateway=market&state=invalid", nil, ""},
			{"notifications, order filter (old order)", "GET", "/notifications?order=" + url.QueryEscape(f.oldOrder), nil, oldLink},
			{"search by txn id (old)", "POST", "/notifications", search(f.oldTxn), oldLink},
			{"search by order id (old)", "POST", "/notifications", search(f.oldOrder), oldLink},
			{"search by customer email (old)", "POST", "/notifications", search(strings.ToUpper(f.oldMail)), oldLink},
			{"notification detail (old)", "GET", fmt.Sprintf("/notifications/%d", f.oldID), nil, ""},
			{fmt.Sprintf("order detail (%d facts)", f.bigFacts), "GET", "/orders/" + f.bigOrder, nil, ""},
			{"orders, page 1", "GET", "/orders", nil, ""},
			{"outbox (dead)", "GET", "/outbox", nil, ""},
			{"outbox (sent)", "GET", "/outbox?state=sent", nil, ""},
		}
		fmt.Printf("\ndashboard, %d notifications stored (filled in %s; states of the newest: %v); daemon up in %s; %d requests per page:\n",
			total, f.fill.Round(time.Second), f.states, startup.Round(time.Millisecond), reps)
		fmt.Printf("  %-58s %10s %10s  %s\n", "page", "p50", "p99", "old notification found")
		for _, pr := range probes {
			lats := make([]time.Duration, 0, reps)
			found := "-"
			var failed error
			for range reps {
				body, took, err := page(pr.method, pr.path, pr.form)
				if err != nil {
					failed = fmt.Errorf("failed after %s: %v", took.Round(time.Millisecond), err)
					break
				}
				lats = append(lats, took)
				if pr.want != "" {
					found = "no"
					if strings.Contains(body, pr.want) {
						found = "yes"
					}
				}
			}
			if failed != nil {
				fmt.Printf("  %-58s %s\n", pr.name, failed)
				continue
			}
			slices.Sort(lats)
			p50, p99 := lats[len(lats)/2], lats[min(len(lats)-1, len(lats)*99/100)]
			fmt.Printf("  %-58s %10s %10s  %s\n", pr.name, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), found)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatalf("ipnd: %v", err)
		}
	}
}

// dashID is an id of n characters that looks random (the same for the
// same kind and i).
func dashID(kind string, i, n int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", kind, i))
	return hex.EncodeToString(sum[:])[:n]
}
