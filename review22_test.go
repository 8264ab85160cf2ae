package main

// Issue 22's review: an attacker's and an operator's view of delivering
// goods (download links, license keys). Each test reproduces a finding
// from outside (the public listener, the admin API, the CLI, files on
// disk) with a real daemon, bbolt file and SMTP server.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ipnd/internal/tmpfs"
	"ipnd/ipn"
)

const review22Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// deliveryDaemon starts ipnd with the products of extra (files under
// dir/files) and a standard-webhooks gateway "shop"; buy pays order id
// for one unit of product and returns its link's path and its license
// key ("" without one), read from the shop's order.paid callback.
func deliveryDaemon(t *testing.T, dir, extra string) (*daemon, func(id, product string) (string, string)) {
	t.Helper()
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	shop, shopURL := newShopReceiver(t)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", extra+
		"[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \""+review22Secret+"\"\n")
	d := startDaemon(t, dir, cfg)
	post := signedPoster(t, func() string { return d.addr("public") }, review22Secret)
	buy := func(id, product string) (string, string) {
		t.Helper()
		if code := post("m-"+id, "payment.completed", map[string]any{"order_id": id, "txn_id": "T-" + id, "amount": "1.00",
			"currency": "USD", "customer_email": "c@example.com", "items": []map[string]any{{"product": product}}}); code != 200 {
			t.Fatalf("post = %d", code)
		}
		var del map[string]any
		waitFor(t, "order.paid of "+id, 10*time.Second, func() bool {
			for _, b := range shop.forOrder(id) {
				if b["type"] == "order.paid" {
					ds, _ := b["data"].(map[string]any)["order"].(map[string]any)["deliveries"].([]any)
					if len(ds) == 1 {
						del = ds[0].(map[string]any)
						return true
					}
				}
			}
			return false
		})
		key, _ := del["license_key"].(string)
		return strings.TrimPrefix(del["download_url"].(string), "https://dl.example.com"), key
	}
	return d, buy
}

// TestReview22DownloadLimitRanges: download_limit cannot be bypassed with
// Range requests. Before the review a request was counted only when it
// sent the file to its end in one response, so a multipart range request
// (bytes=0-9,10-) or a range stopping one byte short of the end got the
// file again and again from a link that allows one download.
func TestReview22DownloadLimitRanges(t *testing.T) {
	dir := t.TempDir()
	file := writeProductFile(t, dir, "a.bin", 64<<10)
	n := len(file)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"a\"\nfile = \"a.bin\"\ndownload_limit = 2\n")

	// Two multipart responses carry the file twice: the link is used up.
	link, _ := buy("R-1", "a")
	for i := range 2 {
		resp, body := d.get(link, "Range", "bytes=0-9,10-")
		if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
			!bytes.Contains(body, file[n-100:]) {
			t.Fatalf("multipart range %d: %d %s", i, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := d.get(link); resp.StatusCode != 410 {
		t.Errorf("a download after two multipart copies of a 2-download link = %d, want 410", resp.StatusCode)
	}

	// All but the last byte, twice, then the rest: the link is used up.
	link, _ = buy("R-2", "a")
	for i := range 2 {
		resp, body := d.get(link, "Range", fmt.Sprintf("bytes=0-%d", n-2))
		if resp.StatusCode != 206 || !bytes.Equal(body, file[:n-1]) {
			t.Fatalf("range %d: %d, %d bytes", i, resp.StatusCode, len(body))
		}
	}
	if resp, _ := d.get(link, "Range", fmt.Sprintf("bytes=0-%d", n-2)); resp.StatusCode != 410 {
		t.Errorf("a third copy (in ranges) of a 2-download link = %d, want 410", resp.StatusCode)
	}

	// A resumed download is not charged twice: a whole download, half,
	// then the rest as a browser resumes it (If-Range: the date it got),
	// two copies in all; then 410.
	link, _ = buy("R-3", "a")
	resp, body := d.get(link)
	if resp.StatusCode != 200 || !bytes.Equal(body, file) {
		t.Fatalf("download: %d", resp.StatusCode)
	}
	lastModified := resp.Header.Get("Last-Modified")
	if resp, body := d.get(link, "Range", fmt.Sprintf("bytes=0-%d", n/2-1)); resp.StatusCode != 206 || !bytes.Equal(body, file[:n/2]) {
		t.Fatalf("first half: %d", resp.StatusCode)
	}
	if resp, body := d.get(link, "Range", fmt.Sprintf("bytes=%d-", n/2), "If-Range", lastModified); resp.StatusCode != 206 || !bytes.Equal(body, file[n/2:]) {
		t.Fatalf("resume with If-Range %q: %d", lastModified, resp.StatusCode)
	}
	if resp, _ := d.get(link, "Range", "bytes=0-0"); resp.StatusCode != 410 {
		t.Errorf("after two copies = %d, want 410", resp.StatusCode)
	}
	var o struct{ Deliveries []ipn.Delivered }
	d.api("GET", "/api/orders/R-3", nil, &o)
	if len(o.Deliveries) != 1 || o.Deliveries[0].DownloadsLeft != 0 {
		t.Errorf("R-3 deliveries = %+v, want 0 downloads left", o.Deliveries)
	}
}

// TestReview22DownloadLimitParallel: many parallel requests of one link
// cannot each get the whole file. Before the review the limit was checked
// when a request started and counted when it ended, so every request
// started before the first ended got the whole file: 8 parallel
// downloads of a one-download link gave 8 copies.
func TestReview22DownloadLimitParallel(t *testing.T) {
	dir := t.TempDir()
	// Larger than what the loopback's socket buffers hold: a response
	// whose body is not read stays in flight.
	file := writeProductFile(t, dir, "big.bin", 24<<20)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"big\"\nfile = \"big.bin\"\ndownload_limit = 1\n")
	link, _ := buy("P-1", "big")

	const parallel = 8
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: parallel, DisableCompression: true}}
	var resps []*http.Response
	for range parallel {
		// Each response's headers come back while its body is still
		// being sent (or at once when refused).
		resp, err := client.Get(d.addr("public") + link)
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	copies, codes := 0, map[int]int{}
	for _, resp := range resps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if resp.StatusCode == 200 && bytes.Equal(body, file) {
				copies++
			}
		}()
	}
	wg.Wait()
	if copies != 1 {
		t.Errorf("%d parallel downloads of a one-download link gave %d copies of the file (status codes %v), want 1", parallel, copies, codes)
	}
	if codes[429] != parallel-1 {
		t.Errorf("status codes %v, want %d answered 429 while the link is being downloaded", codes, parallel-1)
	}
	if resp, _ := d.get(link); resp.StatusCode != 410 {
		t.Errorf("after the download = %d, want 410", resp.StatusCode)
	}
}

// TestReview22ProductFileSwapped: the product's file is opened at serve
// time as ipnd check saw it: a regular file under files_dir. Before the
// review a file swapped after the start for a symbolic link out of
// files_dir was served (here: a secret next to the data directory), a
// directory was answered 200 with a broken body and a FIFO hung the
// request for ever. Now each is 503 and logged.
func TestReview22ProductFileSwapped(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 1000)
	secret := []byte("SECRET-OUTSIDE-FILES-DIR")
	os.WriteFile(filepath.Join(dir, "secret.txt"), secret, 0o600)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"a\"\nfile = \"a.bin\"\ndownload_limit = 50\n")
	link, _ := buy("S-1", "a")
	if resp, _ := d.get(link); resp.StatusCode != 200 {
		t.Fatalf("download = %d", resp.StatusCode)
	}
	path := filepath.Join(dir, "files", "a.bin")
	client := &http.Client{Timeout: 5 * time.Second}
	get := func() (int, []byte, error) {
		resp, err := client.Get(d.addr("public") + link)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	os.Remove(path)
	if err := os.Symlink(filepath.Join(dir, "secret.txt"), path); err != nil {
		t.Fatal(err)
	}
	if code, body, err := get(); err != nil || code != 503 || bytes.Contains(body, secret) {
		t.Errorf("a symbolic link out of files_dir swapped in: %d %q %v, want 503 without the file", code, body, err)
	}
	os.Remove(path)
	os.Mkdir(path, 0o700)
	if code, _, err := get(); err != nil || code != 503 {
		t.Errorf("a directory swapped in: %d %v, want 503", code, err)
	}
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, err := get()
	if err != nil || code != 503 {
		t.Errorf("a FIFO swapped in: %d %v, want 503 at once", code, err)
		// Let a request stuck opening it go.
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	}
	// A symbolic link that stays in files_dir is fine (ipnd check allows it).
	os.Remove(path)
	want := writeProductFile(t, dir, "real.bin", 500)
	os.Symlink("real.bin", path)
	if code, body, err := get(); err != nil || code != 200 || !bytes.Equal(body, want) {
		t.Errorf("a symbolic link inside files_dir: %d %v", code, err)
	}
}

// TestReview22CheckFIFO: ipnd check refuses a product file that is a
// FIFO; before the review it opened it and hung for ever.
func TestReview22CheckFIFO(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "files"), 0o700)
	if err := syscall.Mkfifo(filepath.Join(dir, "files", "a.bin"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fulfilConfig(t, dir, "25", "http://127.0.0.1:1/", "http://127.0.0.1:1/unused", "[[product]]\nid = \"a\"\nfile = \"a.bin\"\n")
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"check", "-config", cfg}, envFunc(), io.Discard, io.Discard)
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("ipnd check with a FIFO as the file: %v", err)
		}
	case <-time.After(10 * time.Second):
		if w, err := os.OpenFile(filepath.Join(dir, "files", "a.bin"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatal("ipnd check hangs on a FIFO as a product file")
	}
}

// TestReview22SigningKeyLost: once signed license keys were issued, a
// missing or different signing key file stops ipnd from starting (and
// from reloading) instead of silently creating a new key pair, which
// would make every key already sold fail its offline check. Before the
// review ipnd started with a new key. Restoring the file fixes it.
func TestReview22SigningKeyLost(t *testing.T) {
	bboltOnly(t, "loses the license signing key file beside ipnd.db; on PostgreSQL the database keeps the key (TestPGSharedSigningKey)")
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 100)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"app\"\nfile = \"app.zip\"\nlicense = \"generated\"\nlicense_format = \"signed\"\n")
	_, key := buy("K-1", "app")
	if !strings.HasPrefix(key, "key/") {
		t.Fatalf("key %q is not signed", key)
	}
	cfg := filepath.Join(dir, "ipnd.toml")
	var pub bytes.Buffer
	if err := run(context.Background(), []string{"licenses", "pubkey", "-config", cfg}, envFunc(), &pub, io.Discard); err != nil {
		t.Fatal(err)
	}
	d.stop()
	keyFile := filepath.Join(dir, "license-signing.key")
	saved, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	serve := func() error {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"serve", "-config", cfg}, envFunc(), io.Discard, io.Discard) }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			cancel()
			<-done
			return nil
		}
	}

	os.Remove(keyFile)
	if err := serve(); err == nil || !strings.Contains(err.Error(), "license signing key") || !strings.Contains(err.Error(), "restore") {
		t.Errorf("serve without the signing key that signed issued keys: %v, want a refusal to start", err)
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Errorf("a new signing key was created")
	}

	// ipnd licenses pubkey creates a new key pair (it cannot know), and
	// says so; serve refuses it.
	var stderr bytes.Buffer
	var pub2 bytes.Buffer
	if err := run(context.Background(), []string{"licenses", "pubkey", "-config", cfg}, envFunc(), &pub2, &stderr); err != nil {
		t.Fatal(err)
	}
	if pub2.String() == pub.String() || !strings.Contains(stderr.String(), "created") {
		t.Errorf("pubkey without a key: %q, stderr %q", pub2.String(), stderr.String())
	}
	if err := serve(); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("serve with another signing key: %v, want a refusal to start", err)
	}

	// The right file back: ipnd starts and the sold key still verifies.
	os.WriteFile(keyFile, saved, 0o600)
	d = startDaemon(t, dir, cfg)
	if claims, ok := verifySignedKey(strings.TrimSpace(pub.String()), key); !ok || claims["order"] != "K-1" {
		t.Errorf("the sold key no longer verifies")
	}
	if code, out := d.license("validate", true, "license_key", key); code != 200 || out["valid"] != true {
		t.Errorf("validate: %d %v", code, out)
	}
}

// TestReview22CheckSigningKey: ipnd check says where the license signing
// key is, its public key, and warns when others can read it or when it
// cannot be read.
func TestReview22CheckSigningKey(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 100)
	cfg := fulfilConfig(t, dir, "25", "http://127.0.0.1:1/", "http://127.0.0.1:1/unused",
		"[[product]]\nid = \"app\"\nfile = \"app.zip\"\nlicense = \"generated\"\nlicense_format = \"signed\"\n")
	check := func() string {
		t.Helper()
		var out bytes.Buffer
		if err := run(context.Background(), []string{"check", "-config", cfg}, envFunc(), &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	keyFile := filepath.Join(dir, "license-signing.key")
	var pub bytes.Buffer
	if onPG() {
		// The database keeps the key: check says so (not that serve will
		// create the file), and licenses pubkey writes no file.
		if out := check(); !strings.Contains(out, "kept in the PostgreSQL database") || strings.Contains(out, "does not exist") {
			t.Errorf("check on PostgreSQL before a key exists:\n%s", out)
		}
		run(context.Background(), []string{"licenses", "pubkey", "-config", cfg}, envFunc(), &pub, io.Discard)
		if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
			t.Errorf("licenses pubkey on PostgreSQL: %s: %v, want no file", keyFile, err)
		}
		// A key file there is offered to the database; check reads it
		// as on bbolt (serve refuses a damaged one).
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(priv.Seed())+"\n"), 0o600)
		pub.Reset()
		pub.WriteString(base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)))
	} else {
		if out := check(); !strings.Contains(out, "license-signing.key does not exist") {
			t.Errorf("check before the key exists:\n%s", out)
		}
		run(context.Background(), []string{"licenses", "pubkey", "-config", cfg}, envFunc(), &pub, io.Discard)
		if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("key file: %v %v", st, err)
		}
	}
	if out := check(); !strings.Contains(out, "(public key "+strings.TrimSpace(pub.String())+")") || strings.Contains(out, "warning") {
		t.Errorf("check with the key:\n%s", out)
	}
	os.Chmod(keyFile, 0o644)
	if out := check(); !strings.Contains(out, "warning: license signing key") || !strings.Contains(out, "chmod 600") {
		t.Errorf("check with a key readable by others:\n%s", out)
	}
	os.WriteFile(keyFile, []byte("damaged"), 0o600)
	if out := check(); !strings.Contains(out, "not a base64 Ed25519 seed") || !strings.Contains(out, "refuse to start") {
		t.Errorf("check with a damaged key:\n%s", out)
	}
}

// postLicense posts body to the License API as ctype, from client (an
// X-Forwarded-For value; "" for none).
func postLicense(t *testing.T, d *daemon, action, ctype, body, client string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", d.addr("public")+"/v1/licenses/"+action, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	if client != "" {
		req.Header.Set("X-Forwarded-For", client)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Errorf("%s %q: the answer is not JSON: %v", action, body, err)
	}
	return resp.StatusCode, out
}

// TestReview22LicenseAPIInput: the License API's input from an attacker.
// Held before the review: bodies over 16 KiB, malformed JSON or forms, a
// non-string field and a huge instance_name are 400 with a JSON error;
// unicode names round-trip; parallel activations never exceed the limit
// (checked in the write transaction). Fixed: an instance_name with
// control characters or invalid UTF-8 (which "ipnd licenses" printed to
// the merchant's terminal as they were: escape sequences) is 400.
func TestReview22LicenseAPIInput(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 100)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"app\"\nfile = \"app.zip\"\nlicense = \"generated\"\nlicense_activations = 3\n")
	_, key := buy("L-1", "app")
	const form = "application/x-www-form-urlencoded"
	for _, c := range []struct{ what, ctype, body string }{
		{"a body over 16 KiB", form, "license_key=" + key + "&instance_name=" + strings.Repeat("x", 20<<10)},
		{"malformed JSON", "application/json", `{"license_key": "` + key},
		{"a JSON array", "application/json", `["license_key"]`},
		{"a JSON object as the key", "application/json", `{"license_key": {"a": 1}, "instance_name": "x"}`},
		{"a malformed form", form, "license_key=%zz&instance_name=x"},
		{"a 300-byte instance_name", form, "license_key=" + key + "&instance_name=" + strings.Repeat("é", 150)},
		{"an escape sequence in instance_name", form, "license_key=" + key + "&instance_name=" + url.QueryEscape("x\x1b]0;owned\x07\x1b[2J")},
		{"a newline in instance_name", "application/json", `{"license_key": "` + key + `", "instance_name": "a\nb"}`},
		{"invalid UTF-8 in instance_name", form, "license_key=" + key + "&instance_name=%ff%fe"},
		{"a NUL in the key", form, "license_key=" + url.QueryEscape(key+"\x00") + "&instance_name=x"},
	} {
		code, out := postLicense(t, d, "activate", c.ctype, c.body, "")
		if code != 400 || out["activated"] != false || out["error"] == nil {
			t.Errorf("%s: %d %v, want 400 with an error", c.what, code, out)
		}
	}
	name := "Zoë's laptop – 💻 (工作)"
	code, out := postLicense(t, d, "activate", "application/json", `{"license_key": "`+key+`", "instance_name": "`+name+`"}`, "")
	in, _ := out["instance"].(map[string]any)
	if code != 200 || in["name"] != name {
		t.Fatalf("a unicode instance name: %d %v", code, out)
	}
	var cli bytes.Buffer
	if err := run(context.Background(), []string{"licenses", "-config", d.cfg, key}, envFunc(), &cli, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cli.String(), name) || strings.ContainsRune(cli.String(), 0x1b) {
		t.Errorf("ipnd licenses:\n%s", cli.String())
	}

	// 30 parallel activations of a key with 2 activations left: 2 succeed.
	var wg sync.WaitGroup
	codes := make([]int, 30)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = postLicense(t, d, "activate", form, fmt.Sprintf("license_key=%s&instance_name=pc-%d", key, i), "")
		}()
	}
	wg.Wait()
	n := map[int]int{}
	for _, c := range codes {
		n[c]++
	}
	if n[200] != 2 || n[422] != 28 {
		t.Errorf("30 parallel activations with 2 left: %v, want 2 × 200 and 28 × 422", n)
	}
	if code, out := postLicense(t, d, "validate", form, "license_key="+key, ""); code != 200 ||
		out["license_key"].(map[string]any)["activation_usage"] != float64(3) {
		t.Errorf("validate: %d %v, want 3 activations", code, out)
	}
}

// TestReview22WrongKeysPerClient: the limit on unknown license keys (20 a
// minute) is per client as the rate limit counts them: an IPv6 client is
// its /64. Before the review it was per address, so a host with a /64
// guessed keys without end by changing its address. Held: without
// trusted_proxies, X-Forwarded-For does not make a client someone else.
func TestReview22WrongKeysPerClient(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 10)
	d, _ := deliveryDaemon(t, dir, "[[product]]\nid = \"a\"\nfile = \"a.bin\"\n")
	const form = "application/x-www-form-urlencoded"
	// No trusted_proxies: every request is from 127.0.0.1.
	for i := 1; i <= 21; i++ {
		code, _ := postLicense(t, d, "validate", form, fmt.Sprintf("license_key=WRONG-%d", i), fmt.Sprintf("198.51.100.%d", i))
		if want := map[bool]int{true: 404, false: 429}[i <= 20]; code != want {
			t.Fatalf("wrong key %d with a forged X-Forwarded-For = %d, want %d", i, code, want)
		}
	}
	d.stop()

	raw, _ := os.ReadFile(d.cfg)
	os.WriteFile(d.cfg, bytes.Replace(raw, []byte("rate_limit = 0\n"), []byte("rate_limit = 0\ntrusted_proxies = [\"127.0.0.1\"]\n"), 1), 0o600)
	d = startDaemon(t, dir, d.cfg)
	for i := 1; i <= 21; i++ {
		code, _ := postLicense(t, d, "validate", form, fmt.Sprintf("license_key=WRONG-%d", i), fmt.Sprintf("2001:db8:0:1::%x", i))
		if want := map[bool]int{true: 404, false: 429}[i <= 20]; code != want {
			t.Fatalf("wrong key %d from another address of one /64 = %d, want %d", i, code, want)
		}
	}
	if code, _ := postLicense(t, d, "validate", form, "license_key=WRONG", "2001:db8:0:2::1"); code != 404 {
		t.Errorf("another /64's wrong key = %d, want 404", code)
	}
}

// TestReview22RefundsAndRestart (held): a partial refund keeps the links
// and keys; the refund of the rest revokes both, and they stay revoked
// after a restart.
func TestReview22RefundsAndRestart(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 100)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"a\"\nfile = \"a.bin\"\nlicense = \"generated\"\n")
	link, key := buy("V-1", "a")
	post := signedPoster(t, func() string { return d.addr("public") }, review22Secret)
	validate := func() (int, string) {
		code, out := d.license("validate", false, "license_key", key)
		return code, licenseStatus(out)
	}
	post("r-1", "payment.refunded", map[string]any{"order_id": "V-1", "txn_id": "R-1", "parent_txn_id": "T-V-1", "amount": "0.40", "currency": "USD"})
	waitOrder(t, d, "V-1", ipn.OrderPartiallyRefunded)
	if resp, _ := d.get(link); resp.StatusCode != 200 {
		t.Errorf("link after a partial refund = %d", resp.StatusCode)
	}
	if code, st := validate(); code != 200 || st != "inactive" {
		t.Errorf("key after a partial refund: %d %s", code, st)
	}
	post("r-2", "payment.refunded", map[string]any{"order_id": "V-1", "txn_id": "R-2", "parent_txn_id": "T-V-1", "amount": "0.60", "currency": "USD"})
	waitOrder(t, d, "V-1", ipn.OrderRefunded)
	check := func(when string) {
		t.Helper()
		if resp, _ := d.get(link); resp.StatusCode != 410 {
			t.Errorf("link %s = %d, want 410", when, resp.StatusCode)
		}
		if code, st := validate(); code != 200 || st != "disabled" {
			t.Errorf("key %s: %d %s, want disabled", when, code, st)
		}
	}
	check("after the full refund")
	d.stop()
	d = startDaemon(t, dir, d.cfg)
	check("after a restart")
}

// TestReview22SharedAndEditedPool: two products may share a pool file
// (held: no key goes to both), and ipnd_license_pool_remaining counts
// the keys not handed out yet, so its alert fires when a product's pool
// is empty; before the review it said len(pool) - position, which was 1
// for a product whose keys the other product had taken. And a pool file
// from which the merchant removed the keys already sold (README asks to
// append only) keeps handing out its keys: before the review the
// recorded position pointed past them and the orders went to review.
func TestReview22SharedAndEditedPool(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 10)
	pool := filepath.Join(dir, "pool.txt")
	os.WriteFile(pool, []byte("K-1\nK-2\nK-3\n"), 0o600)
	d, buy := deliveryDaemon(t, dir, fmt.Sprintf("[[product]]\nid = \"a\"\nfile = \"a.bin\"\nlicense = \"pool\"\nlicense_pool = %q\n"+
		"[[product]]\nid = \"b\"\nfile = \"a.bin\"\nlicense = \"pool\"\nlicense_pool = %q\n", pool, pool))
	keys := map[string]bool{}
	for i, p := range []string{"a", "b", "a"} {
		_, k := buy(fmt.Sprintf("SP-%d", i), p)
		if keys[k] {
			t.Errorf("key %s handed out twice", k)
		}
		keys[k] = true
	}
	m := d.metrics()
	for _, want := range []string{`ipnd_license_pool_remaining{product="a"} 0`, `ipnd_license_pool_remaining{product="b"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// The sold keys removed from the file, new ones added.
	d.stop()
	os.WriteFile(pool, []byte("K-4\nK-5\n"), 0o600)
	d = startDaemon(t, dir, d.cfg)
	if m := d.metrics(); !strings.Contains(m, `ipnd_license_pool_remaining{product="a"} 2`) {
		t.Errorf("metrics after the edit lack ipnd_license_pool_remaining{product=\"a\"} 2")
	}
	for i, p := range []string{"b", "a"} {
		_, k := buy(fmt.Sprintf("SP-E%d", i), p)
		if k == "" || keys[k] {
			t.Errorf("key %q after the pool's edit (sold before: %v)", k, keys)
		}
		keys[k] = true
	}

	// A test order deleted takes its links and keys with it (before the
	// review they kept working); its pool key stays handed out.
	d.stop()
	os.WriteFile(pool, []byte("K-6\n"), 0o600)
	raw, _ := os.ReadFile(d.cfg)
	os.WriteFile(d.cfg, bytes.Replace(raw, []byte(`kind = "standard-webhooks"`), []byte("kind = \"standard-webhooks\"\nsandbox = true"), 1), 0o600)
	d = startDaemon(t, dir, d.cfg)
	post := signedPoster(t, func() string { return d.addr("public") }, review22Secret)
	post("m-test", "payment.completed", map[string]any{"order_id": "SP-T", "txn_id": "T-SP-T", "amount": "1.00", "currency": "USD",
		"test": true, "items": []map[string]any{{"product": "a"}}})
	waitOrder(t, d, "SP-T", ipn.OrderPaid)
	var tst struct{ Deliveries []ipn.Delivered }
	d.api("POST", "/api/orders/SP-T/deliveries/reissue", nil, &tst)
	if len(tst.Deliveries) != 1 || tst.Deliveries[0].LicenseKey != "K-6" {
		t.Fatalf("test order deliveries %+v", tst.Deliveries)
	}
	tlink := strings.TrimPrefix(tst.Deliveries[0].DownloadURL, "https://dl.example.com")
	if code := d.api("DELETE", "/api/orders/SP-T", nil, nil); code != 204 {
		t.Fatalf("delete the test order = %d", code)
	}
	// Its link and key went with it.
	if resp, _ := d.get(tlink); resp.StatusCode != 404 {
		t.Errorf("the deleted test order's link = %d, want 404", resp.StatusCode)
	}
	if code, _ := d.license("validate", false, "license_key", "K-6"); code != 404 {
		t.Errorf("the deleted test order's key = %d, want 404", code)
	}
	if m := d.metrics(); !strings.Contains(m, `ipnd_license_pool_remaining{product="a"} 0`) {
		t.Errorf("metrics after the test order's deletion lack ipnd_license_pool_remaining{product=\"a\"} 0")
	}
	post("m-after", "payment.completed", map[string]any{"order_id": "SP-X", "txn_id": "T-SP-X", "amount": "1.00", "currency": "USD",
		"test": true, "items": []map[string]any{{"product": "a"}}})
	if o := waitOrder(t, d, "SP-X", ipn.OrderReview); !slices.Contains(o.Flags, "license_pool_empty") {
		t.Errorf("an order after the pool's last key went to a deleted test order: %s %v", o.Status, o.Flags)
	}
}

// TestReview22ProductRemovedByReload: a reload that removes a product
// orders bought says so in the log (WARN, with the product), and its
// links answer 410 "no longer offered", counted as result="removed";
// before the review the reload was silent and the links said "revoked"
// (counted as a revocation, as a refund's are). Its keys keep working.
func TestReview22ProductRemovedByReload(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "a.bin", 10)
	writeProductFile(t, dir, "b.bin", 10)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	products := "[[product]]\nid = \"old-edition\"\nfile = \"a.bin\"\nlicense = \"generated\"\n[[product]]\nid = \"b\"\nfile = \"b.bin\"\n"
	gw := "[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \"" + review22Secret + "\"\n"
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", products+gw)
	var logs bytes.Buffer
	logw := &syncWriter{w: &logs}
	cmd, _ := startChildTo(t, dir, cfg, logw)
	d := &daemon{t: t, dir: dir}
	post := signedPoster(t, func() string { return d.addr("public") }, review22Secret)
	if code := post("m-1", "payment.completed", map[string]any{"order_id": "RM-1", "txn_id": "T-RM-1", "amount": "1.00",
		"currency": "USD", "items": []map[string]any{{"product": "old-edition"}}}); code != 200 {
		t.Fatalf("post = %d", code)
	}
	waitOrder(t, d, "RM-1", ipn.OrderPaid)
	var re struct{ Deliveries []ipn.Delivered }
	if code := d.api("POST", "/api/orders/RM-1/deliveries/reissue", nil, &re); code != 200 || len(re.Deliveries) == 0 {
		t.Fatalf("reissue: HTTP %d, %d deliveries", code, len(re.Deliveries))
	}
	link := strings.TrimPrefix(re.Deliveries[0].DownloadURL, "https://dl.example.com")
	key := re.Deliveries[0].LicenseKey

	raw, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(raw, []byte("[[product]]\nid = \"old-edition\"\nfile = \"a.bin\"\nlicense = \"generated\"\n"), nil, 1), 0o600)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the warning about the removed product", 10*time.Second, func() bool {
		for _, l := range logLines(t, logw.text()) {
			if l.str("level") == "WARN" && l.str("product") == "old-edition" && strings.Contains(l.str("msg"), "removed") {
				return true
			}
		}
		return false
	})
	resp, body := d.get(link)
	if resp.StatusCode != 410 || !strings.Contains(string(body), "no longer offered") {
		t.Errorf("link of a removed product: %d %s", resp.StatusCode, body)
	}
	waitFor(t, `ipnd_downloads_total{result="removed"} 1`, 10*time.Second, func() bool {
		return strings.Contains(d.metrics(), `ipnd_downloads_total{result="removed"} 1`)
	})
	if code, out := d.license("validate", false, "license_key", key); code != 200 || out["valid"] != true {
		t.Errorf("key of a removed product: %d %v", code, out)
	}
}

func (s *syncWriter) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.(*bytes.Buffer).String()
}

// TestReview22ReissueDuringDownload: a download under way when the
// merchant reissues the links completes and is not an error (it cannot
// be counted against the old link, which is gone); before the review it
// was logged and counted as result="error", which IpndDownloadsFailing
// alerts on.
func TestReview22ReissueDuringDownload(t *testing.T) {
	dir := t.TempDir()
	file := writeProductFile(t, dir, "big.bin", 24<<20)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"big\"\nfile = \"big.bin\"\n")
	link, _ := buy("RD-1", "big")
	resp, err := http.Get(d.addr("public") + link)
	if err != nil {
		t.Fatal(err)
	}
	// The body is not read yet: the download is under way.
	if code := d.api("POST", "/api/orders/RD-1/deliveries/reissue", nil, nil); code != 200 {
		t.Fatalf("reissue = %d", code)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, file) {
		t.Fatalf("download: %d", resp.StatusCode)
	}
	waitFor(t, "the download counted as ok", 10*time.Second, func() bool {
		return strings.Contains(d.metrics(), `ipnd_downloads_total{result="ok"} 1`)
	})
	if m := d.metrics(); !strings.Contains(m, `ipnd_downloads_total{result="error"} 0`) {
		t.Errorf("a download during a reissue was counted as an error")
	}
}

// TestReview22DiskFullWhileServing (held): with the data directory's disk
// full, links keep serving their files within their limit (bbolt records
// the downloads in the room its file has; a download it could not record
// would keep its reservation until a restart).
func TestReview22DiskFullWhileServing(t *testing.T) {
	dir := tmpfs.Mount(t, 32<<20)
	file := writeProductFile(t, dir, "a.bin", 64<<10)
	d, buy := deliveryDaemon(t, dir, "[[product]]\nid = \"a\"\nfile = \"a.bin\"\ndownload_limit = 1\n")
	var links []string
	for i := range 20 {
		l, _ := buy(fmt.Sprintf("DF-%d", i), "a")
		links = append(links, l)
	}
	free := tmpfs.Fill(t, dir, 0)
	defer free()
	copies := 0
	codes := map[int]int{}
	for _, l := range links {
		for range 3 {
			resp, body := d.get(l)
			codes[resp.StatusCode]++
			if resp.StatusCode == 200 && bytes.Equal(body, file) {
				copies++
			}
		}
	}
	t.Logf("status codes on a full disk: %v; metrics:\n%s", codes, grepLines(d.metrics(), "ipnd_downloads_total"))
	if copies != len(links) {
		t.Errorf("%d one-download links gave %d copies on a full disk (status codes %v), want %d", len(links), copies, codes, len(links))
	}
}

// TestReview22SlowDownload: a download longer than server.write_timeout
// (10s by default: a 100 MB file over a 20 Mbit/s line takes 40s) is not
// cut short; write_timeout bounds how long a download may stall. Before
// the review every download was cut at write_timeout.
func TestReview22SlowDownload(t *testing.T) {
	dir := t.TempDir()
	file := writeProductFile(t, dir, "big.bin", 24<<20)
	_, shopURL := newShopReceiver(t)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", "[[product]]\nid = \"big\"\nfile = \"big.bin\"\n"+
		"[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \""+review22Secret+"\"\n")
	raw, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(raw, []byte("[server]\n"), []byte("[server]\nwrite_timeout = \"2s\"\nread_timeout = \"2s\"\n"), 1), 0o600)
	d := startDaemon(t, dir, cfg)
	post := signedPoster(t, func() string { return d.addr("public") }, review22Secret)
	post("m-1", "payment.completed", map[string]any{"order_id": "SL-1", "txn_id": "T-SL-1", "amount": "1.00", "currency": "USD",
		"items": []map[string]any{{"product": "big"}}})
	waitOrder(t, d, "SL-1", ipn.OrderPaid)
	var re struct{ Deliveries []ipn.Delivered }
	if code := d.api("POST", "/api/orders/SL-1/deliveries/reissue", nil, &re); code != 200 || len(re.Deliveries) == 0 {
		t.Fatalf("reissue: HTTP %d, %d deliveries", code, len(re.Deliveries))
	}
	link := strings.TrimPrefix(re.Deliveries[0].DownloadURL, "https://dl.example.com")

	resp, err := http.Get(d.addr("public") + link)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// A slow client: 1 MB every 150 ms, over 3.6 s in all, never still
	// for 2 s.
	var got bytes.Buffer
	for {
		n, err := io.CopyN(&got, resp.Body, 1<<20)
		if err != nil || n == 0 {
			break
		}
		time.Sleep(150 * time.Millisecond) // the client's pace, not synchronisation
	}
	if !bytes.Equal(got.Bytes(), file) {
		t.Errorf("a download slower than write_timeout got %d of %d bytes", got.Len(), len(file))
	}
}

// TestReview22ReloadKeepsReservations: a config reload (SIGHUP) keeps
// what the download links reserved and the unknown keys counted: a
// download under way still holds its link's only copy, so a second
// request of the one-download link is 429, not a second copy. Before the
// review a reload started both from zero.
func TestReview22ReloadKeepsReservations(t *testing.T) {
	dir := t.TempDir()
	file := writeProductFile(t, dir, "big.bin", 24<<20)
	smtpd := newFakeSMTP(t, "127.0.0.1:0")
	_, shopURL := newShopReceiver(t)
	cfg := fulfilConfig(t, dir, smtpd.port(), shopURL, "http://127.0.0.1:1/unused", "[[product]]\nid = \"big\"\nfile = \"big.bin\"\ndownload_limit = 1\n"+
		"[[gateway]]\nname = \"shop\"\nkind = \"standard-webhooks\"\nsecret = \""+review22Secret+"\"\n")
	cmd, _ := startChild(t, dir, cfg)
	d := &daemon{t: t, dir: dir}
	post := signedPoster(t, func() string { return d.addr("public") }, review22Secret)
	post("m-1", "payment.completed", map[string]any{"order_id": "RK-1", "txn_id": "T-RK-1", "amount": "1.00", "currency": "USD",
		"items": []map[string]any{{"product": "big"}}})
	waitOrder(t, d, "RK-1", ipn.OrderPaid)
	var re struct{ Deliveries []ipn.Delivered }
	if code := d.api("POST", "/api/orders/RK-1/deliveries/reissue", nil, &re); code != 200 || len(re.Deliveries) == 0 {
		t.Fatalf("reissue: HTTP %d, %d deliveries", code, len(re.Deliveries))
	}
	link := strings.TrimPrefix(re.Deliveries[0].DownloadURL, "https://dl.example.com")
	for i := 1; i <= 20; i++ {
		if code, _ := d.license("validate", false, "license_key", fmt.Sprint("WRONG-", i)); code != 404 {
			t.Fatalf("wrong key %d = %d", i, code)
		}
	}

	resp, err := http.Get(d.addr("public") + link) // under way: its body is not read yet
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload", 10*time.Second, func() bool {
		return strings.Contains(d.metrics(), `ipnd_config_reloads_total{result="success"} 1`)
	})
	if r2, _ := d.get(link); r2.StatusCode != 429 {
		t.Errorf("a second download of a one-download link, the first under way, after a reload = %d, want 429", r2.StatusCode)
	}
	if code, _ := d.license("validate", false, "license_key", "WRONG-21"); code != 429 {
		t.Errorf("the 21st unknown key in a minute, after a reload = %d, want 429", code)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(body, file) {
		t.Errorf("the first download: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestReview22CLIEscapes: ipnd licenses and ipnd downloads print what
// came from outside (an order id a buyer chose) with its control
// characters as visible escapes, as the other commands do; before the
// review they wrote them raw to the merchant's terminal.
func TestReview22CLIEscapes(t *testing.T) {
	dir := t.TempDir()
	writeProductFile(t, dir, "app.zip", 100)
	d, _ := deliveryDaemon(t, dir, "[[product]]\nid = \"app\"\nfile = \"app.zip\"\nlicense = \"generated\"\n")
	post := signedPoster(t, func() string { return d.addr("public") }, review22Secret)
	evil := "E-1\x1b]0;owned\x07\x1b[2J"
	if code := post("esc", "payment.completed", map[string]any{"order_id": evil, "txn_id": "T-ESC", "amount": "1.00",
		"currency": "USD", "items": []map[string]any{{"product": "app"}}}); code != 200 {
		t.Fatalf("post = %d", code)
	}
	waitOrder(t, d, url.PathEscape(evil), ipn.OrderPaid)
	for _, args := range [][]string{{"licenses", evil}, {"downloads", "-reissue", evil}} {
		var out bytes.Buffer
		if err := run(context.Background(), append([]string{args[0], "-config", d.cfg}, args[1:]...), envFunc(), &out, io.Discard); err != nil {
			t.Fatalf("%s: %v", args[0], err)
		}
		if strings.ContainsAny(out.String(), "\x1b\x07") || !strings.Contains(out.String(), `E-1\x1b]0;owned\x07`) {
			t.Errorf("ipnd %s prints:\n%q", args[0], out.String())
		}
	}
}
