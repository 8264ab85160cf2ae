package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
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
