package pg

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"ipnd/internal/pgtest"
	"ipnd/ipn"
)

func note(gw, key string) *ipn.Notification {
	return &ipn.Notification{Gateway: gw, DedupKey: key, ReceivedAt: time.Now().UTC().Truncate(time.Microsecond),
		RemoteAddr: "192.0.2.1", ContentType: "application/json",
		Headers: map[string][]string{"Webhook-Id": {key}}, Body: []byte(`{"id":"` + key + `"}`)}
}

func open(t testing.TB, dsn string) *DB {
	t.Helper()
	db, err := Open(context.Background(), dsn, Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// Two "processes" (two pools) ingest concurrently, with duplicates
// across them: every notification is stored once, the duplicates answer
// its id, and the ids are 1..N without a gap.
func TestPGAppendConcurrentDedupAcrossProcesses(t *testing.T) {
	c := pgtest.Start(t)
	a, b := open(t, c.DSN()), open(t, c.DSN())
	const n, clients = 2000, 32
	ids := make([]uint64, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := a
			if cl%2 == 1 {
				db = b
			}
			for i := cl; i < n; i += clients {
				for range 2 { // each one sent twice: the second is a duplicate
					id, _, err := db.Append(context.Background(), note("shop", fmt.Sprintf("msg_%d", i)))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if ids[i] != 0 && ids[i] != id {
						errs <- fmt.Errorf("msg_%d stored as %d and %d", i, ids[i], id)
					}
					ids[i] = id
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for i, id := range ids {
		if id == 0 || id > n || seen[id] {
			t.Fatalf("msg_%d has id %d (reused or out of 1..%d)", i, id, n)
		}
		seen[id] = true
	}
	var count int
	if err := a.pool.QueryRow(context.Background(), `SELECT count(*) FROM notifications`).Scan(&count); err != nil || count != n {
		t.Fatalf("%d rows stored (%v), want %d", count, err, n)
	}
	got, state, err := b.Get(context.Background(), ids[7])
	if err != nil || got.DedupKey != "msg_7" || state != ipn.StateReceived || got.Headers["Webhook-Id"][0] != "msg_7" {
		t.Fatalf("Get: %+v %q %v", got, state, err)
	}
	if _, _, err := a.Get(context.Background(), n+1); !errors.Is(err, ipn.ErrNotFound) {
		t.Fatalf("Get of an unknown id: %v", err)
	}
}

// Ids are increasing in commit order: a reader that follows "id > last"
// never misses a row committed later with a smaller id.
func TestPGIDsFollowCommitOrder(t *testing.T) {
	c := pgtest.Start(t)
	a, b := open(t, c.DSN()), open(t, c.DSN())
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, db := range []*DB{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := db.Append(ctx, note("shop", "")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var last int64
	var followed int
	for followed < 3000 {
		rows, err := a.pool.Query(ctx, `SELECT id FROM notifications WHERE id > $1 ORDER BY id`, last)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id int64
			rows.Scan(&id)
			if id != last+1 {
				t.Fatalf("follower saw id %d after %d: a row with a smaller id committed later", id, last)
			}
			last = id
			followed++
		}
		rows.Close()
	}
	close(stop)
	wg.Wait()
}

func TestPGNewerSchemaRefused(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	if _, err := db.pool.Exec(context.Background(), `UPDATE ipnd_schema SET version = $1`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), c.DSN(), Options{})
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a newer database: %v", err)
	}
}

// PostgreSQL stopped: Append fails with ErrUnavailable within the
// timeout (the receiver answers 503), and works again once the server is
// back, without reopening the store.
func TestPGOutageAndRecovery(t *testing.T) {
	c := pgtest.Start(t)
	db := open(t, c.DSN())
	ctx := context.Background()
	if _, _, err := db.Append(ctx, note("shop", "before")); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	for i := range 3 {
		_, _, err := db.Append(ctx, note("shop", fmt.Sprintf("during_%d", i)))
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Append with the server down: %v", err)
		}
	}
	c.Start()
	var id uint64
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if id, _, err = db.Append(ctx, note("shop", "after")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no recovery: %v", err)
	}
	if id != 2 {
		t.Fatalf("first notification after the outage has id %d, want 2 (nothing stored during it)", id)
	}
}
