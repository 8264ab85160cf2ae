package store

import (
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// TestListSubscriptions pages subscriptions in id order, filtered by
// status, and says where to go on.
func TestListSubscriptions(t *testing.T) {
	db := mustOpen(t)
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for i := range 7 {
			st := ipn.SubscriptionActive
			if i%3 == 0 {
				st = ipn.SubscriptionCanceled
			}
			s := ipn.Subscription{ID: fmt.Sprintf("SUB-%d", i), Gateway: "g", Status: st}
			if err := db.putJSON(tx, bucketSubs, []byte(s.ID), s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(subs []ipn.Subscription) string {
		out := ""
		for _, s := range subs {
			out += s.ID[4:]
		}
		return out
	}
	page, next, err := db.ListSubscriptions("", "", 3)
	if err != nil || ids(page) != "012" || next != "SUB-2" {
		t.Fatalf("first page: %q next %q, %v", ids(page), next, err)
	}
	page, next, err = db.ListSubscriptions("", next, 3)
	if err != nil || ids(page) != "345" || next != "SUB-5" {
		t.Fatalf("second page: %q next %q, %v", ids(page), next, err)
	}
	page, next, err = db.ListSubscriptions("", next, 3)
	if err != nil || ids(page) != "6" || next != "" {
		t.Fatalf("last page: %q next %q, %v", ids(page), next, err)
	}
	page, next, err = db.ListSubscriptions(ipn.SubscriptionCanceled, "", 2)
	if err != nil || ids(page) != "03" || next != "SUB-3" {
		t.Fatalf("canceled: %q next %q, %v", ids(page), next, err)
	}
	page, next, err = db.ListSubscriptions(ipn.SubscriptionCanceled, next, 2)
	if err != nil || ids(page) != "6" || next != "" {
		t.Fatalf("canceled, page 2: %q next %q, %v", ids(page), next, err)
	}
}
