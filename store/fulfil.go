package store

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"ipnd/fulfil"
	"ipnd/ipn"
)

// Delivering what was bought (SPEC §11). The rules are in package
// fulfil; here they are recorded, in the transaction that changes the
// order (fulfilOrder, called where the pipeline writes an order). The
// buckets are created on first use; older binaries ignore them.
var (
	bucketFulfil      = []byte("fulfilments")       // order id -> JSON fulfil.Record
	bucketDLTokens    = []byte("dl_tokens")         // hex sha256 of a download token -> order id, 0, delivery index (4)
	bucketLicenses    = []byte("licenses")          // hex sha256 of a license key -> JSON fulfil.License
	bucketLicensePool = []byte("license_pool")      // product id -> uint64: position of the next pool key
	bucketPoolUsed    = []byte("license_pool_used") // hex sha256 of a pool key handed out -> order id (kept when a test order is deleted)
	bucketFulfilMeta  = []byte("fulfil_meta")       // keySigningPub
	// keySigningPub: the Ed25519 public key of the first signed license
	// key issued (a later start refuses a signing key that differs).
	keySigningPub = []byte("signing_pub")
)

// SigningKey returns the public key that signed the license keys issued
// so far (nil: no signed key was issued).
func (db *DB) SigningKey() (ed25519.PublicKey, error) {
	var pub ed25519.PublicKey
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketFulfilMeta); b != nil {
			if v := b.Get(keySigningPub); v != nil {
				pub = ed25519.PublicKey(slices.Clone(v))
			}
		}
		return nil
	})
	return pub, mapClosed(err)
}

// SetCatalog sets the products delivered (config load and reload). nil
// or empty: nothing is delivered.
func (db *DB) SetCatalog(c *fulfil.Catalog) { db.catalog.Store(c) }

// Catalog returns the products delivered (nil: none).
func (db *DB) Catalog() *fulfil.Catalog { return db.catalog.Load() }

func fulfilBucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	if tx.Writable() {
		return tx.CreateBucketIfNotExists(name)
	}
	return tx.Bucket(name), nil
}

func getRecord(tx *bolt.Tx, orderID string) (*fulfil.Record, error) {
	b := tx.Bucket(bucketFulfil)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(orderID))
	if v == nil {
		return nil, nil
	}
	var r fulfil.Record
	if err := decodeValue(v, &r); err != nil {
		return nil, fmt.Errorf("%w: deliveries of order %q: %v", ErrCorrupt, orderID, err)
	}
	return &r, nil
}

func putRecord(tx *bolt.Tx, r *fulfil.Record) error {
	b, err := fulfilBucket(tx, bucketFulfil)
	if err != nil {
		return err
	}
	v, err := encodeValue(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(r.OrderID), v)
}

func getLicense(tx *bolt.Tx, hash string) (*fulfil.License, error) {
	b := tx.Bucket(bucketLicenses)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(hash))
	if v == nil {
		return nil, nil
	}
	var l fulfil.License
	if err := decodeValue(v, &l); err != nil {
		return nil, fmt.Errorf("%w: license: %v", ErrCorrupt, err)
	}
	return &l, nil
}

func putLicense(tx *bolt.Tx, l *fulfil.License) error {
	b, err := fulfilBucket(tx, bucketLicenses)
	if err != nil {
		return err
	}
	v, err := encodeValue(l)
	if err != nil {
		return err
	}
	return b.Put([]byte(l.Hash), v)
}

func tokenValue(orderID string, i int) []byte {
	v := append([]byte(orderID), 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(v[len(v)-4:], uint32(i))
	return v
}

func splitTokenValue(v []byte) (string, int, bool) {
	if len(v) < 5 || v[len(v)-5] != 0 {
		return "", 0, false
	}
	return string(v[:len(v)-5]), int(binary.BigEndian.Uint32(v[len(v)-4:])), true
}

func putTokens(tx *bolt.Tx, rec *fulfil.Record) error {
	b, err := fulfilBucket(tx, bucketDLTokens)
	if err != nil {
		return err
	}
	for i, d := range rec.Deliveries {
		if err := b.Put([]byte(d.TokenHash), tokenValue(rec.OrderID, i)); err != nil {
			return err
		}
	}
	return nil
}

// fulfilOrder records what order next's change from old (nil: new)
// delivers, in tx, before next is written (fulfil.Apply: issued when it
// becomes paid, revoked when refunded in full, reversed or disputed,
// restored when paid again; a paid order whose items cannot be delivered
// goes to review instead). It returns the effects to queue.
//
// w is what the change writes besides the order (its history entry),
// nil when the order is written whole.
func (db *DB) fulfilOrder(tx *bolt.Tx, old, next *ipn.Order, w *ipn.OrderWrite, ev *ipn.Event, effects []ipn.Effect, now time.Time) ([]ipn.Effect, error) {
	return fulfil.Apply(boltFulfil{tx}, db.catalog.Load(), rand.Reader, old, next, w, ev, effects, now)
}

// boltFulfil is a bbolt write transaction as fulfil.Tx.
type boltFulfil struct{ tx *bolt.Tx }

func (f boltFulfil) Record(orderID string) (*fulfil.Record, error) { return getRecord(f.tx, orderID) }
func (f boltFulfil) License(hash string) (*fulfil.License, error)  { return getLicense(f.tx, hash) }
func (f boltFulfil) PutRecord(rec *fulfil.Record) error            { return putRecord(f.tx, rec) }
func (f boltFulfil) PutTokens(rec *fulfil.Record) error            { return putTokens(f.tx, rec) }
func (f boltFulfil) PutLicense(l *fulfil.License) error            { return putLicense(f.tx, l) }

func (f boltFulfil) TakePoolKey(p *fulfil.Product, orderID string) (string, error) {
	return poolTaker(f.tx, orderID)(p)
}

func (f boltFulfil) SignedWith(pub ed25519.PublicKey) error {
	b, err := fulfilBucket(f.tx, bucketFulfilMeta)
	if err != nil || b.Get(keySigningPub) != nil {
		return err
	}
	return b.Put(keySigningPub, pub)
}

// poolTaker hands out pool keys in tx: the next key from the product's
// recorded position that was not handed out (its hash is not a license:
// another product sharing the pool file may have taken it), then, past
// the end, any such key before the position (a pool file from which the
// keys sold were removed), and records the new position in the same
// transaction.
func poolTaker(tx *bolt.Tx, orderID string) fulfil.PoolKey {
	return func(p *fulfil.Product) (string, error) {
		b, err := fulfilBucket(tx, bucketLicensePool)
		if err != nil {
			return "", err
		}
		used, err := fulfilBucket(tx, bucketPoolUsed)
		if err != nil {
			return "", err
		}
		start := min(getU64(b.Get([]byte(p.ID))), uint64(len(p.Pool)))
		for i := range uint64(len(p.Pool)) {
			pos := (start + i) % uint64(len(p.Pool))
			key := p.Pool[pos]
			if poolKeyUsed(tx, key) {
				continue
			}
			if err := used.Put([]byte(fulfil.Hash(key)), []byte(orderID)); err != nil {
				return "", err
			}
			return key, b.Put([]byte(p.ID), u64(pos+1))
		}
		return "", fmt.Errorf("product %q: %w", p.ID, fulfil.ErrPoolEmpty)
	}
}

// poolKeyUsed reports whether pool key key was handed out: recorded as
// such, or a license (one issued before the record was kept).
func poolKeyUsed(tx *bolt.Tx, key string) bool {
	h := []byte(fulfil.Hash(key))
	for _, name := range [][]byte{bucketPoolUsed, bucketLicenses} {
		if b := tx.Bucket(name); b != nil && b.Get(h) != nil {
			return true
		}
	}
	return false
}

// Grant is a download the store allows: the product's file and the
// delivery it counts against.
type Grant = fulfil.Grant

// Download looks up a download token at now: the grant, or the refusal
// (fulfil.Refused*), or ErrNotFound for a token never issued (or
// replaced by a reissue).
func (db *DB) Download(token string, now time.Time) (*Grant, string, error) {
	h := fulfil.Hash(token)
	var g *Grant
	refusal := ""
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDLTokens)
		if b == nil {
			return ErrNotFound
		}
		id, i, ok := splitTokenValue(b.Get([]byte(h)))
		if !ok {
			return ErrNotFound
		}
		rec, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if rec == nil || i >= len(rec.Deliveries) || rec.Deliveries[i].TokenHash != h {
			return ErrNotFound
		}
		if refusal = rec.Refusal(i, now); refusal != "" {
			return nil
		}
		d := rec.Deliveries[i]
		var p *fulfil.Product
		if cat := db.catalog.Load(); cat != nil {
			p = cat.Products[d.Product]
		}
		if p == nil {
			refusal = fulfil.RefusedRemoved // the product was removed from the config
			return nil
		}
		g = &Grant{Product: p, OrderID: id, TokenHash: h, Left: d.Limit - d.Downloads, Downloads: d.Downloads, Sent: d.Sent, Limit: d.Limit}
		return nil
	})
	return g, refusal, mapClosed(err)
}

// CountDownload records that the link g names sent n bytes of its file
// of size bytes (fulfil.Delivery.Spend).
func (db *DB) CountDownload(g *Grant, n, size int64) error {
	return mapClosed(db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDLTokens)
		if b == nil {
			return ErrNotFound
		}
		id, i, ok := splitTokenValue(b.Get([]byte(g.TokenHash)))
		if !ok {
			return ErrNotFound
		}
		rec, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if rec == nil || i >= len(rec.Deliveries) || rec.Deliveries[i].TokenHash != g.TokenHash {
			return ErrNotFound
		}
		rec.Deliveries[i] = rec.Deliveries[i].Spend(n, size)
		return putRecord(tx, rec)
	}))
}

// Deliveries returns what order id was delivered (ErrNotFound: nothing)
// and its licenses by hash.
func (db *DB) Deliveries(id string) (*fulfil.Record, map[string]*fulfil.License, error) {
	var rec *fulfil.Record
	lic := map[string]*fulfil.License{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		if rec, err = getRecord(tx, id); err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("deliveries of order %q: %w", id, ErrNotFound)
		}
		for _, d := range rec.Deliveries {
			if d.LicenseHash != "" {
				l, err := getLicense(tx, d.LicenseHash)
				if err != nil {
					return err
				}
				if l != nil {
					lic[d.LicenseHash] = l
				}
			}
		}
		return nil
	})
	return rec, lic, mapClosed(err)
}

// Reissue gives order id's links new tokens, their full limit and a new
// ttl (the old links stop working) and queues the customer's email with
// them. It returns what the email carries.
func (db *DB) Reissue(id string, now time.Time) ([]ipn.Delivered, error) {
	cat := db.catalog.Load()
	if !cat.Enabled() {
		return nil, ErrNoProducts
	}
	var shown []ipn.Delivered
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		rec, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("deliveries of order %q: %w", id, ErrNotFound)
		}
		if rec.Revoked {
			return fmt.Errorf("order %q: %w (%s)", id, ErrRevoked, rec.Reason)
		}
		so, err := getStoredOrder(tx, id)
		if err != nil {
			return err
		}
		o := orderOrNil(so)
		lic := map[string]*fulfil.License{}
		for _, d := range rec.Deliveries {
			if l, err := getLicense(tx, d.LicenseHash); err != nil {
				return err
			} else if l != nil {
				lic[d.LicenseHash] = l
			}
		}
		next, old, s, err := cat.Reissue(*rec, lic, rand.Reader, now)
		if err != nil {
			return err
		}
		tokens, err := fulfilBucket(tx, bucketDLTokens)
		if err != nil {
			return err
		}
		for _, h := range old {
			if err := tokens.Delete([]byte(h)); err != nil {
				return err
			}
		}
		if err := putRecord(tx, &next); err != nil {
			return err
		}
		if err := putTokens(tx, &next); err != nil {
			return err
		}
		shown = s
		e, ok := fulfil.ReissueEmail(id, o, next.Reissues, s)
		if !ok {
			return nil
		}
		return db.enqueue(tx, []ipn.Effect{e}, 0, now)
	})
	if err == nil {
		db.pokeOutbox()
	}
	return shown, mapClosed(err)
}

// License returns the license whose key is key (ErrNotFound).
func (db *DB) License(key string) (*fulfil.License, error) {
	var l *fulfil.License
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		if l, err = getLicense(tx, fulfil.Hash(key)); err == nil && l == nil {
			err = ErrNotFound
		}
		return err
	})
	return l, mapClosed(err)
}

// UpdateLicense changes the license whose key is key with f, in one
// transaction; f's error (a *fulfil.Refusal) leaves it as it was.
func (db *DB) UpdateLicense(key string, f func(fulfil.License) (fulfil.License, error)) (fulfil.License, error) {
	var out fulfil.License
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		l, err := getLicense(tx, fulfil.Hash(key))
		if err != nil {
			return err
		}
		if l == nil {
			return ErrNotFound
		}
		next, err := f(*l)
		if err != nil {
			out = *l
			return err
		}
		out = next
		return putLicense(tx, &next)
	})
	return out, mapClosed(err)
}

// LicensesOf returns the licenses of order id.
func (db *DB) LicensesOf(id string) ([]fulfil.License, error) {
	rec, lic, err := db.Deliveries(id)
	if err != nil {
		return nil, err
	}
	var out []fulfil.License
	for _, d := range rec.Deliveries {
		if l := lic[d.LicenseHash]; l != nil {
			out = append(out, *l)
		}
	}
	return out, nil
}

// PoolRemaining returns, per pool product of the catalog, how many of
// its pool's keys were not handed out yet (each key looked up: exact when
// products share a pool file or the file was edited).
func (db *DB) PoolRemaining() map[string]int {
	cat := db.catalog.Load()
	out := map[string]int{}
	if !cat.Enabled() {
		return out
	}
	db.bolt.View(func(tx *bolt.Tx) error {
		for id, p := range cat.Products {
			if p.License != fulfil.LicensePool {
				continue
			}
			n := 0
			for _, key := range p.Pool {
				if !poolKeyUsed(tx, key) {
					n++
				}
			}
			out[id] = n
		}
		return nil
	})
	return out
}

// ErrRevoked: the order's deliveries are revoked (refunded, reversed or
// disputed): they cannot be reissued.
var ErrRevoked = errors.New("deliveries revoked")

// ErrNoProducts: no [[product]] is configured, so nothing can be issued.
var ErrNoProducts = errors.New("no [[product]] is configured")

// deleteDeliveries removes what order id was delivered: its record, its
// links' tokens and its licenses (a test order deleted with ipnd orders
// delete). A pool key stays handed out (bucketPoolUsed): it is never
// handed out again.
func deleteDeliveries(tx *bolt.Tx, id string) error {
	rec, err := getRecord(tx, id)
	if err != nil || rec == nil {
		return err
	}
	for _, d := range rec.Deliveries {
		if b := tx.Bucket(bucketDLTokens); b != nil {
			if err := b.Delete([]byte(d.TokenHash)); err != nil {
				return err
			}
		}
		if b := tx.Bucket(bucketLicenses); b != nil && d.LicenseHash != "" {
			if err := b.Delete([]byte(d.LicenseHash)); err != nil {
				return err
			}
		}
	}
	return tx.Bucket(bucketFulfil).Delete([]byte(id))
}
