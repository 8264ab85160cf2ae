package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ipnd/ipn"
)

// Discarding the pending head of an order's callback queue makes the
// order's next callback due (it would wait forever behind it); the
// discard is counted apart from dead and pending, recorded in the
// order's history with who, and a repeat changes nothing. A sent item
// cannot be discarded.
func TestDiscardReleasesOrderQueue(t *testing.T) {
	db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "A", now)
	queueRefund(t, db, "A", now)
	items, _ := lane(t, db, ipn.EffectShopCallback, now)
	if len(items) != 1 {
		t.Fatalf("due callbacks %d, want A's payment only", len(items))
	}
	head := items[0]
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: head.ID, State: ipn.OutboxPending, Attempts: 1,
		RetryAt: now.Add(time.Hour), Error: "HTTP 500"}}, now); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dueOrders(t, db, now), " "); got != "" {
		t.Fatalf("due %q, want none (A's refund waits behind its payment)", got)
	}
	if _, _, err := db.DiscardOutbox(head.ID, "cli", "", 1, now); !errors.Is(err, ErrStale) {
		t.Errorf("discard with a stale version of the order: %v", err)
	}
	o, _ := db.GetOrder("A")
	was, repeated, err := db.DiscardOutbox(head.ID, "cli", "shop gone", o.Changes, now)
	if err != nil || repeated || was.State != ipn.OutboxPending {
		t.Fatalf("discard: %v repeated=%v was %s", err, repeated, was.State)
	}
	if got := strings.Join(dueOrders(t, db, now), " "); got != "A/refunded" {
		t.Errorf("after discarding A's payment callback: due %q, want A/refunded", got)
	}
	counts, _ := db.OutboxCounts()
	if counts[ipn.OutboxDiscarded][ipn.EffectShopCallback] != 1 || counts[ipn.OutboxPending][ipn.EffectShopCallback] != 1 {
		t.Errorf("counts %v: want 1 discarded, 1 pending callback", counts)
	}
	if _, repeated, err := db.DiscardOutbox(head.ID, "cli", "", 0, now); err != nil || !repeated {
		t.Errorf("discard again: %v repeated=%v", err, repeated)
	}
	o, _ = db.GetOrder("A")
	last := o.History[len(o.History)-1]
	if last.By != "cli" || !strings.Contains(last.Reason, "discarded by cli (shop gone)") {
		t.Errorf("history %+v", last)
	}
	// A sent item is not discarded.
	emails, _ := lane(t, db, ipn.EffectEmailCustomer, now)
	db.FinishOutbox([]ipn.OutboxResult{{ID: emails[0].ID, State: ipn.OutboxSent, Attempts: 1}}, now)
	if _, _, err := db.DiscardOutbox(emails[0].ID, "admin", "", 0, now); !errors.Is(err, ErrNotDiscardable) {
		t.Errorf("discard a sent email: %v", err)
	}
	// It can be resent: a new item, its cause suffixed.
	it, err := db.ResendOutbox(emails[0].ID, "admin", "click-1", now)
	if err != nil || it.ID == emails[0].ID || it.State != ipn.OutboxPending || !strings.HasSuffix(it.Effect.Cause, "/resend/1") {
		t.Fatalf("resend: %v %+v", err, it)
	}
	// The double click: the same key, the same item, nothing new.
	if again, err := db.ResendOutbox(emails[0].ID, "admin", "click-1", now); err != nil || again.ID != it.ID {
		t.Errorf("resend with the same key: %v item %d, want %d", err, again.ID, it.ID)
	}
	if it2, err := db.ResendOutbox(emails[0].ID, "admin", "", now); err != nil || !strings.HasSuffix(it2.Effect.Cause, "/resend/2") {
		t.Errorf("resend again: %v %s", err, it2.Effect.Cause)
	}
	if _, err := db.ResendOutbox(head.ID, "admin", "", now); !errors.Is(err, ErrNotResendable) {
		t.Errorf("resend a callback: %v", err)
	}
}

// Every attempt is kept with what the other side said, the last
// AttemptsKept of an item; bulk retry of dead items of a lane.
func TestOutboxAttemptsKeptAndRetryDead(t *testing.T) {
	db := openAt(t, filepath.Join(t.TempDir(), "ipnd.db"), Options{})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	queuePaid(t, db, "A", now)
	items, _ := lane(t, db, ipn.EffectShopCallback, now)
	id := items[0].ID
	n := AttemptsKept + 5
	for i := 1; i <= n; i++ {
		state := ipn.OutboxPending
		if i == n {
			state = ipn.OutboxDead
		}
		if err := db.FinishOutbox([]ipn.OutboxResult{{ID: id, State: state, Attempts: i, RetryAt: now, Error: "HTTP 500",
			Detail: ipn.AttemptDetail{HTTPStatus: 500, Response: fmt.Sprintf("down %d", i)}}}, now); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.OutboxAttempts(id)
	if err != nil || len(got) != AttemptsKept {
		t.Fatalf("%d attempts kept (%v), want %d", len(got), err, AttemptsKept)
	}
	if first, last := got[0], got[len(got)-1]; first.Seq != uint64(n-AttemptsKept+1) || last.Seq != uint64(n) ||
		last.HTTPStatus != 500 || last.Response != fmt.Sprintf("down %d", n) || last.Result != ipn.OutboxDead {
		t.Errorf("attempts from %+v to %+v", first, last)
	}
	ids, err := db.RetryDead(ipn.EffectEmailCustomer, now)
	if err != nil || len(ids) != 0 {
		t.Errorf("retry dead emails: %v %v, want none", ids, err)
	}
	ids, err = db.RetryDead(ipn.EffectShopCallback, now)
	if err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("retry dead callbacks: %v %v", ids, err)
	}
	if it, _ := db.GetOutbox(id); it.State != ipn.OutboxPending || it.Attempts != 0 {
		t.Errorf("after retry: %s %d", it.State, it.Attempts)
	}
	// A quiet success is not written, but shown from the item.
	if err := db.FinishOutbox([]ipn.OutboxResult{{ID: id, State: ipn.OutboxSent, Attempts: 1}}, now); err != nil {
		t.Fatal(err)
	}
	got, _ = db.OutboxAttempts(id)
	if last := got[len(got)-1]; len(got) != AttemptsKept+1 || last.Seq != uint64(n+1) || last.Result != ipn.OutboxSent || !last.At.Equal(now) {
		t.Errorf("after the success: %d attempts, last %+v", len(got), last)
	}
}
