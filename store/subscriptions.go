package store

import (
	"bytes"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// subscriptionScanMax bounds how many subscriptions one page of
// ListSubscriptions reads when it filters by status.
const subscriptionScanMax = 20000

// ListSubscriptions returns subscriptions in id order after the id after
// ("": from the first), of status status ("": any), at most limit
// (default 50, at most 1000). next is the id to continue after when
// there may be more ("" at the end); a filtered page reads at most
// subscriptionScanMax records, so it may hold fewer than limit and
// still have a next.
func (db *DB) ListSubscriptions(status ipn.SubscriptionStatus, after string, limit int) (subs []ipn.Subscription, next string, err error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	err = db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSubs).Cursor()
		var k, v []byte
		if after == "" {
			k, v = c.First()
		} else if k, v = c.Seek([]byte(after)); k != nil && bytes.Equal(k, []byte(after)) {
			k, v = c.Next()
		}
		var last []byte
		for scanned := 0; k != nil; k, v = c.Next() {
			if len(subs) == limit || scanned == subscriptionScanMax {
				next = string(last) // more may follow
				return nil
			}
			scanned++
			last = k
			var s ipn.Subscription
			if err := decodeValue(v, &s); err != nil {
				continue // damaged: left out of the list (GetSubscription reports it)
			}
			if status == "" || s.Status == status {
				subs = append(subs, s)
			}
		}
		return nil
	})
	return subs, next, mapClosed(err)
}
