package store

// bucketAttempts keeps every delivery attempt of every outbox item, the
// last attemptsKept of each: outbox id (8) + attempt number (8) -> JSON
// ipn.OutboxAttempt.
var bucketAttempts = []byte("outbox_attempts")

// attemptsKept bounds the attempts kept per outbox item (the newest).
const attemptsKept = 20
