package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"ipnd/store"
)

var tailCommand = command{
	name:    "tail",
	args:    "[flags]",
	summary: "follow notifications and order transitions live",
	run:     cmdTail,
}

// cmdTail follows the admin listener's event stream until interrupted
// (or -n events), printing one line per event, or its JSON with -json.
// It reconnects when the stream ends (ipnd restarted, or it fell
// behind).
func cmdTail(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := clientCommand("tail", getenv, stdout)
	asJSON := fs.Bool("json", false, "print each event's JSON, one per line")
	count := fs.Int("n", 0, "stop after this many events (0: follow until interrupted)")
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	if *count < 0 {
		return usageErrorf("tail: -n %d: must not be negative", *count)
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	stream := *c
	stream.http = &http.Client{} // no overall timeout: the stream lasts
	seen := 0
	for {
		err := stream.follow(ctx, stderr, func(e store.LiveEvent, raw []byte) bool {
			if *asJSON {
				fmt.Fprintf(stdout, "%s\n", raw)
			} else {
				fmt.Fprintln(terminal(stdout), tailLine(e)) // order ids and reasons come from outside
			}
			seen++
			return *count == 0 || seen < *count
		})
		if err == nil || ctx.Err() != nil {
			return nil // done (-n reached) or interrupted
		}
		if ae, ok := err.(*apiError); ok && ae.status != http.StatusServiceUnavailable {
			return err // a wrong token, an ipnd without the route: retrying will not help
		} // 503: the followers' cap is reached, or the store is degraded: retry
		fmt.Fprintf(stderr, "ipnd tail: %v; reconnecting\n", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

// follow reads the event stream, calling each for every event until it
// returns false (nil error) or the stream ends (an error).
func (c *adminClient) follow(ctx context.Context, stderr io.Writer, each func(e store.LiveEvent, raw []byte) bool) error {
	resp, err := c.get(ctx, "/api/events")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintln(stderr, "ipnd tail: following events (Ctrl-C to stop)")
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // event names, comments, heartbeats
		}
		var e store.LiveEvent
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			continue
		}
		if !each(e, []byte(data)) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// tailLine is one event as ipnd tail prints it.
func tailLine(e store.LiveEvent) string {
	at := e.At.Local().Format("15:04:05")
	switch e.Type {
	case store.LiveOrder:
		s := fmt.Sprintf("%s  order %s  %s -> %s", at, e.Order, orDash(string(e.From)), e.To)
		if e.By != "" {
			s += "  by " + e.By
		}
		if e.Reason != "" {
			s += "  " + clip(e.Reason, 120)
		}
		return s
	default:
		s := fmt.Sprintf("%s  notification %d", at, e.Notification)
		if e.Gateway != "" {
			s += "  " + e.Gateway
		}
		s += "  " + e.State
		if e.Reason != "" {
			s += "  " + clip(e.Reason, 120)
		}
		return s
	}
}
