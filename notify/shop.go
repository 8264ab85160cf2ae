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
	"time"

	"ipnd/ipn"
)

// ShopEvent is the JSON the shop receives (callback body and script
// stdin): ipnd's own event envelope, as the standard-webhooks kind reads
// it, with the order's state when the callback is sent.
type ShopEvent struct {
	Type      string      `json:"type"` // "payment.completed", "subscription.canceled", ...
	Timestamp string      `json:"timestamp"`
	Data      ShopPayload `json:"data"`
}

// ShopPayload is the data of a ShopEvent.
type ShopPayload struct {
	ipn.Event
	Notification uint64          `json:"notification_id"`
	OrderStatus  ipn.OrderStatus `json:"order_status,omitempty"`
	Paid         string          `json:"order_paid,omitempty"`
	Refunded     string          `json:"order_refunded,omitempty"`
}

// EnvelopeType is the Standard Webhooks type of an event:
// "payment." + status, or "subscription." + started/payment/canceled/expired.
func EnvelopeType(ev *ipn.Event) string {
	switch ev.Type {
	case ipn.TypeSubscriptionStarted:
		return "subscription.started"
	case ipn.TypeSubscriptionPayment:
		return "subscription.payment"
	case ipn.TypeSubscriptionCanceled:
		return "subscription.canceled"
	case ipn.TypeSubscriptionExpired:
		return "subscription.expired"
	case ipn.TypeOther:
		return "other"
	case ipn.TypeDispute:
		return "dispute." + string(ev.Status)
	case ipn.TypeReversalCanceled:
		return "payment.reversal_canceled"
	}
	return "payment." + string(ev.Status)
}

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
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ipnd")
	req.Header.Set("Webhook-Id", id)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Signature", ipn.SignWebhook(s.Key, id, ts, body))
	client := s.Client
	if client == nil {
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("shop callback: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("shop callback: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Run runs the notification script with body on stdin and the key
// fields in IPND_* environment variables, killed at the timeout. Exit 0 is
// success.
func (s *Shop) Run(ctx context.Context, id string, ev *ShopEvent, body []byte) error {
	if len(s.Command) == 0 {
		return errors.New("no shop.command")
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
		"IPND_ORDER_ID="+d.OrderID,
		"IPND_ORDER_STATUS="+string(d.OrderStatus),
		"IPND_TXN_ID="+d.TxnID,
		"IPND_AMOUNT="+d.Amount,
		"IPND_CURRENCY="+d.Currency,
		"IPND_STATUS="+string(d.Status),
	)
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("notification script killed after %s", s.Timeout)
	}
	if err != nil {
		// Only the exit status: the script's output may hold anything.
		return fmt.Errorf("notification script: %v", err)
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// shopEvent builds the ShopEvent of an effect.
func shopEvent(it ipn.OutboxItem, order *ipn.Order) (*ShopEvent, []byte, error) {
	ev := it.Effect.Event
	if ev == nil {
		return nil, nil, errors.New("effect carries no event")
	}
	se := &ShopEvent{Type: EnvelopeType(ev), Timestamp: it.CreatedAt.UTC().Format(time.RFC3339),
		Data: ShopPayload{Event: *ev, Notification: it.Notification}}
	if order != nil {
		se.Data.OrderStatus, se.Data.Paid, se.Data.Refunded = order.Status, order.Paid, order.Refunded
	}
	body, err := json.Marshal(se)
	return se, body, err
}
