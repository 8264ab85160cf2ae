// Package backoff holds the two timing helpers the workers share: the
// delay before retrying a failed attempt, and a sleep that ends with its
// context. The pipeline, the store's applier and the outbox worker use
// them.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the wait after failed attempt number attempt (1, 2, ...): base
// doubling per attempt up to limit, with ±20 % jitter so that many
// retries do not fire together.
func Delay(base, limit time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Sleep waits d, or less when ctx ends, and reports whether ctx is
// still live. d <= 0 does not wait.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
