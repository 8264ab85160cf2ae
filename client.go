package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
)

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

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printIndented prints an answer of the admin API as it came, indented.
func printIndented(w io.Writer, raw json.RawMessage) error {
	var out bytes.Buffer
	json.Indent(&out, raw, "", "  ")
	out.WriteByte('\n')
	_, err := out.WriteTo(w)
	return err
}

// outboxList is the answer of GET /api/outbox.
type outboxList struct {
	Items []ipn.OutboxItem `json:"items"`
}

// lastDetail is the reason recorded with the notification's current
// state (the last history entry's detail).
func lastDetail(n *admin.Notification) string {
	if len(n.History) == 0 {
		return ""
	}
	return n.History[len(n.History)-1].Detail
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

// terminal wraps w, where a command prints text for a person: control
// characters in it (C0 but tab and newline, DEL, C1) are written as
// visible escapes (\x1b, \u009b). Order ids, reasons, a shop's answer
// or a script's stderr come from outside (a buyer chooses an order id)
// and must not drive the merchant's terminal: retitle it, clear it,
// move the cursor over earlier lines. JSON output needs no such care:
// encoding/json escapes C0 itself.
func terminal(w io.Writer) io.Writer { return termWriter{w} }

type termWriter struct{ w io.Writer }

func (t termWriter) Write(p []byte) (int, error) {
	clean := true
	for _, r := range string(p) {
		if isTermControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return t.w.Write(p)
	}
	var b strings.Builder
	for _, r := range string(p) {
		switch {
		case !isTermControl(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	if _, err := io.WriteString(t.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

func isTermControl(r rune) bool {
	return (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r <= 0x9f)
}
