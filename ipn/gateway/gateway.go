package gateway

import (
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"ipnd/ipn"
)

// Inbound is what a Gateway sees of a request before it is stored.
type Inbound struct {
	Header    http.Header
	Body      []byte // raw bytes, verbatim
	MediaType string // Content-Type without parameters, lowercased
	Now       time.Time
}

// Gateway is one configured gateway: it knows its wire format, verifies
// authenticity against the raw bytes and normalizes stored notifications.
// Implementations are safe for concurrent use.
type Gateway interface {
	// Name is the configured name, the :gateway part of /ipn/:gateway.
	Name() string
	// Kind is the adapter kind, e.g. "stripe".
	Kind() string
	// Accepts reports whether the gateway ever sends this media type.
	Accepts(mediaType string) bool
	// KeepHeaders lists the request headers stored with the raw record.
	KeepHeaders() []string
	// Check verifies the request (ErrBadSignature, ErrStaleTimestamp) and
	// then parses just enough of the body to return the gateway's own id
	// for the message ("" when it has none) or ErrMalformed.
	Check(in *Inbound) (dedupKey string, err error)
	// Normalize turns a stored notification into an Event. Event types the
	// gateway sends that ipnd does not act on become TypeOther.
	Normalize(n *ipn.Notification) (*ipn.Event, error)
}

// Config is what main copies from the [[gateway]] config table.
type Config struct {
	Name      string
	Kind      string
	Secrets   []string      // any one may match (rotation)
	Tolerance time.Duration // allowed clock skew of signed timestamps; 0 = kind default
	Sandbox   bool
	VerifyURL string
	// Receivers are the merchant's accounts a payment must be addressed
	// to: the gateway's receivers and orders.receivers (the pipeline
	// checks them; paypal requires some).
	Receivers []string
	// MerchantID is the gateway's id for the merchant, checked against the
	// message (coinpayments: the IPN's merchant field; required there).
	MerchantID string
	// URL is the public URL the gateway posts to, exactly as registered
	// with it: {url} in an hmac kind's signed_content (Square signs it).
	URL string
	// HMAC configures the generic hmac kind (ignored by the others).
	HMAC HMACOptions
}

// MediaType returns the lowercased media type of a Content-Type header
// value, or "" when it is empty or unparsable.
func MediaType(contentType string) string {
	if contentType == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return mt
}

// The media types the kinds send (Kind.ContentTypes), as their adapters
// accept them. "application/*+json" is any JSON subtype.
var (
	mediaJSON    = []string{"application/json"}
	mediaAnyJSON = []string{"application/json", "application/*+json"}
	mediaForm    = []string{"application/x-www-form-urlencoded"}
)

// acceptsMedia reports whether the media type mt (lowercased, without
// parameters) is one of types; "application/*+json" stands for every
// application/...+json.
func acceptsMedia(types []string, mt string) bool {
	for _, t := range types {
		if t == mt || (t == "application/*+json" && strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
			return true
		}
	}
	return false
}

// withinTolerance reports whether the signed time ts lies within ±tol of now.
func withinTolerance(ts, now time.Time, tol time.Duration) bool {
	d := now.Sub(ts)
	return d <= tol && d >= -tol
}

func requireSecrets(cfg Config) error {
	if len(cfg.Secrets) == 0 {
		return fmt.Errorf("%w: gateway %q of kind %s needs a secret (secret, secrets or secret_file)", ipn.ErrConfig, cfg.Name, cfg.Kind)
	}
	for i, s := range cfg.Secrets {
		if strings.TrimSpace(s) == "" {
			return fmt.Errorf("%w: gateway %q: secret #%d is empty", ipn.ErrConfig, cfg.Name, i+1)
		}
	}
	return nil
}

// joinRefs builds an Event.Refs value from identifiers, skipping empty ones.
func joinRefs(ids ...string) string {
	var keep []string
	for _, id := range ids {
		if id != "" && !strings.ContainsAny(id, " \t\n") && !slices.Contains(keep, id) {
			keep = append(keep, id)
		}
	}
	return strings.Join(keep, " ")
}
