// Package ipn is the domain of ipnd: the raw Notification as a gateway sent
// it, the normalized Event it becomes, money (exact decimals, never
// floats), and the Order and Subscription state machine with the effects
// (emails, shop callbacks) a transition queues.
//
// ipn imports none of ipnd's other packages, and no net/http or router:
// the adapters that read each gateway's wire format are in ipnd/ipn/gateway,
// the HTTP handlers in ipnd/public and ipnd/admin, the processing loop in
// ipnd/pipeline, the transaction that records a decision in ipnd/record,
// persistence in ipnd/store. They all speak in ipn's types.
//
// The path of a notification through the packages, a step a line, with
// the file where each step lives:
//
//  1. public/receiver.go: serveIPN checks size, media type and rate, and the gateway's Check (signature, its message id).
//  2. store/store.go: Append journals and fsyncs it (group commit), and only then the 200; the applier copies it into bbolt.
//  3. pipeline/pipeline.go: step takes the Pending work and runs the postback where the gateway has one (PayPal).
//  4. ipn/gateway/<kind>.go: Normalize turns the gateway's wire format into an Event.
//  5. ipn/decide.go: Assess checks ids, money, test payments and the receiver, and gives the Outcome.
//  6. record/finish.go: Finish (which store/pipeline.go runs in one bbolt Update) looks up, through the store's record.Tx (store/tx.go), what is stored (the order, the payment fact's first copy, the references).
//  7. ipn/decide.go: Decide says duplicate, refused, parked or applied; Apply (apply.go) is the order's state machine; review.go every reason for review.
//  8. record/finish.go: write writes the Decision in the same transaction; record/attach.go adopts the events parked for the order.
//  9. notify/outbox.go: the outbox worker delivers each queued effect in its lane (customer email, merchant email, callback, script).
//  10. notify/mail.go, notify/shop.go: the emails and the shop's order.<status> envelope.
//
// "Why did order X go to review?" is answered in review.go; the words
// are in the order's history (Order.History[i].Reason), the same ones the
// log, the emails and the shop's envelope carry.
//
// Invariants:
//   - A Notification's raw fields never change once stored.
//   - Amounts are decimal strings with exactly the currency's digits
//     (NormalizeAmount, FormatMinor); arithmetic on them is exact (apd).
//   - Apply is pure: the same order, event and context give the same new
//     state and effects, and a fact applied twice changes nothing.
package ipn
