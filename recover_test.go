package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ipnd/ipn"
	"ipnd/ipn/gateway"
	"ipnd/store"
)

const recoverSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// postSigned sends one signed standard-webhooks notification and returns
// the status.
func postSigned(t *testing.T, url, id string) int {
	t.Helper()
	key, _ := gateway.DecodeWebhookSecret(recoverSecret)
	body := []byte(fmt.Sprintf(`{"type":"payment.completed","data":{"order_id":%q,"amount":"1.00","currency":"USD"}}`, id))
	ts := time.Now().Unix()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Webhook-Id", id)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Signature", gateway.SignWebhook(key, id, ts, body))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// After a kill -9, a deleted journal segment stops serve with the segment
// and ids named; ipnd recover says the same and changes nothing;
// ipnd recover -skip-damaged records the ids as lost, and the next serve
// gives no lost id again.
func TestRecoverCommand(t *testing.T) {
	bboltOnly(t, "deletes a segment of bbolt's journal and runs ipnd recover on the file")
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, fmt.Sprintf("[[gateway]]\nname = \"test\"\nkind = \"standard-webhooks\"\nsecret = %q\n", recoverSecret))
	cmd, exited := startChild(t, dir, cfg)
	addr, _ := os.ReadFile(filepath.Join(dir, "public.addr"))
	url := "http://" + strings.TrimSpace(string(addr)) + "/ipn/test"
	for i := range 5 {
		if st := postSigned(t, url, fmt.Sprint("msg_", i)); st != 200 {
			t.Fatalf("post %d: %d", i, st)
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	segs, _ := filepath.Glob(filepath.Join(dir, "ipnd.db.wal-*"))
	if len(segs) != 1 {
		t.Fatalf("segments after kill -9: %v", segs)
	}
	os.Remove(segs[0])
	env := envFunc()

	out, err := runCmd(t, env, "serve", "-config", cfg)
	if err == nil || !strings.Contains(err.Error(), filepath.Base(segs[0])) || !strings.Contains(err.Error(), "recover --skip-damaged") {
		t.Fatalf("serve on a journal with its segment deleted = %v\n%s", err, out)
	}
	out, err = runCmd(t, env, "recover", "-config", cfg)
	if err == nil || !strings.Contains(err.Error(), "newest segment is missing") {
		t.Fatalf("recover without -skip-damaged = %v\n%s", err, out)
	}
	out, err = runCmd(t, env, "recover", "-config", cfg, "-skip-damaged")
	if err != nil || !strings.Contains(out, "lost: ") {
		t.Fatalf("recover -skip-damaged = %v\n%s", err, out)
	}
	db, err := store.Open(filepath.Join(dir, "ipnd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lost, err := db.Lost()
	if err != nil || len(lost) != 1 {
		t.Fatalf("lost ranges %v, %v", lost, err)
	}
	if _, _, err := db.Get(lost[0].First); !strings.Contains(fmt.Sprint(err), "lost") {
		t.Errorf("Get of a lost id = %v", err)
	}
	id, _, err := db.Append(t.Context(), &ipn.Notification{Gateway: "test", ReceivedAt: time.Now(), Body: []byte("{}")})
	if err != nil || id <= lost[0].Last {
		t.Errorf("next id %d (%v), want above the lost range %d-%d", id, err, lost[0].First, lost[0].Last)
	}
}
