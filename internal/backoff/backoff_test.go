package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayDoublesUpToTheLimitWithJitter(t *testing.T) {
	for _, tc := range []struct {
		attempt int
		want    time.Duration // before jitter
	}{{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {5, 10 * time.Second}, {60, 10 * time.Second}} {
		for range 50 {
			got := Delay(time.Second, 10*time.Second, tc.attempt)
			if lo, hi := tc.want*8/10, tc.want*12/10; got < lo || got > hi {
				t.Fatalf("Delay(1s, 10s, %d) = %s, want %s..%s", tc.attempt, got, lo, hi)
			}
		}
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if !Sleep(ctx, 0) {
		t.Fatal("Sleep(live ctx, 0) = false")
	}
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep(cancelled ctx, 1h) = true")
	}
	if Sleep(ctx, 0) {
		t.Fatal("Sleep(cancelled ctx, 0) = true")
	}
}
