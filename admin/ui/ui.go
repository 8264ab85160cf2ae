// Package ui is the dashboard on the admin listener: server-rendered
// html/template pages with their CSS and one small script embedded
// (go:embed), no external requests and no build step.
//
// Security: a browser signs in by posting the admin token to /login;
// it gets an HttpOnly, SameSite=Strict session cookie (Secure when the
// request came over TLS, the listener's or a trusted proxy's) naming a
// random session kept in memory (Sessions). Every form carries the
// session's CSRF token and every POST without it is refused (403), as
// is a browser's cross-origin POST (http.CrossOriginProtection), /login
// included. Every page is sent with a Content-Security-Policy that allows no inline script or style. Wrong
// tokens go through the admin API's limiter and counter. Nothing here
// logs customer data or puts it in a URL it builds.
package ui

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/public"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure Register. Store, Token and Sessions are required.
type Options struct {
	Store    Store
	Token    string
	Sessions *Sessions
	Gateways []gateway.Gateway
	// Healthy is the reason /healthz gives for being unhealthy (nil: healthy).
	Healthy    func() error
	Rejections func() []public.Rejection
	// Guesses limits wrong tokens per client (the admin API's limiter);
	// AuthFailed counts and logs one refused token (limited: refused
	// without being compared).
	Guesses    *public.ClientLimiter
	AuthFailed func(client netip.Addr, limited bool, now time.Time)
	// CertExpiry, when set, is the expiry of the TLS certificate served
	// (zero: TLS off).
	CertExpiry func() time.Time
	// Decide applies an order decision (kind approve, cancel, note or
	// dispute with outcome won or lost) through the admin API's code
	// path, as by "admin": 200, or a status and a message for the page.
	Decide func(order, kind, note, outcome string, version int, key string) (int, string)
	// Discard discards an outbox item the same way (version: of its
	// order, 0 to skip the check).
	Discard func(id uint64, note string, version int) (int, string)
	// BulkReplay replays the notifications of a gateway and state (""
	// any) below before (0: any), newest first, at most limit, through
	// the admin API's code path (POST /api/replay): how many were
	// scheduled, whether more matched, 202 or a status and a message.
	BulkReplay func(gateway string, state ipn.State, before uint64, limit int) (n int, more bool, status int, msg string)
	// Reissue gives an order's download links new tokens and queues the
	// customer's "your downloads" email again, through the admin API's
	// code path (POST /api/orders/:id/deliveries/reissue): 200, or a
	// status and a message.
	Reissue func(order string) (status int, msg string)
	Logger  *slog.Logger
	Now     func() time.Time
	// ClientAddr is the address a request's wrong tokens count against
	// (nil: its peer); HTTPS whether the browser reached it over TLS, for
	// the cookie's Secure (nil: the listener's own TLS). The admin API
	// passes its own, which believe admin.trusted_proxies.
	ClientAddr func(*http.Request) netip.Addr
	HTTPS      func(*http.Request) bool
}

type ui struct {
	o        Options
	tokenSum [32]byte
	gateways map[string]gateway.Gateway
	pages    map[string]*template.Template
	log      *slog.Logger
	stats    statsCache
	// cross refuses a browser's cross-origin POST (Sec-Fetch-Site,
	// Origin): another site cannot make the merchant's browser sign in
	// with wrong tokens (counted against the merchant's address, locking
	// the merchant out) nor post a form, whatever the cookie does.
	cross *http.CrossOriginProtection
}

const cookieName = "ipnd_session"

// csp is sent with every page: nothing inline, nothing from elsewhere.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

// Register adds the dashboard's routes to r: / and the pages under it,
// /login, /logout, /static/ and /events.
func Register(r *httprouter.Router, o Options) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sessions == nil {
		o.Sessions = NewSessions(0)
	}
	if o.ClientAddr == nil {
		o.ClientAddr = remoteAddr
	}
	if o.HTTPS == nil {
		o.HTTPS = func(r *http.Request) bool { return r.TLS != nil }
	}
	u := &ui{o: o, tokenSum: sha256.Sum256([]byte(o.Token)), gateways: map[string]gateway.Gateway{}, log: o.Logger,
		cross: http.NewCrossOriginProtection()}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	for _, g := range o.Gateways {
		u.gateways[g.Name()] = g
	}
	o.Sessions.setToken(u.tokenSum)
	u.pages = parsePages()
	static, _ := fs.Sub(staticFS, "static")
	fileServer := http.StripPrefix("/static/", http.FileServer(http.FS(static)))
	r.GET("/static/*file", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		securityHeaders(w)
		w.Header().Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, req)
	})
	r.GET("/login", u.loginForm)
	r.POST("/login", u.login)
	r.POST("/logout", u.signedIn(u.logout))
	r.GET("/", u.signedIn(u.overview))
	r.GET("/notifications", u.signedIn(u.notifications))
	r.GET("/notifications/:id", u.signedIn(u.notification))
	r.POST("/notifications", u.signedIn(u.search))
	r.POST("/notifications/:id/replay", u.signedIn(u.replay))
	r.GET("/orders", u.signedIn(u.orders))
	r.GET("/orders/:id", u.signedIn(u.order))
	r.POST("/orders/:id/decide", u.signedIn(u.decide))
	r.GET("/outbox", u.signedIn(u.outbox))
	r.GET("/outbox/:id", u.signedIn(u.outboxItem))
	r.POST("/outbox/:id/retry", u.signedIn(u.retry))
	r.POST("/outbox/:id/discard", u.signedIn(u.discard))
	r.POST("/outbox/:id/resend", u.signedIn(u.resend))
	r.POST("/outbox-retry-dead", u.signedIn(u.retryDead))
	r.GET("/events", u.signedIn(u.events))
	r.GET("/subscriptions", u.signedIn(u.subscriptions))
	r.GET("/subscriptions/:id", u.signedIn(u.subscription))
	r.GET("/rejections", u.signedIn(u.rejections))
	r.GET("/notifications-replay", u.signedIn(u.bulkReplayForm))
	r.POST("/notifications-replay", u.signedIn(u.bulkReplay))
	r.POST("/orders/:id/reissue", u.signedIn(u.reissue))
}

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// session is what a signed-in handler knows of its request.
type session struct {
	id, csrf string
}

type handle func(w http.ResponseWriter, r *http.Request, ps httprouter.Params, s session)

// signedIn requires a valid session cookie (else: a redirect to /login
// for a GET, 403 for a POST) and, for a POST, the session's CSRF token
// in the form field csrf (else 403).
func (u *ui) signedIn(h handle) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		securityHeaders(w)
		w.Header().Set("Cache-Control", "no-store")
		Unescape(r, ps)
		var id string
		if c, err := r.Cookie(cookieName); err == nil {
			id = c.Value
		}
		csrf, ok := u.o.Sessions.lookup(id, u.tokenSum, u.o.Now())
		if !ok {
			// A page goes to the sign-in form; the event stream (and any
			// POST) is refused, so that a browser's EventSource stops.
			if r.Method == http.MethodGet && r.Header.Get("Accept") != "text/event-stream" {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "403 forbidden: not signed in", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if u.cross.Check(r) != nil {
				http.Error(w, "403 forbidden: a cross-origin request", http.StatusForbidden)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			got := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(got), []byte(csrf)) != 1 {
				http.Error(w, "403 forbidden: missing or wrong CSRF token (reload the page and try again)", http.StatusForbidden)
				return
			}
		}
		h(w, r, ps, session{id: id, csrf: csrf})
	}
}

type escapedKey struct{}

// RouteEscaped wraps the admin listener's router so that an escaped "/"
// in a path segment stays inside that segment: an order id
// "INV/2024/7" is /orders/INV%2F2024%2F7 in a link (and in the CLI's
// /api/orders/ requests), which the router, matching the unescaped path,
// would take for three segments. Such a request is routed on its
// escaped path; Unescape (called by signedIn and the API's auth)
// unescapes its parameters.
func RouteEscaped(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawPath != "" {
			u := *r.URL
			u.Path, u.RawPath = r.URL.RawPath, ""
			r = r.WithContext(context.WithValue(r.Context(), escapedKey{}, true))
			r.URL = &u
		}
		h.ServeHTTP(w, r)
	})
}

// Unescape unescapes ps when RouteEscaped routed r on its escaped path.
func Unescape(r *http.Request, ps httprouter.Params) {
	if r.Context().Value(escapedKey{}) == nil {
		return
	}
	for i := range ps {
		if v, err := url.PathUnescape(ps[i].Value); err == nil {
			ps[i].Value = v
		}
	}
}

// remoteAddr is the address of r's peer (the unspecified address when
// it cannot be read: those share one bucket).
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	return ap.Addr()
}

func (u *ui) loginForm(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	securityHeaders(w)
	u.render(w, http.StatusOK, "login", session{}, map[string]any{})
}

// login compares the posted token with the admin token in constant
// time; wrong ones are limited per client and counted like the API's.
func (u *ui) login(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	securityHeaders(w)
	if u.cross.Check(r) != nil {
		// Refused before the limiter: it is not the merchant's guess.
		u.render(w, http.StatusForbidden, "login", session{},
			map[string]any{"Error": "Refused: the sign-in form was posted from another site."})
		return
	}
	now := u.o.Now()
	client := u.o.ClientAddr(r)
	if u.o.Guesses != nil {
		if blocked, _ := u.o.Guesses.Blocked(client, now); blocked {
			if u.o.AuthFailed != nil {
				u.o.AuthFailed(client, true, now)
			}
			u.render(w, http.StatusTooManyRequests, "login", session{},
				map[string]any{"Error": "Too many wrong tokens from this address: try again later."})
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	token := r.PostFormValue("token")
	if u.o.Token == "" || !sameToken(token, u.tokenSum) {
		if u.o.Guesses != nil {
			u.o.Guesses.Fail(client, now)
		}
		if u.o.AuthFailed != nil {
			u.o.AuthFailed(client, false, now)
		}
		u.render(w, http.StatusUnauthorized, "login", session{}, map[string]any{"Error": "Wrong token."})
		return
	}
	if c, err := r.Cookie(cookieName); err == nil {
		u.o.Sessions.close(c.Value) // the browser's previous session: only the new id is valid
	}
	id := u.o.Sessions.open(u.tokenSum, now)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true,
		Secure: u.o.HTTPS(r), SameSite: http.SameSiteStrictMode, MaxAge: int(SessionMax / time.Second)})
	u.log.Info("dashboard: signed in", "remote_addr", client.String())
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (u *ui) logout(w http.ResponseWriter, r *http.Request, _ httprouter.Params, s session) {
	u.o.Sessions.close(s.id)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true,
		Secure: u.o.HTTPS(r), SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
