package ui

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/store"
)

// eventsBuffer is how far a browser may fall behind before it is
// dropped (it reconnects); eventsHeartbeat keeps proxies from closing
// an idle stream.
const (
	eventsBuffer    = 64
	eventsHeartbeat = 15 * time.Second
)

// events is /events, the admin API's live stream (store.DB.Subscribe,
// as GET /api/events) for a signed-in browser: an event "change" per
// notification stored or recorded and per order transition, without
// its details (the page fetches itself again; customer data stays in
// the pages). The listener's write timeout is moved forward before each
// write, so it does not cut the stream.
func (u *ui) events(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess session) {
	ch, stop, err := u.o.Store.Follow(eventsBuffer)
	if err != nil {
		// store.MaxFollowers already (with GET /api/events), or the
		// store's database cannot be reached.
		w.Header().Set("Retry-After", "10")
		msg := "503 too many followers of the live events: try again later"
		if errors.Is(err, store.ErrUnavailable) {
			msg = "503 the store's database cannot be reached: try again later"
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
		return
	}
	defer stop()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("retry: 2000\n: ipnd events\n\n") {
		return
	}
	tick := time.NewTicker(eventsHeartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-ch:
			if !ok {
				return // fell behind: the browser reconnects
			}
			if !u.o.Sessions.alive(sess.id, u.tokenSum, u.o.Now()) {
				return // signed out, expired or the token changed: it gets 403 on reconnecting
			}
			if !send(fmt.Sprintf("event: change\ndata: %q\n\n", e.Type)) {
				return
			}
		case <-tick.C:
			if !u.o.Sessions.alive(sess.id, u.tokenSum, u.o.Now()) || !send(": ping\n\n") {
				return
			}
		}
	}
}
