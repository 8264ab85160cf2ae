package notify

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkSendSMTP sends 10,000 emails per iteration to the in-process
// SMTP server, in bursts of 100 (one connection per burst), and reports
// emails per second. Run it with: go test -run '^$' -bench SendSMTP ./notify
func BenchmarkSendSMTP(b *testing.B) {
	const total, burst = 10000, 100
	tmpl, err := LoadTemplates("")
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([]Message, total)
	for i := range msgs {
		d := goldenData
		d.OrderID = fmt.Sprintf("B-%05d", i)
		subject, text, html, err := tmpl.Render("payment_received", d)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = Message{From: "Example Shop <shop@example.com>", To: fmt.Sprintf("customer%d@example.net", i),
			ReplyTo: "support@example.com", Subject: subject, Text: text, HTML: html,
			MessageID: MessageID(d.OrderID+"/paid/payment_received", "example.com")}
	}
	for _, mode := range []string{SMTPNoTLS, SMTPStartTLS} {
		b.Run("tls="+mode, func(b *testing.B) {
			srv := startSMTPTestServer(b, smtpTestOptions{TLS: mode, Discard: true})
			m := mustSMTPMailer(b, srv.config(b))
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				for start := 0; start < total; start += burst {
					for i, err := range m.Send(ctx, msgs[start:start+burst]) {
						if err != nil {
							b.Fatalf("message %d: %v", start+i, err)
						}
					}
				}
			}
			b.StopTimer()
			if got, want := srv.accepted.Load(), int64(total*b.N); got != want {
				b.Fatalf("server accepted %d emails, want %d", got, want)
			}
			b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "emails/s")
		})
	}
}
