package store

import (
	"crypto/ed25519"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"ipnd/fulfil"
)

// What ipnd migrate copies of the fulfilment (SPEC §11; fulfil.go).

// Fulfilments walks what each order was delivered, by order id.
func (s *Snapshot) Fulfilments(fn func(rec *fulfil.Record) error) error {
	return s.each(bucketFulfil, func(k, v []byte) error {
		var r fulfil.Record
		if err := decodeValue(v, &r); err != nil {
			return fmt.Errorf("%w: deliveries of order %q: %v", ErrCorrupt, k, err)
		}
		return fn(&r)
	})
}

// DownloadTokens walks the download tokens: the hash of each, its order
// and the index of its delivery.
func (s *Snapshot) DownloadTokens(fn func(hash, order string, i int) error) error {
	return s.each(bucketDLTokens, func(k, v []byte) error {
		id, i, ok := splitTokenValue(v)
		if !ok {
			return fmt.Errorf("%w: download token %q", ErrCorrupt, k)
		}
		return fn(string(k), id, i)
	})
}

// Licenses walks the license keys, by hash.
func (s *Snapshot) Licenses(fn func(l *fulfil.License) error) error {
	return s.each(bucketLicenses, func(k, v []byte) error {
		var l fulfil.License
		if err := decodeValue(v, &l); err != nil {
			return fmt.Errorf("%w: license %q: %v", ErrCorrupt, k, err)
		}
		return fn(&l)
	})
}

// LicensePools walks each pool product's position in its pool.
func (s *Snapshot) LicensePools(fn func(product string, pos uint64) error) error {
	return s.each(bucketLicensePool, func(k, v []byte) error { return fn(string(k), getU64(v)) })
}

// PoolKeysUsed walks the pool keys handed out: the hash of each and its
// order.
func (s *Snapshot) PoolKeysUsed(fn func(hash, order string) error) error {
	return s.each(bucketPoolUsed, func(k, v []byte) error { return fn(string(k), string(v)) })
}

// SigningPub is the public key of the signed license keys issued (nil:
// none was).
func (s *Snapshot) SigningPub() ed25519.PublicKey {
	if b := s.tx.Bucket(bucketFulfilMeta); b != nil {
		if v := b.Get(keySigningPub); v != nil {
			return ed25519.PublicKey(slices.Clone(v))
		}
	}
	return nil
}

// fulfilKinds are the fulfilment's kinds as the PostgreSQL store's
// tables name them (Importer.Count).
var fulfilKinds = map[string][]byte{"fulfilments": bucketFulfil, "dl_tokens": bucketDLTokens, "licenses": bucketLicenses,
	"license_pool": bucketLicensePool, "license_pool_used": bucketPoolUsed}

// Fulfilment writes what order rec.OrderID was delivered.
func (w *Importer) Fulfilment(rec *fulfil.Record) error { return w.step(putRecord(w.tx, rec)) }

// DownloadToken maps the token whose hash is hash to delivery i of order.
func (w *Importer) DownloadToken(hash, order string, i int) error {
	b, err := fulfilBucket(w.tx, bucketDLTokens)
	if err == nil {
		err = b.Put([]byte(hash), tokenValue(order, i))
	}
	return w.step(err)
}

// License writes license l.
func (w *Importer) License(l *fulfil.License) error { return w.step(putLicense(w.tx, l)) }

// LicensePool sets pool product's position in its pool.
func (w *Importer) LicensePool(product string, pos uint64) error {
	b, err := fulfilBucket(w.tx, bucketLicensePool)
	if err == nil {
		err = b.Put([]byte(product), u64(pos))
	}
	return w.step(err)
}

// PoolKeyUsed records the pool key whose hash is hash as handed out to
// order.
func (w *Importer) PoolKeyUsed(hash, order string) error {
	b, err := fulfilBucket(w.tx, bucketPoolUsed)
	if err == nil {
		err = b.Put([]byte(hash), []byte(order))
	}
	return w.step(err)
}

// SigningPub records the public key of the signed license keys issued.
func (w *Importer) SigningPub(pub ed25519.PublicKey) error {
	return boltFulfil{w.tx}.SignedWith(pub)
}

// fulfilBucketOf is the bucket of fulfilment kind (nil: not one).
func fulfilBucketOf(tx *bolt.Tx, kind string) (*bolt.Bucket, bool) {
	name, ok := fulfilKinds[kind]
	if !ok {
		return nil, false
	}
	return tx.Bucket(name), true
}
