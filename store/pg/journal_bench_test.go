package pg

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
)

// BenchmarkPGPipeline processes b.N stored payments (each its own order,
// a customer email and a shop callback queued) with the real pipeline,
// on the bbolt store and on PostgreSQL (a local throwaway server):
// notifications/s from the first step to the last one recorded.
func BenchmarkPGPipeline(b *testing.B) {
	for _, name := range []string{"bbolt", "postgres"} {
		b.Run(name, func(b *testing.B) {
			var be *backend
			if name == "bbolt" {
				be = boltBackend(b)
			} else {
				be = pgBackend(b, open(b, pgtest.Start(b).DSN()))
			}
			for i := range b.N {
				if _, err := be.append(webhook(fmt.Sprintf("m%d", i), "payment.completed",
					fmt.Sprintf(`"txn_id":"T%d","order_id":"O%d","amount":"19.95","currency":"USD","customer_email":"a@example.com"`, i, i))); err != nil {
					b.Fatal(err)
				}
			}
			g, err := gateway.New(gateway.Config{Name: "test", Kind: "standard-webhooks", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := pipeline.New(pipeline.Options{Journal: be.journal, Gateways: []gateway.Gateway{g}, BatchDelay: time.Millisecond,
				Logger: slog.New(slog.DiscardHandler)})
			b.ResetTimer()
			start := time.Now()
			ran := make(chan error, 1)
			go func() { ran <- p.Run(ctx) }()
			last := uint64(b.N)
			for {
				// Batches commit in id order: the last one done is all done.
				if st, err := be.state(last); err == nil && st != nil && st.State == ipn.StateApplied && be.cursor() >= last {
					break
				}
				time.Sleep(2 * time.Millisecond) // polling
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notifications/s")
			b.StopTimer()
			cancel()
			<-ran
		})
	}
}
