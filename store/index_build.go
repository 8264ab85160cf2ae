package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
)

// indexBuildChunk is how many records one transaction of buildIndexes
// indexes: what it holds in memory and what a kill loses of its work
// (a variable for tests).
var indexBuildChunk = 10000

// indexBuildHook (tests), when set, runs after each committed chunk; an
// error stops the build there, as a kill would.
var indexBuildHook func() error

// Phases of buildIndexes, the first byte of keyIndexBuild's value
// (followed by the next id to index).
const (
	buildNotifications = 'n'
	buildOutbox        = 'o'
	buildOrders        = 'r' // followed by the last order id indexed (8 zero bytes: none yet)
)

// startIndexBuild marks the indexes to be built (a file from before
// schema 7), empty. It runs in the transaction that moves the file to
// schema 7, so a build that knows 6 never writes the file again.
func startIndexBuild(tx *bolt.Tx) error {
	for _, name := range indexBuckets {
		if err := tx.DeleteBucket(name); err != nil && tx.Bucket(name) != nil {
			return err
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(keyIndexBuild, append([]byte{buildNotifications}, u64(1)...))
}

// buildIndexes builds the indexes of a file moved to schema 7, when
// startIndexBuild marked it: the notifications' state records, then the
// outbox items, indexBuildChunk per transaction, each recording how far
// it got, so that a run killed in the middle resumes where the last
// commit left it. Open runs it before anything else writes.
func (db *DB) buildIndexes() error {
	for {
		done := false
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			v := meta.Get(keyIndexBuild)
			if v == nil {
				done = true
				return nil
			}
			if len(v) < 2 || v[0] != buildOrders && len(v) != 9 {
				return fmt.Errorf("%w: bad %s key", ErrCorrupt, keyIndexBuild)
			}
			phase, from := v[0], uint64(0)
			if phase != buildOrders {
				from = binary.BigEndian.Uint64(v[1:9])
			}
			var next uint64
			var err error
			switch phase {
			case buildNotifications:
				next, err = indexStatesFrom(tx, from)
				if err == nil && next == 0 {
					return meta.Put(keyIndexBuild, append([]byte{buildOutbox}, u64(1)...))
				}
			case buildOutbox:
				next, err = indexOutboxFrom(tx, from)
				if err == nil && next == 0 {
					return meta.Put(keyIndexBuild, append([]byte{buildOrders}, u64(0)...))
				}
			case buildOrders:
				var last []byte
				last, err = indexOrdersFrom(tx, v[1:])
				if err == nil && last == nil {
					return meta.Delete(keyIndexBuild)
				}
				if err == nil {
					return meta.Put(keyIndexBuild, append([]byte{buildOrders}, last...))
				}
			default:
				return fmt.Errorf("%w: bad %s phase", ErrCorrupt, keyIndexBuild)
			}
			if err != nil {
				return err
			}
			return meta.Put(keyIndexBuild, append([]byte{phase}, u64(next)...))
		})
		if err != nil {
			return fmt.Errorf("store: building the indexes of schema 7: %w", err)
		}
		if done {
			return nil
		}
		if indexBuildHook != nil {
			if err := indexBuildHook(); err != nil {
				return fmt.Errorf("store: building the indexes of schema 7: %w", err)
			}
		}
	}
}

// indexStatesFrom indexes up to indexBuildChunk notifications from id
// from on; it returns the next id to index, 0 when none is left.
func indexStatesFrom(tx *bolt.Tx, from uint64) (uint64, error) {
	return indexChunkFrom(tx, bucketState, from, func(id uint64, v []byte) error {
		var p ipn.Processing
		if decodeValue(v, &p) != nil {
			return nil // damaged: not indexed (Get reports it)
		}
		return indexProcessing(tx, id, nil, &p)
	})
}

// indexOutboxFrom is indexStatesFrom for the outbox items.
func indexOutboxFrom(tx *bolt.Tx, from uint64) (uint64, error) {
	return indexChunkFrom(tx, bucketOutbox, from, func(_ uint64, v []byte) error {
		var it ipn.OutboxItem
		if decodeOutboxBody(v, &it) != nil {
			return nil // damaged: not indexed (GetOutbox reports it)
		}
		return indexOutbox(tx, nil, &it)
	})
}

// indexChunkFrom calls index for up to indexBuildChunk records of
// bucket, keyed by id, from id from on; it returns the next id, 0 when
// none is left.
func indexChunkFrom(tx *bolt.Tx, bucket []byte, from uint64, index func(id uint64, v []byte) error) (uint64, error) {
	c := tx.Bucket(bucket).Cursor()
	n := 0
	for k, v := c.Seek(u64(from)); k != nil; k, v = c.Next() {
		id := binary.BigEndian.Uint64(k)
		if n == indexBuildChunk {
			return id, nil
		}
		n++
		if err := index(id, v); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// indexOrdersFrom indexes up to indexBuildChunk orders after order id
// after (8 zero bytes: from the first); it returns the last one
// indexed, nil when none is left.
func indexOrdersFrom(tx *bolt.Tx, after []byte) ([]byte, error) {
	c := tx.Bucket(bucketOrders).Cursor()
	k, v := c.First()
	if !bytes.Equal(after, make([]byte, 8)) {
		if k, v = c.Seek(after); bytes.Equal(k, after) {
			k, v = c.Next()
		}
	}
	var last []byte
	for n := 0; k != nil && n < indexBuildChunk; k, v = c.Next() {
		n++
		last = bytes.Clone(k)
		var so storedOrder
		if err := decodeValue(v, &so); err != nil {
			continue // damaged: not listed (as in orders_by_change)
		}
		if err := indexOrderStatus(tx, nil, &so.Order); err != nil {
			return nil, err
		}
	}
	return last, nil
}
