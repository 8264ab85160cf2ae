package main

// Black-box tests of operator-facing behaviour (issue 14).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
)

// Replaying an applied PayPal notification while PayPal cannot be reached
// re-applies it (nothing twice) instead of moving it back to received:
// PayPal confirmed it once, and the answer cannot change.
func TestReplayOfVerifiedPayPalNeedsNoPostback(t *testing.T) {
	fake, up := newDownPayPal(t)
	up.Store(true)
	dir := t.TempDir()
	d := startDaemon(t, dir, payPalConfig(t, dir, fake.srv.URL+"/cgi-bin/webscr", ""))
	body := ipnBody("txn_id", "T-REPLAY", "invoice", "RP-1")
	fake.remember(body)
	if code := d.postIPN("paypal", body); code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	d.waitState(1, "applied")
	up.Store(false) // PayPal unreachable from now on
	before := fake.count(fake.attempts, "T-REPLAY")
	var resp struct{ State string }
	if code := d.api("POST", "/api/notifications/1/replay", nil, &resp); code/100 != 2 {
		t.Fatalf("replay: HTTP %d", code)
	}
	waitFor(t, "the replay processed", 10*time.Second, func() bool {
		n := d.notification(1)
		last := n.History[len(n.History)-1]
		return len(n.History) >= 4 && last.State != "received"
	})
	n := d.notification(1)
	if n.State != "applied" {
		t.Errorf("after a replay with PayPal down: %s, want applied\n%+v", n.State, n.History)
	}
	if got := fake.count(fake.attempts, "T-REPLAY"); got != before {
		t.Errorf("%d postbacks for the replay, want none", got-before)
	}
	var o struct {
		Paid    string
		History []any
	}
	d.api("GET", "/api/orders/RP-1", nil, &o)
	if o.Paid != "19.95" || len(o.History) != 1 {
		t.Errorf("order after replay: paid %s, %d history entries (%s); want one payment", o.Paid, len(o.History), fmt.Sprint(o.History))
	}
}

// check and serve agree: every config check refuses, serve refuses with
// the same words, naming the key, before it opens a socket.
func TestCheckAndServeAgree(t *testing.T) {
	dir := t.TempDir()
	store := fmt.Sprintf("[store]\npath = %q\n", filepath.Join(dir, "ipnd.db"))
	gw := "[[gateway]]\nname = \"w\"\nkind = \"standard-webhooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
	tplDir := t.TempDir()
	os.WriteFile(filepath.Join(tplDir, "payment_received.txt"), []byte("no subject line\n"), 0o600)
	cases := []struct {
		name, cfg, want string
	}{
		{"same address", "[server]\nlisten = \"127.0.0.1:18080\"\n[admin]\nlisten = \"127.0.0.1:18080\"\n" + store + gw, "admin.listen"},
		{"wildcard same port", "[server]\nlisten = \"0.0.0.0:18080\"\n[admin]\nlisten = \"127.0.0.1:18080\"\n" + store + gw, "admin.listen"},
		{"no gateway", store, "[[gateway]]"},
		{"stripe API key", store + "[[gateway]]\nname = \"s\"\nkind = \"stripe\"\nsecret = \"sk_live_abc\"\n", "whsec_"},
		{"paypal with a secret", store + "[[gateway]]\nname = \"p\"\nkind = \"paypal\"\nsecret = \"x\"\nreceivers = [\"a@b.c\"]\n", "gateway[0].secret"},
		{"type error", "[server]\nlisten = 8080\n" + store + gw, "server.listen: is a number, must be a string"},
		{"localhost and 127.0.0.1", "[server]\nlisten = \"localhost:18080\"\n[admin]\nlisten = \"127.0.0.1:18080\"\n" + store + gw, "admin.listen"},
		{"broken template", fmt.Sprintf("[email]\ntemplates_dir = %q\n", tplDir) + store + gw, "templates_dir"},
		{"missing shop secret file", "[shop]\nurl = \"https://shop.example/hook\"\nsecret_file = \"/nonexistent/shop.secret\"\n" + store + gw, "shop"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, tc.cfg)
			_, checkErr := runCmd(t, envFunc(), "check", "-config", cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			serveErr := run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard)
			if checkErr == nil || serveErr == nil || !strings.Contains(checkErr.Error(), tc.want) || checkErr.Error() != serveErr.Error() {
				t.Errorf("check: %v\nserve: %v\nwant both to fail alike, naming %q", checkErr, serveErr, tc.want)
			}
		})
	}
}

// check prints the tolerance that applies, not "0s".
func TestCheckShowsEffectiveTolerance(t *testing.T) {
	cfg := writeConfig(t, "[[gateway]]\nname = \"s\"\nkind = \"stripe\"\nsecret = \"whsec_abc\"\n")
	out, err := runCmd(t, envFunc(), "check", "-config", cfg)
	if err != nil || !strings.Contains(out, `tolerance = "5m0s"`) {
		t.Errorf("check: %v\n%s", err, out)
	}
}

// store.raw_retention purges on schedule in the running daemon: the API
// shows an old notification as purged (no body, its hash), a young one
// whole.
func TestRetentionInTheDaemon(t *testing.T) {
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, "raw_retention = \"2s\"\n[log]\nlevel = \"warn\"\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \""+secret+"\"\n")
	d := startDaemon(t, dir, cfg)
	post := func(msgID, typ string, data map[string]any) int {
		return postSignedEvent(t, d, secret, msgID, typ, data)
	}
	if code := post("m1", "payment.completed", map[string]any{"order_id": "RT-1", "txn_id": "T1", "amount": "5.00",
		"currency": "EUR", "customer_email": "rt@example.com"}); code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	type view struct {
		PurgedAt   time.Time `json:"purged_at"`
		BodySHA256 string    `json:"body_sha256"`
		Body       *string
		Event      struct {
			Amount        string
			CustomerEmail string `json:"customer_email"`
		}
	}
	var n view
	waitFor(t, "notification 1 purged", 20*time.Second, func() bool {
		n = view{}
		d.api("GET", "/api/notifications/1", nil, &n)
		return !n.PurgedAt.IsZero()
	})
	if n.Body != nil || len(n.BodySHA256) != 64 || n.Event.Amount != "5.00" || n.Event.CustomerEmail != "" {
		t.Errorf("purged notification: %+v", n)
	}
	var e struct{ Error string }
	if code := d.api("POST", "/api/notifications/1/replay", nil, &e); code != 409 || !strings.Contains(e.Error, "purged") {
		t.Errorf("replay of a purged notification: HTTP %d %q, want 409", code, e.Error)
	}
	if d.notification(1).State != ipn.StateApplied {
		t.Errorf("a refused replay changed the state: %s", d.notification(1).State)
	}
	post("m2", "payment.completed", map[string]any{"order_id": "RT-2", "txn_id": "T2", "amount": "5.00", "currency": "EUR"})
	d.drained(2)
	var young struct {
		PurgedAt time.Time `json:"purged_at"`
		Body     *string
	}
	d.api("GET", "/api/notifications/2", nil, &young)
	if !young.PurgedAt.IsZero() || young.Body == nil {
		t.Errorf("young notification purged: %+v", young)
	}
}

// ipnd backup verifies what it wrote; ipnd restore refuses while ipnd
// runs and refuses a damaged backup, then installs a good one with the
// current database and journal moved aside (nothing deleted); the
// restored ipnd holds exactly the backup's notifications, the ids the
// replaced database gave since are named and recorded as lost, and it
// goes on past them.
func TestBackupRestoreRoundTrip(t *testing.T) {
	bboltOnly(t, "ipnd backup/restore copy bbolt's file (on PostgreSQL they name pg_dump/pg_restore: TestPGServe, TestNewUserFlow)")
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, "[log]\nlevel = \"warn\"\n[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \""+secret+"\"\n")
	post := func(d *daemon, id string) {
		if code := postSignedEvent(t, d, secret, id, "payment.completed", map[string]any{"order_id": "B-" + id, "txn_id": id,
			"amount": "1.00", "currency": "EUR"}); code != 200 {
			t.Fatalf("post %s: HTTP %d", id, code)
		}
	}
	d := startDaemon(t, dir, cfg)
	for i := range 5 {
		post(d, fmt.Sprintf("m%d", i))
	}
	d.drained(5)
	backup := filepath.Join(t.TempDir(), "ipnd-backup.db")
	out, err := runCmd(t, envFunc(), "backup", "-config", cfg, backup)
	if err != nil || !strings.Contains(out, "last id 5") || !strings.Contains(out, "5 notifications") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	if _, err := runCmd(t, envFunc(), "restore", "-config", cfg, backup); err == nil || !strings.Contains(err.Error(), "stop ipnd first") {
		t.Errorf("restore while ipnd runs: %v", err)
	}
	for i := 5; i < 8; i++ {
		post(d, fmt.Sprintf("m%d", i))
	}
	d.drained(8)
	d.stop()

	damaged := filepath.Join(t.TempDir(), "damaged.db")
	b, _ := os.ReadFile(backup)
	// Its two meta pages only: cut before the pages they point to (half
	// the file may hold them all, bbolt's file being larger than its
	// pages in use).
	os.WriteFile(damaged, b[:2*os.Getpagesize()], 0o600)
	if _, err := runCmd(t, envFunc(), "restore", "-config", cfg, damaged); err == nil {
		t.Error("restore of a truncated backup succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "ipnd.db")); err != nil {
		t.Fatalf("a refused restore touched the database: %v", err)
	}

	// A restore that crashed left its copy behind: not in the way.
	os.WriteFile(filepath.Join(dir, "ipnd.db.restoring"), []byte("stale"), 0o600)
	out, err = runCmd(t, envFunc(), "restore", "-config", cfg, backup)
	if err != nil || !strings.Contains(out, "last id 5") || !strings.Contains(out, "moved the previous database") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	// 6-8 were only in the replaced database (a clean stop emptied the
	// journal): said, and never given again.
	if !strings.Contains(out, "not brought back: ipnd.db: only in the database the backup replaced") || !strings.Contains(out, "ids 6-8") {
		t.Errorf("restore did not name the ids it could not bring back:\n%s", out)
	}
	asides, _ := filepath.Glob(filepath.Join(dir, "ipnd.db.before-restore-*", "ipnd.db"))
	if len(asides) != 1 {
		t.Errorf("previous database not kept aside: %v", asides)
	}
	d = startDaemon(t, dir, cfg)
	var list struct{ Notifications []struct{ ID int } }
	d.api("GET", "/api/notifications?limit=100", nil, &list)
	if len(list.Notifications) != 5 || list.Notifications[0].ID != 5 {
		t.Errorf("after restore: %+v, want the backup's 5", list.Notifications)
	}
	post(d, "m-after")
	d.drained(6)
	d.api("GET", "/api/notifications?limit=1", nil, &list)
	if list.Notifications[0].ID != 9 {
		t.Errorf("first id after the restore: %d, want 9 (6-8 were given before the restore)", list.Notifications[0].ID)
	}
}

// postSignedEvent posts one of ipnd's own events to the daemon's gateway
// "shop" (kind standard-webhooks with secret) and returns the status.
func postSignedEvent(t *testing.T, d *daemon, secret, msgID, typ string, data map[string]any) int {
	t.Helper()
	key, _ := gateway.DecodeWebhookSecret(secret)
	body, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	ts := time.Now().Unix()
	req, _ := http.NewRequest("POST", d.addr("public")+"/ipn/shop", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Webhook-Id", msgID)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, msgID, ts, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
