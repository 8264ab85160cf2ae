package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"
)

// testMessage is the i-th message of a burst.
func testMessage(i int) Message {
	return Message{
		From:      "Example Shop <shop@example.com>",
		To:        fmt.Sprintf("Customer %d <customer%d@example.net>", i, i),
		ReplyTo:   "support@example.com",
		Subject:   fmt.Sprintf("Payment received for order A-%d", i),
		Text:      fmt.Sprintf("Hello,\n\nwe received your payment for order A-%d.\n", i),
		HTML:      fmt.Sprintf("<p>Hello,</p><p>we received your payment for order <b>A-%d</b>.</p>\n", i),
		MessageID: MessageID(fmt.Sprintf("A-%d/paid/payment_received", i), "example.com"),
		Date:      time.Date(2026, 3, 1, 12, 0, i, 0, time.UTC),
	}
}

func testBurst(n int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = testMessage(i)
	}
	return msgs
}

func mustSMTPMailer(tb testing.TB, cfg SMTPConfig) *SMTPMailer {
	tb.Helper()
	m, err := NewSMTPMailer(cfg)
	if err != nil {
		tb.Fatalf("NewSMTPMailer(%v): %v", cfg, err)
	}
	return m
}

// checkReceived compares what the server got with the message sent.
func checkReceived(t *testing.T, got smtpReceived, want Message) {
	t.Helper()
	wantTo, err := netmail.ParseAddress(want.To)
	if err != nil {
		t.Fatal(err)
	}
	if got.From != "shop@example.com" || len(got.To) != 1 || got.To[0] != wantTo.Address {
		t.Errorf("envelope: got from %q to %q, want from shop@example.com to %q", got.From, got.To, wantTo.Address)
	}
	p := parseMail(t, got.Data)
	headers := []struct{ name, want string }{
		{"Subject", want.Subject},
		{"Message-Id", want.MessageID},
		{"Reply-To", "<support@example.com>"},
		{"From", `"Example Shop" <shop@example.com>`},
		{"To", fmt.Sprintf(`"%s" <%s>`, wantTo.Name, wantTo.Address)},
		{"Auto-Submitted", "auto-generated"},
	}
	for _, h := range headers {
		if g := p.Header.Get(h.name); g != h.want {
			t.Errorf("%s: got %q, want %q", h.name, g, h.want)
		}
	}
	date, err := p.Header.Date()
	if err != nil || !date.Equal(want.Date) {
		t.Errorf("Date: got %v (%v), want %v", date, err, want.Date)
	}
	if p.Text != want.Text {
		t.Errorf("text part: got %q, want %q", p.Text, want.Text)
	}
	if p.HTML != want.HTML {
		t.Errorf("HTML part: got %q, want %q", p.HTML, want.HTML)
	}
}

func TestSMTPMailerBurstOneConnection(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts smtpTestOptions
	}{
		{"none", smtpTestOptions{TLS: SMTPNoTLS}},
		{"starttls", smtpTestOptions{TLS: SMTPStartTLS}},
		{"tls", smtpTestOptions{TLS: SMTPTLS}},
		{"starttls+auth", smtpTestOptions{TLS: SMTPStartTLS, Username: "ipnd", Password: "s3cret pass"}},
		{"tls+auth", smtpTestOptions{TLS: SMTPTLS, Username: "ipnd", Password: "s3cret pass"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			srv := startSMTPTestServer(t, mode.opts)
			m := mustSMTPMailer(t, srv.config(t))
			msgs := testBurst(3)
			errs := m.Send(context.Background(), msgs)
			if len(errs) != len(msgs) {
				t.Fatalf("Send returned %d errors for %d messages", len(errs), len(msgs))
			}
			for i, err := range errs {
				if err != nil {
					t.Errorf("message %d: %v", i, err)
				}
			}
			if got := srv.connections(); got != 1 {
				t.Errorf("connections: got %d, want 1 for a burst of %d", got, len(msgs))
			}
			got := srv.received()
			if len(got) != len(msgs) {
				t.Fatalf("server received %d messages, want %d", len(got), len(msgs))
			}
			for i := range msgs {
				checkReceived(t, got[i], msgs[i])
				if wantTLS := mode.opts.TLS != SMTPNoTLS; got[i].TLS != wantTLS {
					t.Errorf("message %d: encrypted %v, want %v", i, got[i].TLS, wantTLS)
				}
				if got[i].User != mode.opts.Username {
					t.Errorf("message %d: authenticated as %q, want %q", i, got[i].User, mode.opts.Username)
				}
			}
		})
	}
}

func TestSMTPMailerRefusals(t *testing.T) {
	for _, stage := range []string{"MAIL", "RCPT", "DATA"} {
		for _, code := range []int{421, 451, 452, 550, 552, 554} {
			t.Run(fmt.Sprintf("%s/%d", stage, code), func(t *testing.T) {
				srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS})
				srv.rejectAll(stage, code)
				m := mustSMTPMailer(t, srv.config(t))
				errs := m.Send(context.Background(), testBurst(2))
				wantPermanent := code >= 500
				for i, err := range errs {
					if err == nil {
						t.Fatalf("message %d: no error though the server answers %d to %s", i, code, stage)
					}
					if Permanent(err) != wantPermanent {
						t.Errorf("message %d: Permanent(%v) = %v, want %v", i, err, Permanent(err), wantPermanent)
					}
					if !strings.Contains(err.Error(), fmt.Sprint(code)) {
						t.Errorf("message %d: error %q does not show the reply code %d", i, err, code)
					}
				}
				if n := len(srv.received()); n != 0 {
					t.Errorf("server kept %d messages, want 0", n)
				}
				if got := srv.connections(); got != 1 {
					t.Errorf("connections: got %d, want 1", got)
				}
			})
		}
	}
}

// One refused message does not stop the rest of the burst.
func TestSMTPMailerRefusalInBurst(t *testing.T) {
	for _, stage := range []string{"MAIL", "RCPT", "DATA"} {
		t.Run(stage, func(t *testing.T) {
			srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS})
			msgs := testBurst(3)
			msgs[1].From = "other-sender@example.com"
			srv.setReject(func(st, arg string) int {
				if st == stage && (arg == "customer1@example.net" || arg == "other-sender@example.com") {
					return 550
				}
				return 0
			})
			m := mustSMTPMailer(t, srv.config(t))
			errs := m.Send(context.Background(), msgs)
			if errs[0] != nil || errs[2] != nil {
				t.Errorf("messages 0 and 2: got %v, %v, want both delivered", errs[0], errs[2])
			}
			if !Permanent(errs[1]) {
				t.Errorf("message 1: got %v, want a permanent error", errs[1])
			}
			got := srv.received()
			if len(got) != 2 {
				t.Fatalf("server received %d messages, want 2", len(got))
			}
			if got[0].To[0] != "customer0@example.net" || got[1].To[0] != "customer2@example.net" {
				t.Errorf("received for %v and %v, want customer0 and customer2", got[0].To, got[1].To)
			}
			if n := srv.connections(); n != 1 {
				t.Errorf("connections: got %d, want 1", n)
			}
		})
	}
}

// The server drops the connection in the middle of a burst: the message
// in flight and the rest fail, not permanently.
func TestSMTPMailerConnectionLost(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS})
	srv.setReject(func(stage, arg string) int {
		if stage == "DATA" && arg == "customer1@example.net" {
			return smtpDrop
		}
		return 0
	})
	m := mustSMTPMailer(t, srv.config(t))
	errs := m.Send(context.Background(), testBurst(3))
	if errs[0] != nil {
		t.Errorf("message 0: %v", errs[0])
	}
	for i := 1; i < 3; i++ {
		if errs[i] == nil || Permanent(errs[i]) {
			t.Errorf("message %d: got %v, want a temporary error", i, errs[i])
		}
	}
	if got := srv.received(); len(got) != 1 {
		t.Errorf("server received %d messages, want 1", len(got))
	}
	// The next burst gets a new connection and goes through.
	srv.setReject(nil)
	for i, err := range m.Send(context.Background(), testBurst(3)[1:]) {
		if err != nil {
			t.Errorf("retry of message %d: %v", i+1, err)
		}
	}
	if n := srv.connections(); n != 2 {
		t.Errorf("connections: got %d, want 2", n)
	}
}

func TestSMTPMailerTemporaryThenAccepted(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS})
	m := mustSMTPMailer(t, srv.config(t))
	msg := []Message{testMessage(7)}

	srv.rejectAll("RCPT", 451)
	errs := m.Send(context.Background(), msg)
	if errs[0] == nil || Permanent(errs[0]) {
		t.Fatalf("451: got %v, want a temporary error", errs[0])
	}
	srv.setReject(nil)
	if errs := m.Send(context.Background(), msg); errs[0] != nil {
		t.Fatalf("retry: %v", errs[0])
	}
	if got := srv.received(); len(got) != 1 {
		t.Fatalf("server received %d messages, want 1", len(got))
	}
}

func TestSMTPMailerUnusableMessages(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS})
	m := mustSMTPMailer(t, srv.config(t))
	msgs := testBurst(6)
	msgs[1].To = "not an address"
	msgs[2].MessageID = ""
	msgs[3].From = ""
	msgs[4].Text, msgs[4].HTML = "", ""
	errs := m.Send(context.Background(), msgs)
	for i, err := range errs {
		if i == 0 || i == 5 {
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
			continue
		}
		if !Permanent(err) {
			t.Errorf("message %d: got %v, want a permanent error", i, err)
		}
	}
	if got := srv.received(); len(got) != 2 {
		t.Errorf("server received %d messages, want 2", len(got))
	}

	// Nothing usable: no connection at all.
	before := srv.connections()
	errs = m.Send(context.Background(), msgs[1:5])
	for i, err := range errs {
		if !Permanent(err) {
			t.Errorf("unusable message %d: got %v, want a permanent error", i, err)
		}
	}
	if n := srv.connections() - before; n != 0 {
		t.Errorf("%d connections for a burst of unusable messages, want 0", n)
	}
}

func TestSMTPMailerServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	_ = ln.Close()
	m := mustSMTPMailer(t, SMTPConfig{Host: "127.0.0.1", Port: addr.Port, TLS: SMTPStartTLS, Timeout: 5 * time.Second})
	errs := m.Send(context.Background(), testBurst(2))
	for i, err := range errs {
		if err == nil || Permanent(err) {
			t.Errorf("message %d: got %v, want a temporary error", i, err)
		}
	}
}

// silentServer accepts connections and never says a word; accepted gets
// a value per connection. Everything is closed when the test ends.
func silentServer(t *testing.T) (port int, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			ch <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port, ch
}

func TestSMTPMailerTimeout(t *testing.T) {
	port, _ := silentServer(t)
	m := mustSMTPMailer(t, SMTPConfig{Host: "127.0.0.1", Port: port, TLS: SMTPStartTLS, Timeout: 200 * time.Millisecond})
	start := time.Now()
	errs := m.Send(context.Background(), testBurst(2))
	for i, err := range errs {
		if err == nil || Permanent(err) {
			t.Errorf("message %d: got %v, want a temporary error", i, err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Send took %v with a 200ms timeout", d)
	}
}

func TestSMTPMailerContextCancel(t *testing.T) {
	t.Run("blocked on a silent server", func(t *testing.T) {
		port, accepted := silentServer(t)
		m := mustSMTPMailer(t, SMTPConfig{Host: "127.0.0.1", Port: port, TLS: SMTPStartTLS, Timeout: time.Minute})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-accepted
			cancel()
		}()
		start := time.Now()
		errs := m.Send(ctx, testBurst(2))
		for i, err := range errs {
			if !errors.Is(err, context.Canceled) || Permanent(err) {
				t.Errorf("message %d: got %v, want a temporary error wrapping context.Canceled", i, err)
			}
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("Send took %v after cancel, want it to return at once", d)
		}
	})
	t.Run("already done", func(t *testing.T) {
		srv := startSMTPTestServer(t, smtpTestOptions{})
		m := mustSMTPMailer(t, srv.config(t))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		errs := m.Send(ctx, testBurst(2))
		for i, err := range errs {
			if !errors.Is(err, context.Canceled) || Permanent(err) {
				t.Errorf("message %d: got %v, want a temporary error wrapping context.Canceled", i, err)
			}
		}
		if n := srv.connections(); n != 0 {
			t.Errorf("connections: got %d, want 0", n)
		}
	})
}

func TestSMTPMailerAuth(t *testing.T) {
	const user, pass = "ipnd", "correct horse"
	t.Run("wrong password", func(t *testing.T) {
		srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS, Username: user, Password: pass})
		cfg := srv.config(t)
		cfg.Password = "wrong battery staple"
		errs := mustSMTPMailer(t, cfg).Send(context.Background(), testBurst(1))
		if errs[0] == nil || Permanent(errs[0]) {
			t.Fatalf("got %v, want a temporary error (a configuration problem, not the message's)", errs[0])
		}
		if strings.Contains(errs[0].Error(), cfg.Password) {
			t.Errorf("error %q reveals the password", errs[0])
		}
		if strings.Contains(fmt.Sprint(cfg), cfg.Password) || strings.Contains(fmt.Sprintf("%+v", cfg), cfg.Password) ||
			strings.Contains(fmt.Sprintf("%#v", cfg), cfg.Password) {
			t.Errorf("SMTPConfig prints its password: %v", cfg)
		}
		if n := len(srv.received()); n != 0 {
			t.Errorf("server received %d messages, want 0", n)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS, Username: user, Password: pass})
		cfg := srv.config(t)
		cfg.Username, cfg.Password = "", ""
		errs := mustSMTPMailer(t, cfg).Send(context.Background(), testBurst(1))
		if errs[0] == nil {
			t.Fatal("sent without authenticating")
		}
	})
}

func TestSMTPMailerStartTLSMandatory(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPNoTLS})
	cfg := srv.config(t)
	cfg.TLS = SMTPStartTLS
	errs := mustSMTPMailer(t, cfg).Send(context.Background(), testBurst(2))
	for i, err := range errs {
		if err == nil || Permanent(err) {
			t.Errorf("message %d: got %v, want a temporary error when the server offers no STARTTLS", i, err)
		}
	}
	if n := len(srv.received()); n != 0 {
		t.Errorf("server received %d messages in clear, want 0", n)
	}
}

func TestSMTPMailerUntrustedCertificate(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS})
	cfg := srv.config(t)
	cfg.TLSConfig = nil // system roots: the self-signed certificate is refused
	errs := mustSMTPMailer(t, cfg).Send(context.Background(), testBurst(1))
	if errs[0] == nil || Permanent(errs[0]) {
		t.Fatalf("got %v, want a temporary error", errs[0])
	}
	if n := len(srv.received()); n != 0 {
		t.Errorf("server received %d messages, want 0", n)
	}
}

func TestNewSMTPMailerConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg      SMTPConfig
		wantErr  bool
		wantPort int
	}{
		{cfg: SMTPConfig{Host: "mail.example.com"}, wantPort: 587},
		{cfg: SMTPConfig{Host: "mail.example.com", TLS: SMTPTLS}, wantPort: 465},
		{cfg: SMTPConfig{Host: "mail.example.com", TLS: SMTPNoTLS}, wantPort: 25},
		{cfg: SMTPConfig{Host: "mail.example.com", Port: 2525}, wantPort: 2525},
		{cfg: SMTPConfig{}, wantErr: true},
		{cfg: SMTPConfig{Host: "mail.example.com", TLS: "ssl"}, wantErr: true},
		{cfg: SMTPConfig{Host: "mail.example.com", Port: 70000}, wantErr: true},
		{cfg: SMTPConfig{Host: "mail.example.com", Timeout: -time.Second}, wantErr: true},
	} {
		m, err := NewSMTPMailer(tc.cfg)
		if (err != nil) != tc.wantErr {
			t.Errorf("NewSMTPMailer(%v): got error %v, want error %v", tc.cfg, err, tc.wantErr)
			continue
		}
		if err == nil && m.cfg.Port != tc.wantPort {
			t.Errorf("NewSMTPMailer(%v): port %d, want %d", tc.cfg, m.cfg.Port, tc.wantPort)
		}
	}
}

// TestSMTPMailerKeepsConnection: the connection of one burst serves the
// next (checked with RSET first); one that died while kept is replaced
// without failing a message.
func TestSMTPMailerKeepsConnection(t *testing.T) {
	srv := startSMTPTestServer(t, smtpTestOptions{TLS: SMTPStartTLS, Username: "ipnd", Password: "pw"})
	m := mustSMTPMailer(t, srv.config(t))
	defer m.CloseIdle()
	msgs := testBurst(6)
	for i := 0; i < 6; i += 2 {
		for j, err := range m.Send(context.Background(), msgs[i:i+2]) {
			if err != nil {
				t.Errorf("message %d: %v", i+j, err)
			}
		}
	}
	if n := srv.connections(); n != 1 {
		t.Errorf("3 bursts took %d connections, want 1", n)
	}
	// The kept connection dies (the server's idle timeout, say).
	m.mu.Lock()
	for _, c := range m.idle {
		c.cc.close()
	}
	m.mu.Unlock()
	for j, err := range m.Send(context.Background(), testBurst(8)[6:]) {
		if err != nil {
			t.Errorf("after the kept connection died: message %d: %v", 6+j, err)
		}
	}
	if got := srv.received(); len(got) != 8 {
		t.Errorf("server received %d messages, want 8", len(got))
	}
	if n := srv.connections(); n != 2 {
		t.Errorf("connections: %d, want 2 (a new one for the dead)", n)
	}
	m.CloseIdle()
	if len(m.idle) != 0 {
		t.Errorf("%d connections kept after CloseIdle", len(m.idle))
	}
}
