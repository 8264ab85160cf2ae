package main

import (
	"context"
	"encoding/json"
	"io"
	"strconv"
)

var showCommand = command{
	name:    "show",
	args:    "[flags] ID",
	summary: "show one notification",
	run:     cmdShow,
}

func cmdShow(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	c, id, err := idCommand("show", args, getenv, stdout)
	if err != nil {
		return err
	}
	var n json.RawMessage
	if err := c.getJSON(ctx, "/api/notifications/"+strconv.FormatUint(id, 10), &n); err != nil {
		return err
	}
	return printIndented(stdout, n)
}
