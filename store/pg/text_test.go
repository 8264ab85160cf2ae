package pg

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
	"ipnd/store"
)

// TestPGTextColumnsKeepBytes: dedup keys and content types that text
// refuses (NUL, invalid UTF-8) are stored and read back byte for byte;
// distinct ones stay distinct (one that reads as another's escaped form
// included), equal ones are duplicates.
func TestPGTextColumnsKeepBytes(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	ctx := context.Background()
	keys := []string{"a\x00", "a\xff", "a\xfe", "\xff", textEscape + "61ff", textEscape + "zz", "plain", textEscape}
	ids := map[string]uint64{}
	for _, k := range keys {
		n := note("paypal", k)
		n.Headers = map[string][]string{"User-Agent": {"PayPal IPN"}}
		n.ContentType = "application/x-www-form-urlencoded; charset=\"" + k + "\""
		id, dup, err := db.Append(ctx, n)
		if err != nil || dup {
			t.Fatalf("key %q: id %d dup %v err %v", k, id, dup, err)
		}
		ids[k] = id
	}
	for _, k := range keys {
		again := note("paypal", k)
		again.Headers = nil
		id, dup, err := db.Append(ctx, again)
		if err != nil || !dup || id != ids[k] {
			t.Errorf("key %q again: id %d dup %v err %v, want a duplicate of %d", k, id, dup, err, ids[k])
		}
		n, _, err := db.Get(ctx, ids[k])
		if err != nil {
			t.Fatal(err)
		}
		if n.DedupKey != k || n.ContentType != "application/x-www-form-urlencoded; charset=\""+k+"\"" {
			t.Errorf("key %q read back as %q, content type %q", k, n.DedupKey, n.ContentType)
		}
	}
}

// TestPGOpenDSNErrorHidesPassword: a DSN that does not parse is refused
// with the reason, never with its password (whole or in part), in the
// forms pgx's own masking misses.
func TestPGOpenDSNErrorHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"host=127.0.0.1 password = Hunter2pw sslmode=bogus", // libpq allows spaces around "="
		"postgres://ipnd:Hun@ter2pw@127.0.0.1:badport/ipnd", // an "@" left unescaped in the password
		"host=127.0.0.1 password=Hun ter2pw dbname=ipnd",    // a space left unquoted
		"postgres://ipnd:Hunter2pw@127.0.0.1:54324/ipnd?sslmode=bogus",
		"host=127.0.0.1 password='Hunter2pw",
	} {
		_, err := Open(context.Background(), dsn, Options{})
		if err == nil {
			t.Fatalf("%q opened", dsn)
		}
		if msg := err.Error(); strings.Contains(msg, "ter2pw") || !strings.Contains(msg, "DSN") {
			t.Errorf("Open(%q) = %q: shows the password, or does not say the DSN is wrong", dsn, msg)
		}
	}
}

// TestPGOpenReadOnlyDatabase: a DSN that reaches a database taking no
// writes (a standby; here a read-only session) is refused saying so and
// what to do, not with the failed CREATE TABLE.
func TestPGOpenReadOnlyDatabase(t *testing.T) {
	c := pgtest.Start(t)
	open(t, c.DSN()).Close() // the schema exists: a standby has it too
	_, err := Open(context.Background(), c.DSN()+"&options=-c%20default_transaction_read_only%3Don", Options{})
	if err == nil || !strings.Contains(err.Error(), "takes no writes") || !strings.Contains(err.Error(), "target_session_attrs=read-write") {
		t.Fatalf("Open of a read-only database = %v, want it to say the database takes no writes and what to do", err)
	}
}

// TestPGFindNameTextRefuses: a notification list asked for a gateway
// name that text refuses (a request's ?gateway=%FF) is empty, not a
// failure of the store (503 "store unavailable").
func TestPGFindNameTextRefuses(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	if _, _, err := db.Append(context.Background(), note("shop", "k1")); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{"\xff", "sh\x00op"} {
		items, err := db.Dashboard().Find(store.Query{Gateway: gw, State: "received"})
		if err != nil || len(items) != 0 {
			t.Errorf("Find(gateway %q) = %d items, %v; want none", gw, len(items), err)
		}
	}
	if items, err := db.Dashboard().Find(store.Query{Gateway: "shop"}); err != nil || len(items) != 1 {
		t.Errorf("Find(gateway shop) = %d items, %v; want 1", len(items), err)
	}
}

// TestPGLongDedupKey: dedup keys longer than a btree entry holds are
// stored (by their hash, as on bbolt) without failing the batch; the
// same key again is a duplicate, another one is not.
func TestPGLongDedupKey(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	ctx := context.Background()
	long := func(c byte) string { return strings.Repeat(string(c), 20000) + "\xff" }
	a, dup, err := db.Append(ctx, note("paypal", long('a')))
	if err != nil || dup {
		t.Fatalf("a long key: %d %v %v", a, dup, err)
	}
	if id, dup, err := db.Append(ctx, note("paypal", long('a'))); err != nil || !dup || id != a {
		t.Errorf("the long key again: %d %v %v, want a duplicate of %d", id, dup, err, a)
	}
	if id, dup, err := db.Append(ctx, note("paypal", long('b'))); err != nil || dup || id == a {
		t.Errorf("another long key: %d %v %v, want a new notification", id, dup, err)
	}
}

// TestPGSpaceKeysBeforeAnalyze: ipnd stats on a database PostgreSQL has
// not analyzed yet counts the notifications table's rows, not 0 (the
// planner's estimate is -1 then).
func TestPGSpaceKeysBeforeAnalyze(t *testing.T) {
	db := open(t, pgtest.Start(t).DSN())
	for i := range 3 {
		if _, _, err := db.Append(context.Background(), note("shop", fmt.Sprint("k", i))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		sp, err := db.Dashboard().Space()
		if err != nil {
			t.Fatal(err)
		}
		keys := -1
		for _, b := range sp.Buckets {
			if b.Name == "notifications" {
				keys = b.Keys
			}
		}
		if keys == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("notifications table: %d keys, want 3", keys)
		}
		time.Sleep(100 * time.Millisecond) // the statistics are flushed within a second
	}
}

// TestPGOutboxResultErrorTextRefuses: a delivery error whose text holds
// bytes text refuses (a server's reply in Latin-1, a NUL) is recorded
// with the other results of its call, not refused with them forever
// (the worker would retry recording them, stalling every delivery).
func TestPGOutboxResultErrorTextRefuses(t *testing.T) {
	db := open(t, pgtest.Start(t).DSN())
	b := pgBackend(t, db)
	queue(t, b, 2)
	d := b.deliveries()
	items, _, err := d.DueLaneSkipping(ipn.EffectShopCallback, time.Now(), 10, nil)
	if err != nil || len(items) != 2 {
		t.Fatalf("due callbacks: %d %v", len(items), err)
	}
	results := []ipn.OutboxResult{
		{ID: items[0].ID, State: ipn.OutboxSent, Attempts: items[0].Attempts + 1},
		{ID: items[1].ID, State: ipn.OutboxDead, Attempts: items[1].Attempts + 1, Error: "550 Empf\xe4nger \x00unbekannt"},
	}
	if err := d.FinishOutbox(results, time.Now()); err != nil {
		t.Fatalf("FinishOutbox: %v", err)
	}
	var last string
	if err := db.pool.QueryRow(context.Background(), `SELECT last_error FROM outbox WHERE id = $1`, int64(items[1].ID)).Scan(&last); err != nil ||
		!strings.Contains(last, "550 Empf") || !strings.Contains(last, "unbekannt") {
		t.Errorf("last_error %q, %v", last, err)
	}
}
