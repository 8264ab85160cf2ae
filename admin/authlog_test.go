package admin

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ipnd/store"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWrongTokenBurstIsLoggedWhole: a burst of wrong tokens that stops
// within the aggregation period must still reach the log with its
// count: the operator reading the log must not see "wrong=1" for a
// burst of 30 (the later ones were only logged when another wrong
// token came in more than a period later: never, after a burst).
func TestWrongTokenBurstIsLoggedWhole(t *testing.T) {
	was := authLogEvery
	authLogEvery = 50 * time.Millisecond
	t.Cleanup(func() { authLogEvery = was })
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok", Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	t.Cleanup(func() { srv.Close(); db.Close() })
	for range 30 {
		req, _ := http.NewRequest("GET", srv.URL+"/api/stats", nil)
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var wrong, limited int
		for _, l := range strings.Split(logs.String(), "\n") {
			if !strings.Contains(l, "wrong bearer tokens") {
				continue
			}
			var w, r int
			for _, f := range strings.Fields(l) {
				if v, ok := strings.CutPrefix(f, "wrong="); ok {
					w = atoi(v)
				}
				if v, ok := strings.CutPrefix(f, "refused_429="); ok {
					r = atoi(v)
				}
			}
			wrong += w
			limited += r
		}
		if wrong+limited == 30 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 refused tokens, the log counts %d wrong and %d refused:\n%s", wrong, limited, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}
