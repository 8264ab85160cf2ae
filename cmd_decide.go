package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"ipnd/admin"
)

// The merchant's decisions from the command line: "ipnd orders approve|
// cancel|note|dispute|add" (through the admin API, as the dashboard's
// buttons, recorded in the order's history as by "cli").

var (
	ordersApproveCommand = command{name: "orders approve", args: "[flags] ID",
		summary: "approve an order in review (paid: payment email, order.paid)"}
	ordersCancelCommand = command{name: "orders cancel", args: "[flags] ID",
		summary: "cancel an order (order.canceled to the shop)"}
	ordersNoteCommand = command{name: "orders note", args: "[flags] ID [TEXT]",
		summary: "add a note to an order's history"}
	ordersDisputeCommand = command{name: "orders dispute", args: "[flags] ID won|lost",
		summary: "close an open dispute as won or lost"}
	ordersAddCommand = command{name: "orders add", args: "[flags] ID",
		summary: "register an expected order"}
)

// send makes a request with a JSON body (nil: none) as the CLI ("cli"
// in the order's history); any non-2xx is an *apiError.
func (c *adminClient) send(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set(admin.ActorHeader, "cli")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w (is ipnd serve running?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		return &apiError{status: resp.StatusCode, text: resp.Status, msg: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	return nil
}

// cmdOrdersDecide runs "ipnd orders approve|cancel|note|dispute ...".
func cmdOrdersDecide(ctx context.Context, kind string, args []string, getenv func(string) string, stdout io.Writer) error {
	name := "orders " + kind
	fs := clientCommand(name, getenv, stdout)
	note := fs.String("note", "", "why (recorded in the order's history)")
	version := fs.Int("version", 0, "the order's version you saw (ipnd orders ID shows \"changes\"): refused if it changed since")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	lo, hi, want := 1, 1, "ID"
	switch kind {
	case "note":
		hi = 1 << 20 // the text, in as many words as given
	case "dispute":
		lo, hi, want = 2, 2, "ID and won|lost"
	}
	if err := fs.parse(args, lo, hi, want); err != nil {
		return err
	}
	id := fs.Arg(0)
	req := admin.DecisionRequest{Note: *note, Version: *version}
	path := "/api/orders/" + url.PathEscape(id) + "/" + kind
	switch kind {
	case "note":
		req.Text = strings.TrimSpace(strings.Join(fs.Args()[1:], " "))
		if req.Text == "" {
			req.Text, req.Note = *note, ""
		}
		if req.Text == "" {
			return usageErrorf("%s: missing the note's TEXT (or -note); usage: %s", name, fs.synopsis())
		}
		path = "/api/orders/" + url.PathEscape(id) + "/notes"
	case "dispute":
		req.Outcome = fs.Arg(1)
		if req.Outcome != "won" && req.Outcome != "lost" {
			return usageErrorf("%s: %q: the outcome is won or lost; usage: %s", name, req.Outcome, fs.synopsis())
		}
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	var out admin.DecisionAnswer
	if err := c.send(ctx, http.MethodPost, path, req, &out); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, out)
	}
	o := out.Order
	fmt.Fprintf(stdout, "order %s: %s (version %d)\n", o.ID, o.Status, max(o.Changes, len(o.History)))
	if out.Change.Reason != "" {
		fmt.Fprintf(stdout, "  %s\n", out.Change.Reason)
	}
	return nil
}

// cmdOrdersAdd registers an expected order (POST /api/orders).
func cmdOrdersAdd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := clientCommand("orders add", getenv, stdout)
	amount := fs.String("amount", "", "the amount expected, e.g. 19.99 (required)")
	currency := fs.String("currency", "", "ISO 4217 code, e.g. USD (required)")
	email := fs.String("email", "", "the customer's email address (required)")
	description := fs.String("description", "", "what was bought")
	test := fs.Bool("test", false, "a test order: only sandbox test payments pay it")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parse(args, 1, 1, "ID"); err != nil {
		return err
	}
	if *amount == "" || *currency == "" || *email == "" {
		return usageErrorf("orders add: -amount, -currency and -email are required; usage: %s", fs.synopsis())
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	body := map[string]any{"id": fs.Arg(0), "amount": *amount, "currency": *currency, "customer_email": *email,
		"description": *description, "test": *test}
	var o json.RawMessage
	if err := c.send(ctx, http.MethodPost, "/api/orders", body, &o); err != nil {
		return err
	}
	if *asJSON {
		return printIndented(stdout, o)
	}
	fmt.Fprintf(stdout, "order %s registered: expecting %s %s\n", fs.Arg(0), *amount, strings.ToUpper(*currency))
	return nil
}
