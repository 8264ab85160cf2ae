package ui

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/store"
)

// What an order delivered (SPEC §11) on its page, and the button that
// reissues its links and sends the customer's "your downloads" email
// again.

// deliveryRow is one delivered unit as the order page shows it.
type deliveryRow struct {
	Product          string
	Downloads, Limit int
	ExpiresAt        time.Time
	Expired          bool
	License          bool
}

// deliveriesView is an order's deliveries on its page (Found false:
// none were issued).
type deliveriesView struct {
	Found    bool
	Revoked  bool
	Reason   string
	Reissues int
	IssuedAt time.Time
	Rows     []deliveryRow
}

func (u *ui) deliveriesOf(id string) deliveriesView {
	rec, lic, err := u.o.Store.Deliveries(id)
	if err != nil || rec == nil || len(rec.Deliveries) == 0 {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			u.log.Error("dashboard: reading deliveries failed", "error", err)
		}
		return deliveriesView{}
	}
	v := deliveriesView{Found: true, Revoked: rec.Revoked, Reason: rec.Reason, Reissues: rec.Reissues, IssuedAt: rec.IssuedAt}
	now := u.o.Now()
	for _, d := range rec.Deliveries {
		v.Rows = append(v.Rows, deliveryRow{Product: d.Product, Downloads: d.Downloads, Limit: d.Limit, ExpiresAt: d.ExpiresAt,
			Expired: !d.ExpiresAt.IsZero() && now.After(d.ExpiresAt), License: lic[d.LicenseHash] != nil})
	}
	return v
}

// reissueMu makes the dashboard's reissues one at a time, so that the
// check of the reissue count the page showed and the reissue are one
// step: a double click reissues (and emails) once.
var reissueMu sync.Mutex

// reissue is the order page's "Reissue downloads and resend the email"
// button. The form carries the order's reissue count the page showed: a
// form sent again after the reissue (a double click, the browser's
// history) finds it moved on and repeats nothing.
func (u *ui) reissue(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id := ps.ByName("id")
	seen, err := strconv.Atoi(r.PostFormValue("reissues"))
	if err != nil {
		u.orderProblem(w, s, id, http.StatusBadRequest, "Bad form: reload the page and try again.")
		return
	}
	if u.o.Reissue == nil {
		u.orderProblem(w, s, id, http.StatusServiceUnavailable, "Reissuing is not available.")
		return
	}
	reissueMu.Lock()
	defer reissueMu.Unlock()
	rec, _, err := u.o.Store.Deliveries(id)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	if rec.Reissues != seen {
		http.Redirect(w, r, "/orders/"+url.PathEscape(id)+"?done=reissued-already", http.StatusSeeOther)
		return
	}
	switch status, msg := u.o.Reissue(id); status {
	case http.StatusOK:
	case http.StatusNotFound:
		u.fail(w, s, store.ErrNotFound)
		return
	default:
		u.orderProblem(w, s, id, status, "Not reissued: "+msg+".")
		return
	}
	http.Redirect(w, r, "/orders/"+url.PathEscape(id)+"?done=reissue", http.StatusSeeOther)
}
