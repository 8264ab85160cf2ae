package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

var replayCommand = command{
	name:    "replay",
	args:    "[flags] ID",
	summary: "process a notification again",
	run:     cmdReplay,
}

func cmdReplay(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	c, id, err := idCommand("replay", args, getenv, stdout)
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
