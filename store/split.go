package store

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// How full bbolt leaves the pages it splits.
//
// bbolt splits a page that outgrows 4 KiB at Bucket.FillPercent (half, by
// default). Where new keys arrive in ascending order (an order number
// that grows, ids that grow with time), every page left behind a split
// is never written again, so half of it stays empty for good: measured,
// 38-50% of the orders and outbox_cause pages in use. Where keys arrive
// at random (payment ids), half-full splits are right: with fuller ones,
// the next random key splits the full page again and the pages end up
// 18-32% in use (18% at 1.0, 32% at 0.9; 67-69% at 0.5).
//
// So a bucket's new keys choose, transaction by transaction: a key that
// lands right after the key inserted before it (in this transaction or
// an earlier one) is ascending; the transaction then splits that bucket's
// pages at fullSplit, unless one of its new keys in that bucket landed
// anywhere else, which keeps bbolt's default for the whole transaction.
const fullSplit = 0.9

// splitGuess is what the buckets' new keys said so far. Write
// transactions run one at a time, and only they touch it.
type splitGuess struct {
	last   map[string][]byte // bucket -> the key inserted last
	random map[string]int    // bucket -> id of the transaction that inserted at random
}

// inserted chooses b's split point for tx after key was put into it as a
// new key.
func (db *DB) inserted(tx *bolt.Tx, name []byte, b *bolt.Bucket, key []byte) {
	if writePlain {
		return // as schema 2 builds split
	}
	g := &db.split
	if g.last == nil {
		g.last, g.random = map[string][]byte{}, map[string]int{}
	}
	c := b.Cursor()
	c.Seek(key)
	prev, _ := c.Prev()
	last, seen := g.last[string(name)]
	ascending := seen && prev != nil && bytes.Equal(prev, last)
	g.last[string(name)] = append(last[:0], key...)
	switch {
	case !ascending:
		g.random[string(name)] = tx.ID()
		b.FillPercent = bolt.DefaultFillPercent
	case g.random[string(name)] != tx.ID():
		b.FillPercent = fullSplit
	}
}
