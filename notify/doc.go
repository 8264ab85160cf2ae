// Package notify will deliver the effects of applied events: customer and
// merchant email (go-mail, embedded templates), the signed shop callback
// and the notification script, through a durable outbox. It is empty until
// the pipeline produces effects.
package notify
