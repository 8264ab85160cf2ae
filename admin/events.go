package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"
)

// The live event stream, GET /api/events: Server-Sent Events, one per
// notification stored or recorded and per order transition
// (store.LiveEvent as the data, its type as the event name), and a
// comment line every eventsHeartbeat so that proxies and the client see
// the stream is alive. The admin listener's write timeout would cut a
// long response: each write moves the connection's write deadline
// (http.ResponseController) eventsWriteIdle ahead instead. A subscriber
// that falls eventsBuffer events behind is dropped (the stream ends; the
// client reconnects): ingest never waits for it. At most
// store.MaxFollowers follow at once (with the dashboard's /events); past
// it a follower is answered 503 with Retry-After (ipnd_events_refused_total).
var (
	eventsHeartbeat = 15 * time.Second
	eventsWriteIdle = 30 * time.Second
)

const eventsBuffer = 256

func (a *api) events(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	ch, stop, err := a.o.Store.Follow(eventsBuffer)
	if err != nil {
		// store.MaxFollowers already: idle followers cannot pile up.
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, err.Error()+": try again later")
		return
	}
	defer stop()
	rc := http.NewResponseController(w)
	extend := func() error { return rc.SetWriteDeadline(time.Now().Add(eventsWriteIdle)) }
	extend() // a writer that cannot extend it (a test recorder) is left as it is
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": ipnd events\nretry: 2000\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(eventsHeartbeat)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-ch:
			if !ok {
				return // dropped for falling behind: the client reconnects
			}
			if !a.o.Sessions.Current(a.tokenSum) {
				return // the admin token changed: the old one no longer follows
			}
			b, _ := json.Marshal(e)
			extend()
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, b)
		case <-tick.C:
			if !a.o.Sessions.Current(a.tokenSum) {
				return
			}
			extend()
			_, err = fmt.Fprint(w, ": ping\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}
