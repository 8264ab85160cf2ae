package public

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// Appender is the store as the receiver sees it. Append returns only after
// n is durably committed (or was already stored: duplicate is then true and
// id is the earlier notification's). Any error means nothing was stored.
type Appender interface {
	Append(ctx context.Context, n *ipn.Notification) (id uint64, duplicate bool, err error)
}

// Observer is told the outcome of every request to /ipn/... exactly once.
// gateway is a configured name or UnknownGateway; reason is one of the
// Reason* constants.
type Observer interface {
	Received(gateway string, ingest time.Duration)
	Duplicate(gateway string)
	Rejected(gateway, reason string)
}

// UnknownGateway is the gateway label used for requests naming no
// configured gateway.
const UnknownGateway = "_unknown"

// Rejection reasons (the reason label of ipnd_notifications_rejected_total).
const (
	ReasonUnknownGateway   = "unknown_gateway"
	ReasonMethod           = "method"
	ReasonTooLarge         = "too_large"
	ReasonUnsupportedMedia = "unsupported_media_type"
	ReasonBadSignature     = "bad_signature"
	ReasonStaleTimestamp   = "stale_timestamp"
	ReasonMalformed        = "malformed"
	ReasonRateLimited      = "rate_limited"
	ReasonStoreUnavailable = "store_unavailable"
)

// RejectReasons lists every rejection reason.
var RejectReasons = []string{ReasonUnknownGateway, ReasonMethod, ReasonTooLarge,
	ReasonUnsupportedMedia, ReasonBadSignature, ReasonStaleTimestamp, ReasonMalformed,
	ReasonRateLimited, ReasonStoreUnavailable}

// Rejection is one remembered rejected request (for debugging; bounded).
type Rejection struct {
	At      time.Time `json:"at"`
	Gateway string    `json:"gateway"`
	Reason  string    `json:"reason"`
	Remote  string    `json:"remote_addr"`
	Detail  string    `json:"detail"`
}

// ReceiverOptions configures a Receiver. Store and Gateways are required.
type ReceiverOptions struct {
	Gateways       []gateway.Gateway
	Store          Appender
	Observer       Observer     // nil: nothing observed
	Logger         *slog.Logger // nil: discard
	MaxBodyBytes   int64        // 0: 64 KiB
	RateLimit      float64      // requests per second per client (IPv4 address, IPv6 /64); 0: no limit
	RateBurst      int
	RateKeys       int                       // clients the rate limiter remembers at once; 0: 100000
	TrustedProxies []netip.Prefix            // peers whose X-Forwarded-For is believed
	AllowIPs       map[string][]netip.Prefix // per gateway name; empty: any source
	KeepRejections int                       // 0: 1000
	// RejectLogEvery is how often at most one "notification rejected"
	// line is logged per gateway label and reason; the line counts the
	// rejections not logged since the previous one. 0: 10 s.
	RejectLogEvery time.Duration
	// StoredLogPerSecond is how many "notification stored" (and
	// "notification duplicate") lines are logged at most per gateway and
	// second, one per notification; past them, the notifications of
	// that second are counted in one "notifications stored" (or
	// "notifications duplicate") line at its end, with their number and
	// first and last ids: a burst costs a line a second, not one per
	// request. 0: 20; negative: one line per notification always.
	StoredLogPerSecond int
	Now                func() time.Time // nil: time.Now
	// Ready, when set, tells GET /healthz whether ingest takes
	// notifications (nil) or answers 503 (the reason, which stays on the
	// admin listener's /healthz: the public one says only that).
	Ready func() error
}

// Receiver is the public HTTP endpoint gateways post to.
type Receiver struct {
	opts    ReceiverOptions
	routes  atomic.Pointer[receiverRoutes] // replaced whole by SetGateways
	limiter *rateLimiter
	log     *slog.Logger
	fulfil  atomic.Pointer[Fulfilment] // /dl and /v1/licenses (fulfil.go); nil: not served

	mu         sync.Mutex
	rejections []Rejection // ring buffer
	rejNext    int
	rejLogs    map[rejectLogKey]*rejectLog

	stored sync.Map // storedLogKey -> *storedLog
}

// storedLogKey is one stream of "stored" or "duplicate" lines: a
// configured gateway name, and whether they are duplicates.
type storedLogKey struct {
	gateway string
	dup     bool
}

// storedLog samples one stream of lines (see StoredLogPerSecond).
type storedLog struct {
	mu        sync.Mutex
	second    time.Time // start of the current second
	lines     int       // logged in full in it
	count     int       // past them: counted, logged at its end
	low, high uint64    // their lowest and highest ids
	bytes     int
	slowest   time.Duration
	flush     *time.Timer
}

// receiverRoutes are the gateways a Receiver serves, read once per
// request: a reload swaps them without holding up requests in flight.
type receiverRoutes struct {
	gateways map[string]gateway.Gateway
	allowIPs map[string][]netip.Prefix
}

// SetGateways replaces the gateways (and their allowed sources) the
// Receiver serves, at once: a request in flight finishes with the ones it
// started with; the next uses the new ones. Names must be unique.
func (r *Receiver) SetGateways(gateways []gateway.Gateway, allowIPs map[string][]netip.Prefix) {
	rt := &receiverRoutes{gateways: make(map[string]gateway.Gateway, len(gateways)), allowIPs: allowIPs}
	for _, g := range gateways {
		rt.gateways[g.Name()] = g
	}
	r.routes.Store(rt)
}

// rejectLogKey is one sampled log stream: gateway label and reason, both
// from bounded sets (configured names or UnknownGateway; Reason*).
type rejectLogKey struct{ gateway, reason string }

type rejectLog struct {
	logged     time.Time // when the last line was written
	suppressed int       // rejections since, not logged
}

// NewReceiver builds a Receiver. Gateway names must be unique (config
// validation ensures it); a later duplicate replaces an earlier one.
func NewReceiver(opts ReceiverOptions) *Receiver {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	if opts.KeepRejections <= 0 {
		opts.KeepRejections = 1000
	}
	if opts.StoredLogPerSecond == 0 {
		opts.StoredLogPerSecond = 20
	}
	if opts.RejectLogEvery <= 0 {
		opts.RejectLogEvery = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{opts: opts, log: opts.Logger, rejLogs: make(map[rejectLogKey]*rejectLog)}
	r.SetGateways(opts.Gateways, opts.AllowIPs)
	if opts.RateLimit > 0 {
		r.limiter = newRateLimiter(opts.RateLimit, opts.RateBurst, opts.RateKeys)
	}
	return r
}

// Handler returns the public listener's routes: /ipn/:gateway (every
// method, so that each request is counted once) and GET /healthz. Every
// request under /ipn/, to a configured gateway or not, spends from its
// client's rate limit first.
func (r *Receiver) Handler() http.Handler {
	rt := httprouter.New()
	rt.HandleOPTIONS = false
	// Gateways do not follow redirects: a wrong path is a counted 404.
	rt.RedirectTrailingSlash = false
	rt.RedirectFixedPath = false
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		rt.Handle(m, "/ipn/:gateway", r.serveIPN)
	}
	r.fulfilRoutes(rt)
	rt.GET("/healthz", func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.opts.Ready != nil && r.opts.Ready() != nil {
			// A load balancer takes this instance out while ingest
			// refuses: gateways' notifications go to one that stores them.
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "unavailable: ingest answers 503 (the reason is on the admin /healthz)")
			return
		}
		io.WriteString(w, "ok")
	})
	// Unusual methods end here; unknown /ipn/ paths in NotFound.
	rt.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name, isIPN := strings.CutPrefix(req.URL.Path, "/ipn/")
		if !isIPN {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.limited(w, req, r.label(name), r.opts.Now()) {
			return
		}
		w.Header().Set("Allow", http.MethodPost)
		r.reject(w, req, r.label(name), ReasonMethod, http.StatusMethodNotAllowed, "method not allowed", nil)
	})
	rt.NotFound = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/ipn/") {
			if r.limited(w, req, UnknownGateway, r.opts.Now()) {
				return
			}
			r.reject(w, req, UnknownGateway, ReasonUnknownGateway, http.StatusNotFound, "unknown gateway", nil)
			return
		}
		http.NotFound(w, req)
	})
	return rt
}

func (r *Receiver) label(name string) string {
	if _, ok := r.routes.Load().gateways[name]; ok {
		return name
	}
	return UnknownGateway
}

func (r *Receiver) serveIPN(w http.ResponseWriter, req *http.Request, ps httprouter.Params) {
	start := r.opts.Now()
	name := ps.ByName("gateway")
	routes := r.routes.Load()
	g, known := routes.gateways[name]
	if r.limited(w, req, r.label(name), start) {
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		r.reject(w, req, r.label(name), ReasonMethod, http.StatusMethodNotAllowed, "method not allowed", nil)
		return
	}
	if !known {
		r.reject(w, req, UnknownGateway, ReasonUnknownGateway, http.StatusNotFound, "unknown gateway", nil)
		return
	}
	client := r.clientIP(req)
	if allow := routes.allowIPs[name]; len(allow) > 0 && !inPrefixes(client, allow) {
		r.reject(w, req, name, ReasonBadSignature, http.StatusUnauthorized, ipn.ErrForbiddenSource.Error(), nil)
		return
	}
	mt := gateway.MediaType(req.Header.Get("Content-Type"))
	if !g.Accepts(mt) {
		r.reject(w, req, name, ReasonUnsupportedMedia, http.StatusUnsupportedMediaType, "unsupported content type", nil)
		return
	}
	if req.ContentLength > r.opts.MaxBodyBytes {
		r.reject(w, req, name, ReasonTooLarge, http.StatusRequestEntityTooLarge, "body too large", nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			r.reject(w, req, name, ReasonTooLarge, http.StatusRequestEntityTooLarge, "body too large", nil)
		} else {
			r.reject(w, req, name, ReasonMalformed, http.StatusBadRequest, "cannot read body", err)
		}
		return
	}
	key, err := g.Check(&gateway.Inbound{Header: req.Header, Body: body, MediaType: mt, Now: start})
	if err != nil {
		status, reason := statusFor(err)
		r.reject(w, req, name, reason, status, err.Error(), nil)
		return
	}
	n := &ipn.Notification{
		Gateway:     name,
		ReceivedAt:  start.UTC(),
		RemoteAddr:  client.String(),
		ContentType: req.Header.Get("Content-Type"),
		Headers:     make(http.Header, len(g.KeepHeaders())),
		Body:        body,
		DedupKey:    key,
	}
	for _, h := range g.KeepHeaders() {
		if v := req.Header.Values(h); len(v) > 0 {
			n.Headers[http.CanonicalHeaderKey(h)] = v
		}
	}
	id, dup, err := r.opts.Store.Append(req.Context(), n)
	if err != nil {
		w.Header().Set("Retry-After", "10")
		r.reject(w, req, name, ReasonStoreUnavailable, http.StatusServiceUnavailable, "store unavailable, retry later", err)
		return
	}
	took := r.opts.Now().Sub(start)
	if dup {
		r.opts.Observer.Duplicate(name)
	} else {
		r.opts.Observer.Received(name, took)
	}
	r.logStored(name, dup, id, len(body), start, took)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "OK")
}

// logStored logs a notification stored (or a duplicate of id), sampled:
// see StoredLogPerSecond. at is when its request began.
func (r *Receiver) logStored(gateway string, dup bool, id uint64, bytes int, at time.Time, took time.Duration) {
	per := r.opts.StoredLogPerSecond
	if per > 0 && r.log.Enabled(context.Background(), slog.LevelInfo) {
		k := storedLogKey{gateway, dup}
		v, ok := r.stored.Load(k)
		if !ok {
			v, _ = r.stored.LoadOrStore(k, &storedLog{})
		}
		sl := v.(*storedLog)
		sl.mu.Lock()
		if at.Sub(sl.second) >= time.Second || at.Before(sl.second) {
			r.flushStored(k, sl) // the previous second's count, if not yet written
			sl.second, sl.lines = at, 0
		}
		if sl.lines >= per {
			if sl.count == 0 {
				sl.low, sl.high = id, id
				// Written when the second ends, or by the next line of
				// this stream if that comes first.
				sl.flush = time.AfterFunc(sl.second.Add(time.Second).Sub(at), func() {
					sl.mu.Lock()
					r.flushStored(k, sl)
					sl.mu.Unlock()
				})
			}
			sl.count++
			sl.low, sl.high = min(sl.low, id), max(sl.high, id)
			sl.bytes += bytes
			sl.slowest = max(sl.slowest, took)
			sl.mu.Unlock()
			return
		}
		sl.lines++
		sl.mu.Unlock()
	}
	if dup {
		r.log.Info("notification duplicate", "gateway", gateway, "duplicate_of", id)
	} else {
		r.log.Info("notification stored", "gateway", gateway, "id", id, "bytes", bytes, "duration_seconds", took.Seconds())
	}
}

// flushStored writes the line counting the notifications of stream k not
// logged one by one, if any; sl.mu is held.
func (r *Receiver) flushStored(k storedLogKey, sl *storedLog) {
	if sl.count == 0 {
		return
	}
	if sl.flush != nil {
		sl.flush.Stop()
		sl.flush = nil
	}
	if k.dup {
		r.log.Info("notifications duplicate", "gateway", k.gateway, "count", sl.count,
			"lowest_duplicate_of", sl.low, "highest_duplicate_of", sl.high, "note", "more duplicates this second than are logged one by one")
	} else {
		r.log.Info("notifications stored", "gateway", k.gateway, "count", sl.count, "lowest_id", sl.low, "highest_id", sl.high,
			"bytes", sl.bytes, "max_duration_seconds", sl.slowest.Seconds(), "note", "more notifications this second than are logged one by one")
	}
	sl.count, sl.bytes, sl.slowest = 0, 0, 0
}

// limited spends one request of the client's rate limit; when none is
// left it answers 429 with Retry-After, counts the rejection under
// gateway and returns true.
func (r *Receiver) limited(w http.ResponseWriter, req *http.Request, gateway string, now time.Time) bool {
	if r.limiter == nil {
		return false
	}
	ok, wait := r.limiter.allow(r.clientIP(req), now)
	if ok {
		return false
	}
	secs := max(1, int((wait+time.Second-1)/time.Second)) // round up
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	r.reject(w, req, gateway, ReasonRateLimited, http.StatusTooManyRequests, "rate limit exceeded", nil)
	return true
}

// statusFor maps a Gateway.Check error to its status code and reason.
func statusFor(err error) (int, string) {
	switch {
	case errors.Is(err, ipn.ErrStaleTimestamp):
		return http.StatusUnauthorized, ReasonStaleTimestamp
	case errors.Is(err, ipn.ErrBadSignature), errors.Is(err, ipn.ErrForbiddenSource):
		return http.StatusUnauthorized, ReasonBadSignature
	case errors.Is(err, ipn.ErrUnsupportedMedia):
		return http.StatusUnsupportedMediaType, ReasonUnsupportedMedia
	default:
		return http.StatusBadRequest, ReasonMalformed
	}
}

// reject answers a refused request with a short reason, counts it, logs it
// (sampled: see ReceiverOptions.RejectLogEvery) and remembers it.
// internal, when set, is logged but never sent.
func (r *Receiver) reject(w http.ResponseWriter, req *http.Request, gateway, reason string, status int, msg string, internal error) {
	r.opts.Observer.Rejected(gateway, reason)
	remote := r.clientIP(req).String()
	now := r.opts.Now()
	r.mu.Lock()
	k := rejectLogKey{gateway, reason}
	st := r.rejLogs[k]
	if st == nil {
		st = &rejectLog{}
		r.rejLogs[k] = st
	}
	logIt := st.logged.IsZero() || now.Sub(st.logged) >= r.opts.RejectLogEvery || now.Before(st.logged)
	suppressed := st.suppressed
	if logIt {
		st.logged, st.suppressed = now, 0
	} else {
		st.suppressed++
	}
	rec := Rejection{At: now.UTC(), Gateway: gateway, Reason: reason, Remote: remote, Detail: msg}
	if len(r.rejections) < r.opts.KeepRejections {
		r.rejections = append(r.rejections, rec)
	} else {
		r.rejections[r.rejNext] = rec
	}
	r.rejNext = (r.rejNext + 1) % r.opts.KeepRejections
	r.mu.Unlock()
	if logIt {
		attrs := []any{"gateway", gateway, "reason", reason, "status", status, "remote_addr", remote, "suppressed", suppressed}
		if internal != nil {
			attrs = append(attrs, "error", internal.Error())
		}
		r.log.Info("notification rejected", attrs...)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// Rejections returns the remembered rejections, newest first.
func (r *Receiver) Rejections() []Rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Rejection, 0, len(r.rejections))
	for i := 0; i < len(r.rejections); i++ {
		j := (r.rejNext - 1 - i + 2*len(r.rejections)) % len(r.rejections)
		out = append(out, r.rejections[j])
	}
	return out
}

// clientIP is the peer address, or, when the peer is a trusted proxy, the
// right-most X-Forwarded-For address that is not itself a trusted proxy.
func (r *Receiver) clientIP(req *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		host = req.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	peer = peer.Unmap()
	if len(r.opts.TrustedProxies) == 0 || !inPrefixes(peer, r.opts.TrustedProxies) {
		return peer
	}
	hops := strings.Split(strings.Join(req.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !inPrefixes(a, r.opts.TrustedProxies) {
			return a
		}
		peer = a
	}
	return peer
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

type nopObserver struct{}

func (nopObserver) Received(string, time.Duration) {}
func (nopObserver) Duplicate(string)               {}
func (nopObserver) Rejected(string, string)        {}
