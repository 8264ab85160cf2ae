package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"

	"ipnd/admin"
)

var lsCommand = command{
	name:    "ls",
	args:    "[flags]",
	summary: "list notifications, newest first",
	run:     cmdList,
}

func cmdList(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("ls", getenv, stdout)
	gateway := fs.String("gateway", "", "only this gateway")
	state := fs.String("state", "", "only this state (received, applied, invalid, failed, duplicate)")
	order := fs.String("order", "", "only this order id")
	before := fs.Uint64("before", 0, "only ids below this (paging)")
	limit, asJSON := fs.listFlags()
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	if err := checkLimit("ls", *limit); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	q := fmt.Sprintf("/api/notifications?limit=%d", *limit)
	for _, kv := range [][2]string{{"gateway", *gateway}, {"state", *state}, {"order", *order}} {
		if kv[1] != "" {
			q += "&" + kv[0] + "=" + url.QueryEscape(kv[1])
		}
	}
	if *before > 0 {
		q += "&before=" + strconv.FormatUint(*before, 10)
	}
	var list admin.NotificationList
	if err := c.getJSON(ctx, q, &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	printNotifications(stdout, list)
	return nil
}

// printNotifications prints a page of notifications as a table, and how
// to get the next page.
func printNotifications(w io.Writer, list admin.NotificationList) {
	w = terminal(w) // order ids, reasons, answers come from outside
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tGATEWAY\tSTATE\tTYPE\tORDER\tAMOUNT\tREASON")
	for i, n := range list.Notifications {
		typ, ord, amt := "-", "-", "-"
		if e := n.Event; e != nil {
			typ = string(e.Type)
			if e.Status != "" {
				typ += "/" + string(e.Status)
			}
			ord = orDash(e.OrderID)
			if e.Amount != "" {
				amt = e.Amount + " " + e.Currency
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.ReceivedAt.Local().Format("2006-01-02 15:04:05"),
			n.Gateway, n.State, typ, ord, amt, orDash(clip(lastDetail(&list.Notifications[i]), 80)))
	}
	tw.Flush()
	if len(list.Notifications) == 0 {
		fmt.Fprintln(w, "(no notifications)")
	}
	if list.NextBefore > 0 {
		fmt.Fprintf(w, "more: ipnd ls -before %d\n", list.NextBefore)
	}
}
