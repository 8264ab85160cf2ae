// Package ipn is the domain of ipnd: the raw Notification as a gateway sent
// it, the normalized Event it becomes, money (exact decimals, never
// floats), and the Order and Subscription state machine with the effects
// (emails, shop callbacks) a transition queues.
//
// ipn imports none of ipnd's other packages, and no net/http or router:
// the adapters that read each gateway's wire format are in ipnd/ipn/gateway,
// the HTTP handlers in ipnd/public and ipnd/admin, the processing loop in
// ipnd/pipeline, persistence in ipnd/store. They all speak in ipn's types.
//
// Invariants:
//   - A Notification's raw fields never change once stored.
//   - Amounts are decimal strings with exactly the currency's digits
//     (NormalizeAmount, FormatMinor); arithmetic on them is exact (apd).
//   - Apply is pure: the same order, event and context give the same new
//     state and effects, and a fact applied twice changes nothing.
package ipn
