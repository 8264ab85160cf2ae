package store

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// damageOutbox overwrites the stored item id (its body, or with state its
// state record) with bytes that do not decode.
func damageOutbox(t *testing.T, db *DB, id uint64, state bool) {
	t.Helper()
	bucket := bucketOutbox
	if state {
		bucket = bucketOutboxState
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put(u64(id), []byte{0xff, 0x00, 0x13})
	}); err != nil {
		t.Fatal(err)
	}
}

// A "skipped" result reads the whole item (the skip names its template in
// the order's history): an item whose body no longer decodes must not
// fail the batch, which holds the results of every lane (the recorder
// would retry it forever and every lane would wait for it).
func TestSkippedResultOfADamagedItemDoesNotFailTheBatch(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	queuePaid(t, db, "O2", now)
	mails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	calls, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(mails) != 2 || len(calls) != 2 {
		t.Fatalf("%d emails, %d callbacks due; want 2 and 2", len(mails), len(calls))
	}
	damageOutbox(t, db, mails[0].ID, false) // damaged while it was being delivered
	err := db.FinishOutbox([]ipn.OutboxResult{
		{ID: mails[0].ID, State: ipn.OutboxSkipped, Attempts: 1, Error: "no recipient"},
		{ID: mails[1].ID, State: ipn.OutboxSent, Attempts: 1},
		{ID: calls[0].ID, State: ipn.OutboxSent, Attempts: 1},
	}, now)
	if err != nil {
		t.Fatalf("one damaged item failed the whole batch: %v", err)
	}
	c, _ := db.OutboxCounts()
	if c[ipn.OutboxSent][ipn.EffectEmailCustomer] != 1 || c[ipn.OutboxSent][ipn.EffectShopCallback] != 1 {
		t.Errorf("the other results were not recorded: counts = %v", c)
	}
}

// Retention walks the outbox items in id order: one whose record no
// longer decodes (its body, or its schema 8 state record) must not stop
// the purge of every later item, nor of the notifications (one
// transaction does both), forever.
func TestPurgePassesOverADamagedOutboxItem(t *testing.T) {
	for _, state := range []bool{false, true} {
		t.Run(map[bool]string{false: "body", true: "state"}[state], func(t *testing.T) {
			db := mustOpen(t)
			now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
			queuePaid(t, db, "O1", now)
			queuePaid(t, db, "O2", now)
			var results []ipn.OutboxResult
			for _, kind := range ipn.OutboxLanes {
				items, _ := lane(t, db, kind, now)
				for _, it := range items {
					results = append(results, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1})
				}
			}
			if err := db.FinishOutbox(results, now); err != nil {
				t.Fatal(err)
			}
			damageOutbox(t, db, 1, state)
			var err error
			for range 5 {
				if _, err = db.Purge(now.Add(time.Hour), 200); err != nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("purge failed on a damaged outbox item: %v", err)
			}
			last := results[len(results)-1].ID
			got, err := db.GetOutbox(last)
			if err != nil || got.Effect.To != "" || got.State != ipn.OutboxSent {
				t.Errorf("item %d after the purge = %+v, %v; want sent, scrubbed", last, got, err)
			}
		})
	}
}

// A backup holds the items' state records: restored, every item reads as
// it did (state, attempts, next try, last error), the counts and the due
// lanes are the same, nothing sent is due again and nothing pending is
// missing.
func TestBackupRestoresOutboxStates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipnd.db")
	db := openAt(t, path, Options{})
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, o := range []string{"O1", "O2", "O3", "O4"} {
		queuePaid(t, db, o, now)
	}
	retry := now.Add(time.Minute)
	var results []ipn.OutboxResult
	for _, kind := range ipn.OutboxLanes {
		items, _ := lane(t, db, kind, now)
		for i, it := range items {
			switch i % 4 {
			case 0:
				results = append(results, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxSent, Attempts: 1})
			case 1:
				results = append(results, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: retry, Error: "HTTP 503"})
			case 2:
				results = append(results, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxDead, Attempts: 1, Error: "550 no"})
			} // 3: not tried yet
		}
	}
	if err := db.FinishOutbox(results, now); err != nil {
		t.Fatal(err)
	}
	all := func(db *DB) map[uint64]ipn.OutboxItem {
		out := map[uint64]ipn.OutboxItem{}
		for id := uint64(1); ; id++ {
			it, err := db.GetOutbox(id)
			if err != nil {
				return out
			}
			out[id] = it
		}
	}
	due := func(db *DB) map[string][]uint64 {
		out := map[string][]uint64{}
		for _, kind := range ipn.OutboxLanes {
			items, _, err := db.DueLane(kind, retry, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				out[kind] = append(out[kind], it.ID)
			}
		}
		return out
	}
	before, dueBefore := all(db), due(db)
	countsBefore, _ := db.OutboxCounts()
	backup := filepath.Join(dir, "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Backup(f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(path, backup, now); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, path)
	after, dueAfter := all(db), due(db)
	countsAfter, _ := db.OutboxCounts()
	if len(before) == 0 || !reflect.DeepEqual(before, after) {
		t.Errorf("items after the restore differ:\nbefore %+v\nafter  %+v", before, after)
	}
	if !reflect.DeepEqual(dueBefore, dueAfter) {
		t.Errorf("due after the restore %v, before %v", dueAfter, dueBefore)
	}
	if !reflect.DeepEqual(countsBefore, countsAfter) {
		t.Errorf("counts after the restore %v, before %v", countsAfter, countsBefore)
	}
}

// One outbox item whose record no longer decodes (its body, or its
// schema 8 state record) is left out of the outbox lists (every state,
// the dead ones, an order's, a notification's) instead of failing them:
// GetOutbox still reports it.
func TestOutboxListsPassOverADamagedItem(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	queuePaid(t, db, "O2", now)
	var results []ipn.OutboxResult
	for _, kind := range ipn.OutboxLanes {
		items, _ := lane(t, db, kind, now)
		for _, it := range items {
			results = append(results, ipn.OutboxResult{ID: it.ID, State: ipn.OutboxDead, Attempts: 1, Error: "550"})
		}
	}
	if err := db.FinishOutbox(results, now); err != nil {
		t.Fatal(err)
	}
	all, err := db.ListOutbox("", 100)
	if err != nil || len(all) < 4 {
		t.Fatalf("ListOutbox = %d items, %v", len(all), err)
	}
	first, second := all[len(all)-1], all[len(all)-2] // items 1 and 2: O1's
	damageOutbox(t, db, first.ID, true)
	damageOutbox(t, db, second.ID, false)
	if _, err := db.GetOutbox(first.ID); !errors.Is(err, ErrCorrupt) {
		t.Errorf("GetOutbox of the damaged item = %v, want ErrCorrupt", err)
	}
	for _, c := range []struct {
		what string
		list func() ([]OutboxItem, error)
		want int
	}{
		{"every state", func() ([]OutboxItem, error) { return db.ListOutbox("", 100) }, len(all) - 2},
		{"dead", func() ([]OutboxItem, error) { return db.ListOutbox(ipn.OutboxDead, 100) }, len(all) - 2},
		{"O1's", func() ([]OutboxItem, error) { return db.OutboxOfOrder("O1") }, len(all)/2 - 2},
		{"notification 1's", func() ([]OutboxItem, error) { return db.OutboxOf(1) }, len(all)/2 - 2},
	} {
		got, err := c.list()
		if err != nil || len(got) != c.want {
			t.Errorf("%s: %d items, %v; want %d", c.what, len(got), err, c.want)
		}
	}
}
