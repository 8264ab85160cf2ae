package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// ShopEvent is the JSON the shop receives (callback body and script
// stdin): one per transition of an order. Type is "order." + the order's
// new status ("order.paid", "order.review", "order.refunded", ...): a
// shop fulfils on "order.paid" only. Data.Order is the order as it stood
// right after the transition, Data.Event the normalized payment event
// that caused it.
type ShopEvent struct {
	Type      string      `json:"type"`
	Timestamp string      `json:"timestamp"`
	Data      ShopPayload `json:"data"`
}

// ShopPayload is the data of a ShopEvent.
type ShopPayload struct {
	Order        ipn.OrderSnapshot `json:"order"`
	Event        ipn.Event         `json:"event"`
	Notification uint64            `json:"notification_id"`
}

// ShopEventType is the envelope type for an order in status s.
func ShopEventType(s ipn.OrderStatus) string { return "order." + string(s) }

// Shop delivers shop callbacks (signed HTTP POST) and runs the
// notification script.
type Shop struct {
	URL     string
	Key     []byte   // Standard Webhooks key (the decoded shop.secret)
	Command []string // argv; run without a shell
	Timeout time.Duration
	Client  *http.Client
}

// Post sends body to the shop's URL signed the Standard Webhooks way:
// webhook-id (the outbox id, stable across retries, so the shop can
// dedup), webhook-timestamp and webhook-signature. A 2xx answer is
// success; anything else is an error to retry.
func (s *Shop) Post(ctx context.Context, id string, body []byte) error {
	_, err := s.PostDetail(ctx, id, body)
	return err
}

// detailBytes is how much of a callback's response body (the first) and
// of a script's stderr (the last) an attempt keeps.
const detailBytes = 1024

// PostDetail is Post, also returning what the shop answered: the HTTP
// status and the first KiB of the response body (email addresses
// removed).
func (s *Shop) PostDetail(ctx context.Context, id string, body []byte) (ipn.AttemptDetail, error) {
	var d ipn.AttemptDetail
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return d, err
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ipnd")
	req.Header.Set("Webhook-Id", id)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Signature", gateway.SignWebhook(s.Key, id, ts, body))
	client := s.Client
	if client == nil {
		client = &http.Client{CheckRedirect: noRedirects}
	}
	resp, err := client.Do(req)
	if err != nil {
		return d, fmt.Errorf("shop callback: %w", err)
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, detailBytes))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	d.HTTPStatus, d.Response = resp.StatusCode, redact(strings.ToValidUTF8(string(head), "\uFFFD"))
	if resp.StatusCode/100 != 2 {
		return d, fmt.Errorf("shop callback: HTTP %d", resp.StatusCode)
	}
	return d, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// NewShopClient is the HTTP client of shop callbacks made by up to conns
// at once: it keeps a connection per callback slot alive between
// callbacks (net/http keeps 2 per host by default, so that more slots
// would open and close a connection per callback) and follows no
// redirect.
func NewShopClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(conns, 2)
	return &http.Client{Transport: t, CheckRedirect: noRedirects}
}

// Run runs the notification script with body on stdin and the key
// fields in IPND_* environment variables, killed at the timeout. Exit 0 is
// success.
func (s *Shop) Run(ctx context.Context, id string, ev *ShopEvent, body []byte) error {
	_, err := s.RunDetail(ctx, id, ev, body)
	return err
}

// RunDetail is Run, also returning the script's exit status and the
// last KiB of its stderr (email addresses removed): the operator's view
// of why it failed. Its stdout is not kept.
func (s *Shop) RunDetail(ctx context.Context, id string, ev *ShopEvent, body []byte) (ipn.AttemptDetail, error) {
	var det ipn.AttemptDetail
	if len(s.Command) == 0 {
		return det, errors.New("no shop.command")
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Command[0], s.Command[1:]...)
	cmd.Stdin = bytes.NewReader(body)
	cmd.WaitDelay = time.Second // do not wait for grandchildren holding the pipes
	d := ev.Data
	// A minimal environment: the script must not inherit ipnd's secrets
	// (IPND_ADMIN_TOKEN, IPND_SMTP_PASSWORD, ... may be set from it).
	cmd.Env = []string{"PATH=" + envOr("PATH", "/usr/local/bin:/usr/bin:/bin")}
	for _, k := range []string{"HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Env = append(cmd.Env,
		"IPND_OUTBOX_ID="+id,
		"IPND_EVENT_TYPE="+ev.Type,
		"IPND_NOTIFICATION_ID="+strconv.FormatUint(d.Notification, 10),
		"IPND_ORDER_ID="+d.Order.ID,
		"IPND_ORDER_STATUS="+string(d.Order.Status),
		"IPND_ORDER_PAID="+d.Order.Paid,
		"IPND_ORDER_REFUNDED="+d.Order.Refunded,
		"IPND_ORDER_FLAGS="+strings.Join(d.Order.Flags, ","),
		"IPND_TXN_ID="+d.Event.TxnID,
		"IPND_AMOUNT="+d.Event.Amount,
		"IPND_CURRENCY="+d.Event.Currency,
		"IPND_STATUS="+string(d.Event.Status),
	)
	stderr := &tailBuffer{max: detailBytes}
	cmd.Stderr = stderr
	err := cmd.Run()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	det.ExitStatus, det.Stderr = &code, redact(strings.ToValidUTF8(string(stderr.b), "\uFFFD"))
	if ctx.Err() == context.DeadlineExceeded {
		return det, fmt.Errorf("notification script killed after %s", s.Timeout)
	}
	if err != nil {
		// Only the exit status in the error (and the log): the script's
		// output may hold anything; its stderr's tail is kept with the
		// attempt, for the operator.
		return det, fmt.Errorf("notification script: %v", err)
	}
	return det, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// shopEvent builds the ShopEvent of an effect: the order as the effect
// recorded it at the transition (items queued by older versions carry
// none: the order as it is now stands in).
func shopEvent(it ipn.OutboxItem, order *ipn.Order) (*ShopEvent, []byte, error) {
	ev := it.Effect.Event
	if ev == nil {
		return nil, nil, errors.New("effect carries no event")
	}
	var snap ipn.OrderSnapshot
	switch {
	case it.Effect.Order != nil:
		snap = *it.Effect.Order
	case order != nil:
		snap = *order.Snapshot("", "")
	default:
		return nil, nil, errors.New("effect carries no order")
	}
	se := &ShopEvent{Type: ShopEventType(snap.Status), Timestamp: it.CreatedAt.UTC().Format(time.RFC3339),
		Data: ShopPayload{Order: snap, Event: *ev, Notification: it.Notification}}
	body, err := json.Marshal(se)
	return se, body, err
}
