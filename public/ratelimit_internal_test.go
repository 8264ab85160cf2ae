package public

import (
	"net/netip"
	"testing"
	"time"
)

// TestRateLimiterMemoryIsBoundedAndExpires: 200,000 distinct clients
// never hold more than the cap, and idle clients are forgotten once their
// bucket has refilled.
func TestRateLimiterMemoryIsBoundedAndExpires(t *testing.T) {
	const keys = 1024
	l := newRateLimiter(10, 5, keys)
	now := time.Unix(1_800_000_000, 0)
	a := netip.MustParseAddr("2001:db8::").As16()
	for i := 0; i < 200_000; i++ {
		a[4], a[5], a[6] = byte(i>>16), byte(i>>8), byte(i) // a new /64 each time
		l.allow(netip.AddrFrom16(a), now)
		if i%10_000 == 0 {
			now = now.Add(time.Millisecond)
		}
	}
	if n := l.size(); n > keys {
		t.Errorf("%d clients remembered, cap %d", n, keys)
	}
	// Refill takes burst/rate = 0.5 s: a second later any request forgets
	// the idle clients of its shard. 256 newcomers reach every shard
	// (but with odds of about 1e-6), leaving only themselves.
	now = now.Add(time.Second)
	for i := 0; i < 256; i++ {
		l.allow(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), now)
	}
	if n := l.size(); n > 256 {
		t.Errorf("%d clients remembered a second after the flood, want only the 256 newcomers", n)
	}
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.1", "192.0.2.1/32"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := clientKey(netip.MustParseAddr(tc.addr)).String(); got != tc.want {
			t.Errorf("clientKey(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
