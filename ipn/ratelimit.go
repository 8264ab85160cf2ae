package ipn

import (
	"math"
	"sync"
	"time"
)

// rateLimiter is a per-key token bucket: each key may spend burst tokens at
// once and regains rate tokens per second. The table is bounded: when it
// grows past maxKeys, keys whose bucket has refilled are forgotten.
type rateLimiter struct {
	rate    float64
	burst   float64
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	if burst < 1 {
		burst = int(math.Max(1, math.Ceil(rate)))
	}
	return &rateLimiter{rate: rate, burst: float64(burst), maxKeys: 100_000, buckets: make(map[string]*bucket)}
}

// allow takes one token from key's bucket. When none is left it returns
// false and how long until one is.
func (l *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := (1 - b.tokens) / l.rate // seconds; config keeps rate in (0, 1e6]
	if math.IsNaN(wait) || wait > 3600 {
		wait = 3600
	}
	return false, time.Duration(wait * float64(time.Second))
}

func (l *rateLimiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxKeys { // all busy: start afresh rather than grow
		clear(l.buckets)
	}
}
