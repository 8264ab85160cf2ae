package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"ipnd/ipn"
)

// Kind is one gateway kind as the rest of ipnd sees it: what a
// [[gateway]] table of that kind must hold, what its gateways send, how
// its adapter is built and what `ipnd simulate` sends for it. Config
// validation, `ipnd check`, `ipnd serve` and `ipnd simulate` read kinds,
// never a kind's name: adding a gateway is its file plus one line there.
type Kind struct {
	Name string // the kind = "..." of a [[gateway]] table
	// NeedsSecret: the kind verifies with a shared secret and is not built
	// without one (New refuses, and so does config validation); false: it
	// verifies by postback and takes none.
	NeedsSecret bool
	// Tolerance is the default allowed clock skew of the timestamp the
	// kind signs (written into the loaded config); 0: it signs none.
	Tolerance time.Duration
	// HMACKeys: the kind is configured by the hmac keys (header, parser,
	// signed_content, ...: Config.HMAC); any other kind refuses them.
	HMACKeys bool
	// ContentTypes are the media types the kind's gateways send; its
	// adapter accepts these ("application/*+json": any JSON subtype).
	ContentTypes []string
	// Check reports what a [[gateway]] table of the kind cannot work with,
	// checked with the config before any secret is read (Receivers holds
	// the gateway's receivers and orders.receivers); nil: the common checks
	// suffice. What needs the secrets (a Stripe secret must be whsec_...)
	// or the whole adapter options (merchant_id, the hmac keys) is refused
	// by the constructor, with ErrConfig.
	Check func(Config) *Problem
	// build makes the adapter; New checks the secrets first.
	build func(Config) (Gateway, error)
	// NewSecret makes a fresh random secret in the kind's format, for a
	// secret_file in the data directory that does not exist yet (the
	// embedded "test" gateway); nil: the kind's secrets come from the
	// gateway's dashboard only.
	NewSecret func() string
	// Sample signs the notification `ipnd simulate` sends; nil: the kind
	// is not simulated.
	Sample func(s Sample, secrets []string) (*SignedSample, error)
}

// kinds is the registry, one line per kind, sorted by name.
var kinds = []Kind{
	{Name: "btcpay", NeedsSecret: true, ContentTypes: mediaJSON, build: newBTCPay},
	{Name: "coinbase-commerce", NeedsSecret: true, ContentTypes: mediaJSON, build: newCoinbase},
	{Name: "coinpayments", NeedsSecret: true, ContentTypes: mediaForm, build: newCoinPayments},
	{Name: "hmac", NeedsSecret: true, Tolerance: hmacDefaultTolerance, HMACKeys: true, ContentTypes: mediaHMAC, build: newHMAC},
	{Name: "nowpayments", NeedsSecret: true, ContentTypes: mediaJSON, build: newNOWPayments},
	{Name: "paypal", ContentTypes: mediaForm, Check: checkPayPal, build: newPayPal},
	{Name: "standard-webhooks", NeedsSecret: true, Tolerance: stdWebhooksTolerance, ContentTypes: mediaAnyJSON, build: newStdWebhooks,
		NewSecret: newWebhookSecret, Sample: sampleWebhook},
	{Name: "stripe", NeedsSecret: true, Tolerance: stripeTolerance, ContentTypes: mediaAnyJSON, build: newStripe, Sample: sampleStripe},
}

// Problem is a value of a [[gateway]] table its kind cannot work with.
type Problem struct {
	Key   string // the table's key, e.g. "receivers"
	Value any    // its value as configured
	Why   string
}

// Kinds lists the names of the kinds this build implements, sorted.
func Kinds() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.Name
	}
	return out
}

// Lookup returns the kind of that name; ok is false for a kind this
// build does not know.
func Lookup(name string) (k Kind, ok bool) {
	for _, k := range kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// NeedsSecret reports whether gateways of this kind verify with a shared
// secret (and so refuse to start without one). An unknown kind does: only
// a kind known to verify by postback (PayPal) goes without.
func NeedsSecret(kind string) bool {
	k, ok := Lookup(kind)
	return !ok || k.NeedsSecret
}

// New builds the adapter for cfg.Kind. It fails with ErrConfig when the
// kind is unknown, a kind that needs a secret has none or an empty one,
// or the kind's constructor refuses the options.
func New(cfg Config) (Gateway, error) {
	k, ok := Lookup(cfg.Kind)
	if !ok {
		return nil, fmt.Errorf("%w: gateway %q: unknown kind %q (known: %s)",
			ipn.ErrConfig, cfg.Name, cfg.Kind, strings.Join(Kinds(), ", "))
	}
	if k.NeedsSecret {
		if err := requireSecrets(cfg); err != nil {
			return nil, err
		}
	}
	return k.build(cfg)
}

// Sample is the payment `ipnd simulate` sends, in the operator's terms.
type Sample struct {
	Order    string
	Amount   string // normalized for Currency
	Currency string // upper case
	Email    string
	Status   string // completed, pending, failed, refunded, ...
	Now      time.Time
}

// SignedSample is a Sample as a gateway of the kind would send it.
type SignedSample struct {
	Body []byte
	// Header holds Content-Type and the headers that sign and identify
	// the message (the sender adds its own User-Agent).
	Header http.Header
	What   string // the event sent, for the operator ("payment.completed")
	Marker string // a string unique to Body, to find the notification through the admin API
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
