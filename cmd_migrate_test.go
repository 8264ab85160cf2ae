package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ipnd/fulfil"
	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
	"ipnd/store/pg"
)

// TestPGMigrateCommand: "ipnd migrate -from FILE -to DSN" copies a
// stopped store and prints the rows per table; run again into the same
// database it refuses, saying why; from the database it writes a new
// file, and refuses one that exists.
func TestPGMigrateCommand(t *testing.T) {
	c := pgtest.Start(t)
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "b", "a"} {
		n := &ipn.Notification{Gateway: "test", DedupKey: key, ReceivedAt: time.Now(), Body: []byte(`{}`)}
		if _, _, err := db.Append(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	getenv := func(string) string { return "" }
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "-from", path, "-to", c.DSN()}, getenv, &out, &errb); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	for _, want := range []string{"verified:", "notifications    2\n", "outbox           0\n", "next notification id 3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate printed no %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	err = run(context.Background(), []string{"migrate", "-from", path, "-to", c.DSN()}, getenv, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "notifications has rows") {
		t.Errorf("migrate into the same database again = %v, want a refusal naming what is there", err)
	}
	// Back to a new file: the same rows; to an existing file: refused.
	out.Reset()
	back := filepath.Join(t.TempDir(), "back.db")
	if err := run(context.Background(), []string{"migrate", "-from", c.DSN(), "-to", back}, getenv, &out, &errb); err != nil {
		t.Fatalf("migrate back: %v\n%s", err, out.String())
	}
	for _, want := range []string{"verified:", "notifications    2\n", "next notification id 3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate back printed no %q:\n%s", want, out.String())
		}
	}
	err = run(context.Background(), []string{"migrate", "-from", c.DSN(), "-to", path}, getenv, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("migrate back onto the first file = %v, want a refusal", err)
	}
	db, err = store.Open(back, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, _, err := db.Get(2); err != nil || n.DedupKey != "b" {
		t.Errorf("notification 2 in the file written back: %v %v", n, err)
	}
}

// TestPGMigrateCommandFulfilments: a store with fulfilments (download
// links, license keys) is copied with them, and back: the file written
// back holds the order's deliveries and its license.
func TestPGMigrateCommandFulfilments(t *testing.T) {
	c := pgtest.Start(t)
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "app.zip")
	if err := os.WriteFile(file, []byte("app"), 0o600); err != nil {
		t.Fatal(err)
	}
	db.SetCatalog(&fulfil.Catalog{PublicURL: "https://x.example", Grace: time.Hour, Products: map[string]*fulfil.Product{
		"app": {ID: "app", File: file, DownloadLimit: 5, LinkTTL: time.Hour, License: fulfil.LicenseGenerated, Activations: 1, Format: fulfil.FormatGrouped}}})
	n := &ipn.Notification{Gateway: "test", DedupKey: "pay", ReceivedAt: time.Now(), Body: []byte(`{}`)}
	id, _, err := db.Append(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	ev := &ipn.Event{Type: ipn.TypePayment, Status: ipn.StatusCompleted, TxnID: "T1", OrderID: "O1", Amount: "5.00", Currency: "USD", Items: "app:1"}
	out := ipn.Outcome{ID: id, State: ipn.StateApplied, Event: ev, EventKey: ipn.EventKey("test", ev), ApplyOrder: true,
		Context: ipn.ApplyContext{Gateway: "test"}}
	if _, _, err := db.Get(id); err != nil { // waits for the journal's applier
		t.Fatal(err)
	}
	if _, err := db.Finish([]ipn.Outcome{out}, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	getenv := func(string) string { return "" }
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "-from", path, "-to", c.DSN()}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	for _, want := range []string{"orders           1\n", "fulfilments      1\n", "licenses         1\n", "dl_tokens        1\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("migrate printed no %q:\n%s", want, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "not copied") {
		t.Errorf("migrate left something behind:\n%s", stdout.String())
	}
	// The database's license signing key goes next to the file written
	// back; a different key there is refused before anything is copied.
	pdb, err := pg.Open(context.Background(), c.DSN(), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pdb.Dashboard().SharedSigningKey(nil)
	pdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, signingKeyFile), []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"migrate", "-from", c.DSN(), "-to", filepath.Join(other, "back.db")}, getenv, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "another license signing key") {
		t.Fatalf("migrate back beside another key = %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(other, "back.db")); err == nil {
		t.Fatal("the refused copy left a file")
	}
	back := filepath.Join(t.TempDir(), "back.db")
	if err := run(context.Background(), []string{"migrate", "-from", c.DSN(), "-to", back}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("migrate back: %v", err)
	}
	cfg := &Config{}
	cfg.Store.Path = back
	if got, err := loadSigningKey(cfg, false); err != nil || !got.Equal(key) {
		t.Fatalf("the signing key written back: %v, want the database's", err)
	}
	db, err = store.Open(back, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rec, lic, err := db.Deliveries("O1")
	if err != nil || len(rec.Deliveries) != 1 || lic[rec.Deliveries[0].LicenseHash] == nil {
		t.Fatalf("deliveries of O1 in the file written back: %+v %v %v", rec, lic, err)
	}
	if l, err := db.License(lic[rec.Deliveries[0].LicenseHash].Key); err != nil || l.OrderID != "O1" {
		t.Fatalf("license of O1 in the file written back: %+v %v", l, err)
	}
}
