package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/wneessen/go-mail"
)

// SMTP transport security modes (SMTPConfig.TLS).
const (
	SMTPStartTLS = "starttls" // plain connection upgraded with STARTTLS; refused if the server does not offer it
	SMTPTLS      = "tls"      // implicit TLS from the first byte (usually port 465)
	SMTPNoTLS    = "none"     // no encryption at all
)

// defaultSMTPTimeout bounds every SMTP command when SMTPConfig.Timeout is 0.
const defaultSMTPTimeout = 30 * time.Second

// SMTPConfig is how to reach the outgoing mail server. The zero values of
// Port, TLS and Timeout mean 587 (465 for "tls", 25 for "none"),
// "starttls" and 30s.
type SMTPConfig struct {
	Host     string
	Port     int
	Username string // empty: no SMTP AUTH
	Password string
	// TLS is "starttls" (mandatory STARTTLS, the default), "tls" (implicit
	// TLS) or "none".
	TLS string
	// Timeout bounds connecting and setting up the session (greeting,
	// STARTTLS, AUTH), then each message's whole transaction.
	Timeout time.Duration
	// TLSConfig replaces the default TLS settings (system roots, server
	// name = Host, TLS 1.2 at least), for instance to trust a private CA.
	// ServerName defaults to Host when empty.
	TLSConfig *tls.Config
	// HelloName is the name sent in EHLO; empty means the host name.
	HelloName string
}

// String describes the configuration with the password redacted.
func (c SMTPConfig) String() string {
	pass := ""
	if c.Password != "" {
		pass = " password=[redacted]"
	}
	return fmt.Sprintf("smtp host=%s port=%d tls=%s username=%q%s timeout=%s",
		c.Host, c.Port, c.TLS, c.Username, pass, c.Timeout)
}

// GoString is String, so that %#v does not print the password either.
func (c SMTPConfig) GoString() string { return c.String() }

// LogValue keeps the password out of structured logs.
func (c SMTPConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("host", c.Host),
		slog.Int("port", c.Port),
		slog.String("tls", c.TLS),
		slog.String("username", c.Username),
		slog.Bool("password_set", c.Password != ""),
		slog.Float64("timeout_seconds", c.Timeout.Seconds()),
	)
}

// SMTPMailer sends email through an SMTP server with go-mail. Each Send
// opens one connection for its whole burst and closes it at the end; it
// is safe for concurrent use (concurrent Sends use separate connections).
type SMTPMailer struct {
	cfg  SMTPConfig
	tls  *tls.Config
	addr string
}

// NewSMTPMailer checks cfg and returns a mailer; it does not connect.
// It fails when Host is empty, TLS is not one of the three modes, or
// Port or Timeout are out of range.
func NewSMTPMailer(cfg SMTPConfig) (*SMTPMailer, error) {
	if cfg.Host == "" {
		return nil, errors.New("smtp: no host")
	}
	if cfg.TLS == "" {
		cfg.TLS = SMTPStartTLS
	}
	if cfg.Port == 0 {
		switch cfg.TLS {
		case SMTPTLS:
			cfg.Port = mail.DefaultPortSSL
		case SMTPNoTLS:
			cfg.Port = mail.DefaultPort
		default:
			cfg.Port = mail.DefaultPortTLS
		}
	}
	switch cfg.TLS {
	case SMTPStartTLS, SMTPTLS, SMTPNoTLS:
	default:
		return nil, fmt.Errorf("smtp: tls %q: want %q, %q or %q", cfg.TLS, SMTPStartTLS, SMTPTLS, SMTPNoTLS)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("smtp: port %d out of range", cfg.Port)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("smtp: negative timeout %s", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultSMTPTimeout
	}
	var tc *tls.Config
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.ServerName == "" {
		tc.ServerName = cfg.Host
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	m := &SMTPMailer{cfg: cfg, tls: tc, addr: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))}
	// Build a client once so that option errors surface here, not at the
	// first Send.
	if _, err := m.client(&connCloser{}); err != nil {
		return nil, err
	}
	return m, nil
}

// smtpAuthPreference is the order in which SMTP AUTH mechanisms are
// tried among those the server offers. PLAIN and LOGIN send the password
// only over TLS (or to localhost): go-mail refuses otherwise.
var smtpAuthPreference = []mail.SMTPAuthType{mail.SMTPAuthSCRAMSHA256, mail.SMTPAuthPlain, mail.SMTPAuthLogin}

// client builds the go-mail client of one burst. A client per burst keeps
// concurrent Sends apart (go-mail clients carry per-connection state);
// the connection is dialed through cc so that a cancelled context can
// close it at any point.
func (m *SMTPMailer) client(cc *connCloser) (*mail.Client, error) {
	opts := []mail.Option{
		mail.WithPort(m.cfg.Port),
		mail.WithTimeout(m.cfg.Timeout),
		mail.WithTLSConfig(m.tls),
		mail.WithDialContextFunc(m.dialer(cc)),
		// No NOOP before each message and no RSET after each accepted
		// one: a failed RSET would otherwise turn an accepted message
		// into an error (and a duplicate on retry).
		mail.WithoutNoop(),
		mail.WithoutRset(),
	}
	switch m.cfg.TLS {
	case SMTPStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	default: // implicit TLS is done by the dialer; "none" has no TLS
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if m.cfg.HelloName != "" {
		opts = append(opts, mail.WithHELO(m.cfg.HelloName))
	}
	if m.cfg.Username != "" {
		opts = append(opts, mail.WithUsername(m.cfg.Username), mail.WithPassword(m.cfg.Password),
			mail.WithOpportunisticSMTPAuth(smtpAuthPreference...))
	}
	c, err := mail.NewClient(m.cfg.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("smtp: %w", err)
	}
	return c, nil
}

// dialer returns the dial function of one burst: TCP (and the TLS
// handshake for implicit TLS), with the raw connection handed to cc.
func (m *SMTPMailer) dialer(cc *connCloser) mail.DialContextFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if !cc.set(raw) {
			return nil, errors.New("connection closed: context done")
		}
		if m.cfg.TLS != SMTPTLS {
			return raw, nil
		}
		conn := tls.Client(raw, m.tls)
		if err := conn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		// go-mail must see the *tls.Conn itself to know the session is
		// encrypted (PLAIN and LOGIN require it).
		return conn, nil
	}
}

// connCloser holds the network connection of a burst so that a context
// can close it from another goroutine, interrupting a blocked read.
type connCloser struct {
	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

// set records conn; it closes conn and returns false if close came first.
func (c *connCloser) set(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = conn.Close()
		return false
	}
	c.conn = conn
	return true
}

func (c *connCloser) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// Send is SendEach collecting the results: one error per message, in
// order.
func (m *SMTPMailer) Send(ctx context.Context, msgs []Message) []error {
	return collect(m, ctx, msgs)
}

// SendEach delivers msgs over one SMTP connection (see Mailer), calling
// done with each message's result as soon as the server has answered it.
// A message that cannot be built (bad address, no Message-ID, no body)
// fails permanently without touching the network. Failures to connect,
// to negotiate TLS or to authenticate fail every message
// non-permanently: they say nothing about the messages and usually mean
// the server is down or the configuration is wrong. Per message, a 5xx
// reply to MAIL, RCPT or DATA is permanent; a 4xx reply or a lost
// connection is not. Errors never contain the password.
func (m *SMTPMailer) SendEach(ctx context.Context, msgs []Message, done func(i int, err error) bool) {
	errs := make([]error, len(msgs))
	built := make([]*mail.Msg, len(msgs))
	pending := 0
	for i := range msgs {
		msg, err := newMailMsg(msgs[i])
		if err != nil {
			errs[i] = fmt.Errorf("smtp: %w", err)
			continue
		}
		built[i] = msg
		pending++
	}
	failRest := func(from int, err error) {
		for i := from; i < len(msgs); i++ {
			if built[i] != nil && errs[i] == nil {
				errs[i] = err
			}
		}
	}
	reported, stopped := 0, false
	report := func(upTo int) { // the results before upTo are final
		for ; reported < upTo; reported++ {
			if !done(reported, errs[reported]) && !stopped {
				stopped = true
				failRest(reported+1, ErrBurstStopped)
			}
		}
	}
	defer func() { report(len(msgs)) }()
	if pending == 0 {
		return
	}
	if err := ctx.Err(); err != nil {
		failRest(0, fmt.Errorf("smtp: %w", err))
		return
	}

	cc := &connCloser{}
	// Close the connection whatever happens: go-mail leaves it open when
	// the session setup fails after connecting.
	defer cc.close()
	stop := context.AfterFunc(ctx, cc.close)
	defer stop()
	client, err := m.client(cc)
	if err != nil {
		failRest(0, err)
		return
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		failRest(0, fmt.Errorf("smtp: connect to %s: %w", m.addr, err))
		return
	}
	// QUIT politely at the end; the messages are accepted or not whatever
	// it answers.
	defer func() { _ = client.CloseWithSMTPClient(sc) }()

	for i, msg := range built {
		if msg == nil {
			continue
		}
		report(i)
		if stopped {
			return
		}
		if err := ctx.Err(); err != nil {
			failRest(i, fmt.Errorf("smtp: %w", err))
			return
		}
		err := client.SendWithSMTPClient(sc, msg)
		if err == nil {
			report(i + 1)
			continue
		}
		if ctx.Err() != nil {
			failRest(i, fmt.Errorf("smtp: message %s: %w (%w)", msgs[i].MessageID, ctx.Err(), err))
			return
		}
		errs[i] = classifySMTP(err)
		// Writing the content failed half way: the server still reads
		// the message, so the connection cannot be used again.
		if se := (*mail.SendError)(nil); errors.As(err, &se) && se.Reason == mail.ErrWriteContent {
			failRest(i+1, fmt.Errorf("%w: smtp: connection unusable after message %s: %w", ErrNotAttempted, msgs[i].MessageID, err))
			return
		}
		// Otherwise the transaction may be left half open (a refused
		// DATA) or the connection may be gone: RSET tells which, and
		// makes the connection usable for the next message.
		if rerr := sc.Reset(); rerr != nil {
			failRest(i+1, fmt.Errorf("%w: smtp: connection lost after message %s: %w", ErrNotAttempted, msgs[i].MessageID, rerr))
			return
		}
		report(i + 1)
	}
}

// classifySMTP wraps the error of one message, marking 5xx replies and
// unusable messages permanent. go-mail's errors name the message.
func classifySMTP(err error) error {
	var se *mail.SendError
	if errors.As(err, &se) {
		switch {
		case se.Reason == mail.ErrGetSender, se.Reason == mail.ErrGetRcpts, se.Reason == mail.ErrNoUnencoded:
			err = permanent(err)
		case se.ErrorCode() >= 500 && se.ErrorCode() <= 599:
			err = permanent(err)
		}
	}
	return fmt.Errorf("smtp: %w", err)
}
