package ui

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/public"
)

// The subscriptions and rejections pages, linked from the navigation;
// plain links and GET forms, readable without JavaScript.

var subscriptionStatuses = []ipn.SubscriptionStatus{ipn.SubscriptionActive, ipn.SubscriptionPastDue,
	ipn.SubscriptionCanceled, ipn.SubscriptionExpired}

// subscriptions lists subscriptions by id, optionally of one status,
// paged (after=).
func (u *ui) subscriptions(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	q := r.URL.Query()
	d := struct {
		Status   string
		Statuses []ipn.SubscriptionStatus
		Subs     []ipn.Subscription
		Next     string
		Paged    bool
	}{Status: q.Get("status"), Statuses: subscriptionStatuses, Paged: q.Get("after") != ""}
	status := ipn.SubscriptionStatus(d.Status)
	if !slices.Contains(subscriptionStatuses, status) {
		status, d.Status = "", ""
	}
	subs, next, err := u.o.Store.ListSubscriptions(status, q.Get("after"), 50)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	d.Subs = subs
	if next != "" {
		v := url.Values{"after": {next}}
		if d.Status != "" {
			v.Set("status", d.Status)
		}
		d.Next = "/subscriptions?" + v.Encode()
	}
	u.renderPage(w, http.StatusOK, "subscriptions", page{Title: "Subscriptions", Nav: "subscriptions", CSRF: s.csrf,
		SignedIn: true, Data: d})
}

// subscription shows one subscription with its payments and events,
// each linked to its notification.
func (u *ui) subscription(w http.ResponseWriter, _ *http.Request, ps httprouter.Params, s session) {
	sub, err := u.o.Store.GetSubscription(ps.ByName("id"))
	if err != nil {
		u.fail(w, s, err)
		return
	}
	for i := range sub.Events {
		sub.Events[i].Key = strings.ReplaceAll(sub.Events[i].Key, "\x00", "|")
	}
	u.renderPage(w, http.StatusOK, "subscription", page{Title: "Subscription", Nav: "subscriptions", CSRF: s.csrf,
		SignedIn: true, Data: sub})
}

// rejectionReason is one reason's row on the rejections page.
type rejectionReason struct {
	Reason      string
	Count       int
	First, Last time.Time
	Gateways    []string
}

// rejectionsShown is how many of the remembered rejections the page
// lists one by one.
const rejectionsShown = 200

// rejections shows the recent rejected requests (the public listener
// remembers the newest ones, in memory): counts by reason, then the
// newest ones, optionally of one reason.
func (u *ui) rejections(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	var all []public.Rejection
	if u.o.Rejections != nil {
		all = u.o.Rejections() // newest first
	}
	d := struct {
		Reasons []rejectionReason
		Total   int
		Reason  string
		Recent  []public.Rejection
		More    int
	}{Total: len(all)}
	by := map[string]*rejectionReason{}
	gws := map[string]map[string]bool{}
	for _, rj := range all {
		row := by[rj.Reason]
		if row == nil {
			row = &rejectionReason{Reason: rj.Reason, Last: rj.At}
			by[rj.Reason], gws[rj.Reason] = row, map[string]bool{}
		}
		row.Count++
		row.First = rj.At
		if rj.Gateway != "" {
			gws[rj.Reason][rj.Gateway] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(by)) {
		row := by[k]
		row.Gateways = slices.Sorted(maps.Keys(gws[k]))
		d.Reasons = append(d.Reasons, *row)
	}
	slices.SortStableFunc(d.Reasons, func(a, b rejectionReason) int { return b.Count - a.Count })
	if reason := r.URL.Query().Get("reason"); by[reason] != nil {
		d.Reason = reason // only a reason that is there: nothing from the URL is echoed otherwise
	}
	for _, rj := range all {
		if d.Reason != "" && rj.Reason != d.Reason {
			continue
		}
		if len(d.Recent) == rejectionsShown {
			d.More++
			continue
		}
		d.Recent = append(d.Recent, rj)
	}
	u.renderPage(w, http.StatusOK, "rejections", page{Title: "Rejections", Nav: "rejections", CSRF: s.csrf,
		SignedIn: true, Data: d})
}
