package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
)

var versionCommand = command{
	name:    "version",
	args:    "",
	summary: "print the version",
	run:     cmdVersion,
}

func cmdVersion(_ context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newCmdline("version", nil, stdout)
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ipnd %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
