// Package pipeline is the loop that takes stored notifications in log
// order and decides what each one is: it asks the gateway to verify it
// where verification happens after storage (a Verifier: PayPal's
// postback, retried with backoff), has the gateway normalize it into an
// ipn.Event, checks the event (identifier lengths, money, test mode,
// receiver) and hands the ipn.Outcome to the Journal, which records it
// and applies it to the order in one transaction.
//
// pipeline imports the domain (ipnd/ipn) and the adapters
// (ipnd/ipn/gateway), never the store: it declares the Journal it needs
// and main hands it the store.
//
// Postbacks run in one lane per gateway, apart from the log order: a
// notification whose postback cannot start at once, or has not ended when
// its step does, is recorded as received with a retry due, and waits in
// the store's retry schedule (each entry names its gateway) until its
// lane takes it. A lane whose postbacks fail probes one at a time, with
// backoff, until one is answered. So a hanging verify URL holds up its
// own gateway's notifications only, and Holdups (with the store's lag per
// gateway) names it. The notifications of a gateway no longer configured
// wait the same way until a reload adds it again.
//
// Invariants:
//   - The cursor moves only over notifications whose outcome is recorded
//     in the same transaction (a final one, or received with a retry
//     scheduled), so a crash repeats work but never skips it.
//   - The outcomes one step records are applied in log order, those of
//     postbacks that ended together included: of a payment's original
//     and its resends, the original is applied unless its own postback
//     was still under way when a later one's step ended.
//   - A postback already confirmed once is not asked again on a replay.
//   - A store that fails is retried forever with capped backoff; Degraded
//     reports it meanwhile.
package pipeline
