package main

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestLogsUnderABurst: 600 payments from 64 clients at once, logged at
// info level. The log stays honest (every notification is in a "stored"
// line, its own or a "notifications stored" one counting it, and in a
// "processed" one alike) without a line per notification per stage: at
// most 20 "stored" lines a second one by one, plus one counting the rest
// of each second (issue 23: the log line per request at INFO).
func TestLogsUnderABurst(t *testing.T) {
	const n = 600
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, fmt.Sprintf("[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = %q\n", secret))
	d, logs := startLogged(t, dir, cfg)
	post := signedPoster(t, func() string { return d.addr("public") }, secret)
	start := time.Now()
	postAllClients(t, post, "B", n, 64, nil)
	posting := time.Since(start)
	// covered counts the notifications lines with msg one and many account
	// for: ids of the one-by-one lines, and counts of the others.
	covered := func(one, many string) (ids map[int]bool, counted, lines, summaries int) {
		ids = map[int]bool{}
		for _, l := range logLines(t, logs.String()) {
			switch l.str("msg") {
			case one:
				id, _ := strconv.Atoi(l.str("id"))
				if ids[id] {
					t.Errorf("two %q lines for notification %d", one, id)
				}
				ids[id] = true
				lines++
			case many:
				c, _ := strconv.Atoi(l.str("count"))
				low, _ := strconv.Atoi(l.str("lowest_id"))
				high, _ := strconv.Atoi(l.str("highest_id"))
				if c <= 0 || low < 1 || high > n || high-low+1 < c {
					t.Errorf("%q line %v does not account for %d notifications", many, l, c)
				}
				counted += c
				summaries++
			}
		}
		return
	}
	waitFor(t, "every notification processed, in the log", 60*time.Second, func() bool {
		ids, counted, _, _ := covered("notification processed", "notifications processed")
		return len(ids)+counted >= n
	})
	d.stop()
	ids, counted, lines, summaries := covered("notification stored", "notifications stored")
	if len(ids)+counted != n {
		t.Errorf("stored lines account for %d notifications (%d one by one, %d counted), want %d", len(ids)+counted, len(ids), counted, n)
	}
	secs := int(posting/time.Second) + 1
	if lines > 20*(secs+1) || summaries > secs+1 {
		t.Errorf("%d %q and %d %q lines for %d notifications posted in %s: want at most 20 and one a second",
			lines, "notification stored", summaries, "notifications stored", n, posting.Round(time.Millisecond))
	}
	if ids, counted, _, _ := covered("notification processed", "notifications processed"); len(ids)+counted != n {
		t.Errorf("processed lines account for %d notifications, want %d", len(ids)+counted, n)
	}
}
