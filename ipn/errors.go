package ipn

import "errors"

// Sentinel errors. Adapters wrap them with a short reason that is safe to
// show to the client (never a secret or an expected signature); the
// receiver maps them to status codes in one place (statusFor).
var (
	// ErrBadSignature: the signature is missing, garbled or matches no secret.
	ErrBadSignature = errors.New("bad signature")
	// ErrStaleTimestamp: the signed timestamp is outside the tolerance.
	ErrStaleTimestamp = errors.New("timestamp outside tolerance")
	// ErrMalformed: the body cannot be parsed at all.
	ErrMalformed = errors.New("malformed notification")
	// ErrUnsupportedMedia: a content type the gateway never sends.
	ErrUnsupportedMedia = errors.New("unsupported content type")
	// ErrForbiddenSource: the client address is not in the gateway's allow_ips.
	ErrForbiddenSource = errors.New("source address not allowed")
	// ErrConfig: a gateway's configuration cannot work.
	ErrConfig = errors.New("invalid gateway config")
)

// ErrInvalid: the gateway itself says the message is not genuine (PayPal
// postback answered INVALID).
var ErrInvalid = errors.New("gateway answered INVALID")

// ErrNotFound: what was looked up is not stored (an order, a
// notification, a download token, a license key). The store returns it
// (store.ErrNotFound is this error), so that the listeners can tell it
// apart without importing the store.
var ErrNotFound = errors.New("not found")

// ErrCorrupt: a stored record cannot be decoded. The stores return it
// (store.ErrCorrupt is this error), so that the code that drives their
// transactions (ipnd/record) tells a damaged record apart without
// importing them.
var ErrCorrupt = errors.New("corrupt record")
