package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"ipnd/ipn/gateway"
)

// Duration is a time.Duration written as "10s", "5m" or "1h30m" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration like \"10s\" or \"5m\"")
	}
	*d = Duration(v)
	return nil
}

// String is the Go duration syntax.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Config is the whole configuration (SPEC §9). Every key is listed, with
// its default, in config.example.toml.
type Config struct {
	Server   ServerConfig    `toml:"server"`
	Admin    AdminConfig     `toml:"admin"`
	Store    StoreConfig     `toml:"store"`
	Orders   OrdersConfig    `toml:"orders"`
	SMTP     SMTPConfig      `toml:"smtp"`
	Email    EmailConfig     `toml:"email"`
	Shop     ShopConfig      `toml:"shop"`
	Log      LogConfig       `toml:"log"`
	Pipeline PipelineConfig  `toml:"pipeline"`
	Gateways []GatewayConfig `toml:"gateway"`
	// Fulfilment and Products: what is delivered when an order is paid
	// (SPEC §11; config_fulfil.go).
	Fulfilment FulfilmentConfig `toml:"fulfilment"`
	Products   []ProductConfig  `toml:"product"`

	file     string // the config file read, "" for embedded defaults
	embedded bool   // no config file: the test gateway is added
}

// ServerConfig is the public listener gateways post to.
type ServerConfig struct {
	Listen         string   `toml:"listen"`
	MaxBodyBytes   int64    `toml:"max_body_bytes"`
	ReadTimeout    Duration `toml:"read_timeout"`
	WriteTimeout   Duration `toml:"write_timeout"`
	RateLimit      float64  `toml:"rate_limit"`
	RateBurst      int      `toml:"rate_burst"`
	TrustedProxies []string `toml:"trusted_proxies"`
	TLSCert        string   `toml:"tls_cert"`
	TLSKey         string   `toml:"tls_key"`
	// ACME (tls.go): a non-empty acme_domains turns it on.
	AcmeDomains   []string `toml:"acme_domains"`
	AcmeEmail     string   `toml:"acme_email"`
	AcmeDirectory string   `toml:"acme_directory"`
	AcmeCAFile    string   `toml:"acme_ca_file"`
	HTTPListen    string   `toml:"http_listen"`
	// PublicURL is the base of download links (SPEC §11); default
	// https://<acme_domains[0]>.
	PublicURL string `toml:"public_url"`
}

// AdminConfig is the admin listener (API, metrics).
type AdminConfig struct {
	Listen      string `toml:"listen"`
	Token       string `toml:"token" secret:"true"`
	TokenFile   string `toml:"token_file"`
	OpenMetrics bool   `toml:"open_metrics"`
	// TrustedProxies are the reverse proxies in front of the admin
	// listener: their X-Forwarded-For names the client (the wrong-token
	// limit is per client) and their X-Forwarded-Proto https makes the
	// dashboard's cookie Secure.
	TrustedProxies []string `toml:"trusted_proxies"`
}

// StoreConfig is the database: the bbolt file path (backend "bbolt", the
// default) or a PostgreSQL database named by dsn or dsn_file (backend
// "postgres"). On postgres, path still names the data directory (its
// directory holds the address files and the generated files); the file
// itself is not used.
type StoreConfig struct {
	Backend      string   `toml:"backend"`
	Path         string   `toml:"path"`
	DSN          string   `toml:"dsn" secret:"true"`
	DSNFile      string   `toml:"dsn_file"`
	RawRetention Duration `toml:"raw_retention"`
}

// Store backends (store.backend).
const (
	backendBbolt    = "bbolt"
	backendPostgres = "postgres"
)

// postgres reports whether the store is a PostgreSQL database.
func (c *Config) postgres() bool { return c.Store.Backend == backendPostgres }

// storeDSN returns the PostgreSQL DSN, from store.dsn or store.dsn_file
// (its content, the trailing newline trimmed). Errors never show the
// DSN (it may hold a password).
func (c *Config) storeDSN() (string, error) {
	if c.Store.DSN != "" {
		return c.Store.DSN, nil
	}
	b, err := os.ReadFile(c.Store.DSNFile)
	if err != nil {
		return "", fmt.Errorf("config: store.dsn_file = %q: %v", c.Store.DSNFile, err)
	}
	dsn := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(dsn) == "" {
		return "", configError("store.dsn_file", c.Store.DSNFile, "file holds no DSN")
	}
	return dsn, nil
}

// OrdersConfig governs order handling.
type OrdersConfig struct {
	RequireRegistered bool     `toml:"require_registered"`
	Receivers         []string `toml:"receivers"`
	// ParkFor is how long an event that waits for its payment (a refund
	// before its payment) is kept waiting; past it the notification
	// fails and the merchant is told. 0: forever.
	ParkFor Duration `toml:"park_for"`
}

// SMTPConfig is the outgoing mail server; an empty host means the file mailer.
type SMTPConfig struct {
	Host         string   `toml:"host"`
	Port         int      `toml:"port"`
	Username     string   `toml:"username"`
	Password     string   `toml:"password" secret:"true"`
	PasswordFile string   `toml:"password_file"`
	TLS          string   `toml:"tls"`
	From         string   `toml:"from"`
	Timeout      Duration `toml:"timeout"`
}

// EmailConfig is about which emails are sent and how they look.
type EmailConfig struct {
	TemplatesDir string   `toml:"templates_dir"`
	MerchantTo   string   `toml:"merchant_to"`
	MerchantName string   `toml:"merchant_name"`
	ReplyTo      string   `toml:"reply_to"`
	MaxAttempts  int      `toml:"max_attempts"`
	Enabled      []string `toml:"enabled"`
	// Connections is how many SMTP connections deliver at once, per
	// lane (customer, merchant), each kept open between bursts.
	Connections int `toml:"connections"`
	// Unrecorded is how many sent emails of one connection may wait for
	// their result to be recorded while the next goes: a crash repeats
	// at most that many emails per connection.
	Unrecorded int `toml:"unrecorded"`
}

// ShopConfig is the merchant's shop callback and notification script.
type ShopConfig struct {
	URL         string   `toml:"url"`
	Secret      string   `toml:"secret" secret:"true"`
	SecretFile  string   `toml:"secret_file"`
	Command     []string `toml:"command"`
	Timeout     Duration `toml:"timeout"`
	MaxAttempts int      `toml:"max_attempts"`
	// Connections is how many callbacks go at once (keep-alive
	// connections to the shop), each recorded before its connection
	// takes the next: a crash repeats at most one callback each.
	Connections int `toml:"connections"`
}

// PipelineConfig tunes background processing: verification retries with
// exponential backoff and jitter from retry_base doubling to retry_cap,
// until retry_for after receipt (then the notification is failed).
type PipelineConfig struct {
	Workers       int      `toml:"workers"`
	VerifyTimeout Duration `toml:"verify_timeout"`
	RetryBase     Duration `toml:"retry_base"`
	RetryCap      Duration `toml:"retry_cap"`
	RetryFor      Duration `toml:"retry_for"`
	// Outgoing email and shop callbacks are retried from outbox_retry_base
	// doubling to outbox_retry_cap, up to email.max_attempts /
	// shop.max_attempts.
	OutboxRetryBase Duration `toml:"outbox_retry_base"`
	OutboxRetryCap  Duration `toml:"outbox_retry_cap"`
}

// LogConfig chooses the log level and format.
type LogConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// GatewayConfig is one [[gateway]] table.
type GatewayConfig struct {
	Name       string   `toml:"name"`
	Kind       string   `toml:"kind"`
	Secret     string   `toml:"secret" secret:"true"`
	Secrets    []string `toml:"secrets" secret:"true"`
	SecretFile string   `toml:"secret_file"`
	Tolerance  Duration `toml:"tolerance"`
	Sandbox    bool     `toml:"sandbox"`
	VerifyURL  string   `toml:"verify_url"`
	Receivers  []string `toml:"receivers"`
	AllowIPs   []string `toml:"allow_ips"`
	MerchantID string   `toml:"merchant_id"`
	URL        string   `toml:"url"`

	// Kind hmac only (GATEWAYS.md §10; see config.example.toml).
	Header         string            `toml:"header"`
	Parser         string            `toml:"parser"`
	Prefix         string            `toml:"prefix"`
	PairSeparator  string            `toml:"pair_separator"`
	SignatureKey   string            `toml:"signature_key"`
	TimestampKey   string            `toml:"timestamp_key"`
	Algorithm      string            `toml:"algorithm"`
	Encoding       string            `toml:"encoding"`
	KeyFormat      string            `toml:"key_format"`
	KeyPrefix      string            `toml:"key_prefix"`
	SignedContent  string            `toml:"signed_content"`
	Timestamp      string            `toml:"timestamp"`
	ID             string            `toml:"id"`
	DedupKey       string            `toml:"dedup_key"`
	Canonicalize   string            `toml:"canonicalize"`
	Body           string            `toml:"body"`
	RequiredFields map[string]string `toml:"required_fields"`
	Fields         HMACFieldsConfig  `toml:"fields"`
}

// HMACFieldsConfig says where an hmac gateway's messages keep the event
// fields ("json:a.b", "form:f", "header:Name").
type HMACFieldsConfig struct {
	TxnID          string            `toml:"txn_id"`
	ParentTxnID    string            `toml:"parent_txn_id"`
	SubscriptionID string            `toml:"subscription_id"`
	OrderID        string            `toml:"order_id"`
	Amount         string            `toml:"amount"`
	Currency       string            `toml:"currency"`
	Status         string            `toml:"status"`
	Email          string            `toml:"email"`
	Name           string            `toml:"name"`
	AmountMinor    bool              `toml:"amount_minor"`
	Statuses       map[string]string `toml:"statuses"`
}

// defaultConfig is the embedded default configuration.
func defaultConfig() Config {
	return Config{
		Server: ServerConfig{
			Listen:       "127.0.0.1:8080",
			MaxBodyBytes: 64 << 10,
			ReadTimeout:  Duration(10 * time.Second),
			WriteTimeout: Duration(10 * time.Second),
			RateLimit:    50,
			RateBurst:    100,
		},
		Admin: AdminConfig{Listen: "127.0.0.1:8081"},
		Store: StoreConfig{Backend: backendBbolt, Path: "./ipnd-data/ipnd.db"},
		SMTP:  SMTPConfig{Port: 587, TLS: "starttls", Timeout: Duration(30 * time.Second)},
		Email: EmailConfig{MaxAttempts: 20, Connections: 4, Unrecorded: 8},
		Shop:  ShopConfig{Timeout: Duration(30 * time.Second), MaxAttempts: 50, Connections: 16},
		Log:   LogConfig{Level: "info", Format: "auto"},
		Pipeline: PipelineConfig{Workers: 8, VerifyTimeout: Duration(30 * time.Second),
			RetryBase: Duration(10 * time.Second), RetryCap: Duration(time.Hour), RetryFor: Duration(72 * time.Hour),
			OutboxRetryBase: Duration(30 * time.Second), OutboxRetryCap: Duration(time.Hour)},
		Orders: OrdersConfig{ParkFor: Duration(72 * time.Hour)},
	}
}

// dataDir is the directory of the database: generated secrets, the mail
// spool and the listener address files live there.
func (c *Config) dataDir() string { return filepath.Dir(c.Store.Path) }

// secretFiles lists every file the config reads secrets or certificates
// from (they are read again on a reload).
func (c *Config) secretFiles() []string {
	var out []string
	for _, p := range []string{c.Admin.TokenFile, c.SMTP.PasswordFile, c.Shop.SecretFile, c.Server.TLSCert, c.Server.TLSKey, c.Store.DSNFile} {
		if p != "" {
			out = append(out, p)
		}
	}
	for _, g := range c.Gateways {
		if g.SecretFile != "" {
			out = append(out, g.SecretFile)
		}
	}
	return out
}

// configError names the key, the value and why.
func configError(key string, value any, why string) error {
	return fmt.Errorf("config: %s = %s: %s", key, quote(value), why)
}

func quote(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case []string:
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprint(v)
}

// loadConfig reads the file (when path is not ""), applies IPND_*
// environment overrides and validates. With no file, the embedded defaults
// apply and the default gateway "test" is added.
func loadConfig(path string, getenv func(string) string) (*Config, error) {
	cfg := defaultConfig()
	pathSet := false // store.path given in the file
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
		if err != nil {
			var perr toml.ParseError
			if errors.As(err, &perr) {
				key := ""
				if perr.LastKey != "" {
					key = " " + perr.LastKey + ":"
				}
				return nil, fmt.Errorf("config: %s line %d:%s %s", path, perr.Position.Line, key, perr.Message)
			}
			if m := tomlTypeError.FindStringSubmatch(err.Error()); m != nil {
				return nil, fmt.Errorf("config: %s line %s: %s: is %s, must be %s", path, m[1], m[2], tomlTypeName(m[3]), tomlTypeName(m[4]))
			}
			return nil, fmt.Errorf("config: %s: %w", path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			return nil, fmt.Errorf("config: %s: unknown key %q", path, und[0].String())
		}
		pathSet = md.IsDefined("store", "path")
		cfg.file = path
	} else {
		cfg.embedded = true
	}
	if dir, _, _ := strings.Cut(getenv("STATE_DIRECTORY"), ":"); dir != "" && !pathSet {
		// systemd's StateDirectory= (the shipped unit): the data directory
		// unless the config names one.
		cfg.Store.Path = filepath.Join(dir, "ipnd.db")
	}
	known, err := applyEnv(&cfg, getenv)
	if err != nil {
		return nil, err
	}
	if cfg.embedded && len(cfg.Gateways) == 0 {
		// A sandbox gateway: ipnd simulate test makes test orders there.
		cfg.Gateways = []GatewayConfig{{Name: "test", Kind: "standard-webhooks", Sandbox: true,
			SecretFile: filepath.Join(cfg.dataDir(), "gateway-test.secret")}}
	}
	if err := applyGatewayEnv(&cfg, getenv, known); err != nil {
		return nil, err
	}
	if err := checkEnvNames(known); err != nil {
		return nil, err
	}
	if cfg.Admin.Token == "" && cfg.Admin.TokenFile == "" {
		cfg.Admin.TokenFile = filepath.Join(cfg.dataDir(), "admin.token")
	}
	for i, g := range cfg.Gateways {
		if k, ok := gateway.Lookup(g.Kind); ok && g.Tolerance == 0 && k.Tolerance > 0 {
			// The kind's default, written out so that check shows what applies.
			cfg.Gateways[i].Tolerance = Duration(k.Tolerance)
		}
	}
	if len(cfg.Server.AcmeDomains) > 0 {
		if cfg.Server.HTTPListen == "" {
			cfg.Server.HTTPListen = ":80"
		}
		if cfg.Server.AcmeDirectory == "" {
			cfg.Server.AcmeDirectory = letsEncryptDirectory
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// environ lists the process environment, to refuse IPND_ variables that
// name no config key (as unknown keys in the file are). main sets it; nil
// (tests through run) skips the check.
var environ func() []string

// otherEnv are the IPND_ variables that are not config keys.
var otherEnv = map[string]bool{"IPND_CONFIG": true, "IPND_ADMIN_URL": true,
	"IPND_TEST_CHILD": true, "IPND_TEST_PROXY_CHILD": true, "IPND_BENCH_SECONDS": true}

// checkEnvNames refuses an IPND_ variable that is neither a config key
// (known) nor one of otherEnv: a typo such as IPND_SERVER_LISEN would
// otherwise be ignored without a word.
func checkEnvNames(known map[string]bool) error {
	if environ == nil {
		return nil
	}
	for _, kv := range environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "IPND_") && !known[name] && !otherEnv[name] {
			return fmt.Errorf("config: environment variable %s is not a config key (IPND_SECTION_KEY, e.g. IPND_SERVER_LISTEN, or IPND_GATEWAY_<NAME>_SECRET / _SECRET_FILE of a configured gateway)", name)
		}
	}
	return nil
}

// gatewayEnvName is the <NAME> part of a gateway's environment variables:
// its name upper-cased, "-" as "_".
func gatewayEnvName(name string) string { return strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }

// applyGatewayEnv sets gateway secrets from IPND_GATEWAY_<NAME>_SECRET
// (one secret) or IPND_GATEWAY_<NAME>_SECRET_FILE, replacing what the
// file gives for that gateway.
func applyGatewayEnv(cfg *Config, getenv func(string) string, known map[string]bool) error {
	for i := range cfg.Gateways {
		g := &cfg.Gateways[i]
		base := "IPND_GATEWAY_" + gatewayEnvName(g.Name)
		known[base+"_SECRET"], known[base+"_SECRET_FILE"] = true, true
		secret, file := getenv(base+"_SECRET"), getenv(base+"_SECRET_FILE")
		switch {
		case secret != "" && file != "":
			return fmt.Errorf("config: gateway %q: set %s_SECRET or %s_SECRET_FILE, not both", g.Name, base, base)
		case secret != "":
			g.Secret, g.Secrets, g.SecretFile = secret, nil, ""
		case file != "":
			g.Secret, g.Secrets, g.SecretFile = "", nil, file
		}
	}
	return nil
}

// applyEnv sets every scalar key of the sections from IPND_SECTION_KEY
// (e.g. IPND_SERVER_LISTEN, IPND_ADMIN_TOKEN, IPND_STORE_PATH); lists are
// comma-separated. It returns every variable name it knows.
func applyEnv(cfg *Config, getenv func(string) string) (map[string]bool, error) {
	known := map[string]bool{}
	cv := reflect.ValueOf(cfg).Elem()
	ct := cv.Type()
	for i := 0; i < ct.NumField(); i++ {
		sf := ct.Field(i)
		if sf.Type.Kind() != reflect.Struct || !sf.IsExported() {
			continue
		}
		section := sf.Tag.Get("toml")
		sv := cv.Field(i)
		for j := 0; j < sv.NumField(); j++ {
			key := sv.Type().Field(j).Tag.Get("toml")
			env := "IPND_" + strings.ToUpper(section+"_"+key)
			known[env] = true
			raw := getenv(env)
			if raw == "" {
				continue
			}
			if err := setFromString(sv.Field(j), raw); err != nil {
				return nil, fmt.Errorf("config: %s (from %s) = %q: %v", section+"."+key, env, raw, err)
			}
			// A secret from the environment replaces the file's other form
			// (IPND_ADMIN_TOKEN wins over token_file, and the reverse).
			other := key + "_file"
			if base, ok := strings.CutSuffix(key, "_file"); ok {
				other = base
			}
			for k := 0; k < sv.NumField(); k++ {
				if sv.Type().Field(k).Tag.Get("toml") == other && getenv("IPND_"+strings.ToUpper(section+"_"+other)) == "" {
					sv.Field(k).SetZero()
				}
			}
		}
	}
	return known, nil
}

func setFromString(f reflect.Value, raw string) error {
	if f.Type() == reflect.TypeOf(Duration(0)) {
		var d Duration
		if err := d.UnmarshalText([]byte(raw)); err != nil {
			return err
		}
		f.Set(reflect.ValueOf(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("not a boolean")
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		f.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return errors.New("not a number")
		}
		f.SetFloat(n)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		f.Set(reflect.ValueOf(parts))
	default:
		return errors.New("cannot be set from the environment")
	}
	return nil
}

var gatewayName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// tomlTypeError matches the TOML decoder's text for a value of the wrong
// type, to say it in the config's terms.
var tomlTypeError = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]+)"\): incompatible types: TOML value has type (\S+); destination has type (\S+)$`)

func tomlTypeName(t string) string {
	switch t {
	case "int64", "integer", "float64", "float":
		return "a number"
	case "string":
		return "a string (in quotes)"
	case "bool":
		return "true or false"
	case "slice", "[]interface {}":
		return "a list"
	case "map[string]interface {}", "struct":
		return "a table"
	}
	return t
}

// generatedSecret reports whether gateway g's secret is made on first
// start when missing: a gateway of a kind that can make its secrets
// (standard-webhooks) whose secret_file is in the data directory (the
// embedded "test" gateway, and the example config's).
func (c *Config) generatedSecret(g GatewayConfig) bool {
	k, _ := gateway.Lookup(g.Kind)
	return k.NewSecret != nil && g.SecretFile != "" && filepath.Dir(g.SecretFile) == c.dataDir()
}

// receivers are the merchant's accounts a payment through gateway g must
// be addressed to: its receivers and orders.receivers (none: any).
func (c *Config) receivers(g GatewayConfig) []string {
	return append(append([]string(nil), g.Receivers...), c.Orders.Receivers...)
}

// validate checks the loaded config, section by section, and returns the
// first problem as a configError naming the key.
func (c *Config) validate() error {
	for _, check := range []func() error{c.validateListeners, c.validateStore, c.validateDelivery, c.validateLog, c.validatePipeline, c.validateFulfilment} {
		if err := check(); err != nil {
			return err
		}
	}
	if !c.embedded && len(c.Gateways) == 0 {
		return configError("gateway", "[]", "no [[gateway]] is configured: nothing could post to /ipn/")
	}
	if sameAddress(c.Server.Listen, c.Admin.Listen) {
		return configError("admin.listen", c.Admin.Listen, "must differ from server.listen (the public listener)")
	}
	seen := map[string]bool{}
	for i, g := range c.Gateways {
		key := fmt.Sprintf("gateway[%d]", i)
		if !gatewayName.MatchString(g.Name) {
			return configError(key+".name", g.Name, "must be 1-63 lowercase letters, digits, - or _")
		}
		if seen[g.Name] {
			return configError(key+".name", g.Name, "another gateway has this name")
		}
		seen[g.Name] = true
		if err := c.validateGateway(key, g); err != nil {
			return err
		}
	}
	return nil
}

// validateListeners checks [server] (TLS included) and [admin].
func (c *Config) validateListeners() error {
	s := c.Server
	if err := checkListen("server.listen", s.Listen); err != nil {
		return err
	}
	if err := checkListen("admin.listen", c.Admin.Listen); err != nil {
		return err
	}
	if s.MaxBodyBytes <= 0 || s.MaxBodyBytes > 64<<20 {
		return configError("server.max_body_bytes", s.MaxBodyBytes, "must be between 1 and 67108864")
	}
	if s.ReadTimeout <= 0 {
		return configError("server.read_timeout", s.ReadTimeout.String(), "must be positive")
	}
	if s.WriteTimeout <= 0 {
		return configError("server.write_timeout", s.WriteTimeout.String(), "must be positive")
	}
	if !(s.RateLimit >= 0 && s.RateLimit <= 1e6) { // also refuses NaN and ±Inf
		return configError("server.rate_limit", s.RateLimit, "must be 0 (off) or a number of requests per second up to 1000000")
	}
	if s.RateBurst < 0 || s.RateBurst > 1e6 {
		return configError("server.rate_burst", s.RateBurst, "must be 0 to 1000000")
	}
	if _, err := parsePrefixes("server.trusted_proxies", s.TrustedProxies); err != nil {
		return err
	}
	if _, err := parsePrefixes("admin.trusted_proxies", c.Admin.TrustedProxies); err != nil {
		return err
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if c.Admin.Token != "" && c.Admin.TokenFile != "" {
		return configError("admin.token_file", c.Admin.TokenFile, "give token or token_file, not both")
	}
	return nil
}

// validateStore checks [store].
func (c *Config) validateStore() error {
	if c.Store.Path == "" {
		return configError("store.path", "", "must name the database file")
	}
	switch c.Store.Backend {
	case backendBbolt:
		if c.Store.DSN != "" {
			return configError("store.dsn", "<redacted>", `is for backend = "postgres" (the backend is bbolt)`)
		}
		if c.Store.DSNFile != "" {
			return configError("store.dsn_file", c.Store.DSNFile, `is for backend = "postgres" (the backend is bbolt)`)
		}
	case backendPostgres:
		switch {
		case c.Store.DSN != "" && c.Store.DSNFile != "":
			return configError("store.dsn_file", c.Store.DSNFile, "give dsn or dsn_file, not both")
		case c.Store.DSN == "" && c.Store.DSNFile == "":
			return configError("store.dsn", "", `backend = "postgres" needs dsn or dsn_file`)
		}
		if _, err := c.storeDSN(); err != nil {
			return err
		}
	default:
		return configError("store.backend", c.Store.Backend, `must be "bbolt" or "postgres"`)
	}
	if c.Orders.ParkFor < 0 {
		return configError("orders.park_for", c.Orders.ParkFor.String(), "must be 0 (wait forever) or positive")
	}
	if c.Store.RawRetention < 0 {
		return configError("store.raw_retention", c.Store.RawRetention.String(), "must be 0 (forever) or positive")
	}
	return nil
}

// validateDelivery checks what delivers the effects: [smtp], [email] and
// [shop].
func (c *Config) validateDelivery() error {
	switch c.SMTP.TLS {
	case "starttls", "tls", "none":
	default:
		return configError("smtp.tls", c.SMTP.TLS, `must be "starttls", "tls" or "none"`)
	}
	if c.SMTP.Port <= 0 || c.SMTP.Port > 65535 {
		return configError("smtp.port", c.SMTP.Port, "must be a TCP port")
	}
	if c.SMTP.Password != "" && c.SMTP.PasswordFile != "" {
		return configError("smtp.password_file", c.SMTP.PasswordFile, "give password or password_file, not both")
	}
	if c.Email.MaxAttempts < 1 {
		return configError("email.max_attempts", c.Email.MaxAttempts, "must be at least 1")
	}
	if c.Email.Connections < 1 || c.Email.Connections > 16 {
		return configError("email.connections", c.Email.Connections, "must be 1 to 16")
	}
	if c.Email.Unrecorded < 1 || c.Email.Unrecorded > 64 {
		return configError("email.unrecorded", c.Email.Unrecorded, "must be 1 to 64")
	}
	if c.Shop.Connections < 1 || c.Shop.Connections > 64 {
		return configError("shop.connections", c.Shop.Connections, "must be 1 to 64")
	}
	if c.Shop.Secret != "" && c.Shop.SecretFile != "" {
		return configError("shop.secret_file", c.Shop.SecretFile, "give secret or secret_file, not both")
	}
	if c.Shop.URL != "" {
		if u, err := url.Parse(c.Shop.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return configError("shop.url", c.Shop.URL, "must be an http(s) URL")
		}
		if c.Shop.Secret == "" && c.Shop.SecretFile == "" {
			return configError("shop.secret", "", "shop.url needs a secret to sign callbacks (whsec_ + base64, as Standard Webhooks)")
		}
	}
	if c.Shop.Secret != "" {
		if _, err := gateway.DecodeWebhookSecret(c.Shop.Secret); err != nil {
			return configError("shop.secret", "<redacted>", "must be whsec_ followed by base64")
		}
	}
	if c.Shop.Timeout <= 0 {
		return configError("shop.timeout", c.Shop.Timeout.String(), "must be positive")
	}
	if c.SMTP.Timeout <= 0 {
		return configError("smtp.timeout", c.SMTP.Timeout.String(), "must be positive")
	}
	if c.Shop.MaxAttempts < 1 {
		return configError("shop.max_attempts", c.Shop.MaxAttempts, "must be at least 1")
	}
	return nil
}

// validateLog checks [log].
func (c *Config) validateLog() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return configError("log.level", c.Log.Level, `must be "debug", "info", "warn" or "error"`)
	}
	switch c.Log.Format {
	case "auto", "json", "text":
	default:
		return configError("log.format", c.Log.Format, `must be "auto", "json" or "text"`)
	}
	return nil
}

// validatePipeline checks [pipeline].
func (c *Config) validatePipeline() error {
	pl := c.Pipeline
	if pl.Workers < 1 || pl.Workers > 256 {
		return configError("pipeline.workers", pl.Workers, "must be 1 to 256")
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"verify_timeout", pl.VerifyTimeout}, {"retry_base", pl.RetryBase}, {"retry_cap", pl.RetryCap}, {"retry_for", pl.RetryFor},
		{"outbox_retry_base", pl.OutboxRetryBase}, {"outbox_retry_cap", pl.OutboxRetryCap}} {
		if d.v <= 0 {
			return configError("pipeline."+d.key, d.v.String(), "must be positive")
		}
	}
	if pl.RetryCap < pl.RetryBase {
		return configError("pipeline.retry_cap", pl.RetryCap.String(), "must not be shorter than retry_base")
	}
	return nil
}

// validateGateway checks one [[gateway]] table (key "gateway[i]") against
// what its kind needs (gateway.Kind): a known kind, a secret exactly when
// the kind verifies with one, the hmac keys only for kind hmac, and the
// kind's own Check.
func (c *Config) validateGateway(key string, g GatewayConfig) error {
	kind, known := gateway.Lookup(g.Kind)
	if !known {
		return configError(key+".kind", g.Kind, "unknown kind (this build knows: "+strings.Join(gateway.Kinds(), ", ")+")")
	}
	n := 0
	for _, set := range []bool{g.Secret != "", len(g.Secrets) > 0, g.SecretFile != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return configError(key+".secret", "<redacted>", "give one of secret, secrets or secret_file")
	}
	if n > 0 && !kind.NeedsSecret {
		return configError(key+".secret", "<redacted>", "kind "+g.Kind+" verifies by postback and takes no secret (receivers says which accounts are yours)")
	}
	if n == 0 && kind.NeedsSecret {
		return configError(key+".secret", "", "gateway kind "+g.Kind+" needs a secret (secret, secrets or secret_file)")
	}
	if g.Tolerance < 0 {
		return configError(key+".tolerance", g.Tolerance.String(), "must not be negative")
	}
	if _, err := parsePrefixes(key+".allow_ips", g.AllowIPs); err != nil {
		return err
	}
	if !kind.HMACKeys && g.Header != "" {
		return configError(key+".header", g.Header, "only kind hmac takes header and the other hmac keys")
	}
	if kind.Check != nil {
		if p := kind.Check(c.gatewayOptions(g, nil)); p != nil {
			return configError(key+"."+p.Key, p.Value, p.Why)
		}
	}
	return nil
}

// sameAddress reports whether two listen addresses bind the same socket
// (port 0 picks a free port: never the same).
func sameAddress(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa == "0" || pa != pb {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	loop := func(h string) string {
		if h == "localhost" {
			return "127.0.0.1" // what Go binds for it first
		}
		return h
	}
	return loop(ha) == loop(hb) || wild(ha) || wild(hb)
}

func checkListen(key, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return configError(key, addr, "must be host:port, e.g. 127.0.0.1:8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return configError(key, addr, "port must be a number from 0 to 65535")
	}
	return nil
}

// parsePrefixes accepts addresses ("10.0.0.1") and CIDR prefixes ("10.0.0.0/8").
func parsePrefixes(key string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, configError(key, s, "not an IP address or CIDR prefix")
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// readSecretFile reads secrets from a file: one per non-empty line.
func readSecretFile(key, path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %s = %q: %v", key, path, err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, configError(key, path, "file holds no secret")
	}
	return out, nil
}

// gatewaySecrets returns the secrets of gateway g from whichever key set them.
func gatewaySecrets(key string, g GatewayConfig) ([]string, error) {
	switch {
	case g.Secret != "":
		return []string{g.Secret}, nil
	case len(g.Secrets) > 0:
		return g.Secrets, nil
	case g.SecretFile == "" && !gateway.NeedsSecret(g.Kind):
		return nil, nil
	}
	return readSecretFile(key+".secret_file", g.SecretFile)
}

// adminToken returns the configured admin token.
func (c *Config) adminToken() (string, error) {
	if c.Admin.Token != "" {
		return c.Admin.Token, nil
	}
	t, err := readSecretFile("admin.token_file", c.Admin.TokenFile)
	if err != nil {
		return "", err
	}
	return t[0], nil
}

// redacted returns the config as TOML with every secret replaced.
func (c *Config) redacted() string {
	cp := *c
	cp.Gateways = append([]GatewayConfig(nil), c.Gateways...)
	redact(reflect.ValueOf(&cp).Elem())
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(cp); err != nil {
		return "# cannot encode config: " + err.Error()
	}
	return b.String()
}

func redact(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if !v.Type().Field(i).IsExported() {
				continue
			}
			if v.Type().Field(i).Tag.Get("secret") == "true" {
				switch f.Kind() {
				case reflect.String:
					if f.String() != "" {
						f.SetString("<redacted>")
					}
				case reflect.Slice:
					if f.Len() > 0 {
						r := make([]string, f.Len())
						for j := range r {
							r[j] = "<redacted>"
						}
						f.Set(reflect.ValueOf(r))
					}
				}
				continue
			}
			redact(f)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			redact(v.Index(i))
		}
	}
}

// shopKey returns the decoded shop secret (from secret or secret_file).
func (c *Config) shopKey() ([]byte, error) {
	secret := c.Shop.Secret
	if secret == "" && c.Shop.SecretFile != "" {
		s, err := readSecretFile("shop.secret_file", c.Shop.SecretFile)
		if err != nil {
			return nil, err
		}
		secret = s[0]
	}
	if secret == "" {
		return nil, nil
	}
	k, err := gateway.DecodeWebhookSecret(secret)
	if err != nil {
		return nil, configError("shop.secret", "<redacted>", "must be whsec_ followed by base64")
	}
	return k, nil
}

// smtpPassword returns the SMTP password (from password or password_file).
func (c *Config) smtpPassword() (string, error) {
	if c.SMTP.PasswordFile == "" {
		return c.SMTP.Password, nil
	}
	p, err := readSecretFile("smtp.password_file", c.SMTP.PasswordFile)
	if err != nil {
		return "", err
	}
	return p[0], nil
}
