package ui

import (
	"io"
	"testing"

	"ipnd/ipn"
	"ipnd/store"
)

// TestOutboxItemPageRenders: the attempts page renders an item with a
// script's exit status (a pointer field) and its delivery key.
func TestOutboxItemPageRenders(t *testing.T) {
	p := parsePages()
	st := 1
	d := struct {
		Item     outboxView
		Attempts []ipn.OutboxAttempt
		Flash    string
	}{Item: outboxViews([]store.OutboxItem{{ID: 3}})[0], Attempts: []ipn.OutboxAttempt{{Seq: 1, AttemptDetail: ipn.AttemptDetail{ExitStatus: &st}}}}
	if err := p["outboxitem"].Execute(io.Discard, page{Data: d}); err != nil {
		t.Fatal(err)
	}
}
