package notify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// This file is an in-process SMTP server (github.com/emersion/go-smtp on
// 127.0.0.1:0) for the tests of this package: it records what it
// receives, counts connections, can require STARTTLS or speak implicit
// TLS with a self-signed certificate, can require AUTH PLAIN, and can be
// told to refuse MAIL, RCPT or DATA with any reply code.

// smtpTestOptions configures startSMTPTestServer.
type smtpTestOptions struct {
	TLS      string // SMTPNoTLS (default: no STARTTLS offered), SMTPStartTLS (offered and required), SMTPTLS (implicit)
	Username string // non-empty: AUTH PLAIN required with Username/Password
	Password string
	Discard  bool // count messages but keep no data (benchmarks)
}

// smtpReceived is one message as the server received it.
type smtpReceived struct {
	From string
	To   []string
	Data []byte
	TLS  bool   // the session was encrypted
	User string // the authenticated user, "" if none
}

// smtpTestServer is a running in-process SMTP server.
type smtpTestServer struct {
	Host string
	Port int

	opts     smtpTestOptions
	srv      *smtp.Server
	conns    atomic.Int64
	accepted atomic.Int64
	sessions sync.WaitGroup

	mu     sync.Mutex
	msgs   []smtpReceived
	reject func(stage, arg string) int // returns a reply code to refuse with, 0 to accept
	notify chan struct{}               // gets a value (without blocking) per accepted message
}

// startSMTPTestServer starts a server; it is stopped, and its
// connections waited for, when the test ends.
func startSMTPTestServer(tb testing.TB, opts smtpTestOptions) *smtpTestServer {
	tb.Helper()
	s := &smtpTestServer{opts: opts, notify: make(chan struct{}, 1)}
	s.srv = smtp.NewServer(smtp.BackendFunc(s.newSession))
	s.srv.Domain = "localhost"
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.MaxMessageBytes = 1 << 20
	s.srv.ErrorLog = log.New(io.Discard, "", 0)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	switch opts.TLS {
	case SMTPStartTLS:
		s.srv.TLSConfig = testServerTLS(tb)
	case SMTPTLS:
		ln = tls.NewListener(ln, testServerTLS(tb))
	}
	addr := ln.Addr().(*net.TCPAddr)
	s.Host, s.Port = addr.IP.String(), addr.Port

	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(countingListener{Listener: ln, n: &s.conns}) }()
	tb.Cleanup(func() {
		_ = s.srv.Close()
		// Close misses the listener if Serve has not registered it yet.
		_ = ln.Close()
		if err := <-served; err != nil {
			tb.Errorf("smtp test server: %v", err)
		}
		s.sessions.Wait()
	})
	return s
}

// config is an SMTPConfig for this server: its TLS mode, its credentials
// and a client TLS configuration trusting its certificate.
func (s *smtpTestServer) config(tb testing.TB) SMTPConfig {
	tb.Helper()
	cfg := SMTPConfig{Host: s.Host, Port: s.Port, TLS: SMTPNoTLS, Timeout: 10 * time.Second,
		Username: s.opts.Username, Password: s.opts.Password, HelloName: "ipnd.test"}
	if s.opts.TLS == SMTPStartTLS || s.opts.TLS == SMTPTLS {
		cfg.TLS = s.opts.TLS
		cfg.TLSConfig = testClientTLS(tb)
	}
	return cfg
}

// setReject installs the function deciding refusals ("MAIL" with the
// sender, "RCPT" with the recipient, "DATA" with the first recipient,
// after the content is read): it returns a reply code, 0 to accept or
// smtpDrop to close the connection. nil accepts everything.
func (s *smtpTestServer) setReject(f func(stage, arg string) int) {
	s.mu.Lock()
	s.reject = f
	s.mu.Unlock()
}

// rejectAll refuses every command of stage with code.
func (s *smtpTestServer) rejectAll(stage string, code int) {
	s.setReject(func(st, _ string) int {
		if st == stage {
			return code
		}
		return 0
	})
}

// received returns a copy of the messages received so far.
func (s *smtpTestServer) received() []smtpReceived {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]smtpReceived(nil), s.msgs...)
}

// connections is the number of TCP connections accepted so far.
func (s *smtpTestServer) connections() int { return int(s.conns.Load()) }

// smtpDrop, returned by a reject function, closes the connection
// without answering.
const smtpDrop = -1

func (ss *smtpTestSession) refusal(stage, arg string) error {
	s := ss.srv
	s.mu.Lock()
	f := s.reject
	s.mu.Unlock()
	if f == nil {
		return nil
	}
	code := f(stage, arg)
	if code == 0 {
		return nil
	}
	if code == smtpDrop {
		_ = ss.conn.Close()
		return errors.New("connection dropped")
	}
	class := code / 100
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, 0, 0},
		Message: "test refusal at " + stage}
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func (s *smtpTestServer) newSession(c *smtp.Conn) (smtp.Session, error) {
	s.sessions.Add(1)
	_, isTLS := c.TLSConnectionState()
	return &smtpTestSession{srv: s, conn: c, tls: isTLS}, nil
}

// smtpTestSession is one SMTP session (a new one starts after STARTTLS).
type smtpTestSession struct {
	srv  *smtpTestServer
	conn *smtp.Conn
	tls  bool
	user string
	from string
	to   []string
}

var errSMTPNeedTLS = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}

func (ss *smtpTestSession) AuthMechanisms() []string {
	if ss.srv.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *smtpTestSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.srv.opts.Username || password != ss.srv.opts.Password {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *smtpTestSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.opts.TLS == SMTPStartTLS && !ss.tls {
		return errSMTPNeedTLS
	}
	if ss.srv.opts.Username != "" && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	if err := ss.refusal("MAIL", from); err != nil {
		return err
	}
	ss.from = from
	return nil
}

func (ss *smtpTestSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.refusal("RCPT", to); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpTestSession) Data(r io.Reader) error {
	var data []byte
	var err error
	if ss.srv.opts.Discard {
		_, err = io.Copy(io.Discard, r)
	} else {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return err
	}
	first := ""
	if len(ss.to) > 0 {
		first = ss.to[0]
	}
	if err := ss.refusal("DATA", first); err != nil {
		return err
	}
	ss.srv.accepted.Add(1)
	if !ss.srv.opts.Discard {
		ss.srv.mu.Lock()
		ss.srv.msgs = append(ss.srv.msgs, smtpReceived{From: ss.from, To: append([]string(nil), ss.to...),
			Data: data, TLS: ss.tls, User: ss.user})
		ss.srv.mu.Unlock()
	}
	select {
	case ss.srv.notify <- struct{}{}:
	default:
	}
	return nil
}

func (ss *smtpTestSession) Reset() {
	ss.from, ss.to = "", nil
}

func (ss *smtpTestSession) Logout() error {
	ss.srv.sessions.Done()
	return nil
}

// The self-signed certificate of the test servers, made once per run.
var (
	testCertOnce sync.Once
	testCert     tls.Certificate
	testCertPool *x509.CertPool
	testCertErr  error
)

func loadTestCert(tb testing.TB) {
	tb.Helper()
	testCertOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			testCertErr = err
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "ipnd test SMTP server"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:              []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			testCertErr = err
			return
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			testCertErr = err
			return
		}
		testCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
		testCertPool = x509.NewCertPool()
		testCertPool.AddCert(cert)
	})
	if testCertErr != nil {
		tb.Fatalf("test certificate: %v", testCertErr)
	}
}

func testServerTLS(tb testing.TB) *tls.Config {
	loadTestCert(tb)
	return &tls.Config{Certificates: []tls.Certificate{testCert}, MinVersion: tls.VersionTLS12}
}

func testClientTLS(tb testing.TB) *tls.Config {
	loadTestCert(tb)
	return &tls.Config{RootCAs: testCertPool}
}

// parsedMail is a received or written message, decoded.
type parsedMail struct {
	Header netmail.Header
	Text   string
	HTML   string
}

// parseMail parses an RFC 5322 message with a text/plain and/or a
// text/html body (single part or multipart/alternative).
func parseMail(tb testing.TB, raw []byte) parsedMail {
	tb.Helper()
	m, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		tb.Fatalf("parse message: %v\n%s", err, raw)
	}
	p := parsedMail{Header: m.Header}
	if err := readPart(&p, m.Header.Get("Content-Type"), m.Header.Get("Content-Transfer-Encoding"), m.Body); err != nil {
		tb.Fatalf("parse message body: %v\n%s", err, raw)
	}
	return p
}

func readPart(p *parsedMail, contentType, encoding string, body io.Reader) error {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return err
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := readPart(p, part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part); err != nil {
				return err
			}
		}
	}
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "", "7bit", "8bit":
	default:
		return errors.New("unexpected transfer encoding " + encoding)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	switch mediaType {
	case "text/plain":
		p.Text = text
	case "text/html":
		p.HTML = text
	default:
		return errors.New("unexpected part " + mediaType)
	}
	return nil
}
