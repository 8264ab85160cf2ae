// Package ipn is the domain of ipnd: the raw Notification as a gateway sent
// it, the normalized Event it becomes, the Gateway adapters that parse and
// verify each gateway's wire format, and the public HTTP Receiver.
//
// ipn imports none of ipnd's other packages. It declares the small
// interfaces it needs from them (Appender for the store, Observer for
// metrics) and main hands it the implementations.
//
// Invariants:
//   - A Notification's raw fields never change once stored.
//   - Verification of signed gateways happens on the raw body bytes, before
//     anything is parsed. The one exception is a gateway that signs a
//     re-serialised body (NOWPayments, an hmac kind with canonicalize
//     json-sorted*): its body is parsed only to rebuild the signed form.
//   - An error returned to an HTTP client never contains a secret or an
//     expected signature.
package ipn
