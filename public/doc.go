// Package public is the public listener's HTTP side: the handlers that
// gateways (and, later, customers) reach from the internet. Today that is
// the Receiver: POST /ipn/:gateway and GET /healthz, with a per-client
// rate limit in front of every /ipn/ request.
//
// The Receiver reads the body (bounded), has the named gateway adapter
// check it (ipnd/ipn/gateway), and hands the raw ipn.Notification to an
// Appender. It imports no store, notify or metrics: it declares what it
// needs of them (Appender, Observer) and main hands it the
// implementations.
//
// Invariants:
//   - 200 is answered only after Append returned, that is after the
//     notification is durably committed (or was stored before).
//   - Every request under /ipn/ is counted exactly once: received,
//     duplicate or rejected with one of RejectReasons.
//   - An answer to a client never carries a secret, an expected signature
//     or an internal error; those go to the (sampled) log only.
package public
