package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// deliveryRun is one run of the daemon delivering n payments (a customer
// email each, and a shop callback each when shop is set).
type deliveryRun struct {
	n           int
	delay       time.Duration // the SMTP server's time per message
	connections int           // email.connections
	unrecorded  int           // email.unrecorded
	shop        int           // shop.connections; 0: no shop, -1: its default
}

// deliveryRates are what a run measured: emails and callbacks per second
// of a backlog (the SMTP server and the shop hold everything until all
// n payments are applied and their items queued; the clock starts when
// they let go), so that ingest and apply do not set the pace.
type deliveryRates struct{ emails, callbacks float64 }

// span counts events and records the time of the last.
type span struct {
	mu   sync.Mutex
	n    int
	last time.Time
}

func (s *span) add() {
	now := time.Now()
	s.mu.Lock()
	s.n++
	s.last = now
	s.mu.Unlock()
}

func (s *span) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// setting is a config line, none for 0 or less (the default).
func setting(key string, v int) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%s = %d\n", key, v)
}

func runDelivery(b *testing.B, r deliveryRun) deliveryRates {
	b.Helper()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var emails, calls span
	gate := make(chan struct{})
	smtpd := newFakeSMTP(b, "127.0.0.1:0")
	smtpd.forget = true
	smtpd.answer = func(string, int) *smtp.SMTPError {
		<-gate
		if r.delay > 0 {
			time.Sleep(r.delay) // the server's work on the message
		}
		emails.add()
		return nil
	}
	shop := ""
	if r.shop != 0 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			io.Copy(io.Discard, req.Body)
			<-gate
			calls.add()
		}))
		defer srv.Close()
		shop = fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\ntimeout = \"5s\"\n%s", srv.URL, shopSecret, setting("connections", r.shop))
	}
	dir := b.TempDir()
	cfg := writeTestConfig(b, dir, fmt.Sprintf(`[log]
level = "warn"
[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "Shop <shop@example.com>"
timeout = "5s"
[email]
merchant_name = "Example Shop"
%s%s%s
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, smtpd.port(), setting("connections", r.connections), setting("unrecorded", r.unrecorded), shop, secret))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
	defer func() { cancel(); <-done }()
	public := func() string {
		a, _ := os.ReadFile(filepath.Join(dir, "public.addr"))
		return "http://" + strings.TrimSpace(string(a))
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "admin.addr")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("ipnd did not start")
		}
	}
	postAll(b, signedPoster(b, public, secret), "D", r.n, nil)
	admin, _ := os.ReadFile(filepath.Join(dir, "admin.addr"))
	queued := func(kind string) int {
		req, _ := http.NewRequest("GET", "http://"+strings.TrimSpace(string(admin))+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var n int
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, `ipnd_outbox_pending{kind="`+kind+`"}`) {
				fmt.Sscan(strings.Fields(line)[1], &n)
			}
		}
		return n
	}
	for deadline := time.Now().Add(5 * time.Minute); queued("email_customer") < r.n || r.shop != 0 && queued("shop_callback") < r.n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("after 5 minutes: %d emails and %d callbacks queued", queued("email_customer"), queued("shop_callback"))
		}
	}
	if path := os.Getenv("IPND_BENCH_DELIVERY_PROFILE"); path != "" {
		// A CPU profile of the delivery alone (make bench-profile).
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	start := time.Now()
	close(gate)
	for deadline := time.Now().Add(5 * time.Minute); emails.count() < r.n || r.shop != 0 && calls.count() < r.n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("after 5 minutes: %d emails, %d callbacks", emails.count(), calls.count())
		}
	}
	out := deliveryRates{emails: float64(r.n) / emails.last.Sub(start).Seconds()}
	if r.shop != 0 {
		out.callbacks = float64(r.n) / calls.last.Sub(start).Seconds()
	}
	return out
}

// BenchmarkEmailConnections measures the emails per second of the
// customer email lane against a loopback SMTP server that takes 0 ms and
// 20 ms per message, by email.connections and email.unrecorded: the
// tables the defaults were chosen from (README, "Throughput").
func BenchmarkEmailConnections(b *testing.B) {
	for range b.N {
		for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
			n := 3000
			if delay > 0 {
				n = 1000
			}
			fmt.Printf("\nemails/s, %d payments, SMTP server taking %s per message (rows: email.connections, columns: email.unrecorded)\n", n, delay)
			fmt.Printf("%12s", "")
			us := []int{1, 4, 8, 16}
			for _, u := range us {
				fmt.Printf("%8d", u)
			}
			fmt.Println()
			for _, c := range []int{1, 2, 4, 8, 16} {
				if delay > 0 && c < 4 {
					continue // (50 emails/s per connection at most)
				}
				fmt.Printf("%12d", c)
				for _, u := range us {
					r := runDelivery(b, deliveryRun{n: n, delay: delay, connections: c, unrecorded: u})
					fmt.Printf("%8.0f", r.emails)
				}
				fmt.Println()
			}
		}
	}
}

// BenchmarkShopConnections measures callbacks per second (and the emails
// beside them) by shop.connections, the shop answering at once.
func BenchmarkShopConnections(b *testing.B) {
	if os.Getenv("IPND_BENCH_ONE") != "" { // one run, for a profile
		var r deliveryRun
		fmt.Sscan(os.Getenv("IPND_BENCH_ONE"), &r.n, &r.delay, &r.connections, &r.unrecorded, &r.shop)
		out := runDelivery(b, r)
		fmt.Printf("%+v: %.0f emails/s, %.0f callbacks/s\n", r, out.emails, out.callbacks)
		return
	}
	for range b.N {
		fmt.Printf("\ncallbacks/s and emails/s, 3000 payments, shop and SMTP server answering at once, by shop.connections\n")
		for _, s := range []int{1, 4, 8, 16, 32} {
			r := runDelivery(b, deliveryRun{n: 3000, shop: s})
			fmt.Printf("%4d  %6.0f callbacks/s  %6.0f emails/s\n", s, r.callbacks, r.emails)
		}
	}
}
