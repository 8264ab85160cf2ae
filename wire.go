package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/metrics"
	"ipnd/notify"
)

// ensureGenerated creates the secret files that the embedded defaults
// point at (the test gateway's secret, the admin token) when they do not
// exist yet, or exist but hold no secret (a power cut after the create
// and before the data reached the disk left them empty): random, 0600,
// in the data directory, each written whole (writeFileSynced) so that a
// crash leaves either no file or a complete one.
func ensureGenerated(cfg *Config, log *slog.Logger) error {
	dir := cfg.dataDir()
	if err := mkdirSynced(dir); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	gen := map[string]func() string{}
	if cfg.Admin.Token == "" && filepath.Dir(cfg.Admin.TokenFile) == dir {
		gen[cfg.Admin.TokenFile] = func() string { return hex.EncodeToString(randomBytes(32)) }
	}
	for _, g := range cfg.Gateways {
		if cfg.generatedSecret(g) {
			k, _ := gateway.Lookup(g.Kind)
			gen[g.SecretFile] = k.NewSecret
		}
	}
	for path, make := range gen {
		// A temporary file a crash left before its rename held nothing in
		// use. Matched by name in dir, not by filepath.Glob: the data
		// directory's own name may hold glob characters.
		if entries, err := os.ReadDir(filepath.Dir(path)); err == nil {
			prefix := "." + filepath.Base(path) + ".tmp-"
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
					os.Remove(filepath.Join(filepath.Dir(path), e.Name()))
				}
			}
		}
		data, err := os.ReadFile(path)
		switch {
		case err == nil && strings.TrimSpace(string(data)) != "":
			continue // holds a secret: never replaced
		case err == nil:
			// Only ipnd writes these files; an empty one is its own
			// first write cut short, so no secret was ever handed out.
			log.Warn("generated secret file is empty (cut short by a crash or power loss): generating a new one", "path", path)
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("generate %s: %w", path, err)
		}
		if err := writeFileSynced(path, []byte(make()+"\n")); err != nil {
			return fmt.Errorf("generate %s: %w", path, err)
		}
		log.Info("generated secret file", "path", path)
	}
	return nil
}

// writeFileSynced writes data to path through a temporary name in the
// same directory: write, fsync, rename, fsync the directory. A crash at
// any point leaves the old file (or none) or the new one, whole.
func writeFileSynced(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// mkdirSynced is os.MkdirAll(dir, 0700) that also fsyncs the parent of
// each directory it creates, so that the new entries survive power loss.
func mkdirSynced(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

// syncDir fsyncs directory dir: the entries created or renamed in it
// survive power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// buildGateways turns the [[gateway]] tables into adapters.
func buildGateways(cfg *Config) ([]gateway.Gateway, error) {
	var out []gateway.Gateway
	for i, g := range cfg.Gateways {
		key := fmt.Sprintf("gateway[%d]", i)
		secrets, err := gatewaySecrets(key, g)
		if err != nil {
			return nil, err
		}
		gw, err := gateway.New(cfg.gatewayOptions(g, secrets))
		if err != nil {
			return nil, fmt.Errorf("config: %s (%q): %w", key, g.Name, err)
		}
		out = append(out, gw)
	}
	return out, nil
}

// gatewayOptions copies a [[gateway]] table into the adapter's options.
func (c *Config) gatewayOptions(g GatewayConfig, secrets []string) gateway.Config {
	f := g.Fields
	return gateway.Config{Name: g.Name, Kind: g.Kind, Secrets: secrets,
		Tolerance: time.Duration(g.Tolerance), Sandbox: g.Sandbox, VerifyURL: g.VerifyURL, Receivers: c.receivers(g),
		MerchantID: g.MerchantID, URL: g.URL,
		HMAC: gateway.HMACOptions{Header: g.Header, Parser: g.Parser, Prefix: g.Prefix, PairSeparator: g.PairSeparator,
			SignatureKey: g.SignatureKey, TimestampKey: g.TimestampKey, Algorithm: g.Algorithm, Encoding: g.Encoding,
			KeyFormat: g.KeyFormat, KeyPrefix: g.KeyPrefix, SignedContent: g.SignedContent, Timestamp: g.Timestamp,
			ID: g.ID, DedupKey: g.DedupKey, Canonicalize: g.Canonicalize, Body: g.Body, RequiredFields: g.RequiredFields,
			Fields: gateway.HMACFields{TxnID: f.TxnID, ParentTxnID: f.ParentTxnID, SubscriptionID: f.SubscriptionID,
				OrderID: f.OrderID, Amount: f.Amount, Currency: f.Currency,
				Status: f.Status, Email: f.Email, Name: f.Name, AmountMinor: f.AmountMinor, Statuses: f.Statuses}}}
}

// newOutboxWorker builds the delivery of emails (SMTP, or .eml files
// under the data directory when no smtp.host is set), shop callbacks and
// the notification script.
func newOutboxWorker(cfg *Config, db notify.Outbox, m *metrics.Metrics, log *slog.Logger) (*notify.Worker, error) {
	mailer, err := newMailer(cfg)
	if err != nil {
		return nil, err
	}
	tpl, err := notify.LoadTemplates(cfg.Email.TemplatesDir)
	if err != nil {
		return nil, fmt.Errorf("email.templates_dir: %w", err)
	}
	var shop *notify.Shop
	if cfg.Shop.URL != "" || len(cfg.Shop.Command) > 0 {
		key, err := cfg.shopKey()
		if err != nil {
			return nil, err
		}
		shop = &notify.Shop{URL: cfg.Shop.URL, Key: key, Command: cfg.Shop.Command, Timeout: time.Duration(cfg.Shop.Timeout),
			Client: notify.NewShopClient(cfg.Shop.Connections)}
	}
	var enabled map[string]bool
	if len(cfg.Email.Enabled) > 0 {
		enabled = map[string]bool{}
		for _, t := range cfg.Email.Enabled {
			enabled[t] = true
		}
	}
	from := cfg.SMTP.From
	if from == "" {
		from = "ipnd@localhost"
	}
	domain := "localhost"
	if _, d, ok := strings.Cut(from, "@"); ok {
		domain = strings.Trim(d, "> ")
	}
	if name := strings.TrimSpace(cfg.Email.MerchantName); name != "" {
		// email.merchant_name is the display name of a bare smtp.from
		// ("Example Shop <orders@example.com>"); one written in
		// smtp.from is kept.
		if a, err := mail.ParseAddress(from); err == nil && a.Name == "" {
			from = (&mail.Address{Name: name, Address: a.Address}).String()
		}
	}
	return notify.NewWorker(notify.WorkerOptions{Outbox: db, Mailer: mailer, Templates: tpl, From: from,
		ReplyTo: cfg.Email.ReplyTo, MerchantTo: cfg.Email.MerchantTo, MerchantName: cfg.Email.MerchantName,
		Domain: domain, Enabled: enabled, Shop: shop, EmailMax: cfg.Email.MaxAttempts, ShopMax: cfg.Shop.MaxAttempts,
		EmailConnections: cfg.Email.Connections, EmailUnrecorded: cfg.Email.Unrecorded, ShopConnections: cfg.Shop.Connections,
		RetryBase: time.Duration(cfg.Pipeline.OutboxRetryBase), RetryCap: time.Duration(cfg.Pipeline.OutboxRetryCap),
		Observer: m, Logger: log}), nil
}

// newMailer sends through smtp.host, or without one writes each email
// as an .eml file under the data directory.
func newMailer(cfg *Config) (notify.Mailer, error) {
	if cfg.SMTP.Host == "" {
		return notify.NewFileMailer(filepath.Join(cfg.dataDir(), "mail")), nil
	}
	pw, err := cfg.smtpPassword()
	if err != nil {
		return nil, err
	}
	mailer, err := notify.NewSMTPMailer(notify.SMTPConfig{Host: cfg.SMTP.Host, Port: cfg.SMTP.Port,
		Username: cfg.SMTP.Username, Password: pw, TLS: cfg.SMTP.TLS, Timeout: time.Duration(cfg.SMTP.Timeout)})
	if err != nil {
		return nil, fmt.Errorf("smtp: %w", err)
	}
	return mailer, nil
}

// effectKinds are the effects the store queues under cfg: no shop
// callback without shop.url, no script without shop.command.
func effectKinds(cfg *Config) map[string]bool {
	return map[string]bool{ipn.EffectEmailCustomer: true, ipn.EffectEmailMerchant: true,
		ipn.EffectShopCallback: cfg.Shop.URL != "", ipn.EffectShopScript: len(cfg.Shop.Command) > 0}
}

// allowIPs are the sources each gateway accepts (validated already).
func allowIPs(cfg *Config) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for i, g := range cfg.Gateways {
		p, _ := parsePrefixes(fmt.Sprintf("gateway[%d].allow_ips", i), g.AllowIPs)
		out[g.Name] = p
	}
	return out
}

// orderRules are the per-gateway sandbox flags and receivers.
func orderRules(cfg *Config) (sandbox map[string]bool, receivers map[string][]string) {
	sandbox, receivers = map[string]bool{}, map[string][]string{}
	for _, g := range cfg.Gateways {
		sandbox[g.Name] = g.Sandbox
		receivers[g.Name] = cfg.receivers(g)
	}
	return sandbox, receivers
}

func gatewayNames(cfg *Config) []string {
	var out []string
	for _, g := range cfg.Gateways {
		out = append(out, g.Name)
	}
	return out
}
