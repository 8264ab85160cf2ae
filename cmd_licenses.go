package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"ipnd/admin"
	"ipnd/fulfil"
	"ipnd/store/pg"
)

var licensesCommand = command{
	name:    "licenses",
	args:    "[flags] ORDER|KEY",
	summary: "show a license key, or an order's keys",
	run:     cmdLicenses,
}

var licensesDisableCommand = command{
	name:    "licenses disable",
	args:    "[flags] KEY",
	summary: "disable a license key for good",
}

var licensesPubkeyCommand = command{
	name:    "licenses pubkey",
	args:    "[flags]",
	summary: "print the public key that verifies signed license keys",
}

// licenseView is a license as GET /api/licenses/:key shows it.
type licenseView struct {
	LicenseKey struct {
		Status          string     `json:"status"`
		Key             string     `json:"key"`
		ActivationLimit int        `json:"activation_limit"`
		ActivationUsage int        `json:"activation_usage"`
		ExpiresAt       *time.Time `json:"expires_at"`
	} `json:"license_key"`
	OrderID        string            `json:"order_id"`
	ProductID      string            `json:"product_id"`
	Instances      []fulfil.Instance `json:"instances"`
	DisabledReason string            `json:"disabled_reason"`
}

// licensePath is the admin route of key: a signed key without its
// "key/" (a path segment holds no slash; the API adds it back).
func licensePath(key string) string {
	return "/api/licenses/" + url.PathEscape(strings.TrimPrefix(key, fulfil.SignedPrefix))
}

// cmdLicenses shows one license key, or the keys of an order; "ipnd
// licenses disable KEY" and "ipnd licenses pubkey" are its subcommands.
func cmdLicenses(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "disable" {
		return cmdLicensesDisable(ctx, args[1:], getenv, stdout)
	}
	if len(args) > 0 && args[0] == "pubkey" {
		return cmdLicensesPubkey(args[1:], getenv, stdout, stderr)
	}
	fs := clientCommand("licenses", getenv, stdout)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parse(args, 1, 1, "ORDER|KEY"); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	arg := fs.Arg(0)
	var views []licenseView
	var raw json.RawMessage
	err = c.getJSON(ctx, licensePath(arg), &raw)
	var ae *apiError
	switch {
	case err == nil:
		var v licenseView
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		views = append(views, v)
	case errors.As(err, &ae) && ae.status == http.StatusNotFound:
		var d admin.Deliveries
		if err := c.getJSON(ctx, "/api/orders/"+url.PathEscape(arg)+"/deliveries", &d); err != nil {
			if errors.As(err, &ae) && ae.status == http.StatusNotFound {
				return fmt.Errorf("licenses: %q is neither a license key nor an order with deliveries", arg)
			}
			return err
		}
		for _, l := range d.Licenses {
			b, _ := json.Marshal(l)
			var v licenseView
			json.Unmarshal(b, &v)
			views = append(views, v)
		}
	default:
		return err
	}
	if *asJSON {
		return printJSON(stdout, views)
	}
	printLicenses(stdout, views)
	return nil
}

func printLicenses(w io.Writer, views []licenseView) {
	w = terminal(w) // order ids, instance names, reasons come from outside
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATUS\tORDER\tPRODUCT\tACTIVATIONS\tEXPIRES")
	for _, v := range views {
		exp := "-"
		if v.LicenseKey.ExpiresAt != nil {
			exp = v.LicenseKey.ExpiresAt.Local().Format("2006-01-02 15:04")
		}
		status := v.LicenseKey.Status
		if v.DisabledReason != "" {
			status += " (" + v.DisabledReason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\n", v.LicenseKey.Key, status, v.OrderID, v.ProductID,
			v.LicenseKey.ActivationUsage, v.LicenseKey.ActivationLimit, exp)
		for _, in := range v.Instances {
			fmt.Fprintf(tw, "  instance %s\t%s\t\t\t\t%s\n", in.ID, in.Name, in.CreatedAt.Local().Format("2006-01-02 15:04"))
		}
	}
	tw.Flush()
	if len(views) == 0 {
		fmt.Fprintln(w, "(no license keys)")
	}
}

func cmdLicensesDisable(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := clientCommand("licenses disable", getenv, stdout)
	if err := fs.parse(args, 1, 1, "KEY"); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, licensePath(fs.Arg(0))+"/disable")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v licenseView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "license of order %s (%s) disabled\n", v.OrderID, v.ProductID)
	return nil
}

// cmdLicensesPubkey prints the public key of the license signing key
// (created when there is none yet, which it says on stderr), base64
// (standard encoding).
func cmdLicensesPubkey(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newCmdline("licenses pubkey", getenv, stdout)
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	if cfg.postgres() {
		// The database keeps the key every ipnd on it signs with.
		pub, err := sharedPubkey(cfg)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(pub))
		return nil
	}
	_, statErr := os.Stat(signingKeyPath(cfg))
	priv, err := loadSigningKey(cfg, true)
	if err != nil {
		return err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		fmt.Fprintf(stderr, "ipnd: created a new license signing key %s: back it up with the database. "+
			"If signed license keys were issued with a key that was lost, restore that file instead: ipnd serve refuses a key that does not match them.\n",
			signingKeyPath(cfg))
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)))
	return nil
}

// sharedPubkey returns the public key of the license signing key the
// PostgreSQL database of cfg keeps, storing one first when it has none
// (the data directory's key file, when there is one, else a new key;
// see pg.Dashboard.SharedSigningKey).
func sharedPubkey(cfg *Config) (ed25519.PublicKey, error) {
	dsn, err := cfg.storeDSN()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pg.Open(ctx, dsn, pg.Options{})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	defer db.Close()
	offer, err := loadSigningKey(cfg, false)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	priv, err := db.Dashboard().SharedSigningKey(offer)
	if err != nil {
		return nil, err
	}
	return priv.Public().(ed25519.PublicKey), nil
}
