package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"

	"ipnd/admin"
	"ipnd/ipn"
)

var outboxCommand = command{
	name:    "outbox",
	args:    "[flags] [STATE]",
	summary: "list queued emails and callbacks (pending, sent, dead, skipped)",
	run:     cmdOutbox,
}

// outboxRetryCommand is listed for the usage and help only: cmdOutbox
// runs "ipnd outbox retry ID" (cmdOutboxRetry).
var outboxRetryCommand = command{
	name:    "outbox retry",
	args:    "[flags] ID",
	summary: "send a dead or skipped item again, or a pending one now",
}

// cmdOutbox lists outbox items ("ipnd outbox [pending|sent|dead|skipped]")
// or retries one ("ipnd outbox retry ID").
func cmdOutbox(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	if len(args) > 0 && args[0] == "retry" {
		return cmdOutboxRetry(ctx, args[1:], getenv, stdout)
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
	case "", ipn.OutboxPending, ipn.OutboxSent, ipn.OutboxDead, ipn.OutboxSkipped:
	default:
		return usageErrorf("outbox: unexpected argument %q (a state: pending, sent, dead or skipped); usage: %s", state, fs.synopsis())
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
	c, id, err := idCommand("outbox retry", args, getenv, stdout)
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
