package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// Sessions holds the signed-in browser sessions, in memory: a restart
// signs everyone out. The caller keeps one Sessions across config
// reloads; a session stays valid only while the admin token it was
// opened with is still the admin token, so rotating the token signs
// everyone out too.
type Sessions struct {
	mu   sync.Mutex
	byID map[string]*sessionData
	idle time.Duration
	// current is the sum of the admin token of the newest handler
	// (Register): what an older token allowed ends, open event streams
	// included.
	current [32]byte
}

type sessionData struct {
	csrf     string
	tokenSum [32]byte // of the admin token it was opened with
	lastSeen time.Time
	opened   time.Time
}

// SessionIdle is how long a session lasts without a request.
const SessionIdle = 12 * time.Hour

// SessionMax is how long a session lasts at most, however busy: its
// cookie's lifetime, kept on the server too (a copied cookie does not
// outlive it).
const SessionMax = 12 * time.Hour

// maxSessions bounds the memory sessions take: past it, opening one
// drops the longest idle.
const maxSessions = 1000

// NewSessions returns an empty session store whose sessions expire
// after idle without a request (0: SessionIdle).
func NewSessions(idle time.Duration) *Sessions {
	if idle <= 0 {
		idle = SessionIdle
	}
	return &Sessions{byID: map[string]*sessionData{}, idle: idle}
}

// randomToken is 32 bytes from crypto/rand, base64url.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics on an unusable source)
	return base64.RawURLEncoding.EncodeToString(b)
}

// open starts a session for the admin token with sum tokenSum and
// returns its id.
func (s *Sessions) open(tokenSum [32]byte, now time.Time) string {
	id := randomToken()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	if len(s.byID) >= maxSessions {
		var oldest string
		var at time.Time
		for k, v := range s.byID {
			if oldest == "" || v.lastSeen.Before(at) {
				oldest, at = k, v.lastSeen
			}
		}
		delete(s.byID, oldest)
	}
	s.byID[id] = &sessionData{csrf: randomToken(), tokenSum: tokenSum, lastSeen: now, opened: now}
	return id
}

// expire drops the sessions idle for too long; s.mu is held.
func (s *Sessions) expire(now time.Time) {
	for k, v := range s.byID {
		if now.Sub(v.lastSeen) > s.idle || now.Sub(v.opened) > SessionMax {
			delete(s.byID, k)
		}
	}
}

// lookup returns the CSRF token of session id when it is valid for the
// admin token with sum tokenSum, and marks it used.
func (s *Sessions) lookup(id string, tokenSum [32]byte, now time.Time) (csrf string, ok bool) {
	if id == "" {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.byID[id]
	if v == nil {
		return "", false
	}
	if now.Sub(v.lastSeen) > s.idle || now.Sub(v.opened) > SessionMax || subtle.ConstantTimeCompare(v.tokenSum[:], tokenSum[:]) != 1 {
		delete(s.byID, id)
		return "", false
	}
	v.lastSeen = now
	return v.csrf, true
}

// setToken records the sum of the admin token now in use.
func (s *Sessions) setToken(sum [32]byte) {
	s.mu.Lock()
	s.current = sum
	s.mu.Unlock()
}

// Current reports whether tokenSum is the sum of the admin token now in
// use (a config reload with another token makes it false): a stream
// opened with an older token ends.
func (s *Sessions) Current(tokenSum [32]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current == tokenSum
}

// alive reports whether session id is still valid for the admin token
// now in use with sum tokenSum, without counting as a request: an open
// event stream ends with its session (signed out, expired, token
// changed).
func (s *Sessions) alive(id string, tokenSum [32]byte, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.byID[id]
	return v != nil && s.current == tokenSum && v.tokenSum == tokenSum &&
		now.Sub(v.lastSeen) <= s.idle && now.Sub(v.opened) <= SessionMax
}

// close ends session id.
func (s *Sessions) close(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

// sameToken compares two secrets in constant time (over their hashes,
// so that the length does not leak either).
func sameToken(got string, wantSum [32]byte) bool {
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], wantSum[:]) == 1
}
