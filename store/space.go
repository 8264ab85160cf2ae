package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// BucketSpace is the room one bucket takes in the database file.
type BucketSpace struct {
	Name  string `json:"name"`
	Keys  int    `json:"keys"`
	Bytes int64  `json:"bytes"`  // pages allocated to it (branch, leaf and overflow)
	InUse int64  `json:"in_use"` // of which holding keys, values and headers
	// PerNotification is Bytes divided by the number of notifications.
	PerNotification float64 `json:"per_notification"`
}

// Space is where the bytes on disk go.
type Space struct {
	FileBytes     int64         `json:"file_bytes"`    // the database file
	JournalBytes  int64         `json:"journal_bytes"` // journal segments (preallocated)
	FreeBytes     int64         `json:"free_bytes"`    // free pages inside the file
	Notifications int           `json:"notifications"`
	Buckets       []BucketSpace `json:"buckets"`
	// PerNotification is FileBytes divided by the number of notifications.
	PerNotification float64 `json:"per_notification"`
}

// Space walks every bucket and reports its size. It reads the whole
// tree: for a large file it takes a while (one read transaction).
func (db *DB) Space() (Space, error) {
	db.settle()
	st, err := db.Stats()
	if err != nil {
		return Space{}, err
	}
	sp := Space{FileBytes: st.SizeBytes, JournalBytes: st.JournalBytes}
	err = db.view(func(tx *bolt.Tx) error {
		sp.Notifications = tx.Bucket(bucketLog).Stats().KeyN
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			s := b.Stats()
			sp.Buckets = append(sp.Buckets, BucketSpace{Name: string(name), Keys: s.KeyN,
				Bytes: int64(s.BranchAlloc + s.LeafAlloc), InUse: int64(s.BranchInuse + s.LeafInuse)})
			return nil
		})
	})
	if err != nil {
		return Space{}, fmt.Errorf("store: space: %w", mapClosed(err))
	}
	sp.FreeBytes = int64(db.bolt.Stats().FreeAlloc)
	if sp.Notifications > 0 {
		n := float64(sp.Notifications)
		sp.PerNotification = float64(sp.FileBytes) / n
		for i := range sp.Buckets {
			sp.Buckets[i].PerNotification = float64(sp.Buckets[i].Bytes) / n
		}
	}
	return sp, nil
}
