package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/store"
)

func cmdCheck(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, path := commandFlags("check", getenv, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, getenv)
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
		if !ipn.NeedsSecret(g.Kind) {
			secret = "verified by postback"
		}
		key := fmt.Sprintf("gateway[%d]", i)
		secrets, err := gatewaySecrets(key, g)
		if err != nil {
			if !cfg.generatedSecret(g) {
				return err
			}
			secret = "secret generated on first start in " + g.SecretFile
			secrets = []string{"whsec_" + base64.StdEncoding.EncodeToString(randomBytes(32))} // stand-in
		}
		// Build the adapter exactly as serve will, so that check fails when serve would.
		if _, err := ipn.NewGateway(gatewayOptions(g, secrets)); err != nil {
			return fmt.Errorf("config: %s (%q): %w", key, g.Name, err)
		}
		lines = append(lines, fmt.Sprintf("# gateway %q (%s): POST /ipn/%s, %s\n", g.Name, g.Kind, g.Name, secret))
	}
	fmt.Fprintf(stdout, "# ipnd %s: config from %s is valid\n", version, src)
	fmt.Fprintf(stdout, "# public listener %s, admin listener %s, database %s\n", cfg.Server.Listen, cfg.Admin.Listen, cfg.Store.Path)
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

func cmdSimulate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, path := commandFlags("simulate", getenv, stderr)
	amount := fs.String("amount", "19.99", "amount, an exact decimal")
	currency := fs.String("currency", "USD", "currency (ISO 4217)")
	order := fs.String("order", "", "merchant order id (default: ORDER-<time>)")
	email := fs.String("email", "buyer@example.com", "customer email")
	status := fs.String("status", "completed", "payment status: completed, pending, failed, refunded, ...")
	target := fs.String("url", "", "public base URL of ipnd (default: from the config)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ipnd simulate [flags] GATEWAY")
		fs.PrintDefaults()
	}
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("simulate: name one gateway")
	}
	cfg, err := loadConfig(*path, getenv)
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
	now := time.Now()
	var body []byte
	h := http.Header{"Content-Type": {"application/json"}, "User-Agent": {"ipnd-simulate/" + version}}
	switch gc.Kind {
	case "standard-webhooks":
		id := "msg_sim_" + hex.EncodeToString(randomBytes(8))
		body, _ = json.Marshal(map[string]any{
			"type":      "payment." + *status,
			"timestamp": now.UTC().Format(time.RFC3339),
			"data": map[string]any{"txn_id": "SIM-" + hex.EncodeToString(randomBytes(6)), "order_id": *order,
				"amount": amt, "currency": strings.ToUpper(*currency), "status": *status, "customer_email": *email},
		})
		key, err := ipn.DecodeWebhookSecret(secrets[0])
		if err != nil {
			return fmt.Errorf("simulate: gateway %q secret: %w", name, err)
		}
		h.Set("Webhook-Id", id)
		h.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
		h.Set("Webhook-Signature", ipn.SignWebhook(key, id, now.Unix(), body))
	case "stripe":
		minor := strings.Replace(amt, ".", "", 1)
		minor = strings.TrimLeft(minor, "0")
		if minor == "" {
			minor = "0"
		}
		evType := map[string]string{"completed": "checkout.session.completed", "failed": "payment_intent.payment_failed",
			"refunded": "charge.refunded", "pending": "payment_intent.processing"}[*status]
		if evType == "" {
			return fmt.Errorf("simulate: -status %q has no stripe event here (completed, pending, failed, refunded)", *status)
		}
		body = []byte(fmt.Sprintf(`{"id":"evt_sim_%s","object":"event","type":%q,"livemode":false,"created":%d,"data":{"object":{"id":"cs_sim_%s","object":"checkout.session","client_reference_id":%q,"amount_total":%s,"amount":%s,"amount_refunded":%s,"currency":%q,"payment_status":"paid","customer_details":{"email":%q}}}}`,
			hex.EncodeToString(randomBytes(8)), evType, now.Unix(), hex.EncodeToString(randomBytes(6)), *order, minor, minor, minor,
			strings.ToLower(*currency), *email))
		h.Set("Stripe-Signature", "t="+strconv.FormatInt(now.Unix(), 10)+",v1="+hex.EncodeToString(ipn.StripeSignature(secrets[0], now.Unix(), body)))
	default:
		return fmt.Errorf("simulate: gateway kind %q is not simulated", gc.Kind)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/ipn/"+name, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = h
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("simulate: %w (is ipnd serve running?)", err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprintf(stdout, "POST %s -> %s %s\norder %s, %s %s, status %s\n", req.URL, resp.Status,
		strings.TrimSpace(string(reply)), *order, amt, strings.ToUpper(*currency), *status)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("simulate: ipnd answered %s", resp.Status)
	}
	return nil
}

// reorder moves flags before positional arguments, so that
// "simulate test -amount 5" works like "simulate -amount 5 test".
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

// adminClient talks to the admin API of a running ipnd.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func newAdminClient(cfg *Config, override string) (*adminClient, error) {
	base := override
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
	return &adminClient{base: strings.TrimSuffix(base, "/"), token: token, http: &http.Client{Timeout: 5 * time.Minute}}, nil
}

// get performs GET path and returns the response; any non-2xx is an error
// carrying the API's {"error": ...} message.
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
		return nil, fmt.Errorf("admin API: %s: %s", resp.Status, e.Error)
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
func clientCommand(name string, getenv func(string) string, stderr io.Writer) *clientFlags {
	fs, path := commandFlags(name, getenv, stderr)
	base := fs.String("admin", getenv("IPND_ADMIN_URL"), "admin API base URL (env IPND_ADMIN_URL; default from the config)")
	return &clientFlags{FlagSet: fs, config: path, adminURL: base}
}

type clientFlags struct {
	*flag.FlagSet
	config   *string
	adminURL *string
}

func (f *clientFlags) client(getenv func(string) string) (*adminClient, error) {
	cfg, err := loadConfig(*f.config, getenv)
	if err != nil {
		return nil, err
	}
	return newAdminClient(cfg, *f.adminURL)
}

func cmdList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := clientCommand("ls", getenv, stderr)
	gateway := fs.String("gateway", "", "only this gateway")
	state := fs.String("state", "", "only this state")
	order := fs.String("order", "", "only this order id")
	before := fs.Uint64("before", 0, "only ids below this (paging)")
	limit := fs.Int("limit", 50, "at most this many")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	q := fmt.Sprintf("/api/notifications?limit=%d", *limit)
	for k, v := range map[string]string{"gateway": *gateway, "state": *state, "order": *order} {
		if v != "" {
			q += "&" + k + "=" + url.QueryEscape(v)
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
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tGATEWAY\tSTATE\tTYPE\tORDER\tAMOUNT")
	for _, n := range list.Notifications {
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
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.ReceivedAt.Local().Format("2006-01-02 15:04:05"),
			n.Gateway, n.State, typ, ord, amt)
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

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// idCommand parses "ipnd NAME [flags] ID" and returns the admin client and the id.
func idCommand(name string, args []string, getenv func(string) string, stderr io.Writer) (*adminClient, uint64, error) {
	fs := clientCommand(name, getenv, stderr)
	if err := fs.Parse(reorder(args)); err != nil {
		return nil, 0, err
	}
	if fs.NArg() != 1 {
		return nil, 0, fmt.Errorf("usage: ipnd %s ID", name)
	}
	id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
	if err != nil || id == 0 {
		return nil, 0, fmt.Errorf("%s: %q is not a notification id", name, fs.Arg(0))
	}
	c, err := fs.client(getenv)
	return c, id, err
}

func cmdReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, id, err := idCommand("replay", args, getenv, stderr)
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

func cmdShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, id, err := idCommand("show", args, getenv, stderr)
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

func cmdBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := clientCommand("backup", getenv, stderr)
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: ipnd backup FILE")
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
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", dst, n)
	return nil
}

// cmdOrders lists orders, or shows one with its history.
func cmdOrders(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := clientCommand("orders", getenv, stderr)
	status := fs.String("status", "", "only orders in this status")
	before := fs.String("before", "", "only order ids below this (paging)")
	limit := fs.Int("limit", 50, "at most this many")
	if err := fs.Parse(reorder(args)); err != nil {
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
	if fs.NArg() > 1 {
		return errors.New("usage: ipnd orders [flags] [ID]")
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

// cmdOutbox lists outbox items ("ipnd outbox [pending|dead|sent|skipped]")
// or retries one ("ipnd outbox retry ID").
func cmdOutbox(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "retry" {
		c, id, err := idCommand("outbox retry", args[1:], getenv, stderr)
		if err != nil {
			return err
		}
		resp, err := c.do(ctx, http.MethodPost, "/api/outbox/"+strconv.FormatUint(id, 10)+"/retry")
		if err != nil {
			return err
		}
		resp.Body.Close()
		fmt.Fprintf(stdout, "outbox item %d queued again\n", id)
		return nil
	}
	fs := clientCommand("outbox", getenv, stderr)
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	state := ""
	if fs.NArg() > 0 {
		state = fs.Arg(0)
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	var out struct {
		Items []ipn.OutboxItem `json:"items"`
	}
	if err := c.getJSON(ctx, "/api/outbox?state="+url.QueryEscape(state), &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKIND\tTEMPLATE\tORDER\tATTEMPTS\tLAST ERROR")
	for _, it := range out.Items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", it.ID, it.State, it.Effect.Kind, orDash(it.Effect.Template),
			orDash(it.Effect.OrderID), it.Attempts, orDash(it.LastError))
	}
	tw.Flush()
	if len(out.Items) == 0 {
		fmt.Fprintln(stdout, "(no items)")
	}
	return nil
}

// cmdRecover opens the database as serve would (ipnd must be stopped) and
// applies what the journal holds. On a damaged journal it reports the
// damage and fails, unless -skip-damaged: then every readable frame is
// applied, the ids at stake are recorded as lost (never given again;
// show answers 410 for them) and each damaged segment is renamed to
// <segment>.damaged.
func cmdRecover(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, path := commandFlags("recover", getenv, stderr)
	skip := fs.Bool("skip-damaged", false, "apply every readable frame of a damaged journal and record the rest as lost")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("recover: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*path, getenv)
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
func cmdStats(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := clientCommand("stats", getenv, stderr)
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("usage: ipnd stats")
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
