package store

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// Recording a delivery result writes the item's small state record and
// leaves the item itself (its effect, the bulk) as it was queued; every
// reader sees the item with its state.
func TestOutboxResultLeavesItem(t *testing.T) {
	db := mustOpen(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	mails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	calls, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(mails) != 1 || len(calls) != 1 {
		t.Fatalf("%d emails, %d callbacks due; want 1 and 1", len(mails), len(calls))
	}
	body := func(id uint64) (b []byte) {
		db.bolt.View(func(tx *bolt.Tx) error { b = bytes.Clone(tx.Bucket(bucketOutbox).Get(u64(id))); return nil })
		return b
	}
	mail, call := body(mails[0].ID), body(calls[0].ID)
	retry := now.Add(time.Minute)
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: mails[0].ID, State: ipn.OutboxSent, Attempts: 1},
		{ID: calls[0].ID, State: ipn.OutboxPending, Attempts: 1, RetryAt: retry, Error: "HTTP 503"}}, now); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body(mails[0].ID), mail) || !bytes.Equal(body(calls[0].ID), call) {
		t.Error("recording a result rewrote the item")
	}
	got, err := db.GetOutbox(mails[0].ID)
	if err != nil || got.State != ipn.OutboxSent || got.Attempts != 1 || !got.SentAt.Equal(now) || got.Effect.To != "c@example.com" {
		t.Errorf("sent email = %+v, %v", got, err)
	}
	got, err = db.GetOutbox(calls[0].ID)
	if err != nil || got.State != ipn.OutboxPending || got.Attempts != 1 || !got.NextAttempt.Equal(retry) ||
		got.LastError != "HTTP 503" || got.Effect.Event == nil {
		t.Errorf("callback to retry = %+v, %v", got, err)
	}
	if sent, _ := db.ListOutbox(ipn.OutboxSent, 10); len(sent) != 1 || sent[0].ID != mails[0].ID {
		t.Errorf("ListOutbox(sent) = %+v", sent)
	}
	if _, next := lane(t, db, ipn.EffectShopCallback, now); !next.Equal(retry) {
		t.Errorf("callback lane next due %v, want %v", next, retry)
	}
}

// An item queued before schema 8 has no state record: a file at 6 opens
// as 8 without rewriting anything, the item reads as its JSON says, its
// result is recorded in a new state record, and the order queue of its
// lane goes on.
func TestOutboxItemBeforeStateRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipnd.db")
	db := openAt(t, path, Options{})
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "O1", now)
	queuePaid(t, db, "O1b", now)
	// As schema 6 left it: the state in the item, no state records.
	db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketOutboxState); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(6))
	})
	db.Close()
	db = reopen(t, path)
	db.bolt.View(func(tx *bolt.Tx) error {
		if got := getU64(tx.Bucket(bucketMeta).Get(keySchema)); got != SchemaVersion {
			t.Errorf("schema after open = %d, want %d", got, SchemaVersion)
		}
		if n := tx.Bucket(bucketOutboxState).Stats().KeyN; n != 0 {
			t.Errorf("%d state records written on upgrade, want none", n)
		}
		return nil
	})
	calls, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(calls) != 2 {
		t.Fatalf("%d callbacks due, want 2", len(calls))
	}
	got, err := db.GetOutbox(calls[0].ID)
	if err != nil || got.State != ipn.OutboxPending || got.Attempts != 0 || got.Effect.Event == nil {
		t.Fatalf("item without a state record = %+v, %v", got, err)
	}
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: calls[0].ID, State: ipn.OutboxSent, Attempts: 1}}, now); err != nil {
		t.Fatal(err)
	}
	if got, err = db.GetOutbox(calls[0].ID); err != nil || got.State != ipn.OutboxSent || got.Attempts != 1 {
		t.Errorf("after its result: %+v, %v", got, err)
	}
	if calls, _ = lane(t, db, ipn.EffectShopCallback, now); len(calls) != 1 {
		t.Errorf("%d callbacks due after one was sent, want 1", len(calls))
	}
	counts, _ := db.OutboxCounts()
	if counts[ipn.OutboxSent][ipn.EffectShopCallback] != 1 || counts[ipn.OutboxPending][ipn.EffectShopCallback] != 1 {
		t.Errorf("counts = %v", counts)
	}
}

// A state record survives its round trip, and a damaged one is an error,
// not a panic.
func FuzzOutboxState(f *testing.F) {
	s := outboxState{State: ipn.OutboxPending, Attempts: 3, NextAttempt: time.Unix(1, 5).UTC(), LastError: "x",
		Kind: ipn.EffectShopCallback, OrderID: "O-1"}
	f.Add(s.encode())
	s.State, s.Kind = "other", "lane"
	f.Add(s.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeOutboxState(b)
		if err != nil {
			return
		}
		again, err := decodeOutboxState(s.encode())
		if err != nil || again != s {
			t.Fatalf("round trip: %+v -> %+v, %v", s, again, err)
		}
	})
}
