package ui

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/store"
)

// The outbox's buttons, as by "admin": discard through Options.Discard
// (the admin API's code path); retry, bulk retry and resend through the
// store functions the API's routes call (RetryOutbox, RetryDead,
// ResendOutbox).

func outboxID(ps httprouter.Params) (uint64, bool) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	return id, err == nil && id != 0
}

// discard makes a pending or dead item discarded (not sent, counted
// apart: the dead-item alert clears).
func (u *ui) discard(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id, ok := outboxID(ps)
	if !ok {
		u.fail(w, s, store.ErrNotFound)
		return
	}
	if u.o.Discard == nil {
		u.problem(w, s, http.StatusServiceUnavailable, "Discarding is not available.")
		return
	}
	version, _ := strconv.Atoi(r.PostFormValue("version"))
	status, msg := u.o.Discard(id, strings.TrimSpace(r.PostFormValue("note")), version)
	switch status {
	case http.StatusOK:
	case http.StatusNotFound:
		u.fail(w, s, store.ErrNotFound)
		return
	case http.StatusConflict:
		u.problem(w, s, status, fmt.Sprintf("Outbox item %d was not discarded: %s (only a pending or dead item can be).", id, msg))
		return
	default:
		u.problem(w, s, status, "Not done: "+msg+".")
		return
	}
	http.Redirect(w, r, backTo(r, "/outbox")+"done=discard", http.StatusSeeOther)
}

// retryDead queues every dead item of a lane ("": every lane) again.
func (u *ui) retryDead(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	lane := r.PostFormValue("lane")
	if lane != "" && !slices.Contains(ipn.OutboxLanes, lane) {
		u.problem(w, s, http.StatusBadRequest, "Unknown lane.")
		return
	}
	ids, err := u.o.Store.RetryDead(lane, u.o.Now())
	if err != nil {
		u.fail(w, s, err)
		return
	}
	u.log.Info("dead outbox items queued again", "lane", lane, "items", len(ids), "by", "admin")
	http.Redirect(w, r, backTo(r, "/outbox")+"done=retry", http.StatusSeeOther)
}

// resend queues a sent email again as a new item.
func (u *ui) resend(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id, ok := outboxID(ps)
	if !ok {
		u.fail(w, s, store.ErrNotFound)
		return
	}
	key := r.PostFormValue("key")
	if key != "" {
		key = "dashboard:" + key
	}
	it, err := u.o.Store.ResendOutbox(id, "admin", key, u.o.Now())
	if errors.Is(err, store.ErrNotResendable) {
		u.problem(w, s, http.StatusConflict, fmt.Sprintf("Outbox item %d is not a sent email: only those can be sent again.", id))
		return
	}
	if err != nil {
		u.fail(w, s, err)
		return
	}
	u.log.Info("email resend queued", "outbox_id", id, "new_id", it.ID, "by", "admin")
	http.Redirect(w, r, fmt.Sprintf("/outbox/%d?done=resend", it.ID), http.StatusSeeOther)
}

// outboxItem shows one item with its kept delivery attempts.
func (u *ui) outboxItem(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id, ok := outboxID(ps)
	if !ok {
		u.fail(w, s, store.ErrNotFound)
		return
	}
	it, err := u.o.Store.GetOutbox(id)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	attempts, err := u.o.Store.OutboxAttempts(id)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	d := struct {
		Item     outboxView
		Attempts []ipn.OutboxAttempt
		Flash    string
	}{Item: outboxViews([]store.OutboxItem{it})[0], Attempts: attempts, Flash: r.URL.Query().Get("done")}
	u.renderPage(w, http.StatusOK, "outboxitem", page{Title: fmt.Sprintf("Outbox item %d", id), Nav: "outbox",
		CSRF: s.csrf, SignedIn: true, Data: d})
}

// problem shows msg on the error page with status.
func (u *ui) problem(w http.ResponseWriter, s session, status int, msg string) {
	u.renderPage(w, status, "error", page{Title: "error", CSRF: s.csrf, SignedIn: true, Data: msg})
}
