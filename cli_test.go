package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/ipn"
)

// runCode runs the command line through run() and returns stdout,
// stderr and the exit status main would give it.
func runCode(t *testing.T, getenv func(string) string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, getenv, &out, &errOut)
	if err != nil && exitCode(err) != 0 {
		fmt.Fprintln(&errOut, "ipnd:", err)
	}
	return out.String(), errOut.String(), exitCode(err)
}

// TestCLIExitCodes: help on stdout with exit 0, version in three
// spellings, stray or missing arguments and unknown flags exit 2 naming
// what was expected; none of them needs a running ipnd.
func TestCLIExitCodes(t *testing.T) {
	t.Chdir(t.TempDir()) // the embedded defaults read ./ipnd-data
	env := envFunc()
	for _, c := range []struct {
		args       []string
		code       int
		stdout     string // substring of stdout ("" = must be empty)
		stderr     string // substring of stderr ("" = must be empty)
		skipStdout bool
	}{
		{args: []string{"--help"}, code: 0, stdout: "usage: ipnd <command>"},
		{args: []string{"-h"}, code: 0, stdout: "usage: ipnd <command>"},
		{args: []string{"-help"}, code: 0, stdout: "usage: ipnd <command>"},
		{args: []string{"help"}, code: 0, stdout: "usage: ipnd <command>"},
		{args: []string{"help", "ls"}, code: 0, stdout: "usage: ipnd ls [flags]"},
		{args: []string{"help", "nope"}, code: 2, stderr: `unknown command "nope"`},
		{args: []string{"ls", "-h"}, code: 0, stdout: "-limit"},
		{args: []string{"serve", "-h"}, code: 0, stdout: "usage: ipnd serve [flags] [CONFIG]"},
		{args: []string{"simulate", "--help"}, code: 0, stdout: "-wait"},
		{args: []string{"outbox", "-h"}, code: 0, stdout: "-json"},
		{args: []string{"orders", "-h"}, code: 0, stdout: "-json"},
		{args: []string{"outbox", "retry", "-h"}, code: 0, stdout: "usage: ipnd outbox retry [flags] ID"},
		{args: []string{"version"}, code: 0, stdout: "ipnd " + version},
		{args: []string{"--version"}, code: 0, stdout: "ipnd " + version},
		{args: []string{"-version"}, code: 0, stdout: "ipnd " + version},
		{args: []string{"version", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"serve", "extra", "extra"}, code: 2, stderr: `serve: unexpected argument "extra"`},
		{args: []string{"check", "a.toml", "b.toml"}, code: 2, stderr: `check: unexpected argument "b.toml"`},
		{args: []string{"check", "-config", "a.toml", "b.toml"}, code: 2, stderr: "the config file twice"},
		{args: []string{"ls", "extra"}, code: 2, stderr: `ls: unexpected argument "extra"; usage: ipnd ls [flags]`},
		{args: []string{"ls", "-json", "extra"}, code: 2, stderr: `ls: unexpected argument "extra"`},
		{args: []string{"ls", "-bogus"}, code: 2, stderr: "flag provided but not defined: -bogus"},
		{args: []string{"ls", "-limit", "x"}, code: 2, stderr: `invalid value "x" for flag -limit`},
		{args: []string{"show"}, code: 2, stderr: "show: missing ID"},
		{args: []string{"show", "1", "2"}, code: 2, stderr: `show: unexpected argument "2"`},
		{args: []string{"show", "abc"}, code: 2, stderr: `show: "abc" is not a notification id`},
		{args: []string{"replay"}, code: 2, stderr: "replay: missing ID"},
		{args: []string{"backup"}, code: 2, stderr: "backup: missing FILE"},
		{args: []string{"simulate"}, code: 2, stderr: "simulate: missing GATEWAY"},
		{args: []string{"simulate", "test", "other"}, code: 2, stderr: `simulate: unexpected argument "other"`},
		{args: []string{"orders", "A", "B"}, code: 2, stderr: `orders: unexpected argument "B"`},
		{args: []string{"outbox", "bogus"}, code: 2, stderr: `outbox: unexpected argument "bogus"`},
		{args: []string{"outbox", "retry"}, code: 2, stderr: "outbox retry: missing ID"},
		{args: []string{"ls", "-admin", "ftp://x"}, code: 2, stderr: "-admin"},
	} {
		stdout, stderr, code := runCode(t, env, c.args...)
		if code != c.code {
			t.Errorf("ipnd %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, c.code, stdout, stderr)
			continue
		}
		if c.stdout == "" && stdout != "" || !strings.Contains(stdout, c.stdout) {
			t.Errorf("ipnd %s: stdout %q, want it to contain %q", strings.Join(c.args, " "), stdout, c.stdout)
		}
		if c.stderr == "" && stderr != "" || !strings.Contains(stderr, c.stderr) {
			t.Errorf("ipnd %s: stderr %q, want it to contain %q", strings.Join(c.args, " "), stderr, c.stderr)
		}
	}
}

// TestCLIExitCodesProcess checks main's mapping of errors to exit codes
// on the real process: help 0 on stdout, usage error 2, failure 1.
func TestCLIExitCodesProcess(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"--help"}, 0, "usage: ipnd <command>", ""},
		{[]string{"ls", "-h"}, 0, "usage: ipnd ls [flags]", ""},
		{[]string{"--version"}, 0, "ipnd " + version, ""},
		{[]string{"ls", "extra"}, 2, "", `ipnd: ls: unexpected argument "extra"`},
		{[]string{"check", filepath.Join(dir, "missing.toml")}, 1, "", "missing.toml"},
	} {
		cmd := exec.Command(os.Args[0], c.args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "IPND_TEST_CHILD=1", "IPND_CONFIG=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(stdout.String(), c.stdout) || !strings.Contains(stderr.String(), c.stderr) ||
			(c.stdout == "" && stdout.Len() > 0) {
			t.Errorf("ipnd %s: exit %d, stdout %q, stderr %q; want exit %d, stdout ~%q, stderr ~%q",
				strings.Join(c.args, " "), code, stdout.String(), stderr.String(), c.code, c.stdout, c.stderr)
		}
	}
}

// TestCheckTakesTheConfigAsArgument: "ipnd check FILE" checks FILE, the
// same as "ipnd check -config FILE" (it used to check the embedded
// defaults and say they were valid).
func TestCheckTakesTheConfigAsArgument(t *testing.T) {
	t.Chdir(t.TempDir())
	p := writeConfig(t, "[[gateway]]\nname = \"shop-stripe\"\nkind = \"stripe\"\nsecret = \"whsec_x\"\n")
	byFlag, _, code := runCode(t, envFunc(), "check", "-config", p)
	if code != 0 {
		t.Fatalf("check -config: exit %d", code)
	}
	byArg, stderr, code := runCode(t, envFunc(), "check", p)
	if code != 0 || byArg != byFlag || !strings.Contains(byArg, "config from "+p+" is valid") || !strings.Contains(byArg, "shop-stripe") {
		t.Errorf("check FILE: exit %d\n%s%s\nwant the same as check -config FILE:\n%s", code, byArg, stderr, byFlag)
	}
	// The argument wins over IPND_CONFIG, like -config does.
	if out, _, code := runCode(t, envFunc("IPND_CONFIG", "/nonexistent.toml"), "check", p); code != 0 || out != byFlag {
		t.Errorf("check FILE with IPND_CONFIG set: exit %d\n%s", code, out)
	}
	bad := writeConfig(t, "bogus = 1\n")
	if _, stderr, code := runCode(t, envFunc(), "check", bad); code != 1 || !strings.Contains(stderr, "bogus") {
		t.Errorf("check of a bad FILE: exit %d, %s", code, stderr)
	}
}

// TestSimulateReportsWhatIpndDid: simulate waits for the pipeline and
// prints the notification's state and reason, the order before and
// after, and what was queued. On a live gateway it refuses without
// -live and sends nothing (issue 19 point 5: it used to make a real
// order in review, email the merchant and tell the shop, and the order
// could never be removed); with -live it says what it touches, and its
// order is a test order, counted apart in ipnd_orders and deletable
// (a real order is not). A sandbox gateway applies its test payment to
// a test order.
func TestSimulateReportsWhatIpndDid(t *testing.T) {
	dir := t.TempDir()
	shop, shopURL := newShopReceiver(t)
	cfg := writeTestConfig(t, dir, fmt.Sprintf(`[log]
level = "warn"
[email]
merchant_to = "owner@example.com"
[shop]
url = %q
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[gateway]]
name = "stripe"
kind = "stripe"
secret = "whsec_live_test_secret"
[[gateway]]
name = "stripe-test"
kind = "stripe"
sandbox = true
secret = "whsec_sandbox_test_secret"
`, shopURL))
	d := startDaemon(t, dir, cfg)
	env := envFunc()
	metric := func(series string) string {
		req, _ := http.NewRequest("GET", d.addr("admin")+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, series+" "); ok {
				return v
			}
		}
		return "(none)"
	}

	// Without -live: exit 1, a clear message, nothing sent.
	stdout, stderr, code := runCode(t, env, "simulate", "-config", cfg, "stripe", "-order", "ORDER-LIVE")
	if code != 1 || !strings.Contains(stderr, `gateway "stripe" is live`) || !strings.Contains(stderr, "-live") || strings.Contains(stdout, "POST") {
		t.Errorf("simulate on a live gateway without -live: exit %d, stdout %q, stderr %q; want exit 1 naming -live, nothing sent", code, stdout, stderr)
	}
	var list struct{ Notifications []struct{ ID int } }
	if d.api("GET", "/api/notifications", nil, &list); len(list.Notifications) != 0 {
		t.Errorf("simulate without -live stored %d notifications", len(list.Notifications))
	}
	if st := d.api("GET", "/api/orders/ORDER-LIVE", nil, nil); st != http.StatusNotFound {
		t.Errorf("simulate without -live: GET the order: %d, want 404", st)
	}

	// With -live: it says what it touches; the order is a test order.
	stdout, stderr, code = runCode(t, env, "simulate", "-config", cfg, "stripe", "-live", "-order", "ORDER-LIVE")
	for _, want := range []string{"is live", "test order", "owner@example.com", shopURL, "ipnd orders delete ORDER-LIVE",
		"200 OK", "state invalid", "test_payment", "order ORDER-LIVE: awaiting_payment -> review", "email_merchant order_review"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("simulate -live: stdout lacks %q\n%s", want, stdout)
		}
	}
	if code != 0 {
		t.Errorf("simulate -live: exit %d, stderr %q", code, stderr)
	}
	if strings.Contains(stdout, "status completed") {
		t.Errorf("simulate still claims completed:\n%s", stdout)
	}
	if o := waitOrder(t, d, "ORDER-LIVE", ipn.OrderReview); !o.Test {
		t.Errorf("the -live order is not a test order: %+v", o)
	}
	waitFor(t, "order.review at the shop", 15*time.Second, func() bool { return len(shop.forOrder("ORDER-LIVE")) > 0 })
	cb := shop.forOrder("ORDER-LIVE")[0]
	if o := cb["data"].(map[string]any)["order"].(map[string]any); cb["type"] != "order.review" || o["test"] != true {
		t.Errorf("shop callback %v: want order.review with data.order.test true", cb)
	}
	if got, gotTest := metric(`ipnd_orders{status="review",test="false"}`), metric(`ipnd_orders{status="review",test="true"}`); got != "0" || gotTest != "1" {
		t.Errorf("ipnd_orders review: real %s, test %s; want 0 and 1", got, gotTest)
	}

	// The reason is in ls too.
	out, _, code := runCode(t, env, "ls", "-config", cfg, "-state", "invalid")
	if code != 0 || !strings.Contains(out, "REASON") || !strings.Contains(out, "test_payment") {
		t.Errorf("ls -state invalid: exit %d\n%s", code, out)
	}

	// A real order cannot be deleted; the test order can, with its facts.
	if st := d.api("POST", "/api/orders", map[string]any{"id": "REAL-1", "amount": "5.00", "currency": "USD", "customer_email": "a@example.com"}, nil); st != http.StatusCreated {
		t.Fatalf("register REAL-1: %d", st)
	}
	if st := d.api("DELETE", "/api/orders/REAL-1", nil, nil); st != http.StatusConflict {
		t.Errorf("DELETE a real order: %d, want 409", st)
	}
	if _, stderr, code := runCode(t, env, "orders", "delete", "-config", cfg, "REAL-1"); code != 1 || !strings.Contains(stderr, "not a test order") {
		t.Errorf("orders delete REAL-1: exit %d, %s", code, stderr)
	}
	if st := d.api("DELETE", "/api/orders/NOPE", nil, nil); st != http.StatusNotFound {
		t.Errorf("DELETE a missing order: %d, want 404", st)
	}
	if out, stderr, code := runCode(t, env, "orders", "delete", "-config", cfg, "ORDER-LIVE"); code != 0 || !strings.Contains(out, "deleted") {
		t.Errorf("orders delete ORDER-LIVE: exit %d, %s%s", code, out, stderr)
	}
	if st := d.api("GET", "/api/orders/ORDER-LIVE", nil, nil); st != http.StatusNotFound {
		t.Errorf("GET a deleted order: %d, want 404", st)
	}
	if got := metric(`ipnd_orders{status="review",test="true"}`); got != "0" {
		t.Errorf("ipnd_orders review test after the delete: %s, want 0", got)
	}
	// Its facts went with it: the same id simulated again is a new order.
	if stdout, stderr, code := runCode(t, env, "simulate", "-config", cfg, "stripe", "-live", "-order", "ORDER-LIVE"); code != 0 ||
		!strings.Contains(stdout, "awaiting_payment -> review") {
		t.Errorf("simulate -live after the delete: exit %d\n%s%s", code, stdout, stderr)
	}

	stdout, stderr, code = runCode(t, env, "simulate", "-config", cfg, "stripe-test", "-order", "ORDER-SB", "-amount", "25")
	for _, want := range []string{"200 OK", "state applied", "order ORDER-SB: none -> paid", "paid 25.00 USD",
		"email_customer payment_received"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("simulate on a sandbox gateway: stdout lacks %q\n%s", want, stdout)
		}
	}
	if code != 0 {
		t.Errorf("simulate on a sandbox gateway: exit %d\n%s", code, stderr)
	}
	if o := waitOrder(t, d, "ORDER-SB", ipn.OrderPaid); !o.Test {
		t.Errorf("the sandbox order is not a test order: %+v", o)
	}
	// A second payment of the same order: the order's status before is shown.
	stdout, _, code = runCode(t, env, "simulate", "-config", cfg, "stripe-test", "-order", "ORDER-SB", "-status", "refunded", "-amount", "25")
	if code != 0 || !strings.Contains(stdout, "order ORDER-SB: paid -> refunded") {
		t.Errorf("simulated refund: exit %d\n%s", code, stdout)
	}

	// -wait 0 only sends, and says so.
	stdout, _, code = runCode(t, env, "simulate", "-config", cfg, "stripe-test", "-wait", "0")
	if code != 0 || !strings.Contains(stdout, "200 OK") || !strings.Contains(stdout, "not waiting") {
		t.Errorf("simulate -wait 0: exit %d\n%s", code, stdout)
	}
	d.drained(5)
}

// TestSimulateTimesOut: when the notification does not show up processed
// within -wait, simulate says so and exits 1 (here the POST goes to a
// stand-in that answers 200 without storing anything; the gateway is a
// live one, hence -live).
func TestSimulateTimesOut(t *testing.T) {
	d, _ := webhookDaemon(t, "")
	standIn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "OK") }))
	defer standIn.Close()
	start := time.Now()
	stdout, stderr, code := runCode(t, envFunc(), "simulate", "-config", d.cfg, "-live", "-url", standIn.URL, "-wait", "300ms", "shop")
	if code != 1 || !strings.Contains(stdout, "200 OK") || !strings.Contains(stderr, "not processed within 300ms") {
		t.Errorf("simulate with nothing processed: exit %d\n%s%s", code, stdout, stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("simulate -wait 300ms took %s", d)
	}
}

// TestAdminFlagTakesHostPort: -admin is host:port or a URL.
func TestAdminFlagTakesHostPort(t *testing.T) {
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, "[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n")
	d := startDaemon(t, dir, cfg)
	hostport := strings.TrimPrefix(d.addr("admin"), "http://")
	for _, admin := range []string{hostport, "http://" + hostport, "http://" + hostport + "/"} {
		// The config names port 0: without -admin the address comes from admin.addr;
		// a config with no such file proves the flag is used.
		other := writeTestConfig(t, t.TempDir(), "[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n")
		out, stderr, code := runCode(t, envFunc(), "ls", "-config", other, "-admin", admin)
		if code != 0 || !strings.Contains(out, "(no notifications)") {
			t.Errorf("ls -admin %s: exit %d\n%s%s", admin, code, out, stderr)
		}
	}
}

// TestListCommandsJSONAndLimit: ls, orders and outbox each take -json
// (the API's JSON) and -limit.
func TestListCommandsJSONAndLimit(t *testing.T) {
	d, post := webhookDaemon(t, "")
	for i := range 3 {
		post(fmt.Sprintf("m-%d", i), "payment.completed", map[string]any{"order_id": fmt.Sprintf("O-%d", i),
			"txn_id": fmt.Sprintf("T-%d", i), "amount": "1.00", "currency": "USD", "customer_email": "a@example.com"})
	}
	d.drained(3)
	env := envFunc()
	for _, c := range []struct {
		cmd  string
		key  string // JSON list key
		rows string // text-table marker counted per row
	}{
		{"ls", `"notifications"`, "payment/completed"},
		{"orders", `"orders"`, "1.00 USD"},
		{"outbox", `"items"`, "email_customer"},
	} {
		out, stderr, code := runCode(t, env, c.cmd, "-config", d.cfg, "-limit", "2")
		if code != 0 || strings.Count(out, c.rows) != 2 {
			t.Errorf("%s -limit 2: exit %d, want 2 rows\n%s%s", c.cmd, code, out, stderr)
		}
		out, stderr, code = runCode(t, env, c.cmd, "-config", d.cfg, "-json", "-limit", "1")
		if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), "{") || !strings.Contains(out, c.key) {
			t.Errorf("%s -json: exit %d\n%s%s", c.cmd, code, out, stderr)
		}
	}
	// Newest first: the last paid order's email is the first row.
	out, _, _ := runCode(t, env, "outbox", "-config", d.cfg, "-limit", "1")
	if !strings.Contains(out, "O-2") {
		t.Errorf("outbox -limit 1 does not show the newest item:\n%s", out)
	}
}

// TestOutboxRetryPending: "ipnd outbox retry ID" on a pending item moves
// its next attempt to now and says so; on a sent item it says it was
// sent and is not sent twice.
func TestOutboxRetryPending(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	smtpd.answer = func(string, int) *smtp.SMTPError { return &smtp.SMTPError{Code: 451, Message: "try again later"} }
	d, post := webhookDaemon(t, fmt.Sprintf(`[smtp]
host = "127.0.0.1"
port = %s
tls = "none"
from = "shop@example.com"
timeout = "2s"
[pipeline]
outbox_retry_base = "1h"
outbox_retry_cap = "2h"
`, smtpd.port()))
	post("m-1", "payment.completed", map[string]any{"order_id": "O-1", "txn_id": "T-1", "amount": "1.00",
		"currency": "USD", "customer_email": "ann@example.com"})
	var pending struct{ Items []ipn.OutboxItem }
	waitFor(t, "a failed attempt", 10*time.Second, func() bool {
		d.api("GET", "/api/outbox?state=pending", nil, &pending)
		return len(pending.Items) == 1 && pending.Items[0].Attempts == 1
	})
	it := pending.Items[0]
	if time.Until(it.NextAttempt) < 30*time.Minute {
		t.Fatalf("next attempt %s, want about an hour away", it.NextAttempt)
	}
	smtpd.mu.Lock()
	smtpd.answer = nil
	smtpd.mu.Unlock()
	out, stderr, code := runCode(t, envFunc(), "outbox", "retry", "-config", d.cfg, fmt.Sprint(it.ID))
	if code != 0 || !strings.Contains(out, "retrying now") {
		t.Errorf("outbox retry of a pending item: exit %d\n%s%s", code, out, stderr)
	}
	waitFor(t, "the email after retry now", 10*time.Second, func() bool { return len(smtpd.to("ann@example.com")) == 1 })
	waitFor(t, "the item sent", 10*time.Second, func() bool {
		var sent struct{ Items []ipn.OutboxItem }
		d.api("GET", "/api/outbox?state=sent", nil, &sent)
		return len(sent.Items) == 1
	})
	out, stderr, code = runCode(t, envFunc(), "outbox", "retry", "-config", d.cfg, fmt.Sprint(it.ID))
	if code != 1 || !strings.Contains(stderr, "was sent") || strings.Contains(stderr, "already exists") {
		t.Errorf("outbox retry of a sent item: exit %d\n%s%s", code, out, stderr)
	}
}

// TestReadmeMatchesTheCLI: the usage text is in the README verbatim; the
// Quick start writes nothing into the checkout and names the addresses
// ipnd really binds.
func TestReadmeMatchesTheCLI(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if !strings.Contains(readme, usage()) {
		t.Errorf("README.md does not contain the usage text verbatim:\n%s", usage())
	}
	if strings.Contains(readme, "backup ipnd-backup.db") {
		t.Error("README Quick start writes ipnd-backup.db into the checkout")
	}
	if strings.Contains(readme, "public :8080") {
		t.Error("README says public :8080, but ipnd binds 127.0.0.1:8080")
	}
	def := defaultConfig()
	if !strings.Contains(readme, "public "+def.Server.Listen) || !strings.Contains(readme, "admin "+def.Admin.Listen) {
		t.Errorf("README does not name the default listeners %s and %s", def.Server.Listen, def.Admin.Listen)
	}
}
