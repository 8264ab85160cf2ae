package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	netmail "net/mail"
	"strings"
	"time"

	"github.com/wneessen/go-mail"
)

// ErrNotAttempted marks a message that was not tried because an earlier
// one on the same connection left it unusable: it is not charged an
// attempt.
var ErrNotAttempted = errors.New("not attempted")

// ErrBurstStopped is the result of the messages of a burst after the
// caller's done returned false: they were not attempted.
var ErrBurstStopped = fmt.Errorf("%w: the burst was stopped before this message", ErrNotAttempted)

// ErrPermanent marks a delivery error that retrying cannot fix: the SMTP
// server answered 5xx to the message, or the message itself is unusable
// (an address that does not parse, no Message-ID, no body, a template
// that fails). Test with errors.Is or Permanent.
var ErrPermanent = errors.New("permanent failure")

// Permanent reports whether err is a permanent delivery failure (see
// ErrPermanent). Network errors, timeouts, a cancelled context and 4xx
// replies are not permanent: the outbox retries them with backoff.
func Permanent(err error) bool {
	return errors.Is(err, ErrPermanent)
}

// permanent wraps err so that Permanent reports true for it.
func permanent(err error) error {
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// Message is one email ready to send. From, To and ReplyTo are RFC 5322
// addresses ("Name <addr>" or "addr"); To and ReplyTo may be
// comma-separated lists. MessageID is required and must be stable for
// the cause of the email (see MessageID) so that a message sent twice
// after a crash can be recognised as the same one. Text and HTML are the
// two alternative bodies; either may be empty, not both. A zero Date
// means the time of sending.
type Message struct {
	From, To, ReplyTo, Subject, Text, HTML, MessageID string
	Date                                              time.Time
}

// Mailer sends emails. It is the seam the outbox worker depends on.
//
// SendEach delivers a burst of messages in order, over one connection
// where the transport has connections, and calls done once per message,
// in order, with its result as soon as it is known: nil means the server
// accepted the message (or the file was written and synced). done runs on
// the calling goroutine and the next message is not attempted before it
// returns, so that the caller can make each result durable before the
// next message goes: a crash then repeats at most the one message in
// flight. done returns whether to go on: after false, the rest of the
// burst is not attempted and reported with ErrBurstStopped (the caller
// stops at a message boundary, e.g. for a reload, without cutting a
// message short). A failure of one message does not stop the others unless the
// connection is lost, in which case every remaining message gets a
// non-permanent error. Classify errors with Permanent. SendEach honours
// ctx: once it is done, the burst is abandoned and unsent messages get an
// error wrapping ctx.Err().
type Mailer interface {
	SendEach(ctx context.Context, msgs []Message, done func(i int, err error) bool)
}

// collect runs m.SendEach and returns one error per message, in order.
func collect(m Mailer, ctx context.Context, msgs []Message) []error {
	errs := make([]error, len(msgs))
	m.SendEach(ctx, msgs, func(i int, err error) bool { errs[i] = err; return true })
	return errs
}

// defaultMessageIDDomain is the right-hand side of Message-IDs when no
// domain is given (RFC 2606 reserves .invalid).
const defaultMessageIDDomain = "ipnd.invalid"

// MessageID returns a stable Message-ID for the cause of an email,
// "<hex@domain>" where hex is the first 32 hex digits of SHA-256(cause):
// the same cause always gives the same Message-ID, so a duplicate sent
// after a crash can be collapsed by mail clients. domain should be the
// domain of the sender address; an empty or malformed domain gives
// "ipnd.invalid".
func MessageID(cause, domain string) string {
	sum := sha256.Sum256([]byte(cause))
	domain = strings.ToLower(strings.TrimSpace(domain))
	if !validIDPart(domain) {
		domain = defaultMessageIDDomain
	}
	return "<" + hex.EncodeToString(sum[:16]) + "@" + domain + ">"
}

// validIDPart reports whether s can be one side of a Message-ID: a
// non-empty run of printable ASCII without spaces, angle brackets or @.
func validIDPart(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`<>@"\()[],;:`, r) {
			return false
		}
	}
	return true
}

// bareMessageID checks id and returns it without its angle brackets.
func bareMessageID(id string) (string, error) {
	bare := strings.TrimSpace(id)
	bare = strings.TrimPrefix(bare, "<")
	bare = strings.TrimSuffix(bare, ">")
	local, domain, ok := strings.Cut(bare, "@")
	if !ok || !validIDPart(local) || !validIDPart(domain) {
		if id == "" {
			return "", permanent(errors.New("message has no Message-ID"))
		}
		return "", permanent(fmt.Errorf("malformed Message-ID %q", id))
	}
	return bare, nil
}

// oneLine folds a header value to one line: runs of white space,
// newlines included, become a single space.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// addressList parses a comma-separated list of addresses for header.
func addressList(header, list string) ([]*netmail.Address, error) {
	addrs, err := netmail.ParseAddressList(list)
	if err != nil {
		return nil, permanent(fmt.Errorf("%s %q: %w", header, list, err))
	}
	return addrs, nil
}

// newMailMsg turns m into a go-mail message. Every error is permanent:
// the message itself is unusable.
func newMailMsg(m Message) (*mail.Msg, error) {
	id, err := bareMessageID(m.MessageID)
	if err != nil {
		return nil, err
	}
	if m.Text == "" && m.HTML == "" {
		return nil, permanent(fmt.Errorf("message %s has no body", m.MessageID))
	}
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	from, err := addressList("from", m.From)
	if err != nil {
		return nil, err
	}
	if len(from) != 1 {
		return nil, permanent(fmt.Errorf("from %q: want exactly one address", m.From))
	}
	msg.FromMailAddress(from[0])
	to, err := addressList("to", m.To)
	if err != nil {
		return nil, err
	}
	msg.ToMailAddress(to...)
	if strings.TrimSpace(m.ReplyTo) != "" {
		replyTo, err := addressList("reply-to", m.ReplyTo)
		if err != nil {
			return nil, err
		}
		msg.ReplyToMailAddress(replyTo...)
	}
	msg.Subject(oneLine(m.Subject))
	msg.SetMessageIDWithValue(id)
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	msg.SetDateWithValue(date)
	msg.SetUserAgent("ipnd")
	// RFC 3834: an automatic notification; vacation responders stay quiet.
	msg.SetGenHeader(mail.Header("Auto-Submitted"), "auto-generated")
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	case m.Text != "":
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
	default:
		msg.SetBodyString(mail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}
