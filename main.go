// Command ipnd receives payment notifications (IPNs, webhooks) for a small
// merchant, stores each durably before answering, verifies it, and makes it
// visible through an admin API and CLI. See README.md and SPEC.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	environ = os.Environ
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	code := exitCode(err)
	if code != 0 {
		fmt.Fprintln(os.Stderr, "ipnd:", err)
	}
	os.Exit(code)
}

// Exit statuses: 0 success (and help), 1 the command failed, 2 the command
// line is wrong.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a command line ipnd cannot run (exit 2): an unknown
// command or flag, a missing or stray argument.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// exitCode maps run's error to the process's exit status.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return exitUsage
	}
	return exitFailure
}

// command is one subcommand: its name, what follows "ipnd NAME" in its
// usage line, a one-line summary and the function that runs it.
type command struct {
	name    string
	args    string
	summary string
	run     func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

// commands is the dispatch table, in the order the usage lists them.
// Each subcommand's file declares its entry (name, usage line, summary
// and run function) beside its flags; a new subcommand is that file plus
// its entry here. Set in init: the entries' functions print usage from
// this table.
var commands []command

func init() {
	commands = []command{
		serveCommand,
		checkCommand,
		simulateCommand,
		lsCommand,
		showCommand,
		replayCommand,
		ordersCommand,
		ordersDeleteCommand,
		ordersApproveCommand,
		ordersCancelCommand,
		ordersNoteCommand,
		ordersDisputeCommand,
		ordersAddCommand,
		outboxCommand,
		outboxRetryCommand,
		outboxDiscardCommand,
		outboxResendCommand,
		outboxShowCommand,
		tailCommand,
		downloadsCommand,
		licensesCommand,
		licensesDisableCommand,
		licensesPubkeyCommand,
		backupCommand,
		recoverCommand,
		restoreCommand,
		migrateCommand,
		statsCommand,
		versionCommand,
		helpCommand,
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// usage is the text of "ipnd help" (README.md carries it verbatim).
func usage() string {
	var b strings.Builder
	b.WriteString("usage: ipnd <command> [flags] [arguments]\n\n")
	nameW, argsW := 0, 0
	for _, c := range commands {
		nameW, argsW = max(nameW, len(c.name)), max(argsW, len(c.args))
	}
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-*s  %-*s  %s\n", nameW, c.name, argsW, c.args, c.summary)
	}
	b.WriteString(`
Flags go before or after the arguments. Every command takes -config FILE
(or IPND_CONFIG); serve and check also take the config file as their
argument. Without a config file ipnd runs on its embedded defaults with
data in ./ipnd-data. The commands that talk to a running ipnd (simulate,
ls, show, replay, orders, outbox, tail, backup, stats) find its admin API
from the config, or from -admin HOST:PORT or URL (IPND_ADMIN_URL). "ipnd
COMMAND -h" lists a command's flags.

Exit status: 0 done; 1 failed (for simulate also: the notification
ended invalid or failed, or was not processed within -wait); 2 wrong
command line (unknown command or flag, missing or extra argument).
`)
	return b.String()
}

// run is the whole program; main only supplies the process's context,
// arguments, environment and streams, and turns the error into the exit
// status (exitCode).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	name := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			name, args = "help", args[1:]
		case "-version", "--version":
			name, args = "version", args[1:]
		default:
			if !strings.HasPrefix(args[0], "-") {
				name, args = args[0], args[1:]
			}
		}
	}
	c, ok := lookup(name)
	if !ok || c.run == nil {
		return usageErrorf("unknown command %q; \"ipnd help\" lists them", name)
	}
	return c.run(ctx, args, getenv, stdout, stderr)
}

// cmdline is one command's flag set: the -config flag every command has,
// flags allowed before and after the positional arguments, -h on stdout.
type cmdline struct {
	*flag.FlagSet
	name   string
	config *string
	stdout io.Writer
}

// newCmdline makes the flag set of command name (as in the commands
// table). getenv nil: the command has no -config flag.
func newCmdline(name string, getenv func(string) string, stdout io.Writer) *cmdline {
	c := &cmdline{FlagSet: flag.NewFlagSet("ipnd "+name, flag.ContinueOnError), name: name, stdout: stdout}
	if getenv != nil {
		c.config = c.String("config", getenv("IPND_CONFIG"), "config file (env IPND_CONFIG); empty: embedded defaults")
	}
	return c
}

// synopsis is the command's usage line without "usage: ".
func (c *cmdline) synopsis() string {
	cmd, _ := lookup(c.name)
	return strings.TrimSpace("ipnd " + c.name + " " + cmd.args)
}

// help prints the command's usage, summary and flags to stdout.
func (c *cmdline) help() {
	cmd, _ := lookup(c.name)
	fmt.Fprintf(c.stdout, "usage: %s\n\n%s.\n", c.synopsis(), cmd.summary)
	var flags bytes.Buffer
	c.SetOutput(&flags)
	c.PrintDefaults()
	if flags.Len() > 0 {
		fmt.Fprintf(c.stdout, "\nflags:\n%s", flags.String())
	}
}

// parse parses args, flags anywhere among the positional arguments, and
// requires min to max positional arguments (want names them in the
// error). -h prints the help on stdout and returns flag.ErrHelp (exit
// 0); anything else wrong is a usageError naming what was expected.
func (c *cmdline) parse(args []string, min, max int, want string) error {
	c.SetOutput(io.Discard) // errors are returned, help goes to stdout
	c.Usage = func() {}
	if err := c.Parse(c.reorder(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.help()
			return err
		}
		return usageErrorf("%s: %v; usage: %s (\"%s -h\" lists the flags)", c.name, err, c.synopsis(), "ipnd "+c.name)
	}
	switch {
	case c.NArg() > max:
		return usageErrorf("%s: unexpected argument %q; usage: %s", c.name, c.Arg(max), c.synopsis())
	case c.NArg() < min:
		return usageErrorf("%s: missing %s; usage: %s", c.name, want, c.synopsis())
	}
	return nil
}

// parseConfigArg parses the command line of serve and check: the config
// file is -config FILE or the one argument (giving two different ones is
// a usage error).
func (c *cmdline) parseConfigArg(args []string) error {
	if err := c.parse(args, 0, 1, "CONFIG"); err != nil {
		return err
	}
	if c.NArg() == 1 {
		byFlag := false
		c.Visit(func(f *flag.Flag) { byFlag = byFlag || f.Name == "config" })
		if byFlag && *c.config != c.Arg(0) {
			return usageErrorf("%s: got the config file twice, -config %q and %q; give one", c.name, *c.config, c.Arg(0))
		}
		*c.config = c.Arg(0)
	}
	return nil
}

// reorder moves flags before the positional arguments, so that
// "simulate test -amount 5" works like "simulate -amount 5 test". A flag
// takes the next argument as its value unless it is a boolean flag or
// has "=value"; "--" ends the flags.
func (c *cmdline) reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := c.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				continue
			}
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return append(flags, pos...)
}
