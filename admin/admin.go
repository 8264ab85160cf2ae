// Package admin is the admin listener's HTTP API: notifications, backup,
// health and metrics for operators and the ipnd CLI. Every /api/ route
// requires "Authorization: Bearer <token>"; errors are JSON
// {"error": "..."} and never carry internal details.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"

	"ipnd/admin/ui"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/public"
	"ipnd/store"
)

// Options configure Handler. Store and Token are required.
type Options struct {
	Store       Store
	Token       string
	OpenMetrics bool         // /metrics and /healthz without the token
	Metrics     http.Handler // nil: no /metrics route
	Gateways    []gateway.Gateway
	Rejections  func() []public.Rejection
	// Healthy reports why the appliance is unhealthy (nil: healthy).
	Healthy func() error
	// Leadership, when set (several ipnd on one database), says on
	// /healthz whether this process leads and which process does.
	Leadership func() Leadership
	Logger     *slog.Logger
	// AuthFailed, when set, counts a request refused for its token:
	// limited false for a wrong token (401), true for a client past its
	// limit of wrong tokens (429).
	AuthFailed func(limited bool)
	// AuthFailures is how many wrong tokens a client may send at once,
	// regained at AuthFailuresPerSecond; past them its requests are
	// answered 429 without being compared. 0: 10 at once, one per 6 s.
	AuthFailures          int
	AuthFailuresPerSecond float64
	// Guesses, when set, is the limiter of wrong tokens to use (the
	// caller keeps it across handlers, so that a config reload does not
	// reset it); nil: one of AuthFailures at AuthFailuresPerSecond.
	Guesses *public.ClientLimiter
	Now     func() time.Time // nil: time.Now
	// Sessions are the dashboard's signed-in browsers (kept across
	// reloads by the caller); nil: a new, empty set.
	Sessions *ui.Sessions
	// CertExpiry, when set, is the expiry of the TLS certificate in use
	// (zero: none), shown on the dashboard.
	CertExpiry func() time.Time
	// TrustedProxies are the peers (a reverse proxy in front of the
	// admin listener) whose X-Forwarded-For names the client, for the
	// wrong-token limit, and whose "X-Forwarded-Proto: https" makes the
	// dashboard's cookie Secure (admin.trusted_proxies). From any other
	// peer both headers are ignored.
	TrustedProxies []netip.Prefix
}

type api struct {
	o        Options
	tokenSum [32]byte
	gateways map[string]gateway.Gateway
	log      *slog.Logger
	guesses  *public.ClientLimiter
	failLog  authFailLog
}

// authFailLog aggregates the WARN lines about wrong tokens: at most one
// per authLogEvery, counting what happened since the previous one.
type authFailLog struct {
	mu               sync.Mutex
	last             time.Time
	wrong, limited   int
	clients          map[netip.Addr]bool // since the previous line, at most authLogClients
	clientsTruncated bool
	flushing         bool // a line for the counts since the previous one is due (a timer runs)
}

const authLogClients = 10

// authLogEvery is the aggregation period of the log lines about wrong
// tokens (a variable for tests).
var authLogEvery = 10 * time.Second

// Handler returns the admin routes.
func Handler(o Options) http.Handler {
	if o.AuthFailures <= 0 || o.AuthFailuresPerSecond <= 0 {
		o.AuthFailures, o.AuthFailuresPerSecond = 10, 1.0/6
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sessions == nil {
		o.Sessions = ui.NewSessions(0)
	}
	a := &api{o: o, tokenSum: sha256.Sum256([]byte(o.Token)), gateways: map[string]gateway.Gateway{}, log: o.Logger,
		guesses: o.Guesses}
	if a.guesses == nil {
		a.guesses = public.NewClientLimiter(o.AuthFailuresPerSecond, o.AuthFailures, 0)
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for _, g := range o.Gateways {
		a.gateways[g.Name()] = g
	}
	r := httprouter.New()
	open := func(h httprouter.Handle) httprouter.Handle {
		if o.OpenMetrics {
			return h
		}
		return a.auth(h)
	}
	r.GET("/healthz", open(a.healthz))
	if o.Metrics != nil {
		r.GET("/metrics", open(func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
			o.Metrics.ServeHTTP(w, req)
		}))
	}
	r.GET("/api/notifications", a.auth(a.listNotifications))
	r.GET("/api/notifications/:id", a.auth(a.showNotification))
	r.POST("/api/notifications/:id/replay", a.auth(a.replay))
	r.GET("/api/rejections", a.auth(a.rejections))
	r.POST("/api/orders", a.auth(a.createOrder))
	r.GET("/api/orders", a.auth(a.listOrders))
	r.GET("/api/orders/:id", a.auth(a.showOrder))
	r.DELETE("/api/orders/:id", a.auth(a.deleteOrder))
	a.decisionRoutes(r)
	r.GET("/api/subscriptions/:id", a.auth(a.showSubscription))
	r.GET("/api/outbox", a.auth(a.listOutbox))
	r.POST("/api/outbox/:id/retry", a.auth(a.retryOutbox))
	r.GET("/api/backup", a.auth(a.backup))
	a.fulfilRoutes(r)
	a.bulkRoutes(r)
	r.GET("/api/stats", a.auth(a.stats))
	r.POST("/api/journal/dropped/ack", a.auth(a.ackDropped))
	ui.Register(r, ui.Options{Store: o.Store, Token: o.Token, Sessions: o.Sessions, Gateways: o.Gateways,
		Healthy: o.Healthy, Rejections: o.Rejections, Guesses: a.guesses, AuthFailed: a.authFailed,
		CertExpiry: o.CertExpiry, Logger: a.log, Now: o.Now, ClientAddr: a.client, HTTPS: a.https,
		// The dashboard's decisions take the API's code path.
		Decide: func(id, kind, note, outcome string, version int, key string) (int, string) {
			_, status, msg := a.OrderDecision(id, kind, DecisionRequest{Note: note, Text: note, Outcome: outcome, Version: version}, "admin", key)
			return status, msg
		},
		Discard: func(id uint64, note string, version int) (int, string) {
			_, status, msg := a.DiscardOutbox(id, DecisionRequest{Note: note, Version: version}, "admin")
			return status, msg
		},
		BulkReplay: func(gateway string, state ipn.State, before uint64, limit int) (int, bool, int, string) {
			res, status, msg := a.BulkReplay(BulkReplayRequest{Gateway: gateway, State: state, Before: before, Limit: limit}, "admin")
			return len(res.Replayed), res.More, status, msg
		},
		Reissue: func(id string) (int, string) {
			_, status, msg := a.Reissue(id, "admin")
			return status, msg
		}})
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such route")
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	r.PanicHandler = func(w http.ResponseWriter, _ *http.Request, v any) {
		a.log.Error("admin handler panic", "panic", v)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
	return a.loopbackHost(ui.RouteEscaped(r)) // an order id with "/"
}

// loopbackHost refuses (421) a plain-HTTP request for a host name other
// than localhost or an IP address: over plain HTTP the admin listener
// is on loopback (off it, it needs TLS), so such a name is a web page
// that pointed its own name at 127.0.0.1 (DNS rebinding) to reach the
// listener from the merchant's browser. Over TLS the certificate must
// match the name; a trusted proxy chose its own.
func (a *api) loopbackHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil && !loopbackName(r.Host) && !a.fromProxy(r) {
			writeError(w, http.StatusMisdirectedRequest,
				"the admin listener answers plain HTTP for 127.0.0.1, ::1 or localhost only (not "+strconv.Quote(r.Host)+")")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loopbackName reports whether host (a Host header) names this machine
// without DNS: an IP address, localhost or a name under .localhost
// (which browsers resolve to loopback themselves), or none at all.
func loopbackName(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil || host == "" {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// auth requires the bearer token, compared in constant time (over hashes,
// so that the length does not leak either). Wrong tokens are limited per
// client address: past AuthFailures of them, the client's requests are
// answered 429 (with Retry-After) without being compared, until its
// bucket refills. Each refusal is counted (AuthFailed) and logged at
// WARN, aggregated; the token is never logged.
func (a *api) auth(h httprouter.Handle) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		now := a.o.Now()
		client := a.client(r)
		if blocked, wait := a.guesses.Blocked(client, now); blocked {
			a.authFailed(client, true, now)
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
			writeError(w, http.StatusTooManyRequests, "too many wrong bearer tokens from this address: try again later")
			return
		}
		if !a.authorized(r) {
			if _, given := bearerToken(r.Header.Get("Authorization")); given {
				a.guesses.Fail(client, now)
				a.authFailed(client, false, now)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="ipnd"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		ui.Unescape(r, ps)
		h(w, r, ps)
	}
}

// remoteAddr is the address of r's peer (the unspecified address when
// it cannot be read: those share one bucket).
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	return ap.Addr().Unmap()
}

// fromProxy reports whether r's peer is one of TrustedProxies.
func (a *api) fromProxy(r *http.Request) bool {
	peer := remoteAddr(r)
	for _, p := range a.o.TrustedProxies {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// client is the address r's wrong tokens count against: its peer, or,
// when the peer is a trusted proxy, the nearest address in
// X-Forwarded-For (read from the right) that is not a trusted proxy.
func (a *api) client(r *http.Request) netip.Addr {
	peer := remoteAddr(r)
	if !a.fromProxy(r) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		peer = h.Unmap()
		trusted := false
		for _, p := range a.o.TrustedProxies {
			trusted = trusted || p.Contains(peer)
		}
		if !trusted {
			break
		}
	}
	return peer
}

// https reports whether the browser reached r over TLS: the admin
// listener's own, or a trusted proxy's that says so (the last
// X-Forwarded-Proto, the one the proxy added).
func (a *api) https(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if !a.fromProxy(r) {
		return false
	}
	v := r.Header.Values("X-Forwarded-Proto")
	if len(v) == 0 {
		return false
	}
	last := v[len(v)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.EqualFold(strings.TrimSpace(last), "https")
}

// authFailed counts and logs one refused token (limited: answered 429).
func (a *api) authFailed(client netip.Addr, limited bool, now time.Time) {
	if a.o.AuthFailed != nil {
		a.o.AuthFailed(limited)
	}
	l := &a.failLog
	l.mu.Lock()
	if limited {
		l.limited++
	} else {
		l.wrong++
	}
	if l.clients == nil {
		l.clients = map[netip.Addr]bool{}
	}
	if len(l.clients) < authLogClients {
		l.clients[client] = true
	} else if !l.clients[client] {
		l.clientsTruncated = true
	}
	if since := now.Sub(l.last); since < authLogEvery {
		// Logged at the end of the period, so that a burst that stops
		// is still counted whole.
		if !l.flushing {
			l.flushing = true
			time.AfterFunc(min(max(authLogEvery-since, 0), authLogEvery), a.flushAuthLog)
		}
		l.mu.Unlock()
		return
	}
	a.logAuthFailures(now) // unlocks l.mu
}

// flushAuthLog logs the refusals counted since the previous line, if any.
func (a *api) flushAuthLog() {
	l := &a.failLog
	l.mu.Lock()
	l.flushing = false
	if l.wrong+l.limited == 0 {
		l.mu.Unlock()
		return
	}
	a.logAuthFailures(a.o.Now())
}

// logAuthFailures writes the line for the refusals counted since the
// previous one and starts counting again; called with l.mu held, it
// unlocks it.
func (a *api) logAuthFailures(now time.Time) {
	l := &a.failLog
	wrong, lim, truncated := l.wrong, l.limited, l.clientsTruncated
	clients := make([]string, 0, len(l.clients))
	for c := range l.clients {
		clients = append(clients, c.String())
	}
	slices.Sort(clients)
	l.last, l.wrong, l.limited, l.clients, l.clientsTruncated = now, 0, 0, nil, false
	l.mu.Unlock()
	if truncated {
		clients = append(clients, "...")
	}
	// At most one line per authLogEvery (and one at the end of a period
	// with refusals): the counts since the previous one.
	a.log.Warn("admin API: wrong bearer tokens", "wrong", wrong, "refused_429", lim,
		"clients", strings.Join(clients, ","))
}

// authorized reports whether r carries the admin token.
func (a *api) authorized(r *http.Request) bool {
	got, ok := bearerToken(r.Header.Get("Authorization"))
	sum := sha256.Sum256([]byte(got))
	return ok && a.o.Token != "" && subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header. The scheme is case-insensitive (RFC 9110 §11.1), so "bearer"
// and "BEARER" are the same; spaces around the token are not part of it.
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// unavailableMsg answers a request the store could not serve because its
// database cannot be reached (store.ErrUnavailable).
const unavailableMsg = "store unavailable: try again (the reason is on /healthz)"

// fail maps an error to a status and a message safe for the client.
func (a *api) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	case errors.Is(err, store.ErrBadCursor):
		writeError(w, http.StatusBadRequest, "before: not a next_before of a previous page")
	case errors.Is(err, store.ErrNotTest):
		writeError(w, http.StatusConflict, "not a test order: only test orders can be deleted (cancel a real one)")
	case errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, "already exists")
	case errors.Is(err, store.ErrPurged):
		writeError(w, http.StatusConflict, "its raw body was purged (store.raw_retention): it cannot be processed again")
	case errors.Is(err, store.ErrLost):
		writeError(w, http.StatusGone, "lost to journal damage (recorded by ipnd recover --skip-damaged)")
	case errors.Is(err, store.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "store is closed")
	case errors.Is(err, store.ErrUnavailable):
		a.log.Warn("admin request: store unavailable", "error", err)
		writeError(w, http.StatusServiceUnavailable, unavailableMsg)
	case errors.Is(err, store.ErrBackupRefused):
		a.log.Warn("backup refused", "error", err)
		writeError(w, http.StatusServiceUnavailable, "backup refused: another backup is running, or the data directory has no room for its snapshot (see the log)")
	case errors.Is(err, store.ErrBackupElsewhere):
		writeError(w, http.StatusNotImplemented, err.Error())
	case errors.Is(err, store.ErrBackupTooSlow):
		a.log.Warn("backup failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, err.Error()+": try again when the disk is less busy, or copy ipnd.db with ipnd stopped")
	case errors.Is(err, syscall.ENOSPC):
		a.log.Warn("backup failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, "no space left on device for the backup snapshot: free space in the data directory, then try again")
	default:
		a.log.Error("admin request failed", "error", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// healthz is 200 while the store is open and the workers make progress,
// else 503 with the reason: in full for a request with the admin token;
// without it (admin.open_metrics) only the reason's first part ("ingest
// answers 503"), since the details name files and internal errors.
func (a *api) healthz(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if _, err := a.o.Store.Stats(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "store is not open")
		return
	}
	var lead *Leadership
	if a.o.Leadership != nil {
		l := a.o.Leadership()
		lead = &l
	}
	if a.o.Healthy != nil {
		if err := a.o.Healthy(); err != nil {
			msg := err.Error()
			if !a.authorized(r) {
				short, _, cut := strings.Cut(msg, ": ")
				msg = short
				if cut {
					msg += " (details with the admin token)"
				}
			}
			writeJSON(w, http.StatusServiceUnavailable, health{Error: msg, Leadership: lead})
			return
		}
	}
	writeJSON(w, http.StatusOK, health{Status: "ok", Leadership: lead})
}

// Leadership is, with several ipnd on one database, whether this process
// leads (runs the pipeline and the outbox), its name and the name of the
// process that holds the lease ("" when none does, or the database
// cannot say).
type Leadership struct {
	Leading bool   `json:"leading"`
	Process string `json:"process"`
	Leader  string `json:"leader"`
}

// health is /healthz's answer: {"status":"ok"} or {"error":"..."}, with
// the leadership when there is one.
type health struct {
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	*Leadership
}

// Notification is the JSON form of a stored notification (SPEC §7).
type Notification struct {
	ID          uint64      `json:"id"`
	Gateway     string      `json:"gateway"`
	ReceivedAt  time.Time   `json:"received_at"`
	RemoteAddr  string      `json:"remote_addr"`
	ContentType string      `json:"content_type"`
	Headers     http.Header `json:"headers,omitempty"`
	Body        *string     `json:"body,omitempty"`
	BodyBase64  string      `json:"body_base64,omitempty"`
	// PurgedAt: store.raw_retention removed the body, headers and remote
	// address then; BodySHA256 identifies the body that was received.
	PurgedAt    time.Time          `json:"purged_at,omitzero"`
	BodySHA256  string             `json:"body_sha256,omitempty"`
	State       ipn.State          `json:"state"`
	DuplicateOf uint64             `json:"duplicate_of,omitempty"`
	Event       *ipn.Event         `json:"event,omitempty"`
	History     []ipn.HistoryEntry `json:"history"`
	Attempts    int                `json:"attempts,omitempty"`
	NextAttempt time.Time          `json:"next_attempt,omitzero"`
}

func (a *api) view(it store.Item) Notification {
	n, p := it.Notification, it.Processing
	v := Notification{ID: n.ID, Gateway: n.Gateway, ReceivedAt: n.ReceivedAt, RemoteAddr: n.RemoteAddr,
		ContentType: n.ContentType, Headers: n.Headers, State: p.State, DuplicateOf: p.DuplicateOf,
		Event: p.Event, History: p.History, Attempts: p.Attempts, NextAttempt: p.NextAttempt}
	switch {
	case !n.Purged.IsZero():
		v.PurgedAt, v.BodySHA256 = n.Purged, n.BodySHA256
	case utf8.Valid(n.Body):
		s := string(n.Body)
		v.Body = &s
	default:
		v.BodyBase64 = base64.StdEncoding.EncodeToString(n.Body)
	}
	if v.Event == nil && n.Purged.IsZero() {
		// Not processed yet: show what the gateway adapter reads from it.
		if g, ok := a.gateways[n.Gateway]; ok {
			if ev, err := g.Normalize(n); err == nil {
				v.Event = ev
			}
		}
	}
	return v
}

// NotificationList is the answer of GET /api/notifications.
type NotificationList struct {
	Notifications []Notification `json:"notifications"`
	// NextBefore is the before= value of the next (older) page; 0 at the end.
	NextBefore uint64 `json:"next_before,omitempty"`
}

func (a *api) listNotifications(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q := r.URL.Query()
	f := store.Filter{Gateway: q.Get("gateway"), State: ipn.State(q.Get("state"))}
	if f.State != "" && !f.State.Valid() {
		writeError(w, http.StatusBadRequest, "state: unknown state "+strconv.Quote(string(f.State)))
		return
	}
	var err error
	if s := q.Get("before"); s != "" {
		if f.Before, err = strconv.ParseUint(s, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "before: not a notification id")
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 || f.Limit > 1000 {
			writeError(w, http.StatusBadRequest, "limit: must be 1 to 1000")
			return
		}
	}
	if f.Limit == 0 {
		f.Limit = 50
	}
	// Through the store's indexes (by gateway and state, by order id):
	// a page costs the same whatever the store holds.
	items, err := a.o.Store.Find(store.Query{Gateway: f.Gateway, State: f.State, Order: q.Get("order"), Before: f.Before,
		Limit: f.Limit, Normalize: func(n *ipn.Notification) *ipn.Event {
			if g, ok := a.gateways[n.Gateway]; ok && n.Purged.IsZero() {
				if ev, err := g.Normalize(n); err == nil {
					return ev
				}
			}
			return nil
		}})
	if err != nil {
		a.fail(w, err)
		return
	}
	out := NotificationList{Notifications: []Notification{}}
	for _, it := range items {
		out.Notifications = append(out.Notifications, a.view(it))
	}
	if len(items) == f.Limit {
		out.NextBefore = items[len(items)-1].Notification.ID
	}
	writeJSON(w, http.StatusOK, out)
}

func parseID(w http.ResponseWriter, ps httprouter.Params) (uint64, bool) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		writeError(w, http.StatusBadRequest, "id: not a numeric id")
		return 0, false
	}
	return id, true
}

// replay schedules a notification to be processed again; effects that
// already happened are keyed by cause and are not repeated.
func (a *api) replay(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	id, ok := parseID(w, ps)
	if !ok {
		return
	}
	if err := a.o.Store.Replay(id, time.Now()); err != nil {
		a.fail(w, err)
		return
	}
	a.log.Info("replay requested", "id", id)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "state": ipn.StateReceived})
}

func (a *api) showNotification(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	id, ok := parseID(w, ps)
	if !ok {
		return
	}
	n, p, err := a.o.Store.Get(id)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.view(store.Item{Notification: n, Processing: p}))
}

// rejections lists the recent rejected requests, newest first, at most
// limit (default 100, at most 1000), optionally of one gateway or reason.
func (a *api) rejections(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q := r.URL.Query()
	limit, ok := queryLimit(w, q, 100)
	if !ok {
		return
	}
	gateway, reason := q.Get("gateway"), q.Get("reason")
	out := []public.Rejection{}
	if a.o.Rejections != nil {
		for _, rj := range a.o.Rejections() { // newest first
			if len(out) == limit {
				break
			}
			if (gateway == "" || rj.Gateway == gateway) && (reason == "" || rj.Reason == reason) {
				out = append(out, rj)
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rejections": out})
}

// queryLimit reads the limit= parameter (1 to 1000; def when absent); on
// a bad value it answers 400 and reports false.
func queryLimit(w http.ResponseWriter, q url.Values, def int) (int, bool) {
	s := q.Get("limit")
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1000 {
		writeError(w, http.StatusBadRequest, "limit: must be 1 to 1000")
		return 0, false
	}
	return n, true
}

// displayKey shows an internal key (an event key, an effect's cause) with
// its NUL separators as "|": JSON clients and terminals choke on NULs.
func displayKey(k string) string { return strings.ReplaceAll(k, "\x00", "|") }

// orderView is an order as the API shows it.
func orderView(o ipn.Order) ipn.Order {
	o.Facts = slices.Clone(o.Facts)
	for i := range o.Facts {
		o.Facts[i].Key = displayKey(o.Facts[i].Key)
	}
	return o
}

// deadlineWriter moves the connection's write deadline forward before
// each write: a large backup may take longer than the listener's write
// timeout, but a client that stops reading is cut off after idle.
type deadlineWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.idle))
	return d.w.Write(p)
}

// backup streams a consistent copy of the database (Store.Backup: the
// bbolt store's is a read transaction, so ingest goes on).
func (a *api) backup(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	dw := deadlineWriter{w: w, rc: http.NewResponseController(w), idle: 30 * time.Second}
	started := false
	n, err := a.o.Store.Backup(dw, func(size int64) {
		started = true
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="ipnd-backup.db"`)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
	})
	if err != nil {
		if !started {
			a.fail(w, err)
			return
		}
		a.log.Error("backup interrupted", "error", err, "bytes", n, "remote_addr", r.RemoteAddr)
		return
	}
	a.log.Info("backup written", "bytes", n)
}

// orderRequest is the body of POST /api/orders.
type orderRequest struct {
	ID            string            `json:"id"`
	Amount        string            `json:"amount"`
	Currency      string            `json:"currency"`
	CustomerEmail string            `json:"customer_email"`
	Description   string            `json:"description"`
	Metadata      map[string]string `json:"metadata"`
	Test          bool              `json:"test"` // a test order: only sandbox gateways' test payments pay it
	// Items are the products it delivers (SPEC §11).
	Items []ipn.Item `json:"items"`
}

// createOrder registers an expected order: 201, 409 when the id exists,
// 400 naming the bad field.
func (a *api) createOrder(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	var req orderRequest
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+jsonProblem(err))
		return
	}
	o, err := ipn.NewRegisteredOrder(req.ID, req.Amount, req.Currency, req.CustomerEmail, req.Description, req.Metadata, time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), ipn.ErrMalformed.Error()+": "))
		return
	}
	o.Test = req.Test
	if o.Items, err = a.checkItems(req.Items); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.o.Store.CreateOrder(o); err != nil {
		a.fail(w, err)
		return
	}
	a.log.Info("order registered", "order_id", o.ID)
	writeJSON(w, http.StatusCreated, o)
}

// jsonProblem describes a JSON decoding error without echoing the body.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "not valid JSON"
	case errors.As(err, &te):
		return te.Field + ": wrong type"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "cannot be read"
}

// OrderList is the answer of GET /api/orders.
type OrderList struct {
	Orders     []ipn.Order `json:"orders"`
	NextBefore string      `json:"next_before,omitempty"`
}

func (a *api) listOrders(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q := r.URL.Query()
	status := ipn.OrderStatus(q.Get("status"))
	if status != "" && !slices.Contains(ipn.OrderStatuses, status) {
		writeError(w, http.StatusBadRequest, "status: unknown order status "+strconv.Quote(string(status)))
		return
	}
	limit, ok := queryLimit(w, q, 50)
	if !ok {
		return
	}
	orders, err := a.o.Store.ListOrders(status, q.Get("before"), limit)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := OrderList{Orders: []ipn.Order{}}
	for _, o := range orders {
		out.Orders = append(out.Orders, orderView(o))
	}
	if len(orders) == limit {
		out.NextBefore = store.OrderCursor(orders[len(orders)-1])
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) showOrder(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	o, err := a.o.Store.GetOrder(ps.ByName("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.withDeliveries(orderView(*o)))
}

// deleteOrder removes a test order with its facts (SPEC §7): 204, 404
// when there is none, 409 for a real order.
func (a *api) deleteOrder(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	if err := a.o.Store.DeleteOrder(ps.ByName("id")); err != nil {
		a.fail(w, err)
		return
	}
	a.log.Info("test order deleted", "order", ps.ByName("id"))
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) showSubscription(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	s, err := a.o.Store.GetSubscription(ps.ByName("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	s.Events = slices.Clone(s.Events)
	for i := range s.Events {
		s.Events[i].Key = displayKey(s.Events[i].Key)
	}
	writeJSON(w, http.StatusOK, s)
}

func (a *api) listOutbox(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q := r.URL.Query()
	state := q.Get("state")
	switch state {
	case "", store.OutboxPending, store.OutboxSent, store.OutboxDead, store.OutboxSkipped, store.OutboxDiscarded:
	default:
		writeError(w, http.StatusBadRequest, "state: must be pending, sent, dead, skipped or discarded")
		return
	}
	limit, ok := queryLimit(w, q, 1000)
	if !ok {
		return
	}
	var items []store.OutboxItem
	var err error
	if s := q.Get("notification"); s != "" {
		id, perr := strconv.ParseUint(s, 10, 64)
		if perr != nil || id == 0 {
			writeError(w, http.StatusBadRequest, "notification: not a notification id")
			return
		}
		items, err = a.o.Store.OutboxOf(id)
		items = slices.DeleteFunc(items, func(it store.OutboxItem) bool { return state != "" && it.State != state })
		items = items[:min(len(items), limit)]
	} else {
		items, err = a.o.Store.ListOutbox(state, limit)
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	if items == nil {
		items = []store.OutboxItem{}
	}
	for i := range items {
		items[i].Effect.Cause = displayKey(items[i].Effect.Cause)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// OutboxRetry is the answer of POST /api/outbox/:id/retry.
type OutboxRetry struct {
	ID    uint64 `json:"id"`
	State string `json:"state"` // pending: due now
	// Was is the item's state before: dead or skipped (queued again), or
	// pending (its next attempt moved to now); Attempts and NextAttempt
	// are from then.
	Was         string    `json:"was"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// retryOutbox puts a dead or skipped item back in the queue, or makes a pending one
// due now (202); 409 for an item already sent, which is never sent twice.
func (a *api) retryOutbox(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	id, ok := parseID(w, ps)
	if !ok {
		return
	}
	was, err := a.o.Store.RetryOutbox(id, time.Now())
	if errors.Is(err, store.ErrExists) {
		writeError(w, http.StatusConflict, fmt.Sprintf("outbox item %d was sent at %s; a sent item is not sent again",
			id, was.SentAt.UTC().Format(time.RFC3339)))
		return
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	a.log.Info("outbox retry requested", "outbox_id", id, "was", was.State)
	writeJSON(w, http.StatusAccepted, OutboxRetry{ID: id, State: store.OutboxPending, Was: was.State,
		Attempts: was.Attempts, NextAttempt: was.NextAttempt})
}

// ackDropped records that the operator has seen the torn journal tails
// dropped at a start (store.DB.Unacknowledged): /healthz stops reporting
// them. It answers what it acknowledged.
func (a *api) ackDropped(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	drops, _, err := a.o.Store.Unacknowledged()
	if err == nil {
		_, err = a.o.Store.AckDropped()
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	if drops == nil {
		drops = []store.LostRange{}
	}
	a.log.Info("dropped journal tails acknowledged", "ranges", len(drops))
	writeJSON(w, http.StatusOK, map[string]any{"acknowledged": drops})
}

// Stats is the answer of GET /api/stats: where the bytes on disk go, and
// the ids lost to journal damage.
type Stats struct {
	store.Space
	Lost []store.LostRange `json:"lost"`
}

func (a *api) stats(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	sp, err := a.o.Store.Space()
	if err != nil {
		a.fail(w, err)
		return
	}
	lost, err := a.o.Store.Lost()
	if err != nil {
		a.fail(w, err)
		return
	}
	if lost == nil {
		lost = []store.LostRange{}
	}
	writeJSON(w, http.StatusOK, Stats{Space: sp, Lost: lost})
}
