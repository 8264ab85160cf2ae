package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
)

var outboxCommand = command{
	name:    "outbox",
	args:    "[flags] [STATE]",
	summary: "list queued emails and callbacks (pending, sent, dead, skipped, discarded)",
	run:     cmdOutbox,
}

// outboxRetryCommand is listed for the usage and help only: cmdOutbox
// runs "ipnd outbox retry ID" (cmdOutboxRetry).
var outboxRetryCommand = command{
	name:    "outbox retry",
	args:    "[flags] ID",
	summary: "send an item again, or now (-dead [-kind K]: every dead item)",
}

// cmdOutbox lists outbox items ("ipnd outbox [pending|sent|dead|skipped]")
// or retries one ("ipnd outbox retry ID").
func cmdOutbox(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "retry":
			return cmdOutboxRetry(ctx, args[1:], getenv, stdout)
		case "discard", "resend", "show":
			return cmdOutboxItem(ctx, args[0], args[1:], getenv, stdout)
		}
	}
	fs := clientCommand("outbox", getenv, stdout)
	notification := fs.Uint64("notification", 0, "only the items queued by this notification")
	limit, asJSON := fs.listFlags()
	if err := fs.parse(args, 0, 1, "STATE"); err != nil {
		return err
	}
	if err := checkLimit("outbox", *limit); err != nil {
		return err
	}
	state := fs.Arg(0)
	switch state {
	case "", ipn.OutboxPending, ipn.OutboxSent, ipn.OutboxDead, ipn.OutboxSkipped, ipn.OutboxDiscarded:
	default:
		return usageErrorf("outbox: unexpected argument %q (a state: pending, sent, dead, skipped or discarded); usage: %s", state, fs.synopsis())
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	q := fmt.Sprintf("/api/outbox?limit=%d&state=%s", *limit, url.QueryEscape(state))
	if *notification > 0 {
		q += "&notification=" + strconv.FormatUint(*notification, 10)
	}
	var out outboxList
	if err := c.getJSON(ctx, q, &out); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, out)
	}
	printOutbox(stdout, out, *limit)
	return nil
}

// cmdOutboxRetry sends a dead or skipped item again, or a pending one now.
func cmdOutboxRetry(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := clientCommand("outbox retry", getenv, stdout)
	dead := fs.Bool("dead", false, "retry every dead item (of -kind), instead of one ID")
	kind := fs.String("kind", "", "with -dead: only this lane ("+strings.Join(ipn.OutboxLanes, ", ")+")")
	if err := fs.parse(args, 0, 1, "ID"); err != nil {
		return err
	}
	if *dead {
		if fs.NArg() > 0 {
			return usageErrorf("outbox retry: -dead retries every dead item: give no ID; usage: %s", fs.synopsis())
		}
		c, err := fs.client(getenv)
		if err != nil {
			return err
		}
		var out admin.OutboxRetried
		if err := c.send(ctx, http.MethodPost, "/api/outbox/retry?state=dead&kind="+url.QueryEscape(*kind), nil, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d dead items queued again\n", len(out.IDs))
		return nil
	}
	if fs.NArg() != 1 {
		return usageErrorf("outbox retry: missing ID (or -dead); usage: %s", fs.synopsis())
	}
	id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
	if err != nil || id == 0 {
		return usageErrorf("outbox retry: %q is not an outbox item id; usage: %s", fs.Arg(0), fs.synopsis())
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/api/outbox/"+strconv.FormatUint(id, 10)+"/retry")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r admin.OutboxRetry
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	switch r.Was {
	case ipn.OutboxPending:
		fmt.Fprintf(stdout, "outbox item %d was pending (%d attempts so far, next at %s): retrying now\n",
			id, r.Attempts, r.NextAttempt.Local().Format("2006-01-02 15:04:05"))
	default:
		fmt.Fprintf(stdout, "outbox item %d was %s (%d attempts): queued again, retrying now\n", id, r.Was, r.Attempts)
	}
	return nil
}

// printOutbox prints outbox items as a table; limit is the -limit asked
// for (a full page says there may be more).
func printOutbox(w io.Writer, out outboxList, limit int) {
	w = terminal(w) // order ids, reasons, answers come from outside
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKIND\tTEMPLATE\tORDER\tNOTIFICATION\tATTEMPTS\tLAST ERROR")
	for _, it := range out.Items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", it.ID, it.State, it.Effect.Kind, orDash(it.Effect.Template),
			orDash(it.Effect.OrderID), it.Notification, it.Attempts, orDash(clip(it.LastError, 80)))
	}
	tw.Flush()
	if len(out.Items) == 0 {
		fmt.Fprintln(w, "(no items)")
	}
	if len(out.Items) == limit {
		fmt.Fprintf(w, "(the first %d; -limit shows more)\n", limit)
	}
}

// The outbox item commands besides retry, listed for the usage and help
// only: cmdOutbox runs them (cmdOutboxItem).
var (
	outboxDiscardCommand = command{name: "outbox discard", args: "[flags] ID",
		summary: "do not send a pending or dead item (discarded)"}
	outboxResendCommand = command{name: "outbox resend", args: "[flags] ID",
		summary: "send a sent email again, as a new item"}
	outboxShowCommand = command{name: "outbox show", args: "[flags] ID",
		summary: "show an item with each delivery attempt"}
)

// cmdOutboxItem runs "ipnd outbox discard|resend|show ID".
func cmdOutboxItem(ctx context.Context, verb string, args []string, getenv func(string) string, stdout io.Writer) error {
	name := "outbox " + verb
	fs := clientCommand(name, getenv, stdout)
	note := new(string)
	if verb == "discard" {
		note = fs.String("note", "", "why (recorded in the order's history)")
	}
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parse(args, 1, 1, "ID"); err != nil {
		return err
	}
	id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
	if err != nil || id == 0 {
		return usageErrorf("%s: %q is not an outbox item id; usage: %s", name, fs.Arg(0), fs.synopsis())
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	path := "/api/outbox/" + strconv.FormatUint(id, 10)
	switch verb {
	case "discard":
		var out admin.OutboxDecision
		if err := c.send(ctx, http.MethodPost, path+"/discard", admin.DecisionRequest{Note: *note}, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		if out.Repeated {
			fmt.Fprintf(stdout, "outbox item %d was already discarded\n", id)
		} else {
			fmt.Fprintf(stdout, "outbox item %d was %s: discarded, it will not be sent\n", id, out.Was)
		}
	case "resend":
		var out ipn.OutboxItem
		if err := c.send(ctx, http.MethodPost, path+"/resend", nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		fmt.Fprintf(stdout, "outbox item %d queued again as outbox item %d\n", id, out.ID)
	default:
		var out admin.OutboxDetail
		if err := c.send(ctx, http.MethodGet, path, nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		printOutboxDetail(stdout, out)
	}
	return nil
}

// printOutboxDetail prints an item and its attempts.
func printOutboxDetail(w io.Writer, d admin.OutboxDetail) {
	w = terminal(w) // order ids, reasons, answers come from outside
	it := d.Item
	fmt.Fprintf(w, "outbox item %d: %s %s", it.ID, it.State, it.Effect.Kind)
	if it.Effect.Template != "" {
		fmt.Fprintf(w, " %s", it.Effect.Template)
	}
	if it.Effect.OrderID != "" {
		fmt.Fprintf(w, " of order %s", it.Effect.OrderID)
	}
	fmt.Fprintf(w, ", %d attempts, queued %s\n", it.Attempts, it.CreatedAt.Local().Format("2006-01-02 15:04:05"))
	if it.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", it.LastError)
	}
	if len(d.Attempts) == 0 {
		fmt.Fprintln(w, "(no attempts recorded)")
	}
	for _, a := range d.Attempts {
		fmt.Fprintf(w, "\nattempt %d at %s: %s", a.Seq, a.At.Local().Format("2006-01-02 15:04:05"), a.Result)
		if a.Duration > 0 {
			fmt.Fprintf(w, " (%s)", a.Duration.Round(time.Millisecond))
		}
		fmt.Fprintln(w)
		if a.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", a.Error)
		}
		if a.HTTPStatus != 0 {
			fmt.Fprintf(w, "  HTTP status: %d\n", a.HTTPStatus)
		}
		if a.Response != "" {
			fmt.Fprintf(w, "  response body:\n%s\n", indent(a.Response))
		}
		if a.SMTPReply != "" {
			fmt.Fprintf(w, "  SMTP reply: %s\n", a.SMTPReply)
		}
		if a.ExitStatus != nil {
			fmt.Fprintf(w, "  exit status: %d\n", *a.ExitStatus)
		}
		if a.Stderr != "" {
			fmt.Fprintf(w, "  stderr (last KiB):\n%s\n", indent(a.Stderr))
		}
	}
}

// indent prefixes each line of s with four spaces.
func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
