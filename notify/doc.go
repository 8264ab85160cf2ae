// Package notify delivers the effects of applied events: customer and
// merchant email (go-mail over SMTP, or .eml files for the embedded
// defaults; text and HTML templates embedded with go:embed, each
// overridable from a directory), the shop callback signed the Standard
// Webhooks way, and the notification script.
//
// The Worker takes due items from the durable outbox (queued by the store
// in the same transaction as the state change that caused them), delivers
// them, and records each attempt: sent, retry later with backoff and
// jitter, or dead after the kind's attempt limit or a permanent failure
// (an SMTP 5xx to MAIL/RCPT/DATA, a template error). The callbacks and
// the script runs of one order are due one at a time, in the order they
// were queued (the store keeps a queue per order and lane): the next one
// only once the one before is sent, dead or skipped.
//
// Delivery is at least once. The one window for a duplicate is a crash (or
// lost connection) between the SMTP server accepting a message and the
// outbox recording it as sent; the Message-ID is stable per cause, so mail
// clients collapse such a copy. Shop callbacks carry a stable webhook-id
// for the shop to deduplicate on. A reload drains the worker (Drain):
// deliveries under way finish and are recorded before the next worker,
// with the new settings, starts.
package notify
