package store

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkAppend measures one durable append at a time (every op is a
// commit with its fsyncs) and with parallel appenders (group commit).
func BenchmarkAppend(b *testing.B) {
	body := strings.Repeat("x", 600)
	for _, par := range []int{1, 64} {
		b.Run("clients="+strconv.Itoa(par), func(b *testing.B) {
			db, err := Open(filepath.Join(b.TempDir(), "ipnd.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			var seq atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			if par == 1 {
				for i := 0; i < b.N; i++ {
					db.Append(context.Background(), sample("g", strconv.Itoa(i), body))
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					db.Append(context.Background(), sample("g", strconv.FormatInt(seq.Add(1), 10), body))
				}
			})
		})
	}
}
