package main

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"ipnd/ipn"
)

// TestPGIngestBytesTextRefuses: a PayPal IPN (PayPal signs nothing: anyone
// can post one) whose txn_id holds bytes PostgreSQL's text refuses (NUL,
// invalid UTF-8), or whose Content-Type parameter does, is stored and
// answered 200 as on bbolt; it does not fail the group commit of the
// requests that share its transaction, nor turn /healthz 503 (a load
// balancer would take every ipnd out for one such request a second).
func TestPGIngestBytesTextRefuses(t *testing.T) {
	fake := newFakePayPal(t)
	dir := t.TempDir()
	store := "dsn = " + strconv.Quote(testDSN(t, dir)) + "\n"
	cfg := writePGTestConfig(t, dir, store, `[pipeline]
verify_timeout = "1s"
retry_base = "20ms"
retry_cap = "80ms"
[[gateway]]
name = "paypal"
kind = "paypal"
verify_url = "`+fake.srv.URL+`/cgi-bin/webscr"
receivers = ["shop@example.com"]
`)
	d := startDaemon(t, dir, cfg)
	post := func(ct string, body []byte) int {
		t.Helper()
		resp, err := http.Post(d.addr("public")+"/ipn/paypal", ct, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const form = "application/x-www-form-urlencoded"
	for _, c := range []struct {
		name, ct string
		body     []byte
	}{
		{"NUL in txn_id", form, ipnBody("txn_id", "T-\x00")},
		{"invalid UTF-8 in txn_id", form, ipnBody("txn_id", "T-\xff")},
		{"invalid UTF-8 in ipn_track_id", form, ipnBody("txn_id", "T-3", "ipn_track_id", "\xc3")},
		{"invalid UTF-8 in the Content-Type", form + "; charset=\"\xff\"", ipnBody("txn_id", "T-4")},
		{"a 20 KB txn_id", form, ipnBody("txn_id", randomText(20000))},
	} {
		fake.remember(c.body)
		if code := post(c.ct, c.body); code != 200 {
			t.Errorf("%s: HTTP %d, want 200 (as on bbolt)", c.name, code)
		}
		if code, body := publicHealthz(t, d.addr("public")); code != 200 {
			t.Errorf("after %s: public /healthz %d %q", c.name, code, body)
		}
		// The same again is a duplicate of it, not a second notification.
		if code := post(c.ct, c.body); code != 200 {
			t.Errorf("%s, resent: HTTP %d, want 200", c.name, code)
		}
	}
	var list struct{ Notifications []struct{ ID uint64 } }
	if code := d.api("GET", "/api/notifications", nil, &list); code != 200 || len(list.Notifications) != 5 {
		t.Errorf("notifications: HTTP %d, %d stored, want 5", code, len(list.Notifications))
	}
	waitFor(t, "every notification processed", 20*time.Second, func() bool {
		var l struct{ Notifications []struct{ State string } }
		if d.api("GET", "/api/notifications?state=received", nil, &l) != 200 {
			return false
		}
		return len(l.Notifications) == 0
	})
}

// TestPGOutboxErrorTextRefuses: a mail server that answers in Latin-1
// (bytes PostgreSQL's text refuses) fails that email, which is recorded
// with its reason as on bbolt; the outbox records the other results of
// the batch, goes on delivering and sends each email once.
func TestPGOutboxErrorTextRefuses(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	smtpd.answer = func(rcpt string, try int) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(rcpt, "latin"):
			return &smtp.SMTPError{Code: 550, Message: "Empf\xe4nger unbekannt"}
		case strings.HasPrefix(rcpt, "later") && try == 1:
			return &smtp.SMTPError{Code: 451, Message: "sp\xe4ter"}
		}
		return nil
	}
	shop, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	cfg := writePGTestConfig(t, dir, "dsn = "+strconv.Quote(testDSN(t, dir))+"\n", pgExtra(smtpd.port(), shopURL))
	d := startDaemon(t, dir, cfg)
	post := signedPoster(t, func() string { return d.addr("public") }, pgGatewaySecret)
	for _, p := range [][2]string{{"E-1", "latin@example.com"}, {"E-2", "ok@example.com"}, {"E-3", "later@example.com"}} {
		if code := pay(post, p[0], p[1]); code != 200 {
			t.Fatalf("payment %s: HTTP %d", p[0], code)
		}
	}
	var dead struct{ Items []ipn.OutboxItem }
	waitFor(t, "the Latin-1 bounce recorded dead", 20*time.Second, func() bool {
		return d.api("GET", "/api/outbox?state=dead", nil, &dead) == 200 && len(dead.Items) == 1
	})
	t.Logf("last error %q", dead.Items[0].LastError)
	if it := dead.Items[0]; it.Effect.To != "latin@example.com" || !strings.Contains(it.LastError, "550") || !strings.Contains(it.LastError, "Empf") {
		t.Errorf("dead item = %+v, want the 550 with its text", it)
	}
	waitFor(t, "the other emails and callbacks", 20*time.Second, func() bool {
		return len(smtpd.to("ok@example.com")) == 1 && len(smtpd.to("later@example.com")) == 1 &&
			len(shop.forOrder("E-1")) == 1 && len(shop.forOrder("E-2")) == 1 && len(shop.forOrder("E-3")) == 1
	})
	waitFor(t, "nothing pending", 20*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		return d.api("GET", "/api/outbox?state=pending", nil, &pending) == 200 && len(pending.Items) == 0
	})
	if code, body := d.healthz(); code != 200 {
		t.Errorf("healthz %d %s", code, body)
	}
	if n := len(smtpd.to("ok@example.com")); n != 1 {
		t.Errorf("%d emails to ok@, want 1", n)
	}
}

// TestPGReloadNamesRewrittenDSNFile: the DSN in store.dsn_file rewritten
// (a rotated password, another host) and SIGHUP: the pool keeps the DSN
// it was opened with, and the reload's log line says a restart is needed
// for it, as for every setting a reload does not apply.
func TestPGReloadNamesRewrittenDSNFile(t *testing.T) {
	dir := t.TempDir()
	dsn := testDSN(t, dir)
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writePGTestConfig(t, dir, "dsn_file = "+strconv.Quote(dsnFile)+"\n", "[log]\nlevel = \"info\"\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \""+pgGatewaySecret+"\"\n")
	var log lockedBuffer
	cmd, _ := startChildTo(t, dir, cfg, &log)
	d := &daemon{t: t, dir: dir}
	hup := func(n float64) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reload", 10*time.Second, func() bool { return d.scrape(`ipnd_config_reloads_total{result="success"}`) == n })
	}
	hup(1) // the same DSN: nothing to restart for
	if strings.Contains(log.String(), "needs_restart") {
		t.Fatalf("a reload with the same DSN names a restart:\n%s", log.String())
	}
	if err := os.WriteFile(dsnFile, []byte(dsn+"&application_name=rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(2)
	waitFor(t, "the reload's log line naming store.dsn_file in needs_restart", 10*time.Second, func() bool {
		return strings.Contains(log.String(), `"needs_restart":"store.dsn_file`)
	})
	if strings.Contains(log.String(), "rotated") {
		t.Errorf("the log shows the DSN:\n%s", log.String())
	}
}

// randomText is n bytes of random letters and digits (incompressible).
func randomText(n int) string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b)
}
