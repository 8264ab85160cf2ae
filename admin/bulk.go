package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/store"
)

// BulkReplayRequest is the body of POST /api/replay: the notifications
// to replay as GET /api/notifications selects them (gateway, state,
// before), at most Limit (default and at most store.MaxBulkReplay).
type BulkReplayRequest struct {
	Gateway string    `json:"gateway"`
	State   ipn.State `json:"state"`
	Before  uint64    `json:"before"`
	Limit   int       `json:"limit"`
}

// BulkReplayResult is its answer (202).
type BulkReplayResult struct {
	Replayed []uint64 `json:"replayed"`
	Skipped  int      `json:"skipped"` // purged bodies, or gone meanwhile
	More     bool     `json:"more"`    // more matched beyond the limit
}

func (a *api) bulkRoutes(r *httprouter.Router) {
	r.POST("/api/replay", a.auth(a.bulkReplay))
}

func (a *api) bulkReplay(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10))
	dec.DisallowUnknownFields()
	var req BulkReplayRequest
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: "+jsonProblem(err))
		return
	}
	res, status, msg := a.BulkReplay(req, "api")
	if status != http.StatusAccepted {
		writeError(w, status, msg)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

// BulkReplay checks req and replays what it selects (store.ReplayMatching):
// the code path of POST /api/replay and of the dashboard's bulk replay.
// by is who asked ("api", "admin" for a dashboard session), for the
// log. status is 202 on success, else 400 or 500 with msg.
func (a *api) BulkReplay(req BulkReplayRequest, by string) (res BulkReplayResult, status int, msg string) {
	if req.State != "" && !req.State.Valid() {
		return res, http.StatusBadRequest, "state: unknown"
	}
	if req.Limit < 0 || req.Limit > store.MaxBulkReplay {
		return res, http.StatusBadRequest, "limit: must be 1 to 1000"
	}
	replayed, skipped, more, err := a.o.Store.ReplayMatching(store.Filter{Gateway: req.Gateway, State: req.State, Before: req.Before},
		req.Limit, a.o.Now())
	a.log.Info("bulk replay requested", "gateway", req.Gateway, "state", string(req.State), "replayed", len(replayed),
		"skipped", skipped, "by", by)
	if errors.Is(err, store.ErrUnavailable) && len(replayed) == 0 {
		a.log.Warn("bulk replay: store unavailable", "error", err)
		return res, http.StatusServiceUnavailable, unavailableMsg
	}
	if err != nil {
		a.log.Error("bulk replay failed", "error", err, "replayed", len(replayed))
		return res, http.StatusInternalServerError, "internal error (see the log)"
	}
	if replayed == nil {
		replayed = []uint64{}
	}
	return BulkReplayResult{Replayed: replayed, Skipped: skipped, More: more}, http.StatusAccepted, ""
}
