package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// BenchmarkOutbox runs the daemon with the in-process SMTP server and a
// shop on loopback, posts 1,000 payments (each a customer email and a
// shop callback) and reports how fast emails and callbacks go out: once
// with a healthy shop (answers 200 at once) and once with a hanging one
// (accepts connections, never answers; shop.timeout 2 s), in the same
// run. With lanes, the emails/s of the two should be alike. make bench
// runs it.
func BenchmarkOutbox(b *testing.B) {
	const n = 1000
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	type result struct{ emails, callbacks, secs float64 }
	measure := func(shopURL string) result {
		var accepted, answered atomic.Int64
		healthy := shopURL == ""
		smtpd := newFakeSMTP(b, "127.0.0.1:0")
		smtpd.forget = true
		smtpd.answer = func(string, int) *smtp.SMTPError { accepted.Add(1); return nil }
		if healthy {
			shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				answered.Add(1)
			}))
			defer shop.Close()
			shopURL = shop.URL
		}
		dir := b.TempDir()
		cfg := writeTestConfig(b, dir, fmt.Sprintf("[log]\nlevel = \"warn\"\n%s\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = %q\n",
			mailConfig(smtpd.port(), fmt.Sprintf("[shop]\nurl = %q\nsecret = %q\ntimeout = \"2s\"\n", shopURL, shopSecret)), secret))
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
		start := time.Now()
		postAll(b, signedPoster(b, public, secret), "B", n, nil)
		var emailsDone, callbacksDone time.Duration
		for deadline := start.Add(5 * time.Minute); emailsDone == 0 || healthy && callbacksDone == 0; time.Sleep(5 * time.Millisecond) {
			if emailsDone == 0 && accepted.Load() >= n {
				emailsDone = time.Since(start)
			}
			if callbacksDone == 0 && answered.Load() >= n {
				callbacksDone = time.Since(start)
			}
			if time.Now().After(deadline) {
				b.Fatalf("after 5 minutes: %d emails, %d callbacks", accepted.Load(), answered.Load())
			}
		}
		r := result{emails: n / emailsDone.Seconds(), secs: emailsDone.Seconds()}
		if callbacksDone > 0 {
			r.callbacks = n / callbacksDone.Seconds()
		} else { // the hanging shop: what got through while the emails went
			r.callbacks = float64(answered.Load()) / emailsDone.Seconds()
		}
		return r
	}
	for range b.N {
		healthy := measure("")
		hanging := measure(hangingShop(b))
		fmt.Printf("\noutbox, %d payments (a customer email and a shop callback each), SMTP server and shop on loopback:\n", n)
		fmt.Printf("  healthy shop   %6.0f emails/s  %6.0f callbacks/s\n", healthy.emails, healthy.callbacks)
		fmt.Printf("  hanging shop   %6.0f emails/s  %6.0f callbacks/s (every callback times out at 2 s)\n", hanging.emails, hanging.callbacks)
		b.ReportMetric(healthy.emails, "emails/s-healthy")
		b.ReportMetric(healthy.callbacks, "callbacks/s-healthy")
		b.ReportMetric(hanging.emails, "emails/s-hanging")
		b.ReportMetric(hanging.callbacks, "callbacks/s-hanging")
	}
}
