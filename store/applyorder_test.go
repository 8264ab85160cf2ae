package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/pipeline"
)

// TestPostbacksEndingTogetherApplyInLogOrder: PayPal resends one payment
// with a new ipn_track_id each time. When the postbacks of the original
// and its resends end in one step, the original (the lowest id) is the
// one applied and every resend is its duplicate. The pipeline once
// recorded the postbacks that ended in a step in map order, so that a
// resend was applied and the original marked its duplicate (seen in CI as
// TestPayPalDuplicatesAndDisorder timing out on "notification 1 applied":
// it was "duplicate of 2").
//
// Every notification is stored before the pipeline starts, so that its
// first step takes them all, and the fake PayPal answers none before all
// have asked, so that every postback is under way at once and they end
// together.
func TestPostbacksEndingTogetherApplyInLogOrder(t *testing.T) {
	const n = 8 // the pipeline's default workers per gateway
	all := make(chan struct{})
	var asked atomic.Int32
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if asked.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "VERIFIED")
	}))
	defer fake.Close()
	gw, err := gateway.New(gateway.Config{Name: "paypal", Kind: "paypal", VerifyURL: fake.URL + "/cgi-bin/webscr",
		Receivers: []string{"shop@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	db := mustOpen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 1; i <= n; i++ {
		body := fmt.Appendf(nil, "txn_type=web_accept&payment_status=Completed&mc_gross=19.95&mc_currency=USD"+
			"&receiver_email=shop%%40example.com&invoice=ORDER-1&txn_id=R&ipn_track_id=trk-r%d", i)
		nt := &ipn.Notification{Gateway: "paypal", ReceivedAt: time.Now().UTC(), ContentType: "application/x-www-form-urlencoded",
			Body: body, DedupKey: fmt.Sprintf("trk-r%d", i)}
		if _, _, err := db.Append(ctx, nt); err != nil {
			t.Fatal(err)
		}
	}
	p := pipeline.New(pipeline.Options{Journal: db, Gateways: []gateway.Gateway{gw},
		Receivers: map[string][]string{"paypal": {"shop@example.com"}}, Logger: slog.New(slog.DiscardHandler)})
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
	}()
	states := make([]*ipn.Processing, n+1)
	deadline := time.Now().Add(30 * time.Second)
	for id := uint64(1); id <= n; id++ {
		for {
			_, st, err := db.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != ipn.StateReceived {
				states[id] = st
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("notification %d still received after 30 s", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for id := uint64(1); id <= n; id++ {
		st := states[id]
		switch {
		case id == 1 && st.State != ipn.StateApplied:
			t.Errorf("notification 1 (the original) is %s (duplicate of %d), want applied", st.State, st.DuplicateOf)
		case id > 1 && (st.State != ipn.StateDuplicate || st.DuplicateOf != 1):
			t.Errorf("notification %d (a resend) is %s (duplicate of %d), want duplicate of 1", id, st.State, st.DuplicateOf)
		}
	}
	if asked.Load() != n {
		t.Errorf("%d postbacks, want %d", asked.Load(), n)
	}
}
