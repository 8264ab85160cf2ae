package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"ipnd/admin"
)

var ordersCommand = command{
	name:    "orders",
	args:    "[flags] [ID]",
	summary: "list orders, or show one with its history",
	run:     cmdOrders,
}

// ordersDeleteCommand is listed for the usage and help only: cmdOrders
// runs "ipnd orders delete ID" (cmdOrdersDelete).
var ordersDeleteCommand = command{
	name:    "orders delete",
	args:    "[flags] ID",
	summary: "remove a test order (ipnd simulate, sandbox payments) with its facts",
}

// cmdOrders lists orders, shows one with its history ("ipnd orders ID"),
// or deletes a test order ("ipnd orders delete ID").
func cmdOrders(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "delete":
			return cmdOrdersDelete(ctx, args[1:], getenv, stdout)
		case "approve", "cancel", "note", "dispute":
			return cmdOrdersDecide(ctx, args[0], args[1:], getenv, stdout)
		case "add":
			return cmdOrdersAdd(ctx, args[1:], getenv, stdout)
		}
	}
	fs := clientCommand("orders", getenv, stdout)
	status := fs.String("status", "", "only orders in this status")
	before := fs.String("before", "", "the next page: the next_before the previous page printed (orders list by last change, newest first)")
	limit, asJSON := fs.listFlags()
	if err := fs.parse(args, 0, 1, "ID"); err != nil {
		return err
	}
	if err := checkLimit("orders", *limit); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	if fs.NArg() == 1 {
		var o json.RawMessage
		if err := c.getJSON(ctx, "/api/orders/"+url.PathEscape(fs.Arg(0)), &o); err != nil {
			return err
		}
		return printIndented(stdout, o)
	}
	q := fmt.Sprintf("/api/orders?limit=%d", *limit)
	if *status != "" {
		q += "&status=" + url.QueryEscape(*status)
	}
	if *before != "" {
		q += "&before=" + url.QueryEscape(*before)
	}
	var list admin.OrderList
	if err := c.getJSON(ctx, q, &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	printOrders(stdout, list)
	return nil
}

// cmdOrdersDelete removes a test order through DELETE /api/orders/:id.
func cmdOrdersDelete(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := clientCommand("orders delete", getenv, stdout)
	if err := fs.parse(args, 1, 1, "ID"); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodDelete, "/api/orders/"+url.PathEscape(fs.Arg(0)))
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(stdout, "test order %s deleted\n", fs.Arg(0))
	return nil
}

// printOrders prints a page of orders as a table, and how to get the
// next page.
func printOrders(w io.Writer, list admin.OrderList) {
	w = terminal(w) // order ids, reasons, answers come from outside
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDER\tSTATUS\tAMOUNT\tPAID\tREFUNDED\tFLAGS\tUPDATED")
	for _, o := range list.Orders {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.ID, o.Status, orDash(strings.TrimSpace(o.Amount+" "+o.Currency)),
			o.Paid, o.Refunded, orDash(strings.Join(o.Flags, ",")), o.UpdatedAt.Local().Format("2006-01-02 15:04:05"))
	}
	tw.Flush()
	if len(list.Orders) == 0 {
		fmt.Fprintln(w, "(no orders)")
	}
	if list.NextBefore != "" {
		fmt.Fprintf(w, "more: ipnd orders -before %s\n", list.NextBefore)
	}
}
