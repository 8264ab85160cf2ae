package public

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"

	"ipnd/fulfil"
	"ipnd/ipn"
)

// Delivering what was bought (SPEC §11) on the public listener: the
// download links (GET /dl/:token) and the License API
// (/v1/licenses/activate, validate, deactivate), shaped like Lemon
// Squeezy's. Both spend from the client's rate limit as /ipn/ does; a
// client that sends too many wrong license keys is refused for a while.

// FulfilStore is what the routes need of the store (*store.DB).
type FulfilStore interface {
	Download(token string, now time.Time) (*fulfil.Grant, string, error)
	CountDownload(g *fulfil.Grant, n, size int64) error
	License(key string) (*fulfil.License, error)
	UpdateLicense(key string, f func(fulfil.License) (fulfil.License, error)) (fulfil.License, error)
}

// FulfilObserver counts downloads and License API requests. result
// values come from fixed sets, never from the request.
type FulfilObserver interface {
	Download(result string)
	LicenseRequest(action, result string)
}

// Fulfilment configures the routes. Store is required.
type Fulfilment struct {
	Store    FulfilStore
	Observer FulfilObserver
	Rand     io.Reader // instance ids (crypto/rand in production)
	Now      func() time.Time
	// WrongKeys is how many unknown license keys one client may send per
	// minute (default 20); past it, 429 until the minute is over.
	WrongKeys int
	// Stall is how long a download may go without sending anything
	// before it is cut (server.write_timeout). A download as a whole may
	// take longer than the listener's write timeout (0: it may not).
	Stall time.Duration

	// What the routes count, kept across SetFulfilment (a config
	// reload): the unknown keys of each client, the links' reservations.
	wrong *wrongKeys
	slots *linkSlots
}

// linkSlots are the bytes reserved by the requests in flight of each
// link (by its token's hash).
type linkSlots struct {
	sync.Mutex
	m map[string]int64
}

// Download results (ipnd_downloads_total{result}).
const (
	DownloadOK          = "ok"      // the whole file (or its last part) was sent
	DownloadPartial     = "partial" // cut short, or a range before the end
	DownloadUnknown     = "unknown"
	DownloadRateLimited = "rate_limited"
	DownloadBusy        = "busy" // requests in flight reserved what the link has left: 429
	DownloadError       = "error"
)

// SetFulfilment serves /dl and /v1/licenses with f (nil: not served, 404).
func (r *Receiver) SetFulfilment(f *Fulfilment) {
	if f != nil {
		if f.Now == nil {
			f.Now = time.Now
		}
		if f.WrongKeys <= 0 {
			f.WrongKeys = 20
		}
		f.wrong, f.slots = &wrongKeys{}, &linkSlots{}
		if old := r.fulfil.Load(); old != nil {
			f.wrong, f.slots = old.wrong, old.slots
		}
	}
	r.fulfil.Store(f)
}

func (r *Receiver) fulfilRoutes(rt *httprouter.Router) {
	rt.GET("/dl/:token", r.serveDownload)
	rt.HEAD("/dl/:token", r.serveDownload)
	for _, action := range []string{"activate", "validate", "deactivate"} {
		rt.POST("/v1/licenses/"+action, func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
			r.serveLicense(w, req, action)
		})
	}
}

// allowed spends from the client's rate limit; false: 429 was answered.
func (r *Receiver) allowed(w http.ResponseWriter, req *http.Request, now time.Time) bool {
	if r.limiter == nil {
		return true
	}
	ok, wait := r.limiter.allow(r.clientIP(req), now)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second))))
		http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
	}
	return ok
}

// goneHTML is the short page of a link that no longer works.
const goneHTML = `<!doctype html><html><head><meta charset="utf-8"><title>Link expired</title></head>` +
	`<body><h1>This download link no longer works</h1><p>%s</p><p>Please contact the shop for a new link.</p></body></html>`

var goneReasons = map[string]string{
	fulfil.RefusedLimit:   "It was downloaded as many times as it allows.",
	fulfil.RefusedExpired: "It has expired.",
	fulfil.RefusedRevoked: "It was revoked.",
	fulfil.RefusedRemoved: "The product is no longer offered.",
}

func validToken(t string) bool {
	if len(t) < 16 || len(t) > 64 {
		return false
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (r *Receiver) serveDownload(w http.ResponseWriter, req *http.Request, ps httprouter.Params) {
	f := r.fulfil.Load()
	if f == nil {
		http.NotFound(w, req)
		return
	}
	now := f.Now()
	observe := func(result string) {
		if f.Observer != nil {
			f.Observer.Download(result)
		}
	}
	if !r.allowed(w, req, now) {
		observe(DownloadRateLimited)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	token := ps.ByName("token")
	var g *fulfil.Grant
	refusal := ""
	err := ipn.ErrNotFound
	if validToken(token) {
		g, refusal, err = f.Store.Download(token, now)
	}
	gone := func(refusal string) {
		observe(refusal)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusGone)
		fmt.Fprintf(w, goneHTML, html.EscapeString(goneReasons[refusal]))
	}
	unavailable := func(msg string, args ...any) {
		observe(DownloadError)
		r.log.Error(msg, args...)
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
	}
	switch {
	case errors.Is(err, ipn.ErrNotFound):
		observe(DownloadUnknown)
		http.NotFound(w, req)
		return
	case err != nil:
		unavailable("download lookup failed", "error", err)
		return
	case refusal != "":
		gone(refusal)
		return
	}
	file, st, err := OpenProductFile(g.Product.Root, g.Product.File)
	if err != nil {
		unavailable("download: the product's file cannot be served", "product", g.Product.ID, "error", err)
		return
	}
	defer file.Close()
	size := st.Size()
	// The link's limit is counted in bytes sent (fulfil.Delivery): a
	// GET reserves what it asks for before it starts, against what the
	// link sent and what its requests in flight reserved, so that no mix
	// of parallel, ranged or multipart requests gets more than
	// download_limit copies of the file.
	var want int64
	if req.Method == http.MethodGet {
		want = requestedBytes(req, size, st.ModTime())
		g, refusal, err = f.reserve(token, now, want, size)
		switch {
		case errors.Is(err, ipn.ErrNotFound):
			observe(DownloadUnknown)
			http.NotFound(w, req)
			return
		case err != nil:
			unavailable("download lookup failed", "error", err)
			return
		case refusal == refusedBusy:
			observe(DownloadBusy)
			w.Header().Set("Retry-After", "60")
			http.Error(w, "this link is being downloaded already; try again when that download is over", http.StatusTooManyRequests)
			return
		case refusal != "":
			gone(refusal)
			return
		}
	}
	name := filepath.Base(g.Product.File)
	ctype := mime.TypeByExtension(filepath.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	cw := &countingWriter{ResponseWriter: w}
	if f.Stall > 0 {
		rc := http.NewResponseController(w)
		cw.extend = func() { rc.SetWriteDeadline(time.Now().Add(f.Stall)) }
	}
	http.ServeContent(cw, req, name, st.ModTime(), file)
	if req.Method != http.MethodGet {
		return
	}
	var sent int64 // of the file (a refusal's message is not)
	switch {
	case cw.status != http.StatusOK && cw.status != http.StatusPartialContent:
	case size == 0:
		sent = 1
	default:
		sent = min(cw.written, size)
	}
	if sent > 0 {
		err := f.Store.CountDownload(g, sent, size)
		if err != nil && !errors.Is(err, ipn.ErrNotFound) { // not found: reissued (or deleted) meanwhile, nothing to count
			// Its reservation is kept: the link's bound still holds
			// (until a restart) while the store cannot count.
			r.log.Error("download: cannot count it", "error", err)
			observe(DownloadError)
			return
		}
	}
	f.release(g.TokenHash, want)
	switch {
	case cw.status >= 300:
	case !cw.complete(size):
		observe(DownloadPartial)
	default:
		observe(DownloadOK)
	}
}

// OpenProductFile opens file, a path under root, as ipnd check allows
// it: without leaving root (a symbolic link swapped in after the check
// that leads out of it is refused), never blocking (a FIFO), and only a
// regular file (not a directory or a device).
func OpenProductFile(root, file string) (*os.File, os.FileInfo, error) {
	rel, err := filepath.Rel(root, file)
	if err != nil || !filepath.IsLocal(rel) {
		return nil, nil, fmt.Errorf("%s is not under %s", file, root)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", file, st.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

// refusedBusy: requests in flight reserved what the link has left.
const refusedBusy = "busy"

// reserve looks token up again and reserves want bytes of a file of size
// bytes for a request of it: the grant, or why not (a fulfil.Refused*
// or refusedBusy). A reservation is released once the request's bytes
// are counted (release).
func (f *Fulfilment) reserve(token string, now time.Time, want, size int64) (*fulfil.Grant, string, error) {
	f.slots.Lock()
	defer f.slots.Unlock()
	// Looked up under the lock: a request that ends counts its bytes
	// before it releases its reservation, so one of them is seen.
	g, refusal, err := f.Store.Download(token, now)
	if err != nil || refusal != "" {
		return g, refusal, err
	}
	left := g.Budget(size)
	switch {
	case want > left:
		return nil, fulfil.RefusedLimit, nil
	case want > left-f.slots.m[g.TokenHash]:
		return nil, refusedBusy, nil
	}
	if f.slots.m == nil {
		f.slots.m = map[string]int64{}
	}
	f.slots.m[g.TokenHash] += want
	return g, "", nil
}

// release ends a reservation of want bytes of the link whose token's
// hash is h.
func (f *Fulfilment) release(h string, want int64) {
	f.slots.Lock()
	defer f.slots.Unlock()
	if f.slots.m[h] -= want; f.slots.m[h] <= 0 {
		delete(f.slots.m, h)
	}
}

// requestedBytes returns how many bytes of a file of size bytes,
// modified at modtime, a GET asks for: the length of its single range
// (with an If-Range that net/http's ServeContent honours: the file's
// date, as a browser resuming a download sends it), else the whole file
// (a multipart range answer carries at most the file's size: net/http
// sends the whole file instead of overlapping ranges). An empty file
// costs 1.
func requestedBytes(req *http.Request, size int64, modtime time.Time) int64 {
	h := req.Header.Get("Range")
	if size == 0 || h == "" {
		return fulfil.Unit(size)
	}
	if ir := req.Header.Get("If-Range"); ir != "" {
		t, err := http.ParseTime(ir)
		if err != nil || !modtime.Truncate(time.Second).Equal(t) {
			return size // the whole file is sent
		}
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	first, last, ok2 := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok || !ok2 || strings.Contains(spec, ",") {
		return size
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 {
			return size
		}
		return min(n, size)
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 || start >= size {
		return size
	}
	end := size - 1
	if last != "" {
		if end, err = strconv.ParseInt(last, 10, 64); err != nil || end < start {
			return size
		}
		end = min(end, size-1)
	}
	return end - start + 1
}

// countingWriter records the status and the bytes of the body sent.
// With extend set, it moves the connection's write deadline before each
// piece of the body it sends (at most downloadChunk bytes), so that the
// deadline bounds a stall rather than the whole download.
type countingWriter struct {
	http.ResponseWriter
	status  int
	written int64
	failed  bool
	extend  func()
}

// downloadChunk is how much of a file is sent per write deadline.
const downloadChunk = 256 << 10

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.extend != nil {
		c.extend()
	}
	n, err := c.ResponseWriter.Write(b)
	c.written += int64(n)
	if err != nil {
		c.failed = true
	}
	return n, err
}

// ReadFrom lets http.ServeContent's copy reach the connection's own
// ReadFrom (sendfile for a file) while counting, in pieces of at most
// downloadChunk bytes when the write deadline is extended.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	send := func(r io.Reader) (int64, error) {
		if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
			return rf.ReadFrom(r)
		}
		return io.Copy(c.ResponseWriter, r)
	}
	if c.extend == nil {
		n, err := send(r)
		c.written += n
		c.failed = c.failed || err != nil
		return n, err
	}
	// ServeContent's reader is an *io.LimitedReader of the file: each
	// piece is one too (not one of it), so that sendfile still applies.
	src, limit := r, int64(-1)
	if lr, ok := r.(*io.LimitedReader); ok {
		src, limit = lr.R, lr.N
	}
	var total int64
	for limit != 0 {
		piece := int64(downloadChunk)
		if limit > 0 {
			piece = min(piece, limit)
		}
		c.extend()
		n, err := send(&io.LimitedReader{R: src, N: piece})
		total += n
		c.written += n
		if limit > 0 {
			limit -= n
		}
		if lr, ok := r.(*io.LimitedReader); ok {
			lr.N -= n
		}
		if err != nil {
			c.failed = true
			return total, err
		}
		if n < piece {
			break // the end of the file
		}
	}
	return total, nil
}

// complete reports whether the response sent the file to its end: all
// of it, or a single range that ends with it (a resumed download).
func (c *countingWriter) complete(size int64) bool {
	if c.failed {
		return false
	}
	switch c.status {
	case http.StatusOK:
		return c.written == size
	case http.StatusPartialContent:
		var first, last, total int64
		cr := c.Header().Get("Content-Range")
		if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &first, &last, &total); err != nil {
			return false
		}
		return total == size && last == size-1 && c.written == last-first+1
	}
	return false
}

// LicenseRequest is a License API request's fields (form or JSON).
type LicenseRequest struct {
	Key          string `json:"license_key"`
	InstanceName string `json:"instance_name"`
	InstanceID   string `json:"instance_id"`
}

// Bounds of the License API's fields.
const (
	maxLicenseBody = 16 << 10
	maxKeyLen      = 2048
	maxNameLen     = 255
	maxInstanceLen = 64
)

// ParseLicenseRequest reads a License API request body: JSON when
// contentType says so, else form-encoded. A field too long, a body that
// does not parse or a JSON field that is not a string is an error.
func ParseLicenseRequest(contentType string, body []byte) (LicenseRequest, error) {
	var lr LicenseRequest
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/json" {
		var raw map[string]any
		if err := json.Unmarshal(body, &raw); err != nil {
			return lr, errors.New("body is not a JSON object")
		}
		get := func(k string) (string, error) {
			switch v := raw[k].(type) {
			case nil:
				return "", nil
			case string:
				return v, nil
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64), nil
			}
			return "", fmt.Errorf("%s must be a string", k)
		}
		var err error
		if lr.Key, err = get("license_key"); err != nil {
			return lr, err
		}
		if lr.InstanceName, err = get("instance_name"); err != nil {
			return lr, err
		}
		if lr.InstanceID, err = get("instance_id"); err != nil {
			return lr, err
		}
	} else {
		vals, err := parseQuery(string(body))
		if err != nil {
			return lr, err
		}
		lr.Key, lr.InstanceName, lr.InstanceID = vals["license_key"], vals["instance_name"], vals["instance_id"]
	}
	lr.Key, lr.InstanceName, lr.InstanceID = strings.TrimSpace(lr.Key), strings.TrimSpace(lr.InstanceName), strings.TrimSpace(lr.InstanceID)
	for _, f := range []struct{ name, v string }{{"license_key", lr.Key}, {"instance_name", lr.InstanceName}, {"instance_id", lr.InstanceID}} {
		if !printable(f.v) {
			// Stored and shown to the merchant (ipnd licenses prints
			// instance names to a terminal): no escape sequences.
			return lr, fmt.Errorf("%s must be UTF-8 text without control characters", f.name)
		}
	}
	switch {
	case len(lr.Key) > maxKeyLen:
		return lr, errors.New("license_key is too long")
	case len(lr.InstanceName) > maxNameLen:
		return lr, errors.New("instance_name is too long")
	case len(lr.InstanceID) > maxInstanceLen:
		return lr, errors.New("instance_id is too long")
	}
	return lr, nil
}

// printable reports whether s is valid UTF-8 without control characters
// (C0, DEL, C1).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func parseQuery(s string) (map[string]string, error) {
	out := map[string]string{}
	for part := range strings.SplitSeq(s, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, err1 := urlUnescape(k)
		v, err2 := urlUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, errors.New("body is not form-encoded")
		}
		if _, seen := out[k]; !seen {
			out[k] = v
		}
	}
	return out, nil
}

// licenseKeyJSON is the License API's license_key object.
type licenseKeyJSON struct {
	ID              string     `json:"id"`
	Status          string     `json:"status"`
	Key             string     `json:"key"`
	ActivationLimit int        `json:"activation_limit"`
	ActivationUsage int        `json:"activation_usage"`
	CreatedAt       time.Time  `json:"created_at"`
	ExpiresAt       *time.Time `json:"expires_at"`
	TestMode        bool       `json:"test_mode"`
}

type instanceJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

type metaJSON struct {
	OrderID       string `json:"order_id"`
	ProductID     string `json:"product_id"`
	ProductName   string `json:"product_name"`
	CustomerName  string `json:"customer_name"`
	CustomerEmail string `json:"customer_email"`
}

// LicenseJSON returns l's license_key object at now.
func LicenseJSON(l *fulfil.License, now time.Time) any {
	return licenseKeyJSON{ID: l.Hash[:16], Status: l.Status(now), Key: l.Key, ActivationLimit: l.Limit,
		ActivationUsage: len(l.Instances), CreatedAt: l.CreatedAt, ExpiresAt: l.ExpiresAt, TestMode: l.Test}
}

// License API results (ipnd_license_requests_total{result}).
const (
	LicenseOK          = "ok"
	LicenseBadRequest  = "bad_request"
	LicenseUnknownKey  = "unknown_key"
	LicenseRefused     = "refused"
	LicenseRateLimited = "rate_limited"
	LicenseError       = "error"
)

func (r *Receiver) serveLicense(w http.ResponseWriter, req *http.Request, action string) {
	f := r.fulfil.Load()
	if f == nil {
		http.NotFound(w, req)
		return
	}
	now := f.Now()
	observe := func(result string) {
		if f.Observer != nil {
			f.Observer.LicenseRequest(action, result)
		}
	}
	if !r.allowed(w, req, now) {
		observe(LicenseRateLimited)
		return
	}
	verb := map[string]string{"activate": "activated", "validate": "valid", "deactivate": "deactivated"}[action]
	answer := func(code int, ok bool, refusal *fulfil.Refusal, l *fulfil.License, in *fulfil.Instance) {
		out := map[string]any{verb: ok, "error": nil, "license_key": nil, "meta": nil}
		if refusal != nil {
			out["error"] = refusal.Message
		}
		if l != nil {
			out["license_key"] = LicenseJSON(l, now)
			out["meta"] = metaJSON{OrderID: l.OrderID, ProductID: l.Product, ProductName: l.ProductName,
				CustomerName: l.CustomerName, CustomerEmail: l.CustomerEmail}
		}
		if action != "deactivate" {
			out["instance"] = nil
			if in != nil {
				out["instance"] = instanceJSON{ID: in.ID, Name: in.Name, CreatedAt: in.CreatedAt}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(out)
	}
	client := r.clientIP(req)
	if !f.wrong.allowed(client, now, f.WrongKeys) {
		observe(LicenseRateLimited)
		w.Header().Set("Retry-After", "60")
		answer(http.StatusTooManyRequests, false, fulfil.ErrTooManyWrongKeys, nil, nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxLicenseBody))
	if err != nil {
		observe(LicenseBadRequest)
		answer(http.StatusBadRequest, false, fulfil.ErrBadRequest, nil, nil)
		return
	}
	lr, err := ParseLicenseRequest(req.Header.Get("Content-Type"), body)
	if err != nil {
		observe(LicenseBadRequest)
		answer(http.StatusBadRequest, false, &fulfil.Refusal{Code: 400, Message: err.Error()}, nil, nil)
		return
	}
	var missing *fulfil.Refusal
	switch {
	case lr.Key == "":
		missing = fulfil.ErrMissingKey
	case action == "activate" && lr.InstanceName == "":
		missing = fulfil.ErrMissingName
	case action == "deactivate" && lr.InstanceID == "":
		missing = fulfil.ErrMissingInstance
	}
	if missing != nil {
		observe(LicenseBadRequest)
		answer(http.StatusBadRequest, false, missing, nil, nil)
		return
	}
	var l fulfil.License
	var in *fulfil.Instance
	ok := false
	switch action {
	case "activate":
		l, err = f.Store.UpdateLicense(lr.Key, func(cur fulfil.License) (fulfil.License, error) {
			next, inst, err := fulfil.Activate(cur, lr.InstanceName, f.Rand, now)
			in = &inst
			return next, err
		})
		ok = err == nil
	case "deactivate":
		l, err = f.Store.UpdateLicense(lr.Key, func(cur fulfil.License) (fulfil.License, error) {
			next, _, err := fulfil.Deactivate(cur, lr.InstanceID)
			return next, err
		})
		ok = err == nil
	case "validate":
		var got *fulfil.License
		if got, err = f.Store.License(lr.Key); err == nil {
			l = *got
			var refusal *fulfil.Refusal
			ok, in, refusal = fulfil.Validate(&l, lr.InstanceID, now)
			if refusal == fulfil.ErrUnknownInstance {
				err = refusal
			} else if refusal != nil {
				// Not valid, but a proper answer: 200 with the reason.
				observe(LicenseOK)
				answer(http.StatusOK, false, refusal, &l, in)
				return
			}
		}
	}
	var refusal *fulfil.Refusal
	switch {
	case err == nil:
		observe(LicenseOK)
		if action == "activate" {
			answer(http.StatusOK, true, nil, &l, in)
		} else {
			answer(http.StatusOK, ok, nil, &l, in)
		}
	case errors.Is(err, ipn.ErrNotFound):
		f.wrong.add(client, now)
		observe(LicenseUnknownKey)
		answer(http.StatusNotFound, false, fulfil.ErrUnknownKey, nil, nil)
	case errors.As(err, &refusal):
		observe(LicenseRefused)
		answer(refusal.Code, false, refusal, &l, nil)
	default:
		observe(LicenseError)
		r.log.Error("license request failed", "action", action, "error", err)
		answer(http.StatusServiceUnavailable, false, &fulfil.Refusal{Code: 503, Message: "temporarily unavailable"}, nil, nil)
	}
}

// wrongKeys counts the unknown license keys each client sent in the
// current minute. A client is what the rate limit counts (clientKey: an
// IPv4 address or an IPv6 /64, since one host holds a whole /64).
type wrongKeys struct {
	mu sync.Mutex
	m  map[netip.Prefix]*wrongCount
}

type wrongCount struct {
	n     int
	since time.Time
}

func (k *wrongKeys) allowed(a netip.Addr, now time.Time, limit int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.m[clientKey(a)]
	return c == nil || now.Sub(c.since) >= time.Minute || c.n < limit
}

func (k *wrongKeys) add(a netip.Addr, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[netip.Prefix]*wrongCount{}
	}
	if len(k.m) >= 10000 {
		for x, c := range k.m {
			if now.Sub(c.since) >= time.Minute {
				delete(k.m, x)
			}
		}
	}
	key := clientKey(a)
	c := k.m[key]
	if c == nil || now.Sub(c.since) >= time.Minute {
		if c == nil && len(k.m) >= 10000 {
			return // full of fresh entries: a flood from many addresses is left to the rate limit
		}
		c = &wrongCount{since: now}
		k.m[key] = c
	}
	c.n++
}

func urlUnescape(s string) (string, error) { return url.QueryUnescape(s) }
