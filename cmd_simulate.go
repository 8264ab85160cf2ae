package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"ipnd/admin"
	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

var simulateCommand = command{
	name:    "simulate",
	args:    "[flags] GATEWAY",
	summary: "send a signed sample notification, report what ipnd did",
	run:     cmdSimulate,
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
	live := fs.Bool("live", false, "simulate on a live gateway (sandbox = false) too: the test order it makes reaches the merchant's email and shop")
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
	gc, secrets, err := simulatedGateway(cfg, name)
	if err != nil {
		return err
	}
	if !gc.Sandbox && !*live {
		return fmt.Errorf("simulate: gateway %q is live (sandbox = false): what ipnd does with its notifications reaches the merchant's "+
			"email and shop for real; simulate a gateway with sandbox = true (the embedded \"test\" one is), or give -live to "+
			"make a test order on this one anyway (ipnd orders delete removes it)", name)
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
	u, err := ingestURL(cfg, *target, name)
	if err != nil {
		return err
	}
	req.URL, req.Host = u, u.Host

	// What the order was before, to say what the notification changed.
	var c *adminClient
	var before *ipn.Order
	if !gc.Sandbox {
		// A live gateway applies only real payments: the test order is
		// registered first, so that what follows is marked test
		// (data.order.test) and can be deleted.
		if c, err = fs.adminClient(cfg); err != nil {
			return fmt.Errorf("simulate: -live: %w", err)
		}
		if err := c.registerTestOrder(ctx, *order, amt, s.currency, *email); err != nil {
			return err
		}
		before = &ipn.Order{Status: ipn.OrderAwaitingPayment}
		warnLive(stdout, cfg, gc, u, *order)
	}
	if *wait > 0 && c == nil {
		if c, err = fs.adminClient(cfg); err != nil {
			return fmt.Errorf("simulate: %w (or -wait 0 to send without reading the outcome)", err)
		}
		if before, err = c.order(ctx, *order); err != nil {
			return fmt.Errorf("simulate: %w (or -wait 0 to send without reading the outcome)", err)
		}
	}

	resp, answer, err := post(ctx, req)
	if err != nil {
		return fmt.Errorf("simulate: %w (is ipnd serve running?)", err)
	}
	fmt.Fprintf(stdout, "POST %s -> %s\nsent %s for order %s, %s %s\n", u, answer, s.what, *order, amt, s.currency)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("simulate: ipnd answered %s", resp.Status)
	}
	if *wait == 0 {
		fmt.Fprintln(stdout, "not waiting for the outcome (-wait 0): ipnd ls shows what ipnd did")
		return nil
	}
	return c.reportOutcome(ctx, stdout, simulated{gateway: *gc, marker: s.marker, order: *order, before: before, wait: *wait, live: !gc.Sandbox})
}

// registerTestOrder registers order id as a test order (POST
// /api/orders with "test": true). An order that exists already is not
// simulated on: it may be a real one.
func (c *adminClient) registerTestOrder(ctx context.Context, id, amount, currency, email string) error {
	body, _ := json.Marshal(map[string]any{"id": id, "amount": amount, "currency": currency, "customer_email": email, "test": true})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/api/orders", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("simulate: -live: registering the test order: %w (is ipnd serve running?)", err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	switch json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e); resp.StatusCode {
	case http.StatusCreated:
		return nil
	case http.StatusConflict:
		return fmt.Errorf("simulate: -live: order %q exists already: on a live gateway simulate makes an order of its own (leave out -order, or name a new one)", id)
	default:
		return fmt.Errorf("simulate: -live: registering the test order: admin API: %s: %s", resp.Status, e.Error)
	}
}

// warnLive says what a simulation on a live gateway touches besides
// ipnd: the merchant's email, the shop, the notification script.
func warnLive(w io.Writer, cfg *Config, gc *GatewayConfig, u *url.URL, order string) {
	fmt.Fprintf(w, "gateway %q is live (sandbox = false); -live given. Registered order %s as a test order (data.order.test: true).\n", gc.Name, order)
	fmt.Fprintf(w, "A test payment on a live gateway puts that order in review, so besides ipnd at %s this touches:\n", u)
	mailer := "the file mailer (" + filepath.Join(cfg.dataDir(), "mail") + ")"
	if cfg.SMTP.Host != "" {
		mailer = "SMTP " + net.JoinHostPort(cfg.SMTP.Host, strconv.Itoa(cfg.SMTP.Port))
	}
	if cfg.Email.MerchantTo != "" {
		fmt.Fprintf(w, "  - the merchant's email %s (\"needs review\"), through %s\n", cfg.Email.MerchantTo, mailer)
	} else {
		fmt.Fprintln(w, "  - no merchant email (email.merchant_to is not set)")
	}
	if cfg.Shop.URL != "" {
		fmt.Fprintf(w, "  - the shop at %s (order.review, marked test)\n", cfg.Shop.URL)
	}
	if len(cfg.Shop.Command) > 0 {
		fmt.Fprintf(w, "  - the notification script %s\n", strings.Join(cfg.Shop.Command, " "))
	}
	fmt.Fprintf(w, "Remove the test order afterwards: ipnd orders delete %s\n", order)
}

// simulatedGateway returns the [[gateway]] table named name and its
// secrets.
func simulatedGateway(cfg *Config, name string) (*GatewayConfig, []string, error) {
	var gc *GatewayConfig
	idx := 0
	for i := range cfg.Gateways {
		if cfg.Gateways[i].Name == name {
			gc, idx = &cfg.Gateways[i], i
		}
	}
	if gc == nil {
		return nil, nil, fmt.Errorf("simulate: no gateway named %q in the config", name)
	}
	secrets, err := gatewaySecrets(fmt.Sprintf("gateway[%d]", idx), *gc)
	if err != nil {
		return nil, nil, fmt.Errorf("simulate: %w (has ipnd serve run once?)", err)
	}
	return gc, secrets, nil
}

// ingestURL is where gateway name's notifications go: under -url
// (target), or by default the public listener the running ipnd recorded
// (https when the config has a certificate).
func ingestURL(cfg *Config, target, name string) (*url.URL, error) {
	base := target
	if base == "" {
		addr, err := readAddr(cfg, cfg.Server.Listen, "public")
		if err != nil {
			return nil, fmt.Errorf("simulate: %w", err)
		}
		scheme := "http"
		if cfg.Server.TLSCert != "" {
			scheme = "https"
		}
		base = scheme + "://" + addr
	}
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/ipn/" + url.PathEscape(name))
	if err != nil || u.Host == "" {
		return nil, usageErrorf("simulate: -url %q: want a URL such as https://shop.example.com", base)
	}
	return u, nil
}

// post sends req (15 s at most) and returns the response, its body read
// and closed, and ipnd's answer for the operator: the status, and the
// body when it says more than OK.
func post(ctx context.Context, req *http.Request) (*http.Response, string, error) {
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req.WithContext(ctx))
	if err != nil {
		return nil, "", err
	}
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	answer := resp.Status
	if r := strings.TrimSpace(string(reply)); r != "" && r != "OK" {
		answer += ": " + r
	}
	return resp, answer, nil
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
	live    bool // a live gateway, -live given: its test order was registered first
}

// reportOutcome waits (up to s.wait) until the pipeline has finished the
// simulated notification, then prints its state and reason, the order
// before and after, and the outbox items it queued. A notification that
// ended invalid or failed, or did not finish in time, is an error.
func (c *adminClient) reportOutcome(ctx context.Context, stdout io.Writer, s simulated) error {
	n, err := c.awaitFinal(ctx, s)
	if err != nil {
		return err
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
	if err := c.reportOrder(ctx, stdout, s, n); err != nil {
		return err
	}
	if err := c.reportQueued(ctx, stdout, n); err != nil {
		return err
	}
	if n.State == ipn.StateInvalid && strings.HasPrefix(reason, "test_payment") && !s.gateway.Sandbox {
		if s.live {
			// What a live gateway does with a test payment: not an error of the simulation.
			fmt.Fprintf(stdout, "as expected on a live gateway: the test order is in review; ipnd orders delete %s removes it\n", s.order)
			return nil
		}
		fmt.Fprintf(stdout, "gateway %q is live: it stores test-mode events but does not apply them. To try ipnd end to end,\n"+
			"add a second gateway of kind %q with sandbox = true and simulate that one (README: \"Testing with a sandbox gateway\").\n",
			s.gateway.Name, s.gateway.Kind)
	}
	if n.State == ipn.StateInvalid || n.State == ipn.StateFailed {
		return fmt.Errorf("simulate: notification %d ended %s: %s", n.ID, n.State, orDash(reason))
	}
	return nil
}

// awaitFinal polls the admin API (up to s.wait) until it lists the
// simulated notification in a final state, and returns it.
func (c *adminClient) awaitFinal(ctx context.Context, s simulated) (*admin.Notification, error) {
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
			return nil, fmt.Errorf("simulate: reading the outcome: %w", err)
		}
		if n != nil && n.State.Final() {
			return n, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			if n == nil {
				return nil, fmt.Errorf("simulate: notification not processed within %s (the admin API does not list it)", s.wait)
			}
			return nil, fmt.Errorf("simulate: notification %d not processed within %s: still %s (ipnd show %d)", n.ID, s.wait, n.State, n.ID)
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// reportOrder prints the order of notification n as it was before the
// simulation and as it is now.
func (c *adminClient) reportOrder(ctx context.Context, stdout io.Writer, s simulated, n *admin.Notification) error {
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
		return nil
	}
	totals := fmt.Sprintf("paid %s %s, refunded %s", orDash(after.Paid), after.Currency, orDash(after.Refunded))
	if len(after.Flags) > 0 {
		totals += ", flags " + strings.Join(after.Flags, ",")
	}
	fmt.Fprintf(stdout, "order %s: %s -> %s (%s)\n", orderID, was, after.Status, strings.Join(strings.Fields(totals), " "))
	return nil
}

// reportQueued prints the outbox items notification n queued.
func (c *adminClient) reportQueued(ctx context.Context, stdout io.Writer, n *admin.Notification) error {
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
