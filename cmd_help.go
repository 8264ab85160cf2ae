package main

import (
	"context"
	"fmt"
	"io"
	"strings"
)

var helpCommand = command{
	name:    "help",
	args:    "[COMMAND]",
	summary: "print this, or one command's usage and flags",
	run:     cmdHelp,
}

// cmdHelp prints the usage, or with a command's name that command's
// usage and flags (the same as "ipnd COMMAND -h").
func cmdHelp(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage())
		return nil
	}
	name := strings.Join(args, " ")
	c, ok := lookup(name)
	if !ok {
		return usageErrorf("help: unknown command %q; \"ipnd help\" lists them", name)
	}
	if c.name == "help" {
		fmt.Fprint(stdout, usage())
		return nil
	}
	if c.name == "outbox retry" {
		return cmdOutbox(ctx, []string{"retry", "-h"}, getenv, stdout, stderr)
	}
	return c.run(ctx, []string{"-h"}, getenv, stdout, stderr)
}
