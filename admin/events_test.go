package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/store"
)

// The event stream outlives the listener's write timeout (each write
// moves the deadline ahead), and a notification stored long after the
// timeout still arrives as an event.
func TestEventsOutliveWriteTimeout(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	eventsHeartbeat, eventsWriteIdle = 20*time.Millisecond, 200*time.Millisecond
	defer func() { eventsHeartbeat, eventsWriteIdle = 15*time.Second, 30*time.Second }()
	srv := httptest.NewUnstartedServer(Handler(Options{Store: db, Token: "tok"}))
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /api/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// Several write timeouts pass with heartbeats only.
	pings := 0
	for pings < 25 {
		l, ok := <-lines
		if !ok {
			t.Fatalf("the stream ended after %d heartbeats: the write timeout cut it", pings)
		}
		if l == ": ping" {
			pings++
		}
	}
	id, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(), Body: []byte("{}"), DedupKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		data, ok := strings.CutPrefix(l, "data: ")
		if !ok {
			continue
		}
		var e store.LiveEvent
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatal(err)
		}
		if e.Type != store.LiveNotification || e.Notification != id || e.Gateway != "test" {
			t.Fatalf("event %+v, want notification %d", e, id)
		}
		return
	}
	t.Fatal("the stream ended before the notification's event")
}
