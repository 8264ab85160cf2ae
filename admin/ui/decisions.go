package ui

import (
	"errors"
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
// won or lost, a note. It calls store.DecideOrder, the admin API's code
// path, recorded as by "admin".
func (u *ui) decide(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id := ps.ByName("id")
	d := store.Decision{OrderDecision: ipn.OrderDecision{By: "admin", Why: strings.TrimSpace(r.PostFormValue("note"))},
		Key: r.PostFormValue("key")}
	if d.Key != "" {
		d.Key = "dashboard:" + d.Key
	}
	d.Version, _ = strconv.Atoi(r.PostFormValue("version"))
	what := r.PostFormValue("decision")
	switch what {
	case ipn.DecisionApprove, ipn.DecisionCancel, ipn.DecisionNote:
		d.Kind = what
	case "won", "lost":
		d.Dispute = &ipn.DisputeDecision{Won: what == "won"}
	default:
		u.orderProblem(w, s, id, http.StatusBadRequest, "Unknown decision.")
		return
	}
	if what == ipn.DecisionNote && d.Why == "" {
		u.orderProblem(w, s, id, http.StatusBadRequest, "A note needs text.")
		return
	}
	if len(d.Why) > 4096 {
		u.orderProblem(w, s, id, http.StatusBadRequest, "A note has at most 4096 bytes.")
		return
	}
	res, err := u.o.Store.DecideOrder(id, d, u.o.Now())
	switch {
	case errors.Is(err, store.ErrStale):
		u.orderProblem(w, s, id, http.StatusConflict, "The order changed since you opened it: nothing was done. Look at it again, then decide.")
		return
	case errors.Is(err, ipn.ErrNotInReview), errors.Is(err, ipn.ErrFinal), errors.Is(err, ipn.ErrNoOpenDispute),
		errors.Is(err, store.ErrKeyReused), errors.Is(err, ipn.ErrBadDecision):
		u.orderProblem(w, s, id, http.StatusConflict, "Not done: "+err.Error()+".")
		return
	case err != nil:
		u.fail(w, s, err)
		return
	}
	if !res.Repeated {
		u.log.Info("order decision", "order_id", id, "decision", what, "by", "admin", "status", res.Order.Status)
	}
	http.Redirect(w, r, "/orders/"+url.PathEscape(id)+"?done="+url.QueryEscape(what), http.StatusSeeOther)
}

// orderProblem shows the order page again with a message.
func (u *ui) orderProblem(w http.ResponseWriter, s session, id string, status int, msg string) {
	u.renderOrder(w, s, id, status, "", msg)
}
