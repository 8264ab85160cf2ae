package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
)

// pgShopSecret is the shop's callback secret in these tests.
const pgShopSecret = "whsec_" + "c2hvcC1jYWxsYmFjay1zZWNyZXQtZm9yLXRlc3Rz"

// pgGatewaySecret is the "shop" gateway's secret in these tests.
const pgGatewaySecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// pgExtra is the rest of a PostgreSQL test config: SMTP at smtpPort,
// the shop's callbacks to shopURL, the "shop" gateway.
func pgExtra(smtpPort, shopURL string) string {
	return fmt.Sprintf(`%s[shop]
url = %q
secret = %q
timeout = "2s"
[log]
level = "info"
[[gateway]]
name = "shop"
kind = "standard-webhooks"
secret = %q
`, mailConfig(smtpPort, ""), shopURL, pgShopSecret, pgGatewaySecret)
}

// pgHealth is the admin /healthz answer of a daemon on PostgreSQL.
type pgHealth struct {
	Status  string
	Error   string
	Leading bool
	Process string
	Leader  string
}

func (d *daemon) pgHealth() (int, pgHealth) {
	d.t.Helper()
	code, body := d.healthz()
	var h pgHealth
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		d.t.Fatalf("healthz %d %q: %v", code, body, err)
	}
	return code, h
}

// orderStatus is the status of an order by the admin API ("" when it
// is not there).
func (d *daemon) orderStatus(id string) string {
	d.t.Helper()
	var o struct{ Status string }
	if d.api("GET", "/api/orders/"+id, nil, &o) != 200 {
		return ""
	}
	return o.Status
}

// pay posts a completed payment for order id with the customer's email
// and returns the status.
func pay(post func(string, string, map[string]any) int, id, email string) int {
	return post("m-"+id, "payment.completed", map[string]any{"order_id": id, "txn_id": "T-" + id, "amount": "19.99",
		"currency": "USD", "customer_email": email, "customer_name": "Ann Lee"})
}

// TestPGServe: ipnd serve on PostgreSQL (the DSN in store.dsn_file), a
// child process: a payment is answered 200, applied (the order is paid),
// its email and its callback are delivered once; /healthz and the
// metrics say this process leads.
func TestPGServe(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(testDSN(t, dir)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writePGTestConfig(t, dir, "dsn_file = "+strconv.Quote(dsnFile)+"\n", pgExtra(smtpd.port(), shopURL))
	startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	post := signedPoster(t, func() string { return d.addr("public") }, pgGatewaySecret)

	if code := pay(post, "P-1", "ann@example.com"); code != 200 {
		t.Fatalf("payment: HTTP %d", code)
	}
	waitFor(t, "order P-1 paid", 20*time.Second, func() bool { return d.orderStatus("P-1") == "paid" })
	waitFor(t, "the payment email", 20*time.Second, func() bool { return len(smtpd.to("ann@example.com")) == 1 })
	waitFor(t, "the shop's callback", 20*time.Second, func() bool { return len(shop.forOrder("P-1")) == 1 })
	// A duplicate is answered 200 and applied nothing more.
	if code := pay(post, "P-1", "ann@example.com"); code != 200 {
		t.Fatalf("duplicate: HTTP %d", code)
	}
	if code, h := d.pgHealth(); code != 200 || h.Status != "ok" || !h.Leading || h.Leader == "" || h.Leader != h.Process {
		t.Errorf("healthz = %d %+v, want ok, leading, this process the leader", code, h)
	}
	if v := d.scrape("ipnd_leader"); v != 1 {
		t.Errorf("ipnd_leader = %v, want 1", v)
	}
	if v := d.scrape("ipnd_store_writable"); v != 1 {
		t.Errorf("ipnd_store_writable = %v, want 1", v)
	}
	if n := len(smtpd.to("ann@example.com")); n != 1 {
		t.Errorf("%d emails, want 1", n)
	}
	// ipnd backup says what to use instead.
	out, err := runCmd(t, envFunc(), "backup", "-config", cfg, filepath.Join(t.TempDir(), "b.db"))
	if err == nil || !strings.Contains(err.Error()+out, "pg_dump") {
		t.Errorf("ipnd backup on PostgreSQL = %v %q, want it to name pg_dump", err, out)
	}
}

// TestPGServeDatabaseStopped: PostgreSQL stopped under a running ipnd:
// ingest answers 503 and /healthz 503 saying why; started again, ipnd
// takes notifications and applies them without a restart.
func TestPGServeDatabaseStopped(t *testing.T) {
	c := pgtest.Start(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	dir := t.TempDir()
	cfg := writePGTestConfig(t, dir, "dsn = "+strconv.Quote(c.DSN())+"\n", pgExtra(smtpd.port(), shopURL))
	d := startDaemon(t, dir, cfg)
	post := signedPoster(t, func() string { return d.addr("public") }, pgGatewaySecret)
	if code := pay(post, "S-1", "a1@example.com"); code != 200 {
		t.Fatalf("payment: HTTP %d", code)
	}
	waitFor(t, "order S-1 paid", 20*time.Second, func() bool { return d.orderStatus("S-1") == "paid" })
	// Its deliveries made and recorded: none in flight at the stop (those
	// would be made again).
	waitFor(t, "S-1's deliveries recorded", 20*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		return len(smtpd.to("a1@example.com")) == 1 && d.api("GET", "/api/outbox?state=pending", nil, &pending) == 200 && len(pending.Items) == 0
	})

	c.Stop()
	if code := pay(post, "S-2", "a2@example.com"); code != 503 {
		t.Fatalf("payment while PostgreSQL is stopped: HTTP %d, want 503", code)
	}
	var body string
	waitFor(t, "/healthz 503", 20*time.Second, func() bool {
		var code int
		code, body = d.healthz()
		return code == 503
	})
	if !strings.Contains(body, "ingest answers 503") || !strings.Contains(body, "postgres unavailable") {
		t.Errorf("healthz while PostgreSQL is stopped = %s, want the reason", body)
	}
	if code, _ := publicHealthz(t, d.addr("public")); code != 503 {
		t.Errorf("public /healthz = %d, want 503", code)
	}
	if v := d.scrape("ipnd_store_writable"); v != 0 {
		t.Errorf("ipnd_store_writable = %v, want 0", v)
	}
	// The admin API's reads and decisions say the store is unavailable
	// (503, try again), not an internal error.
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/orders/S-1", ""},
		{"GET", "/api/notifications", ""},
		{"POST", "/api/orders/S-1/notes", `{"text":"x"}`},
		{"POST", "/api/outbox/1/retry", ""},
	} {
		var body any
		if r.body != "" {
			body = json.RawMessage(r.body)
		}
		if code := d.api(r.method, r.path, body, nil); code != 503 {
			t.Errorf("%s %s while PostgreSQL is stopped: HTTP %d, want 503", r.method, r.path, code)
		}
	}

	c.Start()
	waitFor(t, "/healthz 200 again", 30*time.Second, func() bool {
		code, _ := d.healthz()
		return code == 200
	})
	if code := pay(post, "S-2", "a2@example.com"); code != 200 {
		t.Fatalf("payment after PostgreSQL is back: HTTP %d", code)
	}
	waitFor(t, "order S-2 paid", 30*time.Second, func() bool { return d.orderStatus("S-2") == "paid" })
	waitFor(t, "both emails", 30*time.Second, func() bool {
		return len(smtpd.to("a1@example.com")) == 1 && len(smtpd.to("a2@example.com")) == 1
	})
	waitFor(t, "both callbacks", 30*time.Second, func() bool { return len(shop.forOrder("S-1")) == 1 && len(shop.forOrder("S-2")) == 1 })
	if v := d.scrape("ipnd_leader"); v != 1 {
		t.Errorf("ipnd_leader after the outage = %v, want 1", v)
	}
}

// TestPGTwoProcessesTakeover: two ipnd on one database: both ingest,
// only one leads and /healthz and the metrics of both say which; kill -9
// of the leader: the other leads within the lease's bound and applies
// and delivers what was pending, each email and callback once.
func TestPGTwoProcessesTakeover(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	dsn := testDSN(t, dirA)
	cfgA := writePGTestConfig(t, dirA, "dsn = "+strconv.Quote(dsn)+"\n", pgExtra(smtpd.port(), shopURL))
	cfgB := writePGTestConfig(t, dirB, "dsn = "+strconv.Quote(dsn)+"\n", pgExtra(smtpd.port(), shopURL))
	cmdA, exitedA := startChild(t, dirA, cfgA)
	a := &daemon{t: t, dir: dirA}
	waitFor(t, "A leads", 20*time.Second, func() bool { return a.scrape("ipnd_leader") == 1 })
	startChild(t, dirB, cfgB)
	b := &daemon{t: t, dir: dirB}
	postB := signedPoster(t, func() string { return b.addr("public") }, pgGatewaySecret)

	_, ha := a.pgHealth()
	code, hb := b.pgHealth()
	if code != 200 || !ha.Leading || hb.Leading || ha.Leader != ha.Process || hb.Leader != ha.Process || hb.Process == ha.Process {
		t.Fatalf("healthz: A %+v, B %d %+v; want A leading and named by both", ha, code, hb)
	}
	if va, vb := a.scrape("ipnd_leader"), b.scrape("ipnd_leader"); va != 1 || vb != 0 {
		t.Errorf("ipnd_leader: A %v, B %v; want 1, 0", va, vb)
	}
	// B ingests, A applies and delivers.
	if code := pay(postB, "L-0", "l0@example.com"); code != 200 {
		t.Fatalf("payment to B: HTTP %d", code)
	}
	waitFor(t, "order L-0 paid", 20*time.Second, func() bool { return b.orderStatus("L-0") == "paid" })
	waitFor(t, "L-0's email", 20*time.Second, func() bool { return len(smtpd.to("l0@example.com")) == 1 })
	// Its deliveries recorded: none of them is in flight at the kill (those
	// in flight may be made again by the next leader).
	waitFor(t, "L-0's deliveries recorded", 20*time.Second, func() bool {
		var pending struct{ Items []ipn.OutboxItem }
		return b.api("GET", "/api/outbox?state=pending", nil, &pending) == 200 && len(pending.Items) == 0
	})

	// kill -9 of the leader; B takes the payments meanwhile.
	if err := cmdA.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exitedA
	killed := time.Now()
	for i := 1; i <= 5; i++ {
		if code := pay(postB, fmt.Sprintf("L-%d", i), fmt.Sprintf("l%d@example.com", i)); code != 200 {
			t.Fatalf("payment %d to B after the kill: HTTP %d", i, code)
		}
	}
	waitFor(t, "B leads", 30*time.Second, func() bool { return b.scrape("ipnd_leader") == 1 })
	t.Logf("B leads %.1fs after the leader was killed (lease %s)", time.Since(killed).Seconds(), leaseTTL)
	for i := 0; i <= 5; i++ {
		id := fmt.Sprintf("L-%d", i)
		waitFor(t, id+" paid, emailed and called back", 30*time.Second, func() bool {
			return b.orderStatus(id) == "paid" && len(smtpd.to(fmt.Sprintf("l%d@example.com", i))) >= 1 && len(shop.forOrder(id)) >= 1
		})
	}
	if code, h := b.pgHealth(); code != 200 || !h.Leading || h.Leader != h.Process {
		t.Errorf("B's healthz after the takeover = %d %+v", code, h)
	}
	for i := 0; i <= 5; i++ {
		id := fmt.Sprintf("L-%d", i)
		if n := len(smtpd.to(fmt.Sprintf("l%d@example.com", i))); n != 1 {
			t.Errorf("%s: %d emails, want 1", id, n)
		}
		if n := len(shop.forOrder(id)); n != 1 {
			t.Errorf("%s: %d callbacks, want 1", id, n)
		}
	}
}

// TestPGReloadLeaderAndNextTerm: a reload (SIGHUP) that moves the shop's
// callbacks to another URL replaces the leader's outbox worker at once;
// a process that does not lead when it reloads leads its next term with
// the reloaded config.
func TestPGReloadLeaderAndNextTerm(t *testing.T) {
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop1, url1 := newShopReceiver(t)
	shop2, url2 := newShopReceiver(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	store := "dsn = " + strconv.Quote(testDSN(t, dirA)) + "\n"
	cfgA := writePGTestConfig(t, dirA, store, pgExtra(smtpd.port(), url1))
	cfgB := writePGTestConfig(t, dirB, store, pgExtra(smtpd.port(), url1))
	cmdA, exitedA := startChild(t, dirA, cfgA)
	a := &daemon{t: t, dir: dirA}
	waitFor(t, "A leads", 20*time.Second, func() bool { return a.scrape("ipnd_leader") == 1 })
	cmdB, _ := startChild(t, dirB, cfgB)
	b := &daemon{t: t, dir: dirB}
	postB := signedPoster(t, func() string { return b.addr("public") }, pgGatewaySecret)
	hup := func(cmd *exec.Cmd, d *daemon, cfg string) {
		t.Helper()
		writePGTestConfig(t, d.dir, store, pgExtra(smtpd.port(), url2))
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reload", 10*time.Second, func() bool { return d.scrape(`ipnd_config_reloads_total{result="success"}`) == 1 })
	}

	if code := pay(postB, "R-1", "r1@example.com"); code != 200 {
		t.Fatalf("payment: HTTP %d", code)
	}
	waitFor(t, "R-1's callback to the first URL", 20*time.Second, func() bool { return len(shop1.forOrder("R-1")) == 1 })
	hup(cmdA, a, cfgA)
	if code := pay(postB, "R-2", "r2@example.com"); code != 200 {
		t.Fatalf("payment: HTTP %d", code)
	}
	waitFor(t, "R-2's callback to the reloaded URL", 20*time.Second, func() bool { return len(shop2.forOrder("R-2")) == 1 })

	// B reloads while A leads, then A dies: B's term calls the new URL.
	hup(cmdB, b, cfgB)
	if err := cmdA.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exitedA
	if code := pay(postB, "R-3", "r3@example.com"); code != 200 {
		t.Fatalf("payment: HTTP %d", code)
	}
	waitFor(t, "B leads", 30*time.Second, func() bool { return b.scrape("ipnd_leader") == 1 })
	waitFor(t, "R-3's callback to the reloaded URL", 30*time.Second, func() bool { return len(shop2.forOrder("R-3")) == 1 })
	if n := len(shop1.forOrder("R-2")) + len(shop1.forOrder("R-3")); n != 0 {
		t.Errorf("%d callbacks after the reload went to the old URL", n)
	}
}
