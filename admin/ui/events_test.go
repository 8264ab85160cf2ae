package ui_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/store"
)

// TestDashboardEventsOutliveWriteTimeout: the dashboard's live stream
// (/events) goes on past the admin listener's write timeout (here 100
// ms): events keep arriving on the same stream long after it, each
// write moving the deadline ahead. Time is driven by the notifications
// the test stores and whose events it reads, one after the other, until
// several write timeouts have passed: no sleep.
func TestDashboardEventsOutliveWriteTimeout(t *testing.T) {
	const writeTimeout = 100 * time.Millisecond
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(admin.Handler(admin.Options{Store: db, Token: "s3cret-admin-token"}))
	srv.Config.WriteTimeout = writeTimeout
	srv.Start()
	t.Cleanup(func() { srv.Close(); db.Close() })
	c := browser(t)
	signIn(t, srv, c)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	opened := time.Now()
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	events := 0
	for i := 0; time.Since(opened) < 5*writeTimeout || events < 3; i++ {
		if _, _, err := db.Append(context.Background(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(),
			Body: []byte("{}"), DedupKey: "k" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
		for got := false; !got; {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the stream ended %v after it opened, after %d events (write timeout %v): the timeout cut it",
						time.Since(opened).Round(time.Millisecond), events, writeTimeout)
				}
				got = l == "event: change"
			case <-ctx.Done():
				t.Fatalf("no event for notification %d", i+1)
			}
		}
		events++
	}
}
