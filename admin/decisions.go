package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/store"
)

// ActorHeader names who makes a decision through the API: the CLI sends
// "cli"; without it the decision is the admin session's ("admin").
const ActorHeader = "X-Ipnd-Actor"

// DecisionRequest is the body of the order decision routes (SPEC §7).
// Every field is optional but a note's text and a dispute's outcome.
type DecisionRequest struct {
	Note    string `json:"note"`
	Version int    `json:"version"` // the order's version the merchant saw; another answers 409
	Text    string `json:"text"`    // notes: the note
	Outcome string `json:"outcome"` // dispute: won or lost
	Dispute string `json:"dispute"` // dispute: its id; "" the order's only open one
}

// DecisionAnswer is the answer of an order decision: the order after it,
// the history entry it added, and whether it was a repeat of a request
// already applied (same Idempotency-Key: nothing changed).
type DecisionAnswer struct {
	Order    ipn.Order       `json:"order"`
	Change   ipn.OrderChange `json:"change,omitzero"`
	Repeated bool            `json:"repeated,omitempty"`
}

// actor is who makes the request's decision: "cli" when the CLI says
// so, else "admin". Only these two: a label never comes from the request
// as it is.
func actor(r *http.Request) string {
	if strings.EqualFold(r.Header.Get(ActorHeader), "cli") {
		return "cli"
	}
	return "admin"
}

// readDecision reads the optional JSON body of a decision (an empty
// body is none).
func readDecision(w http.ResponseWriter, r *http.Request) (DecisionRequest, bool) {
	var req DecisionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: "+jsonProblem(err))
		return req, false
	}
	return req, true
}

func (a *api) approveOrder(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	a.decide(w, r, ps, ipn.DecisionApprove)
}

func (a *api) cancelOrder(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	a.decide(w, r, ps, ipn.DecisionCancel)
}

func (a *api) noteOrder(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	a.decide(w, r, ps, ipn.DecisionNote)
}

func (a *api) disputeOrder(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	a.decide(w, r, ps, "dispute")
}

// decide serves an order decision of kind (OrderDecision).
func (a *api) decide(w http.ResponseWriter, r *http.Request, ps httprouter.Params, kind string) {
	req, ok := readDecision(w, r)
	if !ok {
		return
	}
	ans, status, msg := a.OrderDecision(ps.ByName("id"), kind, req, actor(r), r.Header.Get("Idempotency-Key"))
	if status != http.StatusOK {
		writeError(w, status, msg)
		return
	}
	writeJSON(w, status, ans)
}

// OrderDecision applies a decision of kind (ipn.DecisionApprove,
// DecisionCancel, DecisionNote, or "dispute") to order id, as by (admin,
// cli) with Idempotency-Key key ("": none), through
// store.DB.DecideOrder: the one code path of the API, the CLI and the
// dashboard. It returns the answer and 200, or a status and a message
// for the client: 404 no order; 409 stale version, not in review
// (approve), final (cancel), no open dispute, a key reused; 400 a bad
// request.
func (a *api) OrderDecision(id, kind string, req DecisionRequest, by, key string) (DecisionAnswer, int, string) {
	d := store.Decision{OrderDecision: ipn.OrderDecision{Kind: kind, By: by, Why: strings.TrimSpace(req.Note)},
		Version: req.Version, Key: key}
	switch kind {
	case ipn.DecisionNote:
		d.Why = strings.TrimSpace(req.Text)
		if d.Why == "" {
			d.Why = strings.TrimSpace(req.Note)
		}
		if d.Why == "" {
			return DecisionAnswer{}, http.StatusBadRequest, "text: a note needs text"
		}
	case "dispute":
		switch req.Outcome {
		case "won", "lost":
		default:
			return DecisionAnswer{}, http.StatusBadRequest, `outcome: must be "won" or "lost"`
		}
		d.Dispute = &ipn.DisputeDecision{Dispute: req.Dispute, Won: req.Outcome == "won"}
	case ipn.DecisionApprove, ipn.DecisionCancel:
	default:
		return DecisionAnswer{}, http.StatusBadRequest, "unknown decision"
	}
	if len(d.Why) > 4096 {
		return DecisionAnswer{}, http.StatusBadRequest, "note: at most 4096 bytes"
	}
	if req.Version < 0 {
		return DecisionAnswer{}, http.StatusBadRequest, "version: must not be negative"
	}
	if len(key) > 255 {
		return DecisionAnswer{}, http.StatusBadRequest, "Idempotency-Key: at most 255 bytes"
	}
	res, err := a.o.Store.DecideOrder(id, d, a.o.Now())
	switch {
	case errors.Is(err, store.ErrStale), errors.Is(err, ipn.ErrNotInReview), errors.Is(err, ipn.ErrFinal),
		errors.Is(err, ipn.ErrNoOpenDispute), errors.Is(err, store.ErrKeyReused):
		return DecisionAnswer{}, http.StatusConflict, err.Error()
	case errors.Is(err, ipn.ErrBadDecision):
		return DecisionAnswer{}, http.StatusBadRequest, err.Error()
	case errors.Is(err, store.ErrNotFound):
		return DecisionAnswer{}, http.StatusNotFound, "not found"
	case errors.Is(err, store.ErrClosed):
		return DecisionAnswer{}, http.StatusServiceUnavailable, "store is closed"
	case errors.Is(err, store.ErrUnavailable):
		a.log.Warn("order decision: store unavailable", "decision", kind, "error", err)
		return DecisionAnswer{}, http.StatusServiceUnavailable, unavailableMsg
	case err != nil:
		a.log.Error("order decision failed", "decision", kind, "error", err)
		return DecisionAnswer{}, http.StatusInternalServerError, "internal error"
	}
	if !res.Repeated {
		a.log.Info("order decision", "order_id", id, "decision", kind, "by", by, "status", res.Order.Status)
	}
	return DecisionAnswer{Order: orderView(*res.Order), Change: res.Change, Repeated: res.Repeated}, http.StatusOK, ""
}

// decisionRoutes registers the decision routes (SPEC §7).
func (a *api) decisionRoutes(r *httprouter.Router) {
	r.POST("/api/orders/:id/approve", a.auth(a.approveOrder))
	r.POST("/api/orders/:id/cancel", a.auth(a.cancelOrder))
	r.POST("/api/orders/:id/dispute", a.auth(a.disputeOrder))
	r.POST("/api/orders/:id/notes", a.auth(a.noteOrder))
	r.POST("/api/outbox/:id/discard", a.auth(a.discardOutbox))
	r.POST("/api/outbox/:id/resend", a.auth(a.resendOutbox))
	// POST /api/outbox/retry?state=dead&kind=K: "retry" in the place of
	// an id (httprouter allows no static segment beside :id).
	r.POST("/api/outbox/:id", a.auth(a.retryDead))
	r.GET("/api/outbox/:id", a.auth(a.showOutbox))
	r.GET("/api/events", a.auth(a.events))
}

// OutboxDecision is the answer of POST /api/outbox/:id/discard.
type OutboxDecision struct {
	ID       uint64 `json:"id"`
	State    string `json:"state"` // discarded
	Was      string `json:"was"`   // pending or dead (discarded: a repeat)
	Repeated bool   `json:"repeated,omitempty"`
}

// discardOutbox makes a pending or dead item discarded: 200; 409 for a
// sent or skipped item, or a stale version of its order; a repeat
// answers 200 with repeated true.
func (a *api) discardOutbox(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	id, ok := parseID(w, ps)
	if !ok {
		return
	}
	req, ok := readDecision(w, r)
	if !ok {
		return
	}
	ans, status, msg := a.DiscardOutbox(id, req, actor(r))
	if status != http.StatusOK {
		writeError(w, status, msg)
		return
	}
	writeJSON(w, status, ans)
}

// DiscardOutbox discards outbox item id as by (store.DB.DiscardOutbox;
// req.Version, when set, is the version of the item's order the
// merchant saw): the answer and 200, or a status and a message.
func (a *api) DiscardOutbox(id uint64, req DecisionRequest, by string) (OutboxDecision, int, string) {
	if len(req.Note) > 4096 {
		return OutboxDecision{}, http.StatusBadRequest, "note: at most 4096 bytes"
	}
	was, repeated, err := a.o.Store.DiscardOutbox(id, by, strings.TrimSpace(req.Note), req.Version, a.o.Now())
	switch {
	case errors.Is(err, store.ErrNotDiscardable), errors.Is(err, store.ErrStale):
		return OutboxDecision{}, http.StatusConflict, err.Error()
	case errors.Is(err, store.ErrNotFound):
		return OutboxDecision{}, http.StatusNotFound, "not found"
	case errors.Is(err, store.ErrClosed):
		return OutboxDecision{}, http.StatusServiceUnavailable, "store is closed"
	case errors.Is(err, store.ErrUnavailable):
		a.log.Warn("outbox discard: store unavailable", "error", err)
		return OutboxDecision{}, http.StatusServiceUnavailable, unavailableMsg
	case err != nil:
		a.log.Error("outbox discard failed", "error", err)
		return OutboxDecision{}, http.StatusInternalServerError, "internal error"
	}
	if !repeated {
		a.log.Info("outbox item discarded", "outbox_id", id, "was", was.State, "by", by)
	}
	return OutboxDecision{ID: id, State: store.OutboxDiscarded, Was: was.State, Repeated: repeated}, http.StatusOK, ""
}

// resendOutbox queues a sent email again as a new item: 202 with the
// new item; 409 for anything but a sent email. With an Idempotency-Key
// seen before, the item it queued then (nothing new).
func (a *api) resendOutbox(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	id, ok := parseID(w, ps)
	if !ok {
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		writeError(w, http.StatusBadRequest, "Idempotency-Key: at most 255 bytes")
		return
	}
	it, err := a.o.Store.ResendOutbox(id, actor(r), key, a.o.Now())
	if errors.Is(err, store.ErrKeyReused) {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if errors.Is(err, store.ErrNotResendable) {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	a.log.Info("email resend queued", "outbox_id", id, "new_outbox_id", it.ID, "by", actor(r))
	it.Effect.Cause = displayKey(it.Effect.Cause)
	writeJSON(w, http.StatusAccepted, it)
}

// OutboxRetried is the answer of POST /api/outbox/retry.
type OutboxRetried struct {
	IDs []uint64 `json:"ids"` // the items queued again
}

// retryDead serves POST /api/outbox/retry?state=dead&kind=K: every dead
// item of lane K (every lane without kind) queued again (202).
func (a *api) retryDead(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if ps.ByName("id") != "retry" {
		writeError(w, http.StatusNotFound, "no such route")
		return
	}
	q := r.URL.Query()
	if q.Get("state") != store.OutboxDead {
		writeError(w, http.StatusBadRequest, "state: must be dead (only dead items are retried in bulk)")
		return
	}
	kind := q.Get("kind")
	if kind != "" && !slices.Contains(ipn.OutboxLanes, kind) {
		writeError(w, http.StatusBadRequest, "kind: must be one of "+strings.Join(ipn.OutboxLanes, ", "))
		return
	}
	ids, err := a.o.Store.RetryDead(kind, a.o.Now())
	if err != nil {
		a.fail(w, err)
		return
	}
	if ids == nil {
		ids = []uint64{}
	}
	a.log.Info("dead outbox items retried", "kind", kind, "items", len(ids), "by", actor(r))
	writeJSON(w, http.StatusAccepted, OutboxRetried{IDs: ids})
}

// OutboxDetail is the answer of GET /api/outbox/:id: the item and its
// delivery attempts, oldest first (the last store.AttemptsKept).
type OutboxDetail struct {
	Item     ipn.OutboxItem      `json:"item"`
	Attempts []ipn.OutboxAttempt `json:"attempts"`
}

func (a *api) showOutbox(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	id, ok := parseID(w, ps)
	if !ok {
		return
	}
	it, err := a.o.Store.GetOutbox(id)
	if err != nil {
		a.fail(w, err)
		return
	}
	attempts, err := a.o.Store.OutboxAttempts(id)
	if err != nil {
		a.fail(w, err)
		return
	}
	if attempts == nil {
		attempts = []ipn.OutboxAttempt{}
	}
	it.Effect.Cause = displayKey(it.Effect.Cause)
	writeJSON(w, http.StatusOK, OutboxDetail{Item: it, Attempts: attempts})
}
