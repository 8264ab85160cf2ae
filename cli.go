package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/store"
)

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
				return err
			}
			secret = "secret generated on first start in " + g.SecretFile
			k, _ := gateway.Lookup(g.Kind)
			secrets = []string{k.NewSecret()} // stand-in
		}
		// Build the adapter exactly as serve will, so that check fails when serve would.
		if _, err := gateway.New(cfg.gatewayOptions(g, secrets)); err != nil {
			return fmt.Errorf("config: %s (%q): %w", key, g.Name, err)
		}
		lines = append(lines, fmt.Sprintf("# gateway %q (%s): POST /ipn/%s, %s\n", g.Name, g.Kind, g.Name, secret))
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
	fmt.Fprintf(stdout, "# public listener %s, admin listener %s, database %s\n", cfg.Server.Listen, cfg.Admin.Listen, cfg.Store.Path)
	fmt.Fprint(stdout, cfg.tlsSummary())
	fmt.Fprint(stdout, strings.Join(lines, ""))
	if cfg.SMTP.Host == "" {
		fmt.Fprintf(stdout, "# mail: written as .eml files under %s/mail\n", cfg.dataDir())
	}
	if cfg.Email.MerchantTo == "" {
		fmt.Fprintln(stdout, "# warning: email.merchant_to is empty: merchant alerts (order in review, dispute, failed verification) have nowhere to go; they are recorded as skipped (ipnd outbox skipped)")
	}
	fmt.Fprint(stdout, cfg.redacted())
	return nil
}

// readAddr returns the address a listener configured as listen is bound
// to: listen itself, or, for port 0, what the running server recorded.
func readAddr(cfg *Config, listen, which string) (string, error) {
	host, port, _ := net.SplitHostPort(listen)
	if port == "0" {
		b, err := os.ReadFile(addrFile(cfg, which))
		if err != nil {
			return "", fmt.Errorf("%s listener has port 0 and no running ipnd recorded its address: %w", which, err)
		}
		listen = strings.TrimSpace(string(b))
		host, port, _ = net.SplitHostPort(listen)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func cmdSimulate(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("simulate", getenv, stdout)
	amount := fs.String("amount", "19.99", "amount, an exact decimal")
	currency := fs.String("currency", "USD", "currency (ISO 4217)")
	order := fs.String("order", "", "merchant order id (default: ORDER-<time>)")
	email := fs.String("email", "buyer@example.com", "customer email")
	status := fs.String("status", "completed", "payment status: completed, pending, failed, refunded, ...")
	target := fs.String("url", "", "public base URL of ipnd (default: from the config)")
	wait := fs.Duration("wait", 10*time.Second, "wait this long for ipnd to process the notification and print what it did; 0: only send")
	if err := fs.parse(args, 1, 1, "GATEWAY"); err != nil {
		return err
	}
	if *wait < 0 {
		return usageErrorf("simulate: -wait %s: must be 0 or more", *wait)
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	name := fs.Arg(0)
	var gc *GatewayConfig
	idx := 0
	for i := range cfg.Gateways {
		if cfg.Gateways[i].Name == name {
			gc, idx = &cfg.Gateways[i], i
		}
	}
	if gc == nil {
		return fmt.Errorf("simulate: no gateway named %q in the config", name)
	}
	secrets, err := gatewaySecrets(fmt.Sprintf("gateway[%d]", idx), *gc)
	if err != nil {
		return fmt.Errorf("simulate: %w (has ipnd serve run once?)", err)
	}
	if *order == "" {
		*order = fmt.Sprintf("ORDER-%d", time.Now().UnixNano()%1e9)
	}
	amt, err := ipn.NormalizeAmount(*amount, *currency)
	if err != nil {
		return fmt.Errorf("simulate: -amount: %w", err)
	}
	s := sample{order: *order, amount: amt, currency: strings.ToUpper(*currency), email: *email, status: *status, now: time.Now()}
	req, err := s.request(gc.Kind, secrets)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	base := *target
	if base == "" {
		addr, err := readAddr(cfg, cfg.Server.Listen, "public")
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		scheme := "http"
		if cfg.Server.TLSCert != "" {
			scheme = "https"
		}
		base = scheme + "://" + addr
	}
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/ipn/" + url.PathEscape(name))
	if err != nil || u.Host == "" {
		return usageErrorf("simulate: -url %q: want a URL such as https://shop.example.com", base)
	}
	req.URL, req.Host = u, u.Host

	// What the order was before, to say what the notification changed.
	var c *adminClient
	var before *ipn.Order
	if *wait > 0 {
		if c, err = fs.adminClient(cfg); err != nil {
			return fmt.Errorf("simulate: %w (or -wait 0 to send without reading the outcome)", err)
		}
		if before, err = c.order(ctx, *order); err != nil {
			return fmt.Errorf("simulate: %w (or -wait 0 to send without reading the outcome)", err)
		}
	}

	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("simulate: %w (is ipnd serve running?)", err)
	}
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	answer := resp.Status
	if r := strings.TrimSpace(string(reply)); r != "" && r != "OK" {
		answer += ": " + r
	}
	fmt.Fprintf(stdout, "POST %s -> %s\nsent %s for order %s, %s %s\n", u, answer, s.what, *order, amt, s.currency)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("simulate: ipnd answered %s", resp.Status)
	}
	if *wait == 0 {
		fmt.Fprintln(stdout, "not waiting for the outcome (-wait 0): ipnd ls shows what ipnd did")
		return nil
	}
	return c.reportOutcome(ctx, stdout, simulated{gateway: *gc, marker: s.marker, order: *order, before: before, wait: *wait})
}

// sample is the notification simulate sends.
type sample struct {
	order, amount, currency, email, status string
	now                                    time.Time
	what                                   string // what was sent, for the operator
	marker                                 string // a unique string in the body, to find it in the admin API
}

// request builds the signed POST for a gateway of kind (URL unset): the
// kind's sample notification (gateway.Kind.Sample).
func (s *sample) request(kind string, secrets []string) (*http.Request, error) {
	k, _ := gateway.Lookup(kind)
	if k.Sample == nil {
		return nil, fmt.Errorf("gateway kind %q is not simulated", kind)
	}
	signed, err := k.Sample(gateway.Sample{Order: s.order, Amount: s.amount, Currency: s.currency, Email: s.email,
		Status: s.status, Now: s.now}, secrets)
	if err != nil {
		return nil, err
	}
	s.what, s.marker = signed.What, signed.Marker
	req, err := http.NewRequest(http.MethodPost, "http://ipnd.invalid/", bytes.NewReader(signed.Body))
	if err != nil {
		return nil, err
	}
	req.Header = signed.Header
	req.Header.Set("User-Agent", "ipnd-simulate/"+version)
	return req, nil
}

// simulated is what reportOutcome looks for.
type simulated struct {
	gateway GatewayConfig
	marker  string     // in the notification's body
	order   string     // the order id sent
	before  *ipn.Order // nil: no such order before
	wait    time.Duration
}

// reportOutcome waits (up to s.wait) until the pipeline has finished the
// simulated notification, then prints its state and reason, the order
// before and after, and the outbox items it queued. A notification that
// ended invalid or failed, or did not finish in time, is an error.
func (c *adminClient) reportOutcome(ctx context.Context, stdout io.Writer, s simulated) error {
	deadline := time.Now().Add(s.wait)
	var n *admin.Notification
	for pause := 20 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		var err error
		if n == nil {
			n, err = c.findNotification(ctx, s.gateway.Name, s.marker)
		} else {
			err = c.getJSON(ctx, "/api/notifications/"+strconv.FormatUint(n.ID, 10), n)
		}
		if err != nil {
			return fmt.Errorf("simulate: reading the outcome: %w", err)
		}
		if n != nil && n.State.Final() {
			break
		}
		left := time.Until(deadline)
		if left <= 0 {
			if n == nil {
				return fmt.Errorf("simulate: notification not processed within %s (the admin API does not list it)", s.wait)
			}
			return fmt.Errorf("simulate: notification %d not processed within %s: still %s (ipnd show %d)", n.ID, s.wait, n.State, n.ID)
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	reason := lastDetail(n)
	line := fmt.Sprintf("notification %d: state %s", n.ID, n.State)
	if n.DuplicateOf != 0 {
		line += fmt.Sprintf(" (of notification %d)", n.DuplicateOf)
	}
	if reason != "" {
		line += ": " + reason
	}
	fmt.Fprintln(stdout, line)

	orderID := s.order
	if n.Event != nil && n.Event.OrderID != "" {
		orderID = n.Event.OrderID
	}
	after, err := c.order(ctx, orderID)
	if err != nil {
		return fmt.Errorf("simulate: reading the outcome: %w", err)
	}
	was := "none"
	if s.before != nil && orderID == s.order {
		was = string(s.before.Status)
	}
	if after == nil {
		fmt.Fprintf(stdout, "order %s: %s (not changed)\n", orderID, was)
	} else {
		totals := fmt.Sprintf("paid %s %s, refunded %s", orDash(after.Paid), after.Currency, orDash(after.Refunded))
		if len(after.Flags) > 0 {
			totals += ", flags " + strings.Join(after.Flags, ",")
		}
		fmt.Fprintf(stdout, "order %s: %s -> %s (%s)\n", orderID, was, after.Status, strings.Join(strings.Fields(totals), " "))
	}

	var queued outboxList
	if err := c.getJSON(ctx, "/api/outbox?notification="+strconv.FormatUint(n.ID, 10), &queued); err != nil {
		return fmt.Errorf("simulate: reading the outcome: %w", err)
	}
	if len(queued.Items) == 0 {
		fmt.Fprintln(stdout, "queued: nothing (no email, callback or script)")
	}
	for _, it := range queued.Items {
		what := it.Effect.Kind
		if it.Effect.Template != "" {
			what += " " + it.Effect.Template
		}
		extra := ""
		if it.LastError != "" {
			extra = ", last error: " + it.LastError
		}
		fmt.Fprintf(stdout, "queued: %s (outbox %d, %s%s)\n", what, it.ID, it.State, extra)
	}

	if n.State == ipn.StateInvalid && strings.HasPrefix(reason, "test_payment") && !s.gateway.Sandbox {
		fmt.Fprintf(stdout, "gateway %q is live: it stores test-mode events but does not apply them. To try ipnd end to end,\n"+
			"add a second gateway of kind %q with sandbox = true and simulate that one (README: \"Testing with a sandbox gateway\").\n",
			s.gateway.Name, s.gateway.Kind)
	}
	if n.State == ipn.StateInvalid || n.State == ipn.StateFailed {
		return fmt.Errorf("simulate: notification %d ended %s: %s", n.ID, n.State, orDash(reason))
	}
	return nil
}

// findNotification returns the newest notification of gateway whose body
// contains marker, nil when none (yet).
func (c *adminClient) findNotification(ctx context.Context, gateway, marker string) (*admin.Notification, error) {
	var list admin.NotificationList
	if err := c.getJSON(ctx, "/api/notifications?limit=200&gateway="+url.QueryEscape(gateway), &list); err != nil {
		return nil, err
	}
	for i := range list.Notifications {
		if b := list.Notifications[i].Body; b != nil && strings.Contains(*b, marker) {
			return &list.Notifications[i], nil
		}
	}
	return nil, nil
}

// order returns an order, nil when there is none of that id.
func (c *adminClient) order(ctx context.Context, id string) (*ipn.Order, error) {
	var o ipn.Order
	err := c.getJSON(ctx, "/api/orders/"+url.PathEscape(id), &o)
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// lastDetail is the reason recorded with the notification's current
// state (the last history entry's detail).
func lastDetail(n *admin.Notification) string {
	if len(n.History) == 0 {
		return ""
	}
	return n.History[len(n.History)-1].Detail
}

// adminClient talks to the admin API of a running ipnd.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// adminBase turns the -admin value (HOST:PORT, or an http(s) URL) into
// the API's base URL.
func adminBase(s string) (string, error) {
	raw := s
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", usageErrorf("-admin (or IPND_ADMIN_URL) %q: want HOST:PORT or an http(s) URL, e.g. 127.0.0.1:8081", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

func newAdminClient(cfg *Config, base string) (*adminClient, error) {
	if base == "" {
		addr, err := readAddr(cfg, cfg.Admin.Listen, "admin")
		if err != nil {
			return nil, err
		}
		base = "http://" + addr
	}
	token, err := cfg.adminToken()
	if err != nil {
		return nil, fmt.Errorf("%w (set IPND_ADMIN_TOKEN, or run ipnd serve once to generate it)", err)
	}
	return &adminClient{base: base, token: token, http: &http.Client{Timeout: 5 * time.Minute}}, nil
}

// apiError is an answer of the admin API other than 2xx.
type apiError struct {
	status int
	text   string // e.g. "404 Not Found"
	msg    string // the API's {"error": ...}
}

func (e *apiError) Error() string { return fmt.Sprintf("admin API: %s: %s", e.text, e.msg) }

// get performs GET path and returns the response; any non-2xx is an
// *apiError carrying the API's {"error": ...} message.
func (c *adminClient) get(ctx context.Context, path string) (*http.Response, error) {
	return c.do(ctx, http.MethodGet, path)
}

func (c *adminClient) do(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w (is ipnd serve running?)", err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		return nil, &apiError{status: resp.StatusCode, text: resp.Status, msg: e.Error}
	}
	return resp, nil
}

func (c *adminClient) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// clientCommand makes the flag set of a command that uses the admin API.
func clientCommand(name string, getenv func(string) string, stdout io.Writer) *clientFlags {
	fs := newCmdline(name, getenv, stdout)
	base := fs.String("admin", getenv("IPND_ADMIN_URL"), "admin API: HOST:PORT or URL (env IPND_ADMIN_URL; default from the config)")
	return &clientFlags{cmdline: fs, adminURL: base}
}

type clientFlags struct {
	*cmdline
	adminURL *string
}

// client checks -admin, loads the config and returns the admin client.
func (f *clientFlags) client(getenv func(string) string) (*adminClient, error) {
	if *f.adminURL != "" {
		if _, err := adminBase(*f.adminURL); err != nil {
			return nil, err
		}
	}
	cfg, err := loadConfig(*f.config, getenv)
	if err != nil {
		return nil, err
	}
	return f.adminClient(cfg)
}

func (f *clientFlags) adminClient(cfg *Config) (*adminClient, error) {
	base := ""
	if *f.adminURL != "" {
		var err error
		if base, err = adminBase(*f.adminURL); err != nil {
			return nil, err
		}
	}
	return newAdminClient(cfg, base)
}

// listFlags adds -limit and -json, which every list command has.
func (f *clientFlags) listFlags() (limit *int, asJSON *bool) {
	return f.Int("limit", 50, "at most this many (1 to 1000)"), f.Bool("json", false, "print the API's JSON")
}

func checkLimit(name string, limit int) error {
	if limit < 1 || limit > 1000 {
		return usageErrorf("%s: -limit %d: must be 1 to 1000", name, limit)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
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
		fmt.Fprintln(stdout, "(no notifications)")
	}
	if list.NextBefore > 0 {
		fmt.Fprintf(stdout, "more: ipnd ls -before %d\n", list.NextBefore)
	}
	return nil
}

// clip shortens s to at most n runes for a table cell, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// idCommand parses "ipnd NAME [flags] ID" and returns the admin client and the id.
func idCommand(name string, args []string, getenv func(string) string, stdout io.Writer) (*adminClient, uint64, error) {
	fs := clientCommand(name, getenv, stdout)
	if err := fs.parse(args, 1, 1, "ID"); err != nil {
		return nil, 0, err
	}
	id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
	if err != nil || id == 0 {
		what := "a notification id"
		if name == "outbox retry" {
			what = "an outbox item id"
		}
		return nil, 0, usageErrorf("%s: %q is not %s; usage: %s", name, fs.Arg(0), what, fs.synopsis())
	}
	c, err := fs.client(getenv)
	return c, id, err
}

func cmdReplay(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	c, id, err := idCommand("replay", args, getenv, stdout)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/api/notifications/"+strconv.FormatUint(id, 10)+"/replay")
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(stdout, "notification %d scheduled for replay\n", id)
	return nil
}

func cmdShow(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	c, id, err := idCommand("show", args, getenv, stdout)
	if err != nil {
		return err
	}
	var n json.RawMessage
	if err := c.getJSON(ctx, "/api/notifications/"+strconv.FormatUint(id, 10), &n); err != nil {
		return err
	}
	var out bytes.Buffer
	json.Indent(&out, n, "", "  ")
	out.WriteByte('\n')
	_, err = out.WriteTo(stdout)
	return err
}

func cmdBackup(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("backup", getenv, stdout)
	if err := fs.parse(args, 1, 1, "FILE"); err != nil {
		return err
	}
	dst := fs.Arg(0)
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	resp, err := c.get(ctx, "/api/backup")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	tmp := dst + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	n, err := io.Copy(f, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var fi store.FileInfo
	if err == nil {
		// Check what was written before it replaces an older good backup.
		if fi, err = store.Inspect(tmp); err != nil {
			err = fmt.Errorf("what was written does not check: %w", err)
		}
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes): %s\n", dst, n, fi)
	return nil
}

// cmdRestore installs a backup with ipnd stopped (see store.Restore).
func cmdRestore(_ context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newCmdline("restore", getenv, stdout)
	if err := fs.parse(args, 1, 1, "BACKUP"); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	fi, aside, err := store.Restore(cfg.Store.Path, fs.Arg(0), time.Now())
	if err != nil {
		return err
	}
	if aside != "" {
		fmt.Fprintf(stdout, "moved the previous database and journal to %s (delete it once the restore is fine)\n", aside)
	}
	fmt.Fprintf(stdout, "restored %s as %s: %s\n", fs.Arg(0), cfg.Store.Path, fi)
	return nil
}

// cmdOrders lists orders, or shows one with its history.
func cmdOrders(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("orders", getenv, stdout)
	status := fs.String("status", "", "only orders in this status")
	before := fs.String("before", "", "only order ids below this (paging)")
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
		var out bytes.Buffer
		json.Indent(&out, o, "", "  ")
		out.WriteByte('\n')
		_, err = out.WriteTo(stdout)
		return err
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
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDER\tSTATUS\tAMOUNT\tPAID\tREFUNDED\tFLAGS\tUPDATED")
	for _, o := range list.Orders {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.ID, o.Status, orDash(strings.TrimSpace(o.Amount+" "+o.Currency)),
			o.Paid, o.Refunded, orDash(strings.Join(o.Flags, ",")), o.UpdatedAt.Local().Format("2006-01-02 15:04:05"))
	}
	tw.Flush()
	if len(list.Orders) == 0 {
		fmt.Fprintln(stdout, "(no orders)")
	}
	if list.NextBefore != "" {
		fmt.Fprintf(stdout, "more: ipnd orders -before %s\n", list.NextBefore)
	}
	return nil
}

// outboxList is the answer of GET /api/outbox.
type outboxList struct {
	Items []ipn.OutboxItem `json:"items"`
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
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKIND\tTEMPLATE\tORDER\tNOTIFICATION\tATTEMPTS\tLAST ERROR")
	for _, it := range out.Items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", it.ID, it.State, it.Effect.Kind, orDash(it.Effect.Template),
			orDash(it.Effect.OrderID), it.Notification, it.Attempts, orDash(clip(it.LastError, 80)))
	}
	tw.Flush()
	if len(out.Items) == 0 {
		fmt.Fprintln(stdout, "(no items)")
	}
	if len(out.Items) == *limit {
		fmt.Fprintf(stdout, "(the first %d; -limit shows more)\n", *limit)
	}
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

// cmdRecover opens the database as serve would (ipnd must be stopped) and
// applies what the journal holds. On a damaged journal it reports the
// damage and fails, unless -skip-damaged: then every readable frame is
// applied, the ids at stake are recorded as lost (never given again;
// show answers 410 for them) and each damaged segment is renamed to
// <segment>.damaged.
func cmdRecover(_ context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newCmdline("recover", getenv, stdout)
	skip := fs.Bool("skip-damaged", false, "apply every readable frame of a damaged journal and record the rest as lost")
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	db, err := store.Open(cfg.Store.Path, store.Options{SkipDamaged: *skip})
	if err != nil {
		if errors.Is(err, store.ErrJournalDamaged) {
			fmt.Fprintln(stdout, "journal damaged; nothing was changed. Re-run with -skip-damaged to go on.")
		}
		return err
	}
	damage, recovered, applyErr := db.Damaged(), db.Recovered(), db.ApplyErr()
	if err := db.Close(); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if applyErr != nil {
		return fmt.Errorf("recover: %w", applyErr)
	}
	for _, d := range damage {
		fmt.Fprintf(stdout, "lost: %s\n", d)
	}
	if len(damage) > 0 {
		fmt.Fprintf(stdout, "damaged segments moved aside as *.damaged; the lost ids are recorded and never given again\n")
	}
	fmt.Fprintf(stdout, "recovered %d notifications from the journal into %s\n", recovered, cfg.Store.Path)
	return nil
}

// cmdStats prints where the bytes on disk go: per bucket, per
// notification, and the journal; then any ids lost to journal damage.
func cmdStats(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("stats", getenv, stdout)
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	var st admin.Stats
	if err := c.getJSON(ctx, "/api/stats", &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "BUCKET\tKEYS\tBYTES\tIN USE\tBYTES/NOTIFICATION\t\n")
	for _, b := range st.Buckets {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t\n", b.Name, b.Keys, b.Bytes, b.InUse, b.PerNotification)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "notifications %d; database file %d bytes (%.0f per notification, %d free); journal %d bytes\n",
		st.Notifications, st.FileBytes, st.PerNotification, st.FreeBytes, st.JournalBytes)
	for _, l := range st.Lost {
		fmt.Fprintf(stdout, "lost ids %d-%d (%s: %s; recorded %s)\n", l.First, l.Last, l.Segment, l.Reason,
			l.RecordedAt.Format(time.RFC3339))
	}
	return nil
}
