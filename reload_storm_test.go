package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/ipn"
)

// metricValue reads one sample of the child's /metrics ("" when absent).
func metricValue(d *daemon, sample string) string {
	req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

// TestReloadStormSendsNothingTwice: a real ipnd process delivers
// customer emails to an SMTP server and callbacks to a shop, both a
// little slow to answer (each keeps what it got, then answers), while
// notifications keep coming and 50 SIGHUPs each change shop.timeout and
// smtp.timeout (and every tenth rotates shop.secret). Every email and
// every callback arrives exactly once: a reload lets the deliveries under
// way finish instead of cutting them short and sending them again.
func TestReloadStormSendsNothingTwice(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	smtpd.answer = func(string, int) *smtp.SMTPError {
		time.Sleep(10 * time.Millisecond) // a server that checks the message before its 250
		return nil
	}
	var mu sync.Mutex
	callbacks := map[string]int{} // per webhook-id
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		callbacks[r.Header.Get("Webhook-Id")]++
		mu.Unlock()
		time.Sleep(10 * time.Millisecond) // the shop works a little before its 200
	}))
	defer shop.Close()

	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	shopSecrets := []string{"whsec_c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}
	config := func(i int) string {
		return writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "warn"
[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "shop@example.com"
timeout = "%ds"
[shop]
url = %q
secret = %q
timeout = "%ds"
[pipeline]
outbox_retry_base = "50ms"
outbox_retry_cap = "200ms"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, smtpd.port(), 5+i%2, shop.URL, shopSecrets[i/10%2], 7+i%2, secret))
	}
	cfg := config(0)
	cmd, _ := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir, cfg: cfg}
	post := signedPoster(t, func() string { return d.addr("public") }, secret)

	// Notifications keep coming, about 40 a second, during the storm.
	var posted atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			n := posted.Load() + 1
			order := fmt.Sprintf("H-%d", n)
			if code := post("m-"+order, "payment.completed", map[string]any{"order_id": order, "txn_id": "T-" + order,
				"amount": "5.00", "currency": "EUR", "customer_email": fmt.Sprintf("c%d@example.com", n)}); code != 200 {
				t.Errorf("notification %s: HTTP %d", order, code)
				return
			}
			posted.Add(1)
		}
	})
	waitFor(t, "deliveries under way", 20*time.Second, func() bool { return len(smtpd.messages()) > 5 })
	for i := 1; i <= 50; i++ {
		config(i)
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("reload %d", i), 20*time.Second, func() bool {
			return metricValue(d, `ipnd_config_reloads_total{result="success"}`) == strconv.Itoa(i)
		})
	}
	close(stop)
	wg.Wait()
	orders := int(posted.Load())

	waitFor(t, "every email and callback delivered", 60*time.Second, func() bool {
		mu.Lock()
		n := len(callbacks)
		mu.Unlock()
		return len(smtpd.messages()) >= orders && n >= orders
	})
	waitFor(t, "the outbox settled", 20*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		return len(pending.Items) == 0
	})
	ids := map[string]int{}
	for _, m := range smtpd.messages() {
		ids[m.Header.Get("Message-Id")]++
	}
	dupEmails, dupCallbacks := 0, 0
	for _, n := range ids {
		dupEmails += n - 1
	}
	mu.Lock()
	for _, n := range callbacks {
		dupCallbacks += n - 1
	}
	distinct := len(callbacks)
	mu.Unlock()
	t.Logf("%d notifications, 50 reloads: %d emails (%d distinct), %d callbacks (%d distinct)",
		orders, len(smtpd.messages()), len(ids), distinct+dupCallbacks, distinct)
	if dupEmails != 0 || dupCallbacks != 0 {
		t.Errorf("a reload storm sent %d duplicate emails and %d duplicate callbacks, want none", dupEmails, dupCallbacks)
	}
	if len(ids) != orders || distinct != orders {
		t.Errorf("%d distinct emails and %d distinct callbacks for %d orders", len(ids), distinct, orders)
	}
}
