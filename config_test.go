package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ipnd.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigErrorsNameKeyValueAndWhy(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"[server]\nlisten = \"nope\"", `server.listen = "nope": must be host:port`},
		{"[server]\nmax_body_bytes = -1", "server.max_body_bytes = -1: must be between"},
		{"[server]\nread_timeout = \"soon\"", "read_timeout"},
		{"[server]\nlisten_port = 1", `unknown key "server.listen_port"`},
		{"[smtp]\ntls = \"ssl\"", `smtp.tls = "ssl": must be "starttls", "tls" or "none"`},
		{"[server]\ntrusted_proxies = [\"10.0.0.0/33\"]", `server.trusted_proxies = "10.0.0.0/33": not an IP address or CIDR prefix`},
		{"[[gateway]]\nname = \"s\"\nkind = \"stripe\"", `gateway[0].secret = "": gateway kind stripe needs a secret`},
		{"[[gateway]]\nname = \"s\"\nkind = \"paypol\"\nsecret = \"x\"", `gateway[0].kind = "paypol": unknown kind`},
		{"[[gateway]]\nname = \"S S\"\nkind = \"stripe\"\nsecret = \"x\"", `gateway[0].name = "S S"`},
		{"[[gateway]]\nname = \"a\"\nkind = \"stripe\"\nsecret = \"x\"\n[[gateway]]\nname = \"a\"\nkind = \"stripe\"\nsecret = \"y\"", `gateway[1].name = "a": another gateway`},
		{"[server\n", "line 2"},
		{"[server]\nrate_limit = nan", "server.rate_limit = NaN"},
		{"[server]\nrate_limit = inf", "server.rate_limit = +Inf"},
		{"[admin]\ntoken = \"a\"\ntoken_file = \"/x\"", "give token or token_file, not both"},
		{"[server]\nrate_burst = \"many\"", "server.rate_burst"},
		{"[admin]\ntrusted_proxies = [\"localhost\"]", `admin.trusted_proxies = "localhost": not an IP address or CIDR prefix`},
	} {
		_, err := loadConfig(writeConfig(t, tc.body), envFunc())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: err = %v, want it to contain %q", tc.body, err, tc.want)
		}
	}
}

func TestConfigEnvOverridesAndSecretFiles(t *testing.T) {
	dir := t.TempDir()
	sf := filepath.Join(dir, "stripe.secret")
	os.WriteFile(sf, []byte("whsec_new\n\nwhsec_old\n"), 0o600)
	p := writeConfig(t, `
[server]
listen = "127.0.0.1:9000"
[[gateway]]
name = "stripe"
kind = "stripe"
secret_file = "`+sf+`"
`)
	cfg, err := loadConfig(p, envFunc("IPND_SERVER_LISTEN", "127.0.0.1:9100", "IPND_ADMIN_TOKEN", "tok",
		"IPND_SERVER_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16", "IPND_SERVER_RATE_LIMIT", "2.5"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:9100" || cfg.Server.RateLimit != 2.5 || len(cfg.Server.TrustedProxies) != 2 {
		t.Errorf("env overrides not applied: %+v", cfg.Server)
	}
	if tok, _ := cfg.adminToken(); tok != "tok" {
		t.Errorf("admin token = %q", tok)
	}
	// The environment's token wins over a token_file in the file.
	p2 := writeConfig(t, "[admin]\ntoken_file = \"/nonexistent\"\n[[gateway]]\nname = \"s\"\nkind = \"stripe\"\nsecret = \"whsec_x\"\n")
	cfg2, err := loadConfig(p2, envFunc("IPND_ADMIN_TOKEN", "envtok"))
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := cfg2.adminToken(); tok != "envtok" || err != nil {
		t.Errorf("admin token with env over token_file = %q, %v", tok, err)
	}
	secrets, err := gatewaySecrets("gateway[0]", cfg.Gateways[0])
	if err != nil || strings.Join(secrets, ",") != "whsec_new,whsec_old" {
		t.Errorf("secrets from file = %v, %v", secrets, err)
	}
	if len(cfg.Gateways) != 1 {
		t.Errorf("a config file's gateways are exactly its own; got %d", len(cfg.Gateways))
	}
	if _, err := loadConfig(p, envFunc("IPND_SERVER_RATE_LIMIT", "fast")); err == nil ||
		!strings.Contains(err.Error(), "server.rate_limit (from IPND_SERVER_RATE_LIMIT)") {
		t.Errorf("bad env value: err = %v", err)
	}
}

func TestCheckRedactsSecrets(t *testing.T) {
	p := writeConfig(t, `
[admin]
token = "admin-token-value"
[smtp]
password = "smtp-password-value"
[[gateway]]
name = "stripe"
kind = "stripe"
secrets = ["whsec_one_value", "whsec_two_value"]
`)
	out, err := runCmd(t, envFunc(), "check", "-config", p)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, secret := range []string{"admin-token-value", "smtp-password-value", "whsec_one_value", "whsec_two_value"} {
		if strings.Contains(out, secret) {
			t.Errorf("check output reveals %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `gateway "stripe" (stripe)`) || !strings.Contains(out, "<redacted>") {
		t.Errorf("check output:\n%s", out)
	}
	if _, err := runCmd(t, envFunc(), "check", "-config", writeConfig(t, "bogus = 1")); err == nil {
		t.Error("check accepted an unknown key")
	}
	// check builds the adapters: a secret serve would refuse fails check too.
	bad := writeConfig(t, "[[gateway]]\nname = \"w\"\nkind = \"standard-webhooks\"\nsecret = \"whsec_not*base64!!\"\n")
	if _, err := runCmd(t, envFunc(), "check", "-config", bad); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("check of an undecodable secret: %v", err)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	cfg, err := loadConfig("config.example.toml", envFunc())
	if err != nil {
		t.Fatal(err)
	}
	def := defaultConfig()
	if cfg.Server.Listen != def.Server.Listen || cfg.Server.MaxBodyBytes != def.Server.MaxBodyBytes ||
		cfg.Admin.Listen != def.Admin.Listen || cfg.Store.Path != def.Store.Path {
		t.Errorf("config.example.toml disagrees with the embedded defaults")
	}
}

func TestVersionAndUnknownCommand(t *testing.T) {
	if out, err := runCmd(t, envFunc(), "version"); err != nil || !strings.HasPrefix(out, "ipnd ") {
		t.Errorf("version = %q, %v", out, err)
	}
	if _, err := runCmd(t, envFunc(), "frobnicate"); err == nil {
		t.Error("unknown command accepted")
	}
}

// TestExamplePresetsBuild uncomments every [[gateway]] example in
// config.example.toml and checks that ipnd check accepts them all: the
// documented presets are real configurations.
func TestExamplePresetsBuild(t *testing.T) {
	data, err := os.ReadFile("config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`^# ([a-z_]+ = |\[\[gateway\]\])`)
	var out []string
	gateways := 0
	for _, l := range strings.Split(string(data), "\n") {
		if keyLine.MatchString(l) {
			l = strings.TrimPrefix(l, "# ")
			if strings.HasPrefix(l, "[[gateway]]") {
				gateways++
			}
		}
		out = append(out, l)
	}
	if gateways < 10 {
		t.Fatalf("found %d example gateways, want the stripe, standard-webhooks, crypto and hmac presets", gateways)
	}
	p := writeConfig(t, strings.Join(out, "\n"))
	got, err := runCmd(t, envFunc(), "check", "-config", p)
	if err != nil {
		t.Fatalf("check of the uncommented examples: %v\n%s", err, got)
	}
	for _, kind := range []string{"paypal", "stripe", "standard-webhooks", "coinbase-commerce", "btcpay", "coinpayments", "nowpayments", "hmac"} {
		if kind != "paypal" && !strings.Contains(got, "("+kind+")") {
			t.Errorf("check output lacks a %s gateway:\n%s", kind, got)
		}
	}
}

// Gateway secrets come from the environment by gateway name; an IPND_
// variable that names no key is refused like an unknown key in the file
// (checked on the real process, whose environment main reads);
// $STATE_DIRECTORY is the data directory unless the config names one.
func TestEnvironmentConventions(t *testing.T) {
	p := writeConfig(t, "[[gateway]]\nname = \"stripe-live\"\nkind = \"stripe\"\nsecret = \"whsec_file\"\n")
	cfg, err := loadConfig(p, envFunc("IPND_GATEWAY_STRIPE_LIVE_SECRET", "whsec_env"))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := gatewaySecrets("gateway[0]", cfg.Gateways[0]); len(s) != 1 || s[0] != "whsec_env" {
		t.Errorf("secret from IPND_GATEWAY_STRIPE_LIVE_SECRET: %v", s)
	}
	sf := filepath.Join(t.TempDir(), "s")
	os.WriteFile(sf, []byte("whsec_fromfile\n"), 0o600)
	cfg, err = loadConfig(p, envFunc("IPND_GATEWAY_STRIPE_LIVE_SECRET_FILE", sf))
	if s, _ := gatewaySecrets("gateway[0]", cfg.Gateways[0]); err != nil || len(s) != 1 || s[0] != "whsec_fromfile" {
		t.Errorf("secret from IPND_GATEWAY_STRIPE_LIVE_SECRET_FILE: %v %v", s, err)
	}

	for _, tc := range []struct {
		env  []string
		want string // "" = exit 0
	}{
		{[]string{"IPND_SERVER_LISEN=127.0.0.1:9"}, "IPND_SERVER_LISEN is not a config key"},
		{[]string{"IPND_GATEWAY_NOPE_SECRET=x"}, "IPND_GATEWAY_NOPE_SECRET is not a config key"},
		{[]string{"IPND_SERVER_LISTEN=127.0.0.1:18099", "IPND_GATEWAY_STRIPE_LIVE_SECRET=whsec_x"}, ""},
	} {
		cmd := exec.Command(os.Args[0], "check", p)
		cmd.Env = append(os.Environ(), append(tc.env, "IPND_TEST_CHILD=1")...)
		out, err := cmd.CombinedOutput()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(string(out), tc.want)) {
			t.Errorf("check with %v: %v\n%s", tc.env, err, out)
		}
	}

	state := t.TempDir()
	cfg, err = loadConfig(p, envFunc("STATE_DIRECTORY", state))
	if err != nil || cfg.Store.Path != filepath.Join(state, "ipnd.db") {
		t.Errorf("with STATE_DIRECTORY: store.path %q (%v)", cfg.Store.Path, err)
	}
	p2 := writeConfig(t, "[store]\npath = \"/srv/ipnd/ipnd.db\"\n[[gateway]]\nname = \"s\"\nkind = \"stripe\"\nsecret = \"whsec_a\"\n")
	if cfg, err := loadConfig(p2, envFunc("STATE_DIRECTORY", state)); err != nil || cfg.Store.Path != "/srv/ipnd/ipnd.db" {
		t.Errorf("store.path in the file must win over STATE_DIRECTORY: %v %v", cfg, err)
	}
}

// TestStoreBackendConfig: [store] backend, dsn and dsn_file: the
// defaults, the DSN from a file (trailing newline trimmed) or the
// environment, and clear errors that never show the DSN's password.
func TestStoreBackendConfig(t *testing.T) {
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	os.WriteFile(dsnFile, []byte("postgres://ipnd:s3cret@db.example:5432/ipnd?sslmode=verify-full\n"), 0o600)
	const gw = "\n[[gateway]]\nname = \"s\"\nkind = \"stripe\"\nsecret = \"x\"\n"
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)

	cfg, err := loadConfig(writeConfig(t, gw), envFunc())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Backend != "bbolt" || cfg.postgres() {
		t.Fatalf("default backend = %q, want bbolt", cfg.Store.Backend)
	}
	cfg, err = loadConfig(writeConfig(t, "[store]\nbackend = \"postgres\"\ndsn_file = \""+dsnFile+"\"\n"+gw), envFunc())
	if err != nil {
		t.Fatal(err)
	}
	if dsn, err := cfg.storeDSN(); err != nil || dsn != "postgres://ipnd:s3cret@db.example:5432/ipnd?sslmode=verify-full" {
		t.Errorf("dsn from dsn_file = %q, %v", dsn, err)
	}
	if !strings.Contains(storeName(cfg), "dsn_file") || strings.Contains(cfg.redacted(), "s3cret") {
		t.Errorf("store name %q / redacted config shows the DSN", storeName(cfg))
	}
	// The environment: IPND_STORE_DSN replaces the file's dsn_file.
	cfg, err = loadConfig(writeConfig(t, "[store]\nbackend = \"postgres\"\ndsn_file = \""+dsnFile+"\"\n"+gw),
		envFunc("IPND_STORE_DSN", "host=db user=ipnd password=s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if dsn, _ := cfg.storeDSN(); dsn != "host=db user=ipnd password=s3cret" || cfg.Store.DSNFile != "" {
		t.Errorf("IPND_STORE_DSN: dsn %q, dsn_file %q", dsn, cfg.Store.DSNFile)
	}
	if strings.Contains(cfg.redacted(), "s3cret") {
		t.Errorf("redacted config shows the DSN:\n%s", cfg.redacted())
	}

	for _, tc := range []struct{ body, want string }{
		{"[store]\nbackend = \"sqlite\"", `store.backend = "sqlite": must be "bbolt" or "postgres"`},
		{"[store]\nbackend = \"postgres\"", `store.dsn = "": backend = "postgres" needs dsn or dsn_file`},
		{"[store]\nbackend = \"postgres\"\ndsn = \"postgres://u:s3cret@h/d\"\ndsn_file = \"" + dsnFile + "\"", "give dsn or dsn_file, not both"},
		{"[store]\nbackend = \"postgres\"\ndsn_file = \"" + filepath.Join(dir, "none") + "\"", "store.dsn_file = \"" + filepath.Join(dir, "none") + "\": open"},
		{"[store]\nbackend = \"postgres\"\ndsn_file = \"" + empty + "\"", "file holds no DSN"},
		{"[store]\ndsn = \"postgres://u:s3cret@h/d\"", `store.dsn = "<redacted>": is for backend = "postgres"`},
		{"[store]\ndsn_file = \"" + dsnFile + "\"", `is for backend = "postgres"`},
	} {
		_, err := loadConfig(writeConfig(t, tc.body+gw), envFunc())
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("config %q: err = %v, want it to contain %q (and no password)", tc.body, err, tc.want)
		}
	}
}

// TestStoreOpenErrorsHideThePassword: a DSN that does not parse or names a
// server that is not there fails the start with a message that names
// neither the password nor hides the cause.
func TestStoreOpenErrorsHideThePassword(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://ipnd:s3cret@127.0.0.1:1/ipnd?sslmode=disable&connect_timeout=1", "postgres unavailable"},
		{"postgres://ipnd:s3cret@127.0.0.1:99999/ipnd", "store.dsn"},
		{"host=127.0.0.1 port=1 user=ipnd password=s3cret connect_timeout=1 sslmode=disable", "postgres unavailable"},
	} {
		// An unreachable server is waited for (logged each try) until the
		// start is stopped: the log and the error name no password.
		cfg := &Config{Store: StoreConfig{Backend: "postgres", DSN: tc.dsn}}
		var log lockedBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := openStore(ctx, cfg, slog.New(slog.NewTextHandler(&log, nil)), nil)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("open %q: %v, want an error with %q and no password", tc.dsn, err, tc.want)
		}
		if strings.Contains(log.String(), "s3cret") {
			t.Errorf("open %q: the log shows the password:\n%s", tc.dsn, log.String())
		}
	}
}
