package pg

import (
	"fmt"
	"sync/atomic"
	"testing"

	"ipnd/internal/pgtest"
	"ipnd/store"
)

// BenchmarkPGAppendLive is concurrent ingest (64 clients) on
// PostgreSQL with no follower and with a follower of the live stream
// in another DB (each commit NOTIFYs its events either way; a follower
// only adds the reading): notifications/s.
func BenchmarkPGAppendLive(b *testing.B) {
	for _, followed := range []bool{false, true} {
		b.Run(fmt.Sprintf("followed=%v", followed), func(b *testing.B) {
			c := pgtest.Start(b)
			db := open(b, c.DSN())
			if followed {
				ch, stop, err := open(b, c.DSN()).Dashboard().Follow(store.MaxFollowers * 1024)
				if err != nil {
					b.Fatal(err)
				}
				defer stop()
				go func() {
					for range ch {
					}
				}()
			}
			var n atomic.Int64
			b.SetParallelism(32) // 32 clients per GOMAXPROCS
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := db.Append(b.Context(), note("g", fmt.Sprint(n.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
		})
	}
}
