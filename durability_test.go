package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// defaultsEnv is the environment of a child "ipnd serve" on the embedded
// defaults with its database (and so its data directory) in dir.
func defaultsEnv(t *testing.T, dir string) []string {
	return append(append(os.Environ(), "IPND_TEST_CHILD=1", "IPND_SERVER_LISTEN=127.0.0.1:0", "IPND_ADMIN_LISTEN=127.0.0.1:0",
		"IPND_CONFIG=", "IPND_LOG_FORMAT=text"), testStoreEnviron(t, dir)...)
}

// TestEmptyGeneratedSecretsRecreated (issue 20 point 4): a power cut right
// after the first start left admin.token (and the test gateway's secret)
// empty and ipnd refused to start ("file holds no secret"). A real child
// "ipnd serve" on the embedded defaults over empty generated files
// starts, says so at WARN, and the files hold new secrets.
func TestEmptyGeneratedSecretsRecreated(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"admin.token", "gateway-test.secret"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "serve")
	cmd.Env = defaultsEnv(t, dir)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "public.addr")); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ipnd serve exited (%v) over empty generated secret files:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipnd serve did not start:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"admin.token", "gateway-test.secret"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || strings.TrimSpace(string(data)) == "" {
			t.Errorf("%s after start: %q, %v; want a new secret", name, data, err)
		}
		var warned bool
		for _, l := range strings.Split(stderr.String(), "\n") {
			warned = warned || strings.Contains(l, "level=WARN") && strings.Contains(l, name) && strings.Contains(l, "empty")
		}
		if !warned {
			t.Errorf("no WARN naming the empty %s:\n%s", name, stderr.String())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
	exited <- nil
}

// TestEmptyMerchantSecretFileRefused: a secret file the merchant gave
// (outside the data directory) that is empty is still a configuration
// error; only files ipnd generated itself are made again.
func TestEmptyMerchantSecretFileRefused(t *testing.T) {
	dir := t.TempDir()
	secrets := t.TempDir()
	for _, c := range []struct{ extra, key string }{
		{"[admin]\ntoken_file = \"" + filepath.Join(secrets, "admin.token") + "\"\n[[gateway]]\nname = \"pp\"\nkind = \"paypal\"\nreceivers = [\"shop@example.com\"]\n", "admin.token_file"},
		{"[[gateway]]\nname = \"sw\"\nkind = \"standard-webhooks\"\nsecret_file = \"" + filepath.Join(secrets, "sw.secret") + "\"\n", "secret_file"},
	} {
		for _, name := range []string{"admin.token", "sw.secret"} {
			if err := os.WriteFile(filepath.Join(secrets, name), []byte("\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg := filepath.Join(dir, "ipnd.toml")
		body := "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"" + filepath.Join(dir, "ipnd.db") + "\"\n" + c.extra
		if strings.HasPrefix(c.extra, "[[") {
			body = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n" + body
		} else {
			body = strings.Replace(body, "[admin]\n", "[admin]\nlisten = \"127.0.0.1:0\"\n", 1)
		}
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "serve", "-config", cfg)
		cmd.Env = append(os.Environ(), "IPND_TEST_CHILD=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), c.key) || !strings.Contains(stderr.String(), "holds no secret") {
			t.Errorf("serve with an empty %s: %v, %q; want exit 1 naming the key and \"holds no secret\"", c.key, err, stderr.String())
		}
	}
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// boltMetas reads the two meta pages of the bbolt file at path: the page
// size, and for each its offset, txid and root page (of the root bucket).
func boltMetas(t *testing.T, path string) (pageSize int64, metas [2]struct{ off, txid, root int64 }) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize = int64(binary.LittleEndian.Uint32(b[16+8:]))
	for i := range metas {
		off := int64(i) * pageSize
		metas[i].off = off
		metas[i].root = int64(binary.LittleEndian.Uint64(b[off+16+16:]))
		metas[i].txid = int64(binary.LittleEndian.Uint64(b[off+16+48:]))
	}
	return pageSize, metas
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// shareOlderTreePages makes the tree of the older meta page of the bbolt
// file at path reference one page twice (one bucket's root is pointed
// at another's): what a commit whose pages were written and whose meta
// page was not leaves behind when it reused the older tree's pages.
func shareOlderTreePages(t *testing.T, path string) {
	t.Helper()
	pageSize, metas := boltMetas(t, path)
	older := metas[0]
	if metas[1].txid < older.txid {
		older = metas[1]
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, pageSize)
	if _, err := f.ReadAt(p, older.root*pageSize); err != nil {
		t.Fatal(err)
	}
	if flags := binary.LittleEndian.Uint16(p[8:]); flags != 0x02 {
		t.Logf("the older root bucket's page %d is no longer a leaf (flags %#x): already reused", older.root, flags)
		return
	}
	var roots []int // offsets of the buckets' headers, whose root field comes first
	for i := range int(binary.LittleEndian.Uint16(p[10:])) {
		e := 16 + i*16
		pos, ksize := binary.LittleEndian.Uint32(p[e+4:]), binary.LittleEndian.Uint32(p[e+8:])
		if binary.LittleEndian.Uint32(p[e:])&1 != 0 { // a bucket
			roots = append(roots, e+int(pos+ksize))
		}
	}
	if len(roots) == 0 {
		// A newer commit has already written over the older root bucket's
		// page: the older tree is inconsistent as it is.
		t.Logf("the older root bucket's page %d holds no bucket: already reused", older.root)
		return
	}
	// The bucket's root becomes the root bucket's own page.
	binary.LittleEndian.PutUint64(p[roots[0]:], uint64(older.root))
	if _, err := f.WriteAt(p, older.root*pageSize); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedMetaPageRefusedThenRestored (issue 20 point 5): a flipped
// byte in a meta page of ipnd.db made `ipnd serve` and `ipnd recover`
// exit 2 with a bbolt stack trace. Each meta page is damaged in turn, at
// each field of the meta struct, in a copy of a real database that a
// killed ipnd left (its journal beside it): serve and recover, as child
// processes, exit 1 naming the file and the way out, with no stack
// trace. Then `ipnd restore` of a backup taken half way brings back,
// from the journal, the notifications acknowledged after the backup.
func TestDamagedMetaPageRefusedThenRestored(t *testing.T) {
	bboltOnly(t, "flips bytes in ipnd.db's meta pages and restores a bbolt backup with its journal")
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	extra := "[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \"" + secret + "\"\n"
	cfg := writeTestConfig(t, dir, extra)
	child, exited := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	post := func(i int) {
		id := fmt.Sprintf("m%d", i)
		if code := postSignedEvent(t, d, secret, id, "payment.completed", map[string]any{"order_id": "D-" + id, "txn_id": id,
			"amount": "1.00", "currency": "EUR"}); code != 200 {
			t.Fatalf("post %s: HTTP %d", id, code)
		}
	}
	for i := 1; i <= 5; i++ {
		post(i)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if out, err := runCmd(t, envFunc(), "backup", "-config", cfg, backup); err != nil || !strings.Contains(out, "last id 5") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	for i := 6; i <= 10; i++ { // acknowledged after the backup
		post(i)
	}
	// The applier has written them into ipnd.db (its transactions are
	// what the meta pages record); the journal keeps its current segment.
	waitFor(t, "the store to apply 10 notifications", 20*time.Second, func() bool {
		var list struct{ Notifications []struct{ ID int } }
		d.api("GET", "/api/notifications?limit=1", nil, &list)
		return len(list.Notifications) == 1 && list.Notifications[0].ID == 10
	})
	child.Process.Kill()
	<-exited

	db := filepath.Join(dir, "ipnd.db")
	pageSize, _ := boltMetas(t, db)
	type damage struct {
		name string
		do   func(t *testing.T, path string)
	}
	var cases []damage
	for page := range 2 {
		for _, f := range []struct {
			name string
			off  int64
		}{{"magic", 0}, {"version", 4}, {"page size", 8}, {"root", 16}, {"freelist", 32}, {"high water mark", 40}, {"txid", 48}, {"checksum", 56}} {
			at := int64(page)*pageSize + 16 + f.off
			cases = append(cases, damage{fmt.Sprintf("meta page %d %s", page, f.name), func(t *testing.T, path string) { flipByte(t, path, at) }})
		}
	}
	// What was seen: the current meta page damaged, and the older tree
	// bbolt falls back to sharing pages with a newer commit.
	cases = append(cases, damage{"current meta page, older tree inconsistent", func(t *testing.T, path string) {
		_, metas := boltMetas(t, path)
		cur := metas[0]
		if metas[1].txid > cur.txid {
			cur = metas[1]
		}
		shareOlderTreePages(t, path)
		flipByte(t, path, cur.off+16+48)
	}})
	var restoreDir string
	for _, c := range cases {
		cdir := copyDir(t, dir)
		ccfg := writeTestConfig(t, cdir, extra)
		c.do(t, filepath.Join(cdir, "ipnd.db"))
		for _, cmdName := range []string{"serve", "recover"} {
			// A serve that starts on the damaged file runs until killed.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, os.Args[0], cmdName, "-config", ccfg)
			cmd.Env = append(os.Environ(), "IPND_TEST_CHILD=1")
			var stderr, stdout bytes.Buffer
			cmd.Stderr, cmd.Stdout = &stderr, &stdout
			err := cmd.Run()
			cancel()
			var ee *exec.ExitError
			msg := stderr.String()
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("%s: %s: %v, want exit 1\n%s", c.name, cmdName, err, msg)
			}
			if strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") {
				t.Errorf("%s: %s printed a stack trace:\n%.600s", c.name, cmdName, msg)
			}
			if !strings.Contains(msg, filepath.Join(cdir, "ipnd.db")) || !strings.Contains(msg, "damaged") || !strings.Contains(msg, "ipnd restore") {
				t.Errorf("%s: %s: %q, want the file, \"damaged\" and \"ipnd restore\"", c.name, cmdName, msg)
			}
		}
		restoreDir = cdir
	}

	// The way out: restore the backup; what the journal holds since comes back.
	rcfg := writeTestConfig(t, restoreDir, extra)
	out, err := runCmd(t, envFunc(), "restore", "-config", rcfg, backup)
	if err != nil || !strings.Contains(out, "brought back from the journal 5 notifications") || strings.Contains(out, "not brought back") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	rd := startDaemon(t, restoreDir, rcfg)
	rd.drained(10)
	for id := uint64(1); id <= 10; id++ {
		if n := rd.notification(id); n.ID != id || n.Body == nil || !strings.Contains(*n.Body, fmt.Sprintf("D-m%d", id)) {
			t.Errorf("after the restore, notification %d: %+v", id, n)
		}
	}
	post = func(i int) {
		id := fmt.Sprintf("m%d", i)
		if code := postSignedEvent(t, rd, secret, id, "payment.completed", map[string]any{"order_id": "D-" + id, "txn_id": id,
			"amount": "1.00", "currency": "EUR"}); code != 200 {
			t.Fatalf("post %s: HTTP %d", id, code)
		}
	}
	post(11)
	rd.drained(11)
}

// TestDamagedNewestWriteReported (issue 20 point 3): one notification
// acknowledged alone, ipnd killed about a millisecond later, one byte of
// its frame flipped: ipnd started, the notification was gone, and nothing
// was logged. Now the restarted ipnd logs an ERROR naming the id and
// saying it may have been acknowledged, counts it in
// ipnd_store_dropped_unacknowledged and reports it on /healthz until the
// operator acknowledges it (POST /api/journal/dropped/ack). Had the idle
// marker already counted it as acknowledged, ipnd refuses to start on the
// damage instead (also said, exit 1).
func TestDamagedNewestWriteReported(t *testing.T) {
	bboltOnly(t, "flips a byte of a frame in bbolt's journal (ipnd.db.wal-*)")
	dir := t.TempDir()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := writeTestConfig(t, dir, "[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \""+secret+"\"\n")
	child, exited := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	if code := postSignedEvent(t, d, secret, "only", "payment.completed", map[string]any{"order_id": "N-1", "txn_id": "only",
		"amount": "1.00", "currency": "EUR"}); code != 200 {
		t.Fatalf("post: HTTP %d", code)
	}
	child.Process.Kill()
	<-exited
	flipByte(t, filepath.Join(dir, "ipnd.db.wal-0000000000000001"), 128+16+5) // inside the first frame's record

	os.Remove(filepath.Join(dir, "public.addr"))
	os.Remove(filepath.Join(dir, "admin.addr"))
	cmd := exec.Command(os.Args[0], "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), "IPND_TEST_CHILD=1", "IPND_LOG_FORMAT=text")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done; done <- nil })
	for {
		if _, err := os.Stat(filepath.Join(dir, "admin.addr")); err == nil {
			break
		}
		select {
		case err := <-done:
			// The idle marker had counted it as acknowledged: damage, refused.
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "journal damaged") {
				t.Fatalf("serve exited (%v) without saying the journal is damaged:\n%s", err, stderr.String())
			}
			t.Logf("the marker counted the record as acknowledged: refused as damage")
			done <- err
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	logs := stderr.String()
	var logged bool
	for _, l := range strings.Split(logs, "\n") {
		logged = logged || strings.Contains(l, "level=ERROR") && strings.Contains(l, "may have been acknowledged") &&
			strings.Contains(l, "first_id=1") && strings.Contains(l, "last_id=1")
	}
	if !logged {
		t.Errorf("no ERROR naming id 1 and \"may have been acknowledged\":\n%s", logs)
	}
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", d.addr("admin")+path, nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "may have been acknowledged") || !strings.Contains(body, "ids 1-1") {
		t.Errorf("/healthz = %d %s, want 503 naming the dropped id", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "ipnd_store_dropped_unacknowledged 1") {
		t.Errorf("metrics lack ipnd_store_dropped_unacknowledged 1")
	}
	// Still dropped after a restart until acknowledged: the operator acknowledges.
	if code := d.api("POST", "/api/journal/dropped/ack", nil, nil); code != 200 {
		t.Fatalf("ack: HTTP %d", code)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz after the acknowledgement = %d %s", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "ipnd_store_dropped_unacknowledged 0") {
		t.Errorf("metrics after the acknowledgement lack ipnd_store_dropped_unacknowledged 0")
	}
	// The id is not given again.
	if code := postSignedEvent(t, d, secret, "next", "payment.completed", map[string]any{"order_id": "N-2", "txn_id": "next",
		"amount": "1.00", "currency": "EUR"}); code != 200 {
		t.Fatalf("post: HTTP %d", code)
	}
	var list struct{ Notifications []struct{ ID int } }
	d.api("GET", "/api/notifications?limit=5", nil, &list)
	if len(list.Notifications) != 1 || list.Notifications[0].ID != 2 {
		t.Errorf("after the drop: %+v, want only id 2", list.Notifications)
	}
}
