package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"ipnd/ipn"
	"ipnd/record"
)

// Snapshot is a read-only view of a stopped database for ipnd migrate
// (SPEC §12): one bbolt read transaction, so that every kind is read as
// of the same moment. Its methods walk one kind each, in key order; a
// record that does not decode fails the walk (ErrCorrupt): a copy that
// left it out would not be a copy.
type Snapshot struct {
	tx *bolt.Tx

	// Counters: the highest notification id given (ids lost to journal
	// damage included), the pipeline cursor, the highest outbox id given.
	Sequence  uint64
	Cursor    uint64
	OutboxSeq uint64
}

// Export opens the database at path read-only and calls fn with a
// snapshot of it. It refuses a database in use (ErrInUse), one of
// another schema than this build's (start ipnd on it once to upgrade
// it) and one whose journal holds records not yet applied (it was not
// stopped cleanly: "ipnd recover" applies them).
func Export(path string, fn func(*Snapshot) error) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := checkFile(path); err != nil {
		return err
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("store: %s: %w: stop it first", path, ErrInUse)
	}
	if err != nil {
		return fmt.Errorf("store: %s is not an ipnd database: %w", path, err)
	}
	defer b.Close()
	return b.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		log := tx.Bucket(bucketLog)
		if meta == nil || log == nil {
			return fmt.Errorf("%w: %s has no ipnd buckets", ErrCorrupt, path)
		}
		if v := getU64(meta.Get(keySchema)); v != SchemaVersion {
			return fmt.Errorf("store: %s is at schema %d, this build copies %d: start this ipnd on it once (it upgrades the file), stop it, then migrate", path, v, SchemaVersion)
		}
		if meta.Get(keyNewestSegment) != nil {
			return fmt.Errorf("store: %s was not stopped cleanly (its journal may hold notifications not yet in the database): run \"ipnd recover\" first", path)
		}
		s := &Snapshot{tx: tx, Cursor: getU64(meta.Get(keyCursor))}
		s.Sequence = log.Sequence()
		if k, _ := log.Cursor().Last(); k != nil {
			s.Sequence = max(s.Sequence, binary.BigEndian.Uint64(k))
		}
		if ob := tx.Bucket(bucketOutbox); ob != nil {
			s.OutboxSeq = ob.Sequence()
		}
		return fn(s)
	})
}

// each walks bucket name (absent: nothing).
func (s *Snapshot) each(name []byte, fn func(k, v []byte) error) error {
	b := s.tx.Bucket(name)
	if b == nil {
		return nil
	}
	return b.ForEach(fn)
}

// Count is the number of keys in bucket name.
func (s *Snapshot) count(name []byte) int {
	if b := s.tx.Bucket(name); b != nil {
		return b.Stats().KeyN
	}
	return 0
}

// Notifications walks the notifications in id order, each with its
// processing record (nil: the pipeline has recorded none, it is
// received).
func (s *Snapshot) Notifications(fn func(n *ipn.Notification, p *ipn.Processing) error) error {
	return s.each(bucketLog, func(k, v []byte) error {
		id := binary.BigEndian.Uint64(k)
		n, err := decodeRecord(id, v)
		if err != nil {
			return err
		}
		p, err := stateOf(s.tx, id)
		if err != nil {
			return err
		}
		return fn(n, p)
	})
}

// Retries walks the notifications scheduled for another attempt.
func (s *Snapshot) Retries(fn func(due time.Time, id uint64, gateway string) error) error {
	return s.each(bucketRetry, func(k, v []byte) error {
		if len(k) != 16 {
			return fmt.Errorf("%w: retry key %x", ErrCorrupt, k)
		}
		return fn(time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC(), binary.BigEndian.Uint64(k[8:]), string(v))
	})
}

// Facts walks the payment facts applied: event key and the notification
// that holds it.
func (s *Snapshot) Facts(fn func(key string, id uint64) error) error {
	return s.each(bucketEvents, func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: holder of fact %q", ErrCorrupt, k)
		}
		return fn(string(k), binary.BigEndian.Uint64(v))
	})
}

// Refs walks the payment references: gateway, reference, order id.
func (s *Snapshot) Refs(fn func(gateway, ref, order string) error) error {
	return s.each(bucketRefs, func(k, v []byte) error {
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			return fmt.Errorf("%w: reference key %q", ErrCorrupt, k)
		}
		return fn(string(k[:i]), string(k[i+1:]), string(v))
	})
}

// Orphans walks the parked events under each of their references.
func (s *Snapshot) Orphans(fn func(gateway, ref string, id uint64, w ipn.Parked) error) error {
	return s.each(bucketOrphans, func(k, v []byte) error {
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) < i+1+9 || k[len(k)-9] != 0 {
			return fmt.Errorf("%w: orphan key %q", ErrCorrupt, k)
		}
		var w ipn.Parked
		if err := decodeValue(v, &w); err != nil {
			return fmt.Errorf("%w: orphan %q: %v", ErrCorrupt, k, err)
		}
		return fn(string(k[:i]), string(k[i+1:len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), w)
	})
}

// ParkedDue walks the parked events by when they were parked, with the
// gateway and the first reference they wait under.
func (s *Snapshot) ParkedDue(fn func(at time.Time, id uint64, gateway, ref string) error) error {
	return s.each(bucketParkedDue, func(k, v []byte) error {
		i := bytes.IndexByte(v, 0)
		if len(k) != 16 || i < 0 {
			return fmt.Errorf("%w: parked entry %x", ErrCorrupt, k)
		}
		return fn(time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC(), binary.BigEndian.Uint64(k[8:]), string(v[:i]), string(v[i+1:]))
	})
}

// ExportedOrder is an order as it is kept (orderlog.go): Tally nil, a
// small order with its facts and history inside; else the order without
// them, its tally, and its records kept apart.
type ExportedOrder struct {
	Order    ipn.Order
	Tally    *ipn.Tally
	Facts    map[uint64]ipn.OrderFact   // by sequence
	FactKeys map[string]uint64          // fact key -> sequence
	History  map[uint64]ipn.OrderChange // by index
	Groups   map[string]ipn.Group       // tally record key -> record
	OneOffs  []ExportedOneOff
}

// ExportedOneOff is an entry of a registered order's one-off index.
type ExportedOneOff struct {
	Key    []byte // ipn.OneOffKey
	Amount string
	Group  string
}

// Orders walks the orders in id order.
func (s *Snapshot) Orders(fn func(o *ExportedOrder) error) error {
	return s.each(bucketOrders, func(k, v []byte) error {
		var so storedOrder
		if err := decodeValue(v, &so); err != nil {
			return fmt.Errorf("%w: order %q: %v", ErrCorrupt, k, err)
		}
		o := &ExportedOrder{Order: so.Order, Tally: so.Tally}
		if so.Tally == nil {
			return fn(o)
		}
		id := string(k)
		o.Facts, o.FactKeys, o.History, o.Groups = map[uint64]ipn.OrderFact{}, map[string]uint64{}, map[uint64]ipn.OrderChange{}, map[string]ipn.Group{}
		prefix := orderPrefix(id)
		c := s.tx.Bucket(bucketOrderRecords).Cursor()
		for rk, rv := c.Seek(prefix); rk != nil && bytes.HasPrefix(rk, prefix); rk, rv = c.Next() {
			if len(rk) == len(prefix) {
				return fmt.Errorf("%w: record %q of order %q", ErrCorrupt, rk, id)
			}
			kind, rest := rk[len(prefix)], rk[len(prefix)+1:]
			bad := func(err error) error {
				return fmt.Errorf("%w: record %q of order %q: %v", ErrCorrupt, rk, id, err)
			}
			seqOf := func() (uint64, error) {
				if len(rest) != 8 {
					return 0, bad(errors.New("not a sequence"))
				}
				return binary.BigEndian.Uint64(rest), nil
			}
			switch kind {
			case recFact:
				seq, err := seqOf()
				if err != nil {
					return err
				}
				var f ipn.OrderFact
				if err := decodeValue(rv, &f); err != nil {
					return bad(err)
				}
				o.Facts[seq] = f
			case recFactKey:
				if len(rv) != 8 {
					return bad(errors.New("not a sequence"))
				}
				o.FactKeys[string(rest)] = binary.BigEndian.Uint64(rv)
			case recHistory:
				seq, err := seqOf()
				if err != nil {
					return err
				}
				var h ipn.OrderChange
				if err := decodeValue(rv, &h); err != nil {
					return bad(err)
				}
				o.History[seq] = h
			case recGroup:
				var g ipn.Group
				if err := decodeValue(rv, &g); err != nil {
					return bad(err)
				}
				o.Groups[string(rest)] = g
			case recOneOff:
				i := bytes.IndexByte(rv, 0)
				if i < 0 {
					return bad(errors.New("no group"))
				}
				o.OneOffs = append(o.OneOffs, ExportedOneOff{Key: bytes.Clone(rest), Amount: string(rv[:i]), Group: string(rv[i+1:])})
			default:
				return bad(fmt.Errorf("kind %q", kind))
			}
		}
		return fn(o)
	})
}

// Subscriptions walks the subscriptions.
func (s *Snapshot) Subscriptions(fn func(sub *ipn.Subscription) error) error {
	return s.each(bucketSubs, func(k, v []byte) error {
		var sub ipn.Subscription
		if err := decodeValue(v, &sub); err != nil {
			return fmt.Errorf("%w: subscription %q: %v", ErrCorrupt, k, err)
		}
		return fn(&sub)
	})
}

// Outbox walks the outbox items in id order, each with its state.
func (s *Snapshot) Outbox(fn func(it *ipn.OutboxItem) error) error {
	return s.each(bucketOutbox, func(k, v []byte) error {
		it, err := decodeOutbox(s.tx, binary.BigEndian.Uint64(k), v)
		if err != nil {
			return err
		}
		return fn(it)
	})
}

// Attempts walks the delivery attempts kept of each outbox item, by item
// and sequence.
func (s *Snapshot) Attempts(fn func(outbox, seq uint64, a ipn.OutboxAttempt) error) error {
	return s.each(bucketAttempts, func(k, v []byte) error {
		if len(k) != 16 {
			return fmt.Errorf("%w: attempt key %x", ErrCorrupt, k)
		}
		var a ipn.OutboxAttempt
		if err := decodeValue(v, &a); err != nil {
			return fmt.Errorf("%w: attempt %x: %v", ErrCorrupt, k, err)
		}
		return fn(binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(k[8:]), a)
	})
}

// Keys walks the Idempotency-Keys of the admin API's decisions and
// resends, in key order, with what each was used for.
func (s *Snapshot) Keys(fn func(key string, use record.KeyUse) error) error {
	return s.each(bucketIdempotency, func(k, v []byte) error {
		var use record.KeyUse
		if err := decodeValue(v, &use); err != nil {
			return fmt.Errorf("%w: idempotency key %q: %v", ErrCorrupt, k, err)
		}
		return fn(string(k), use)
	})
}

// NotCopied counts what a copy to PostgreSQL leaves behind, by kind:
// records of features the PostgreSQL store does not have yet.
func (s *Snapshot) NotCopied() map[string]int {
	out := map[string]int{}
	for name, b := range map[string][]byte{
		"ids lost to damage":    bucketLost,
		"dropped notifications": bucketDropped,
	} {
		if n := s.count(b); n > 0 {
			out[name] = n
		}
	}
	return out
}
