package ui

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/store"
)

// decisionForm is what the order page's decision forms carry besides
// the CSRF token: the order's version the merchant saw (a stale one is
// refused) and a key made for this page (a double click, or the form
// sent again, repeats nothing).
type decisionForm struct {
	Version int
	Key     string
	Dispute bool // the order has an open dispute: offer won / lost
}

func newDecisionForm(o *ipn.Order) decisionForm {
	return decisionForm{Version: max(o.Changes, len(o.History)), Key: randomToken(),
		Dispute: o.Status == ipn.OrderDisputed}
}

// decide is the order page's decision buttons: approve, cancel, dispute
// won or lost, a note. They go through Options.Decide, the admin API's
// code path, recorded as by "admin".
func (u *ui) decide(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id := ps.ByName("id")
	what := r.PostFormValue("decision")
	kind, outcome := what, ""
	switch what {
	case ipn.DecisionApprove, ipn.DecisionCancel, ipn.DecisionNote:
	case "won", "lost":
		kind, outcome = "dispute", what
	default:
		u.orderProblem(w, s, id, http.StatusBadRequest, "Unknown decision.")
		return
	}
	version, _ := strconv.Atoi(r.PostFormValue("version"))
	key := r.PostFormValue("key")
	if key != "" {
		key = "dashboard:" + key
	}
	if u.o.Decide == nil {
		u.orderProblem(w, s, id, http.StatusServiceUnavailable, "Decisions are not available.")
		return
	}
	status, msg := u.o.Decide(id, kind, strings.TrimSpace(r.PostFormValue("note")), outcome, version, key)
	switch {
	case status == http.StatusOK:
	case status == http.StatusNotFound:
		u.fail(w, s, store.ErrNotFound)
		return
	case status == http.StatusConflict && strings.Contains(msg, store.ErrStale.Error()):
		u.orderProblem(w, s, id, status, "The order changed since you opened it: nothing was done. Look at it again, then decide.")
		return
	default:
		u.orderProblem(w, s, id, status, "Not done: "+msg+".")
		return
	}
	http.Redirect(w, r, "/orders/"+url.PathEscape(id)+"?done="+url.QueryEscape(what), http.StatusSeeOther)
}

// orderProblem shows the order page again with a message.
func (u *ui) orderProblem(w http.ResponseWriter, s session, id string, status int, msg string) {
	u.renderOrder(w, s, id, status, "", msg)
}
