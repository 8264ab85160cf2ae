package public

import (
	"container/list"
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate limiter defaults.
const (
	defaultRateKeys = 100_000 // clients remembered at once, over all shards
	rateShards      = 16
	// evictScan is how many least recently used clients a full shard
	// looks at for one whose bucket has refilled (and so can be forgotten).
	evictScan = 8
)

// rateLimiter is a token bucket per client (golang.org/x/time/rate): each
// may spend burst requests at once and regains rate per second. A client
// is its IPv4 address or its IPv6 /64, since one host is given a whole
// /64 and could otherwise spread its requests over 2^64 keys.
//
// Memory is bounded and expiring: at most maxKeys clients are remembered
// (split over shards, each with its own lock), and a client whose bucket
// has refilled carries no state and is forgotten, oldest first. A limited
// client is never forgotten: when a shard is full of clients that are all
// still limiting, a newcomer shares that shard's overflow bucket instead
// of taking anyone's place, so filling the table cannot reset anybody.
type rateLimiter struct {
	rate   rate.Limit
	burst  int
	refill time.Duration // how long an empty bucket takes to fill
	seed   maphash.Seed
	shards [rateShards]rateShard
}

type rateShard struct {
	mu       sync.Mutex
	max      int
	clients  map[netip.Prefix]*list.Element // of *rateClient
	lru      list.List                      // front: most recently seen
	overflow *rate.Limiter
}

type rateClient struct {
	key  netip.Prefix
	lim  *rate.Limiter
	seen time.Time
}

// newRateLimiter builds a limiter of perSecond requests (> 0) with burst
// (< 1: ceil(perSecond), at least 1) remembering at most maxKeys clients
// (< 1: 100000).
func newRateLimiter(perSecond float64, burst, maxKeys int) *rateLimiter {
	if burst < 1 {
		burst = int(math.Max(1, math.Ceil(perSecond)))
	}
	if maxKeys < 1 {
		maxKeys = defaultRateKeys
	}
	l := &rateLimiter{rate: rate.Limit(perSecond), burst: burst, seed: maphash.MakeSeed(),
		refill: time.Duration(float64(burst) / perSecond * float64(time.Second))}
	per := max(1, (maxKeys+rateShards-1)/rateShards)
	for i := range l.shards {
		s := &l.shards[i]
		s.max = per
		s.clients = make(map[netip.Prefix]*list.Element)
		s.overflow = rate.NewLimiter(l.rate, l.burst)
	}
	return l
}

// clientKey is the bucket a client address spends from: an IPv4 address
// (IPv4-mapped IPv6 included) or the /64 of an IPv6 address.
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil { // invalid address: one shared key
		return netip.Prefix{}
	}
	return p
}

// allow spends one request of client's bucket at now. When none is left
// it returns false and how long until one is (at most an hour).
func (l *rateLimiter) allow(client netip.Addr, now time.Time) (bool, time.Duration) {
	key := clientKey(client)
	s := &l.shards[maphash.Comparable(l.seed, key)%rateShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now, l.refill)
	var lim *rate.Limiter
	if e, ok := s.clients[key]; ok {
		c := e.Value.(*rateClient)
		c.seen = now
		s.lru.MoveToFront(e)
		lim = c.lim
	} else if len(s.clients) < s.max || s.evictRefilled(now, l.burst) {
		lim = rate.NewLimiter(l.rate, l.burst)
		s.clients[key] = s.lru.PushFront(&rateClient{key: key, lim: lim, seen: now})
	} else {
		lim = s.overflow
	}
	if lim.AllowN(now, 1) {
		return true, 0
	}
	wait := (1 - lim.TokensAt(now)) / float64(l.rate)
	if math.IsNaN(wait) || wait > 3600 {
		wait = 3600
	}
	return false, time.Duration(wait * float64(time.Second))
}

// expire forgets the clients not seen for refill or longer: their buckets
// are full again, as a newcomer's would be. Oldest first, so it stops at
// the first client seen more recently.
func (s *rateShard) expire(now time.Time, refill time.Duration) {
	for e := s.lru.Back(); e != nil; e = s.lru.Back() {
		c := e.Value.(*rateClient)
		if now.Sub(c.seen) < refill {
			return
		}
		s.forget(e)
	}
}

// evictRefilled forgets one of the least recently seen clients whose
// bucket is full at now, if any, and says whether it did.
func (s *rateShard) evictRefilled(now time.Time, burst int) bool {
	e := s.lru.Back()
	for i := 0; e != nil && i < evictScan; i++ {
		if e.Value.(*rateClient).lim.TokensAt(now) >= float64(burst) {
			s.forget(e)
			return true
		}
		e = e.Prev()
	}
	return false
}

func (s *rateShard) forget(e *list.Element) {
	delete(s.clients, e.Value.(*rateClient).key)
	s.lru.Remove(e)
}

// size is how many clients are remembered (for tests).
func (l *rateLimiter) size() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.clients)
		s.mu.Unlock()
	}
	return n
}

// ClientLimiter is a token bucket per client (IPv4 address, IPv6 /64)
// for failures rather than requests: the admin listener spends one per
// wrong bearer token and refuses a client whose bucket is empty, before
// comparing anything. Memory is bounded as for the receiver's limiter.
// Safe for concurrent use.
type ClientLimiter struct{ l *rateLimiter }

// NewClientLimiter allows burst failures at once per client, regained at
// perSecond (> 0), remembering at most maxKeys clients (< 1: 100000).
func NewClientLimiter(perSecond float64, burst, maxKeys int) *ClientLimiter {
	return &ClientLimiter{l: newRateLimiter(perSecond, burst, maxKeys)}
}

// Blocked reports whether client has no failure left at now, and how
// long until it has one. It spends nothing.
func (c *ClientLimiter) Blocked(client netip.Addr, now time.Time) (bool, time.Duration) {
	l := c.l
	key := clientKey(client)
	s := &l.shards[maphash.Comparable(l.seed, key)%rateShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now, l.refill)
	lim := s.overflow
	if e, ok := s.clients[key]; ok {
		lim = e.Value.(*rateClient).lim
	} else if len(s.clients) < s.max {
		return false, 0 // a newcomer would get a full bucket
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return false, 0
	}
	wait := min((1-tokens)/float64(l.rate), 3600)
	return true, time.Duration(wait * float64(time.Second))
}

// Fail spends one failure of client's bucket at now.
func (c *ClientLimiter) Fail(client netip.Addr, now time.Time) { c.l.allow(client, now) }
