package public

import (
	"net/netip"
	"testing"
	"time"
)

// TestClientLimiter: Blocked spends nothing; Fail spends one failure of
// the client's bucket; past burst the client is blocked, with the wait
// until its next failure, and others (another IPv4 address, another
// IPv6 /64) are not; the bucket refills with time.
func TestClientLimiter(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := NewClientLimiter(0.5, 3, 0) // 3 at once, one per 2 s
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if blocked, _ := l.Blocked(a, now); blocked {
			t.Fatalf("blocked after %d failures, burst 3", i)
		}
		l.Fail(a, now)
	}
	blocked, wait := l.Blocked(a, now)
	if !blocked || wait != 2*time.Second {
		t.Errorf("after 3 failures: blocked %v, wait %s; want blocked for 2s", blocked, wait)
	}
	if blocked, _ := l.Blocked(a, now); !blocked {
		t.Error("Blocked spent something: the client is free again")
	}
	for _, other := range []string{"192.0.2.2", "2001:db8:0:1::1"} {
		if blocked, _ := l.Blocked(netip.MustParseAddr(other), now); blocked {
			t.Errorf("%s blocked by another client's failures", other)
		}
	}
	v6 := netip.MustParseAddr("2001:db8:0:2::1")
	for range 3 {
		l.Fail(v6, now)
	}
	if blocked, _ := l.Blocked(netip.MustParseAddr("2001:db8:0:2::ffff"), now); !blocked {
		t.Error("another address of the same IPv6 /64 is not blocked")
	}
	if blocked, _ := l.Blocked(a, now.Add(2*time.Second)); blocked {
		t.Error("still blocked once a failure is regained")
	}
}
