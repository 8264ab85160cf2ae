// Package gateway holds the gateway adapters, one file per kind (stripe.go,
// paypal.go, btcpay.go, coinbase.go, coinpayments.go, nowpayments.go,
// stdwebhooks.go, hmac.go), and the registry of kinds (registry.go): one
// line per kind saying whether it needs a secret, its default tolerance,
// its content types, its config check, its constructor and the sample
// `ipnd simulate` sends. Config validation, `ipnd check`, `ipnd serve`
// and `ipnd simulate` read the registry; a new gateway is its file plus
// one registry line.
//
// An adapter knows its gateway's wire format: it verifies a request
// against the raw bytes (Check, before the notification is stored) and
// turns a stored ipn.Notification into an ipn.Event (Normalize). A kind
// that verifies after storage (PayPal's postback) also implements Verify,
// which the pipeline calls.
//
// gateway imports the domain (ipnd/ipn) and none of ipnd's other
// packages.
//
// Invariants:
//   - Verification of signed gateways happens on the raw body bytes, before
//     anything is parsed. The one exception is a gateway that signs a
//     re-serialised body (NOWPayments, an hmac kind with canonicalize
//     json-sorted*): its body is parsed only to rebuild the signed form.
//   - A kind that needs a secret refuses to be built without one.
//   - An error returned by Check never contains a secret or an expected
//     signature: the receiver may show it to the client.
package gateway
