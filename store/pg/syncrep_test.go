package pg

import (
	"context"
	"testing"
	"time"

	"ipnd/internal/pgtest"
)

// With synchronous replication configured, a 200 must mean the standby
// has the row. When the standby never confirms, the commit waits; ipnd's
// timeout cancels that wait, and PostgreSQL then reports the COMMIT as
// done with only a WARNING ("canceling wait for synchronous replication
// … committed locally, but might not have been replicated"). Append must
// answer an error (503), not the id: the gateway resends, and the resend
// is answered only once the standby has it.
func TestPGSyncReplicationUnconfirmedIsNotAcknowledged(t *testing.T) {
	c := pgtest.Start(t)
	db, err := Open(context.Background(), c.DSN(), Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, _, err := db.Append(ctx, note("shop", "before")); err != nil {
		t.Fatal(err)
	}
	// A standby name no standby has: every commit waits for it.
	for _, q := range []string{`ALTER SYSTEM SET synchronous_standby_names = 'nobody'`, `SELECT pg_reload_conf()`} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	waitSetting := func(want string) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			// A new connection each time: the reload reaches each backend
			// when it next reads the config.
			conn, err := db.pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			err = conn.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&got)
			conn.Release()
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("synchronous_standby_names = %q, want %q", got, want)
			}
		}
	}
	waitSetting("nobody")
	id, _, err := db.Append(ctx, note("shop", "unreplicated"))
	if err == nil {
		t.Fatalf("Append answered id %d while no standby confirmed the commit", id)
	}
	t.Logf("unconfirmed commit: %v", err)
	// A resend while the standby still does not confirm: not acknowledged
	// either, although the row committed locally.
	if id, dup, err := db.Append(ctx, note("shop", "unreplicated")); err == nil {
		t.Fatalf("the resend was answered (id %d, duplicate %t) while no standby confirmed", id, dup)
	}
	for _, q := range []string{`ALTER SYSTEM RESET synchronous_standby_names`, `SELECT pg_reload_conf()`} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	waitSetting("")
	if _, dup, err := db.Append(ctx, note("shop", "unreplicated")); err != nil || !dup {
		t.Fatalf("resend once replication is off: duplicate %t, %v (want the stored row's id)", dup, err)
	}
}
