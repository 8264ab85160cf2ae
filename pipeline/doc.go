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
// Invariants:
//   - The cursor moves only over notifications whose outcome is recorded
//     in the same transaction, so a crash repeats work but never skips it.
//   - A postback already confirmed once is not asked again on a replay.
//   - A store that fails is retried forever with capped backoff; Degraded
//     reports it meanwhile.
package pipeline
