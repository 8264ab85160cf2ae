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
	"github.com/wneessen/go-mail/smtp"
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

// SMTPMailer sends email through an SMTP server with go-mail. Each
// SendEach sends its whole burst over one connection, which it then keeps
// for the next burst (up to maxIdleSMTP idle connections, each for at
// most idleSMTP; a kept connection is checked with RSET before it is
// used again). It is safe for concurrent use: concurrent SendEach calls
// use separate connections.
type SMTPMailer struct {
	cfg  SMTPConfig
	tls  *tls.Config
	addr string

	mu     sync.Mutex
	idle   []*smtpConn // oldest first
	closed bool
}

// maxIdleSMTP bounds the connections kept between bursts (two lanes of
// up to 16 connections each), idleSMTP how long one is kept unused:
// servers drop idle sessions after minutes (RFC 5321 4.5.3.2 asks for 5
// at least), a burst comes within one BatchDelay under load.
const (
	maxIdleSMTP = 32
	idleSMTP    = 30 * time.Second
)

// smtpConn is one SMTP session: its go-mail client, the session, what
// closes its network connection, and (while a burst uses it) the stop
// of the closing on the burst's context.
type smtpConn struct {
	client *mail.Client
	sc     *smtp.Client
	cc     *connCloser
	since  time.Time // idle since
	stop   func() bool
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

	conn, err := m.session(ctx)
	if err != nil {
		failRest(0, err)
		return
	}
	// The connection is kept for the next burst unless it failed or the
	// context closed it; the messages are accepted or not whatever
	// happens to it then.
	reusable := false
	defer func() { m.release(conn, reusable) }()
	client, sc := conn.client, conn.sc

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
	reusable = !stopped && ctx.Err() == nil
}

// session returns a connection for a burst: a kept one that answers
// RSET (the transaction state is then clean whatever the last burst
// left), or a new one. Until release, ctx being done closes it.
func (m *SMTPMailer) session(ctx context.Context) (*smtpConn, error) {
	for {
		c := m.takeIdle()
		if c == nil {
			break
		}
		c.stop = context.AfterFunc(ctx, c.cc.close)
		err := c.sc.UpdateDeadline(m.cfg.Timeout)
		if err == nil {
			err = c.sc.Reset()
		}
		if err == nil {
			return c, nil
		}
		c.stop()
		c.cc.close() // gone meanwhile (the server's idle timeout): dial anew
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("smtp: %w", err)
		}
	}
	cc := &connCloser{}
	stop := context.AfterFunc(ctx, cc.close)
	client, err := m.client(cc)
	if err != nil {
		stop()
		return nil, err
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		stop()
		// go-mail leaves the connection open when the session setup
		// fails after connecting.
		cc.close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("smtp: connect to %s: %w", m.addr, err)
	}
	return &smtpConn{client: client, sc: sc, cc: cc, stop: stop}, nil
}

// takeIdle returns the most recently used kept connection, closing those
// kept too long; nil when there is none.
func (m *SMTPMailer) takeIdle() *smtpConn {
	m.mu.Lock()
	var old []*smtpConn
	var c *smtpConn
	for len(m.idle) > 0 && c == nil {
		n := len(m.idle) - 1
		last := m.idle[n]
		m.idle = m.idle[:n]
		if time.Since(last.since) < idleSMTP {
			c = last
		} else {
			old = append(old, last)
		}
	}
	m.mu.Unlock()
	for _, o := range old {
		m.quit(o)
	}
	return c
}

// release keeps c for the next burst when reusable (and the context did
// not close it), or ends it.
func (m *SMTPMailer) release(c *smtpConn, reusable bool) {
	if !c.stop() || !reusable {
		m.quit(c)
		return
	}
	c.since = time.Now()
	m.mu.Lock()
	var drop *smtpConn
	if m.closed {
		drop = c
	} else {
		m.idle = append(m.idle, c)
		if len(m.idle) > maxIdleSMTP {
			drop = m.idle[0]
			m.idle = m.idle[1:]
		}
	}
	m.mu.Unlock()
	if drop != nil {
		m.quit(drop)
	}
}

// quit says QUIT (politely, briefly) and closes the connection.
func (m *SMTPMailer) quit(c *smtpConn) {
	if err := c.sc.UpdateDeadline(min(m.cfg.Timeout, 5*time.Second)); err == nil {
		_ = c.client.CloseWithSMTPClient(c.sc)
	}
	c.cc.close()
}

// CloseIdle ends the connections kept between bursts; the mailer keeps
// none from then on (the worker calls it when it stops).
func (m *SMTPMailer) CloseIdle() {
	m.mu.Lock()
	idle := m.idle
	m.idle, m.closed = nil, true
	m.mu.Unlock()
	for _, c := range idle {
		m.quit(c)
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
