package main

import (
	"context"
	"fmt"
	"io"
	"ipnd/ipn/gateway"
	"log/slog"
	"path/filepath"
	"strings"
)

var checkCommand = command{
	name:    "check",
	args:    "[flags] [CONFIG]",
	summary: "validate the config and print what would run",
	run:     cmdCheck,
}

func cmdCheck(_ context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newCmdline("check", getenv, stdout)
	if err := fs.parseConfigArg(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	src := "embedded defaults"
	if cfg.file != "" {
		src = cfg.file
	}
	lines, err := checkGateways(cfg)
	if err != nil {
		return err
	}
	// What serve builds before it listens, built the same way: the admin
	// token, templates, SMTP (its password file) and the shop (its key).
	if _, err := cfg.adminToken(); err != nil && !(cfg.Admin.Token == "" && filepath.Dir(cfg.Admin.TokenFile) == cfg.dataDir()) {
		return err
	}
	if _, err := newOutboxWorker(cfg, nil, nil, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	if err := cfg.checkTLSFiles(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# ipnd %s: config from %s is valid\n", version, src)
	fmt.Fprintf(stdout, "# public listener %s, admin listener %s, database %s\n", cfg.Server.Listen, cfg.Admin.Listen, storeName(cfg))
	fmt.Fprint(stdout, cfg.tlsSummary())
	fmt.Fprint(stdout, strings.Join(lines, ""))
	fmt.Fprint(stdout, cfg.fulfilSummary())
	if cfg.SMTP.Host == "" {
		fmt.Fprintf(stdout, "# mail: written as .eml files under %s/mail\n", cfg.dataDir())
	}
	if cfg.Email.MerchantTo == "" {
		fmt.Fprintln(stdout, "# warning: email.merchant_to is empty: merchant alerts (order in review, dispute, failed verification) have nowhere to go; they are recorded as skipped (ipnd outbox skipped)")
	}
	fmt.Fprint(stdout, cfg.redacted())
	return nil
}

// checkGateways builds every gateway's adapter as serve will (a secret
// file serve generates on its first start stands in as a random secret)
// and returns one line per gateway saying where it takes notifications.
func checkGateways(cfg *Config) ([]string, error) {
	var lines []string
	for i, g := range cfg.Gateways {
		secret := "secret set"
		if !gateway.NeedsSecret(g.Kind) {
			secret = "verified by postback"
		}
		key := fmt.Sprintf("gateway[%d]", i)
		secrets, err := gatewaySecrets(key, g)
		if err != nil {
			if !cfg.generatedSecret(g) {
				return nil, err
			}
			secret = "secret generated on first start in " + g.SecretFile
			k, _ := gateway.Lookup(g.Kind)
			secrets = []string{k.NewSecret()} // stand-in
		}
		// Build the adapter exactly as serve will, so that check fails when serve would.
		if _, err := gateway.New(cfg.gatewayOptions(g, secrets)); err != nil {
			return nil, fmt.Errorf("config: %s (%q): %w", key, g.Name, err)
		}
		lines = append(lines, fmt.Sprintf("# gateway %q (%s): POST /ipn/%s, %s\n", g.Name, g.Kind, g.Name, secret))
	}
	return lines, nil
}
