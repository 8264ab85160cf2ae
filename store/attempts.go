package store

import (
	"bytes"
	"encoding/binary"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/ipn"
	"ipnd/record"
)

// bucketAttempts keeps the delivery attempts of every outbox item, the
// last AttemptsKept of each: outbox id (8) + sequence (8) -> JSON
// ipn.OutboxAttempt. Recording one costs a seek, a put and at most one
// delete, whatever the number of items. A success with nothing to say
// (an email accepted, a 2xx callback with an empty body, a script that
// printed nothing on stderr) is not written: the item's sent state,
// attempts and sent_at are that attempt, and OutboxAttempts shows it
// from them; so the common case, sent at once, costs no space.
var bucketAttempts = []byte("outbox_attempts")

// AttemptsKept bounds the attempts kept per outbox item (the newest).
const AttemptsKept = 20

// recordAttempt keeps what attempt r of item it did (at now).
func (db *DB) recordAttempt(tx *bolt.Tx, it *ipn.OutboxItem, r ipn.OutboxResult, now time.Time) error {
	b := tx.Bucket(bucketAttempts)
	prefix := u64(it.ID)
	c := b.Cursor()
	var seq uint64
	var first []byte
	if k, _ := c.Seek(binary.BigEndian.AppendUint64(u64(it.ID), math.MaxUint64)); k != nil {
		k, _ = c.Prev()
		if k != nil && bytes.HasPrefix(k, prefix) {
			seq = binary.BigEndian.Uint64(k[8:])
		}
	} else if k, _ := c.Last(); k != nil && bytes.HasPrefix(k, prefix) {
		seq = binary.BigEndian.Uint64(k[8:])
	}
	if k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		first = bytes.Clone(k)
	}
	seq++
	a := ipn.OutboxAttempt{Seq: seq, Attempt: r.Attempts, At: now.UTC(), Result: r.State, Error: r.Error,
		Duration: r.Duration, AttemptDetail: r.Detail}
	if err := db.putJSON(tx, bucketAttempts, binary.BigEndian.AppendUint64(u64(it.ID), seq), a); err != nil {
		return err
	}
	if first != nil && seq-binary.BigEndian.Uint64(first[8:]) >= AttemptsKept {
		return b.Delete(first)
	}
	return nil
}

// quietSuccess reports whether r is a success with nothing to say (see
// bucketAttempts): not recorded.
func quietSuccess(r ipn.OutboxResult) bool {
	d := r.Detail
	return r.State == ipn.OutboxSent && d.Response == "" && d.SMTPReply == "" && d.Stderr == ""
}

// OutboxAttempts returns the kept attempts of outbox item id, oldest
// first, its quiet last success (not recorded) made from the item.
func (db *DB) OutboxAttempts(id uint64) ([]ipn.OutboxAttempt, error) {
	var out []ipn.OutboxAttempt
	err := db.bolt.View(func(tx *bolt.Tx) error {
		it, err := getOutbox(tx, id)
		if err != nil {
			return err
		}
		defer func() {
			if it.State != ipn.OutboxSent || len(out) > 0 && out[len(out)-1].Result == ipn.OutboxSent {
				return
			}
			var seq uint64
			if len(out) > 0 {
				seq = out[len(out)-1].Seq
			}
			out = append(out, ipn.OutboxAttempt{Seq: seq + 1, Attempt: it.Attempts, At: it.SentAt, Result: ipn.OutboxSent})
		}()
		prefix := u64(id)
		c := tx.Bucket(bucketAttempts).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var a ipn.OutboxAttempt
			if err := decodeValue(v, &a); err != nil {
				continue // a damaged record is left out, the rest shown
			}
			out = append(out, a)
		}
		return nil
	})
	return out, mapClosed(err)
}

// scrubAttempts removes what the other side said from the attempts of
// outbox item id (store.raw_retention): a shop's response or a script's
// stderr may name the customer. Time, result, status and the error
// (addresses already removed, as in the item's last_error) stay.
func scrubAttempts(tx *bolt.Tx, id uint64) error {
	b := tx.Bucket(bucketAttempts)
	prefix := u64(id)
	type change struct {
		k []byte
		v []byte
	}
	var changes []change
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var a ipn.OutboxAttempt
		if err := decodeValue(v, &a); err != nil {
			changes = append(changes, change{k: bytes.Clone(k)}) // unreadable: dropped
			continue
		}
		if !record.ScrubAttempt(&a) {
			continue
		}
		nv, err := encodeValue(a)
		if err != nil {
			return err
		}
		changes = append(changes, change{k: bytes.Clone(k), v: nv})
	}
	for _, ch := range changes {
		var err error
		if ch.v == nil {
			err = b.Delete(ch.k)
		} else {
			err = b.Put(ch.k, ch.v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
