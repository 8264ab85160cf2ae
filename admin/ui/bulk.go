package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/store"
)

// Bulk replay from the notifications page: GET /notifications-replay
// shows what the current filters (gateway, state) select and asks for a
// confirmation; the confirmation POSTs (with the CSRF token) the
// filters, the newest id seen and the count seen, so that what arrives
// meanwhile is not included and at most what was confirmed is replayed,
// through the admin API's code path (Options.BulkReplay, POST
// /api/replay), at most store.MaxBulkReplay at once.

// bulkFilter reads the gateway and state of a bulk replay: "" or one
// the page offers.
func (u *ui) bulkFilter(get func(string) string) (gateway string, state ipn.State, ok bool) {
	gateway, state = get("gateway"), ipn.State(get("state"))
	if gateway != "" && u.gateways[gateway] == nil {
		return "", "", false
	}
	if state != "" && !state.Valid() {
		return "", "", false
	}
	return gateway, state, true
}

func (u *ui) bulkReplayForm(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	q := r.URL.Query()
	gateway, state, ok := u.bulkFilter(q.Get)
	if !ok {
		u.problem(w, s, http.StatusBadRequest, "Unknown gateway or state.")
		return
	}
	ids, more, err := u.o.Store.Matching(store.Filter{Gateway: gateway, State: state}, store.MaxBulkReplay)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	back := url.Values{}
	if gateway != "" {
		back.Set("gateway", gateway)
	}
	if state != "" {
		back.Set("state", string(state))
	}
	d := struct {
		Gateway, State string
		Count          int
		More           bool
		Max            int
		Before         uint64
		Oldest         uint64
		Back           string
	}{Gateway: gateway, State: string(state), Count: len(ids), More: more, Max: store.MaxBulkReplay,
		Back: "/notifications?" + back.Encode()}
	if len(ids) > 0 {
		d.Before, d.Oldest = ids[0]+1, ids[len(ids)-1]
	}
	u.renderPage(w, http.StatusOK, "bulkreplay", page{Title: "Replay notifications", Nav: "notifications", CSRF: s.csrf,
		SignedIn: true, Data: d})
}

func (u *ui) bulkReplay(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	gateway, state, ok := u.bulkFilter(r.PostFormValue)
	if !ok {
		u.problem(w, s, http.StatusBadRequest, "Unknown gateway or state.")
		return
	}
	before, err1 := strconv.ParseUint(r.PostFormValue("before"), 10, 64)
	limit, err2 := strconv.Atoi(r.PostFormValue("limit"))
	if err1 != nil || err2 != nil || before == 0 || limit < 1 || limit > store.MaxBulkReplay {
		u.problem(w, s, http.StatusBadRequest, "Nothing to replay (or a bad form): go back to the notifications and try again.")
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		u.problem(w, s, http.StatusBadRequest, "Not confirmed: nothing was replayed.")
		return
	}
	if u.o.BulkReplay == nil {
		u.problem(w, s, http.StatusServiceUnavailable, "Bulk replay is not available.")
		return
	}
	n, more, status, msg := u.o.BulkReplay(gateway, state, before, limit)
	if status != http.StatusAccepted {
		u.problem(w, s, status, "Not done: "+msg+".")
		return
	}
	back := url.Values{"done": {"bulk-replay"}, "n": {strconv.Itoa(n)}}
	if gateway != "" {
		back.Set("gateway", gateway)
	}
	if state != "" {
		back.Set("state", string(state))
	}
	if more {
		back.Set("more", "1")
	}
	http.Redirect(w, r, "/notifications?"+back.Encode(), http.StatusSeeOther)
}

// bulkDone is the notifications page's message after a bulk replay.
func bulkDone(q url.Values) string {
	if q.Get("done") != "bulk-replay" {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("n"))
	msg := fmt.Sprintf("Replay scheduled for %d notifications: they will be processed again (effects already done are not repeated).", n)
	if q.Get("more") != "" {
		msg += " More matched than were confirmed: replay again for the rest."
	}
	return msg
}
