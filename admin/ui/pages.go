package ui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/store"
)

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"lag":   func(d time.Duration) string { return d.Round(time.Second).String() },
	"dur":   func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"deref": func(p *int) int { return *p },
	"list":  func(v ...outboxView) []outboxView { return v },
	// pathEscape makes an id one segment of a link's path: an order id
	// may hold "#", "?", "/" or "%".
	"pathEscape": url.PathEscape,
	"done": func(what string) string {
		if s, ok := doneText[what]; ok {
			return s
		}
		return "Done."
	},
	// args builds a map from name, value pairs: arguments for a
	// sub-template.
	"args": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[fmt.Sprint(kv[i])] = kv[i+1]
		}
		return m
	},
}

// doneText is the message after a decision or an action, by its name
// (the done= parameter of the page it leads back to).
var doneText = map[string]string{
	"approve": "Approved: the order is now what its payments make it; the customer email and the shop callback are queued.",
	"cancel":  "Canceled: the shop gets order.canceled.",
	"note":    "Note added to the history.",
	"won":     "Dispute closed as won.",
	"lost":    "Dispute closed as lost.",
	"replay":  "Replay scheduled: it will be processed again (effects already done are not repeated).",
	"retry":   "Queued again: it is due now.",
	"discard": "Discarded: it will not be sent, and no longer counts as dead.",
	"resend":  "Queued to be sent again (this is the new item).",
	"reissue": "Downloads reissued: new links (the old ones stop working), full download limits, a new expiry; the customer's email with them is queued.",

	"reissued-already": "Already reissued (from this page or elsewhere): nothing was repeated. Look at the deliveries below.",
}

var pageNames = []string{"login", "overview", "notifications", "notification", "orders", "order", "outbox", "outboxitem", "error",
	"subscriptions", "subscription", "rejections", "bulkreplay"}

func parsePages() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS,
			"templates/layout.html", "templates/"+name+".html"))
	}
	return out
}

// page is what every template gets.
type page struct {
	Title    string
	Nav      string
	CSRF     string
	SignedIn bool
	Live     bool // the page reloads its main part on server events
	Data     any
}

func (u *ui) render(w http.ResponseWriter, status int, name string, s session, data any) {
	u.renderPage(w, status, name, page{Title: name, Nav: name, CSRF: s.csrf, SignedIn: s.id != "", Data: data})
}

func (u *ui) renderPage(w http.ResponseWriter, status int, name string, p page) {
	var buf bytes.Buffer
	if err := u.pages[name].Execute(&buf, p); err != nil {
		u.log.Error("dashboard: rendering a page failed", "page", name, "error", err)
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fail shows err as a page with a fitting status; internal details go
// to the log only.
func (u *ui) fail(w http.ResponseWriter, s session, err error) {
	status, msg := http.StatusInternalServerError, "Internal error (see the log)."
	switch {
	case errors.Is(err, store.ErrNotFound):
		status, msg = http.StatusNotFound, "Not found."
	case errors.Is(err, store.ErrBadCursor):
		status, msg = http.StatusBadRequest, "Bad page cursor."
	case errors.Is(err, store.ErrExists):
		status, msg = http.StatusConflict, "Already done: nothing changed."
	case errors.Is(err, store.ErrPurged):
		status, msg = http.StatusConflict, "Its raw body was purged (store.raw_retention): it cannot be processed again."
	case errors.Is(err, store.ErrLost):
		status, msg = http.StatusGone, "Lost to journal damage."
	case errors.Is(err, store.ErrClosed):
		status, msg = http.StatusServiceUnavailable, "The store is closed."
	case errors.Is(err, store.ErrUnavailable):
		u.log.Warn("dashboard request: store unavailable", "error", err)
		status, msg = http.StatusServiceUnavailable, "The store's database cannot be reached now: try again in a moment (the reason is on /healthz)."
	default:
		u.log.Error("dashboard request failed", "error", err)
	}
	u.renderPage(w, status, "error", page{Title: "error", CSRF: s.csrf, SignedIn: true, Data: msg})
}

type laneRow struct {
	Kind                              string
	Pending, Dead, Skipped, Discarded int
}

type statusRow struct {
	Status     ipn.OrderStatus
	Real, Test int
}

type lagRow struct {
	Gateway string
	Lag     time.Duration
}

type reasonRow struct {
	Reason string
	Count  int
	Last   time.Time
}

type chartRow struct {
	Gateway    string
	Day, Month template.HTML
	Total24    counts
	Total30    counts
}

func (u *ui) overview(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	now := u.o.Now()
	d := struct {
		Health     string
		Charts     []chartRow
		Scanned    int
		Truncated  bool
		Lags       []lagRow
		Lanes      []laneRow
		Statuses   []statusRow
		Review     []ipn.Order
		Rejections []reasonRow
		CertExpiry time.Time
		CertLeft   string
	}{}
	if _, err := u.o.Store.Stats(); err != nil {
		d.Health = "store is not open"
	} else if u.o.Healthy != nil {
		if err := u.o.Healthy(); err != nil {
			d.Health = err.Error()
		}
	}
	st, err := u.stats.get(u.o.Store, now)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	d.Scanned, d.Truncated = st.Scanned, st.Truncated
	hl, dl := hourLabels(now), dayLabels(now)
	for _, g := range st.Gateways {
		d.Charts = append(d.Charts, chartRow{Gateway: g.Gateway, Total24: g.Total24, Total30: g.Total30,
			Day:   barChart(g.Gateway+": notifications per hour, last 24 hours", g.Hours[:], hl),
			Month: barChart(g.Gateway+": notifications per day, last 30 days", g.Days[:], dl)})
	}
	oldest := u.o.Store.OldestPendingByGateway(now)
	for _, gw := range slices.Sorted(maps.Keys(u.gateways)) {
		row := lagRow{Gateway: gw}
		if t, ok := oldest[gw]; ok {
			row.Lag = now.Sub(t)
		}
		d.Lags = append(d.Lags, row)
	}
	oc, err := u.o.Store.OutboxCounts()
	if err != nil {
		u.fail(w, s, err)
		return
	}
	kinds := map[string]bool{}
	for _, byKind := range oc {
		for k := range byKind {
			kinds[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		d.Lanes = append(d.Lanes, laneRow{Kind: k, Pending: oc[store.OutboxPending][k], Dead: oc[store.OutboxDead][k],
			Skipped: oc[store.OutboxSkipped][k], Discarded: oc[store.OutboxDiscarded][k]})
	}
	all, err := u.o.Store.OrderCounts()
	if err != nil {
		u.fail(w, s, err)
		return
	}
	test, err := u.o.Store.TestOrderCounts()
	if err != nil {
		u.fail(w, s, err)
		return
	}
	for _, st := range ipn.OrderStatuses {
		if all[st] == 0 && test[st] == 0 {
			continue
		}
		d.Statuses = append(d.Statuses, statusRow{Status: st, Real: all[st] - test[st], Test: test[st]})
	}
	if d.Review, err = u.o.Store.ListOrders(ipn.OrderReview, "", 20); err != nil {
		u.fail(w, s, err)
		return
	}
	if u.o.Rejections != nil {
		by := map[string]*reasonRow{}
		for _, rj := range u.o.Rejections() { // newest first
			row := by[rj.Reason]
			if row == nil {
				row = &reasonRow{Reason: rj.Reason, Last: rj.At}
				by[rj.Reason] = row
			}
			row.Count++
		}
		for _, k := range slices.Sorted(maps.Keys(by)) {
			d.Rejections = append(d.Rejections, *by[k])
		}
	}
	if u.o.CertExpiry != nil {
		if t := u.o.CertExpiry(); !t.IsZero() {
			d.CertExpiry, d.CertLeft = t, t.Sub(now).Round(time.Hour).String()
		}
	}
	u.renderPage(w, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", CSRF: s.csrf, SignedIn: true,
		Live: true, Data: d})
}

// notificationView is a notification as the pages show it.
type notificationView struct {
	ID          uint64
	Gateway     string
	ReceivedAt  time.Time
	RemoteAddr  string
	ContentType string
	State       ipn.State
	DuplicateOf uint64
	Event       *ipn.Event
	EventJSON   string
	History     []ipn.HistoryEntry
	Headers     [][2]string
	Body        string // pretty-printed JSON, or the text
	Form        [][2]string
	Charset     string // the body's charset, decoded from for display (never in the store)
	CharsetNote string // how it was chosen, when the message did not name it
	Purged      time.Time
	Attempts    int
	NextAttempt time.Time
}

func (u *ui) view(it store.Item, full bool) notificationView {
	n, p := it.Notification, it.Processing
	v := notificationView{ID: n.ID, Gateway: n.Gateway, ReceivedAt: n.ReceivedAt, RemoteAddr: n.RemoteAddr,
		ContentType: n.ContentType, State: p.State, DuplicateOf: p.DuplicateOf, Event: p.Event, History: p.History,
		Purged: n.Purged, Attempts: p.Attempts, NextAttempt: p.NextAttempt}
	if v.Event == nil && n.Purged.IsZero() {
		if g, ok := u.gateways[n.Gateway]; ok {
			if ev, err := g.Normalize(n); err == nil {
				v.Event = ev
			}
		}
	}
	if !full {
		return v
	}
	if v.Event != nil {
		b, _ := json.MarshalIndent(v.Event, "", "  ")
		v.EventJSON = string(b)
	}
	for _, k := range slices.Sorted(maps.Keys(n.Headers)) {
		for _, val := range n.Headers[k] {
			v.Headers = append(v.Headers, [2]string{k, val})
		}
	}
	if n.Purged.IsZero() {
		kind := ""
		if g, ok := u.gateways[n.Gateway]; ok {
			kind = g.Kind()
		}
		bt := decodeBody(n.Body, n.ContentType, kind)
		v.Form, v.Charset, v.CharsetNote = bt.Form, bt.Charset, bt.Note
		v.Body = bt.Text
		if bt.Form == nil && (strings.Contains(n.ContentType, "json") || json.Valid([]byte(bt.Text))) {
			var pretty bytes.Buffer
			if json.Indent(&pretty, []byte(bt.Text), "", "  ") == nil {
				v.Body = pretty.String()
			}
		}
	}
	return v
}

func (u *ui) notifications(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	u.listNotifications(w, s, r.URL.Query(), "")
}

// search is the search form: a txn id, an order id or a customer email,
// posted (so that it stays out of URLs, the browser's history and any
// access log), matched exactly (case-insensitively) against the
// identifiers the notifications' events name, through the store's index
// (store.Find).
func (u *ui) search(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	term := strings.TrimSpace(r.PostFormValue("q"))
	if term == "" {
		http.Redirect(w, r, "/notifications", http.StatusSeeOther)
		return
	}
	u.listNotifications(w, s, r.PostForm, term)
}

// listNotifications shows a page of the notifications the filters and
// the search select, newest first, read through the store's indexes;
// "before" (the last id of the previous page) pages on.
func (u *ui) listNotifications(w http.ResponseWriter, s session, q url.Values, search string) {
	d := struct {
		Gateway, State, Order string
		From, To              string
		Search                string
		NextBefore            uint64
		Gateways              []string
		States                []ipn.State
		Items                 []notificationView
		Next                  string
		Error                 string
		Limited               bool
		Flash                 string
	}{Flash: bulkDone(q), Gateway: q.Get("gateway"), State: q.Get("state"), Order: q.Get("order"), From: q.Get("from"), To: q.Get("to"),
		Search:   search,
		Gateways: slices.Sorted(maps.Keys(u.gateways)),
		States: []ipn.State{ipn.StateReceived, ipn.StateVerified, ipn.StateApplied, ipn.StateInvalid, ipn.StateFailed,
			ipn.StateDuplicate}}
	const limit = 50
	f := store.Query{Gateway: d.Gateway, State: ipn.State(d.State), Order: d.Order, Term: search, Limit: limit,
		Normalize: func(n *ipn.Notification) *ipn.Event {
			if g, ok := u.gateways[n.Gateway]; ok && n.Purged.IsZero() {
				if ev, err := g.Normalize(n); err == nil {
					return ev
				}
			}
			return nil
		}}
	if f.State != "" && !f.State.Valid() {
		d.Error, f.State = "Unknown state.", ""
	}
	if b := q.Get("before"); b != "" {
		f.Before, _ = strconv.ParseUint(b, 10, 64)
	}
	// The time range (UTC days, both included) is an id range: ids
	// follow arrival.
	day := func(s string, next int) (uint64, bool) {
		t, err := time.Parse("2006-01-02", s)
		if err != nil {
			d.Error = "A date is YYYY-MM-DD."
			return 0, false
		}
		id, err := u.o.Store.FirstIDAt(t.AddDate(0, 0, next))
		if err != nil {
			d.Error = "Cannot read the dates."
			return 0, false
		}
		return id, true
	}
	if d.From != "" {
		if id, ok := day(d.From, 0); ok && id > 0 {
			f.After = id - 1
		}
	}
	if d.To != "" {
		if id, ok := day(d.To, 1); ok && (f.Before == 0 || id < f.Before) {
			f.Before = id
		}
	}
	items, err := u.o.Store.Find(f)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	for _, it := range items {
		d.Items = append(d.Items, u.view(it, false))
	}
	if len(d.Items) == limit {
		next := url.Values{}
		for _, k := range []string{"gateway", "state", "order", "from", "to"} {
			if v := q.Get(k); v != "" {
				next.Set(k, v)
			}
		}
		d.NextBefore = d.Items[limit-1].ID
		next.Set("before", strconv.FormatUint(d.NextBefore, 10))
		if search == "" {
			d.Next = "/notifications?" + next.Encode()
		}
	}
	u.renderPage(w, http.StatusOK, "notifications", page{Title: "Notifications", Nav: "notifications", CSRF: s.csrf,
		SignedIn: true, Live: q.Get("before") == "" && search == "", Data: d})
}

func (u *ui) notification(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		u.fail(w, s, store.ErrNotFound)
		return
	}
	n, p, err := u.o.Store.Get(id)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	out, err := u.o.Store.OutboxOf(id)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	d := struct {
		N       notificationView
		Outbox  []outboxView
		Flash   string
		Decided decided
	}{N: u.view(store.Item{Notification: n, Processing: p}, true), Outbox: outboxViews(out), Flash: r.URL.Query().Get("done")}
	d.Decided = u.decideView(id, p, d.N.Event, out)
	u.renderPage(w, http.StatusOK, "notification", page{Title: fmt.Sprintf("Notification %d", id), Nav: "notifications",
		CSRF: s.csrf, SignedIn: true, Data: d})
}

// replay is the Replay button: the admin API's code path (store.Replay).
func (u *ui) replay(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		u.fail(w, s, store.ErrNotFound)
		return
	}
	if err := u.o.Store.Replay(id, u.o.Now()); err != nil {
		u.fail(w, s, err)
		return
	}
	u.log.Info("replay requested", "id", id, "by", "dashboard")
	http.Redirect(w, r, fmt.Sprintf("/notifications/%d?done=replay", id), http.StatusSeeOther)
}

func (u *ui) orders(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	q := r.URL.Query()
	d := struct {
		Status, Test string
		Statuses     []ipn.OrderStatus
		Orders       []ipn.Order
		Next         string
	}{Status: q.Get("status"), Test: q.Get("test"), Statuses: ipn.OrderStatuses}
	status := ipn.OrderStatus(d.Status)
	if !slices.Contains(ipn.OrderStatuses, status) {
		status, d.Status = "", ""
	}
	before := q.Get("before")
	const limit = 50
	read := 1000 // a page of orders read, when filtering by test
	if d.Test == "" {
		read = limit // each one shown: the store's order (by status: its index)
	}
	for range 20 { // at most 20 pages of 1000 when filtering by test
		orders, err := u.o.Store.ListOrders(status, before, read)
		if err != nil {
			u.fail(w, s, err)
			return
		}
		for _, o := range orders {
			if (d.Test == "test" && !o.Test) || (d.Test == "real" && o.Test) {
				continue
			}
			d.Orders = append(d.Orders, o)
			if len(d.Orders) == limit {
				next := url.Values{}
				if d.Status != "" {
					next.Set("status", d.Status)
				}
				if d.Test != "" {
					next.Set("test", d.Test)
				}
				next.Set("before", store.OrderCursor(o))
				d.Next = "/orders?" + next.Encode()
				break
			}
		}
		if len(d.Orders) == limit || len(orders) < read {
			break
		}
		before = store.OrderCursor(orders[len(orders)-1])
	}
	u.renderPage(w, http.StatusOK, "orders", page{Title: "Orders", Nav: "orders", CSRF: s.csrf, SignedIn: true, Data: d})
}

func (u *ui) order(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	u.renderOrder(w, s, ps.ByName("id"), http.StatusOK, r.URL.Query().Get("done"), "")
}

func (u *ui) renderOrder(w http.ResponseWriter, s session, id string, status int, flash, problem string) {
	o, err := u.o.Store.GetOrder(id)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	out, err := u.o.Store.OutboxOfOrder(o.ID) // the store's index by order
	if err != nil {
		u.fail(w, s, err)
		return
	}
	d := struct {
		O       *ipn.Order
		Outbox  []outboxView
		Flash   string
		Problem string
		Form    decisionForm
		Deliv   deliveriesView
	}{O: o, Outbox: outboxViews(out), Flash: flash, Problem: problem, Form: newDecisionForm(o), Deliv: u.deliveriesOf(o.ID)}
	u.renderPage(w, status, "order", page{Title: "Order", Nav: "orders", CSRF: s.csrf, SignedIn: true, Data: d})
}

type outboxView struct {
	store.OutboxItem
	CanRetry, CanDiscard, CanResend bool
	DeliveryKey                     string // webhook-id / IPND_OUTBOX_ID
	ResendKey                       string // made for this page: a double click resends once
}

func outboxViews(items []store.OutboxItem) []outboxView {
	out := make([]outboxView, 0, len(items))
	for _, it := range items {
		it.Effect.Cause = strings.ReplaceAll(it.Effect.Cause, "\x00", "|")
		out = append(out, outboxView{OutboxItem: it, DeliveryKey: it.Key(),
			CanRetry:   it.State == store.OutboxPending || it.State == store.OutboxDead || it.State == store.OutboxSkipped,
			CanDiscard: it.State == store.OutboxPending || it.State == store.OutboxDead,
			CanResend:  it.State == store.OutboxSent && strings.HasPrefix(it.Effect.Kind, "email_")})
		if v := &out[len(out)-1]; v.CanResend {
			v.ResendKey = randomToken()
		}
	}
	return out
}

var outboxStates = []string{store.OutboxPending, store.OutboxDead, store.OutboxSkipped, store.OutboxSent, store.OutboxDiscarded}

func (u *ui) outbox(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	q := r.URL.Query()
	d := struct {
		Lane, State string
		Lanes       []string
		States      []string
		Items       []outboxView
		Flash       string
		Back        string
	}{Lane: q.Get("lane"), State: q.Get("state"), States: outboxStates, Flash: q.Get("done"),
		Lanes: ipn.OutboxLanes}
	if !slices.Contains(outboxStates, d.State) {
		d.State = ""
	}
	if d.State == "" && q.Get("state") == "" && !q.Has("state") {
		d.State = store.OutboxDead
	}
	read := 200 // shown; with a lane, the newest 1000 of the state are sorted out
	if d.Lane != "" {
		read = 1000
	}
	items, err := u.o.Store.ListOutbox(d.State, read)
	if err != nil {
		u.fail(w, s, err)
		return
	}
	items = slices.DeleteFunc(items, func(it store.OutboxItem) bool { return d.Lane != "" && it.Effect.Kind != d.Lane })
	d.Items = outboxViews(items[:min(len(items), 200)])
	back := url.Values{"state": {d.State}}
	if d.Lane != "" {
		back.Set("lane", d.Lane)
	}
	d.Back = "/outbox?" + back.Encode()
	u.renderPage(w, http.StatusOK, "outbox", page{Title: "Outbox", Nav: "outbox", CSRF: s.csrf, SignedIn: true, Data: d})
}

// retry is the Retry button: the admin API's code path (store.RetryOutbox).
func (u *ui) retry(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		u.fail(w, s, store.ErrNotFound)
		return
	}
	if _, err := u.o.Store.RetryOutbox(id, u.o.Now()); err != nil {
		u.fail(w, s, err)
		return
	}
	u.log.Info("outbox retry requested", "outbox_id", id, "by", "dashboard")
	http.Redirect(w, r, backTo(r, "/outbox")+"done=retry", http.StatusSeeOther)
}

// backTo is the form's "back" field when it is a local path of ours,
// else def; ready for a query parameter to be appended.
func backTo(r *http.Request, def string) string {
	b := r.PostFormValue("back")
	// A browser drops tabs and newlines from a URL ("/\t/host" is
	// "//host") and reads "\" as "/": no control character, no "\".
	if !strings.HasPrefix(b, "/") || strings.HasPrefix(b, "//") || strings.ContainsRune(b, '\\') ||
		strings.ContainsFunc(b, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		b = def
	}
	if strings.Contains(b, "?") {
		return b + "&"
	}
	return b + "?"
}
