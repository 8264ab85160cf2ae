// Command ipnd receives payment notifications (IPNs, webhooks) for a small
// merchant, stores each durably before answering, verifies it, and makes it
// visible through an admin API and CLI. See README.md and SPEC.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ipnd:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: ipnd <command> [flags]

  serve    [-config FILE]          run the appliance (the default command)
  check    [-config FILE]          validate the config and print what would run
  simulate GATEWAY [flags]         send a correctly signed sample notification
  ls       [flags]                 list notifications (admin API)
  show     ID                      show one notification (admin API)
  replay   ID                      process a notification again (admin API)
  orders   [ID]                    list orders, or show one with its history (admin API)
  outbox   [STATE] | retry ID      list queued emails and callbacks (pending, sent, dead,
                                   skipped), or retry a dead or skipped one
  backup   FILE                    write a consistent copy of the database (admin API)
  recover  [-skip-damaged]         apply the journal with ipnd stopped; -skip-damaged goes past
                                   damage, recording the unreadable ids as lost
  stats                            bytes on disk per bucket and per notification (admin API)
  version                          print the version

Every command takes -config FILE (or IPND_CONFIG). Without a config file
ipnd runs on its embedded defaults with data in ./ipnd-data.
`

// run is the whole program; main only supplies the process's context,
// arguments, environment and streams, and turns an error into exit 1.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return cmdServe(ctx, args, getenv, stdout, stderr)
	case "check":
		return cmdCheck(args, getenv, stdout, stderr)
	case "simulate":
		return cmdSimulate(ctx, args, getenv, stdout, stderr)
	case "ls":
		return cmdList(ctx, args, getenv, stdout, stderr)
	case "show":
		return cmdShow(ctx, args, getenv, stdout, stderr)
	case "replay":
		return cmdReplay(ctx, args, getenv, stdout, stderr)
	case "orders":
		return cmdOrders(ctx, args, getenv, stdout, stderr)
	case "outbox":
		return cmdOutbox(ctx, args, getenv, stdout, stderr)
	case "backup":
		return cmdBackup(ctx, args, getenv, stdout, stderr)
	case "recover":
		return cmdRecover(args, getenv, stdout, stderr)
	case "stats":
		return cmdStats(ctx, args, getenv, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "ipnd %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// commandFlags makes a flag set with the -config flag every command has.
func commandFlags(name string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("ipnd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", getenv("IPND_CONFIG"), "config file (env IPND_CONFIG); empty: embedded defaults")
	return fs, cfg
}
