package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"ipnd/admin"
	"ipnd/ipn"
)

var replayCommand = command{
	name:    "replay",
	args:    "[flags] [ID]",
	summary: "process a notification again (no ID: -gateway G -state S, in bulk)",
	run:     cmdReplay,
}

func cmdReplay(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("replay", getenv, stdout)
	gateway := fs.String("gateway", "", "without ID: replay the notifications of this gateway")
	state := fs.String("state", "", "without ID: replay the notifications in this state (e.g. failed, invalid)")
	limit := fs.Int("limit", 1000, "without ID: at most this many, newest first (1 to 1000)")
	if err := fs.parse(args, 0, 1, "ID"); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		if *gateway == "" && *state == "" {
			return usageErrorf("replay: missing ID (or -gateway/-state for a bulk replay); usage: %s", fs.synopsis())
		}
		if s := ipn.State(*state); s != "" && !s.Valid() {
			return usageErrorf("replay: -state %q: not a state (received, verified, applied, invalid, failed, duplicate)", *state)
		}
		if err := checkLimit("replay", *limit); err != nil {
			return err
		}
		c, err := fs.client(getenv)
		if err != nil {
			return err
		}
		var res admin.BulkReplayResult
		if err := c.send(ctx, http.MethodPost, "/api/replay", admin.BulkReplayRequest{Gateway: *gateway,
			State: ipn.State(*state), Limit: *limit}, &res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d notifications scheduled for replay", len(res.Replayed))
		if res.Skipped > 0 {
			fmt.Fprintf(stdout, ", %d skipped (body purged)", res.Skipped)
		}
		if res.More {
			fmt.Fprintf(stdout, "; more match: run it again for the next %d", *limit)
		}
		fmt.Fprintln(stdout)
		return nil
	}
	if *gateway != "" || *state != "" {
		return usageErrorf("replay: -gateway and -state select a bulk replay: give no ID with them")
	}
	id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
	if err != nil || id == 0 {
		return usageErrorf("replay: %q is not a notification id; usage: %s", fs.Arg(0), fs.synopsis())
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/api/notifications/"+strconv.FormatUint(id, 10)+"/replay")
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(stdout, "notification %d scheduled for replay\n", id)
	return nil
}
