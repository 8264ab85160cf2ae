package store

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"ipnd/ipn"
)

// BenchmarkStep measures the pipeline's store work per notification
// (issue 23: applied ≥ 8,000/s): PendingExcept then one Finish of a new
// paid order each (a customer email and a shop callback queued), with
// bbolt's fsync on, for steps of 64, 256 and 1024 notifications. It
// prints the wall time per notification and per step.
func BenchmarkStep(b *testing.B) {
	const n = 8192
	for _, step := range []int{64, 256, 1024} {
		b.Run(fmt.Sprintf("step=%d", step), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				db, err := Open(filepath.Join(b.TempDir(), "ipnd.db"), Options{})
				if err != nil {
					b.Fatal(err)
				}
				batch := make([]journaled, 0, n)
				for id := 1; id <= n; id++ {
					nt := sampleTypical(id)
					batch = append(batch, journaled{id: uint64(id), key: dedupKey(nt.Gateway, nt.DedupKey), rec: plainRecord(nt)})
				}
				if err := db.putJournaled(batch); err != nil {
					b.Fatal(err)
				}
				db.acked, db.applied = n, n
				b.StartTimer()
				t0, c0 := time.Now(), cpuTime()
				steps := 0
				for done := 0; done < n; steps++ {
					now := time.Now()
					work, err := db.PendingExcept(now, step, nil)
					if err != nil || len(work) == 0 {
						b.Fatalf("pending: %d (%v)", len(work), err)
					}
					outs := make([]ipn.Outcome, len(work))
					for i, w := range work {
						id := w.Notification.ID
						ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: fmt.Sprintf("T-%d", id),
							OrderID: fmt.Sprintf("O-%d", id), Amount: "149.90", Currency: "EUR", CustomerEmail: "customer.name@example.com"}
						outs[i] = ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("shop", ev), ApplyOrder: true,
							Context: ipn.ApplyContext{Gateway: "shop"}}
					}
					if _, err := db.Finish(outs, work[len(work)-1].Notification.ID, now); err != nil {
						b.Fatal(err)
					}
					done += len(work)
				}
				el, cpu := time.Since(t0), cpuTime()-c0
				b.StopTimer()
				b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/notification")
				db.Close()
				b.ReportMetric(float64(n)/el.Seconds(), "notifications/s")
				b.ReportMetric(float64(el.Microseconds())/float64(steps)/1000, "ms/step")
				b.StartTimer()
			}
		})
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
