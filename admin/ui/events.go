package ui

import (
	"fmt"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"
)

// eventsPoll is how often /events looks at the store for news.
const eventsPoll = 500 * time.Millisecond

// events is a Server-Sent Events stream for the signed-in pages: an
// event "change" whenever a notification was stored or processed (the
// log's newest id or the pipeline's cursor moved), a comment every 15 s
// to keep proxies from closing it. The script reloads the page's main
// part on each. The listener's write timeout is moved forward before
// each write, so it does not cut the stream.
func (u *ui) events(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ session) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	mark := func() [2]uint64 {
		st, _ := u.o.Store.Stats()
		return [2]uint64{st.LastID, u.o.Store.Cursor()}
	}
	last := mark()
	if !send("retry: 2000\n: ipnd events\n\n") {
		return
	}
	tick := time.NewTicker(eventsPoll)
	defer tick.Stop()
	keep := time.Now()
	for {
		select {
		case <-r.Context().Done():
			return
		case now := <-tick.C:
			if m := mark(); m != last {
				last = m
				if !send(fmt.Sprintf("event: change\ndata: {\"last_id\":%d,\"processed\":%d}\n\n", m[0], m[1])) {
					return
				}
				keep = now
			} else if now.Sub(keep) > 15*time.Second {
				if !send(": keepalive\n\n") {
					return
				}
				keep = now
			}
		}
	}
}
