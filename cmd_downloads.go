package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"ipnd/admin"
)

var downloadsCommand = command{
	name:    "downloads",
	args:    "[flags] ORDER",
	summary: "show an order's download links and keys (-reissue: new links, emailed)",
	run:     cmdDownloads,
}

// cmdDownloads shows what an order was delivered, or reissues its links.
func cmdDownloads(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("downloads", getenv, stdout)
	reissue := fs.Bool("reissue", false, "give the links new tokens, their full limit and a new ttl, and email them to the customer")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parse(args, 1, 1, "ORDER"); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	path := "/api/orders/" + url.PathEscape(fs.Arg(0)) + "/deliveries"
	var out admin.Deliveries
	if *reissue {
		resp, err := c.do(ctx, http.MethodPost, path+"/reissue")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
	} else if err := c.getJSON(ctx, path, &out); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, out)
	}
	stdout = terminal(stdout) // the order id and reasons come from outside
	if *reissue {
		fmt.Fprintf(stdout, "new links for order %s (emailed to the customer):\n", out.OrderID)
	} else if out.Revoked {
		fmt.Fprintf(stdout, "order %s: revoked (%s)\n", out.OrderID, out.Reason)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PRODUCT\tDOWNLOADS LEFT\tEXPIRES\tLICENSE KEY\tLINK")
	for _, d := range out.Deliveries {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", d.Product, d.DownloadsLeft, d.ExpiresAt.Local().Format("2006-01-02 15:04"),
			orDash(d.LicenseKey), orDash(d.DownloadURL))
	}
	return tw.Flush()
}
