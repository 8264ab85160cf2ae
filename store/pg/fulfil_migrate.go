package pg

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"ipnd/fulfil"
	"ipnd/store"
)

// What ipnd migrate copies of the fulfilment (fulfil.go), both ways:
// the deliveries, the download tokens, the licenses, the pools'
// positions and the pool keys handed out, and the public key of the
// signed keys issued. The signing key itself is a file next to a bbolt
// store (the data directory's license-signing.key): copied into
// PostgreSQL it is taken from that file when an ipnd on the database
// first needs it (Dashboard.SharedSigningKey); copied back, the command
// writes the database's key next to the new file (SigningSeed).

// importFulfilment copies the fulfilment of snapshot s in Import's
// transaction tx, through cp (rows counted per table).
func importFulfilment(ctx context.Context, tx pgx.Tx, s *store.Snapshot, cp func(string, []string, func(func(...any) error) error) error) error {
	err := cp("fulfilments", []string{"order_id", "record"}, func(emit func(...any) error) error {
		return s.Fulfilments(func(rec *fulfil.Record) error {
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			return emit([]byte(rec.OrderID), b)
		})
	})
	if err == nil {
		err = cp("dl_tokens", []string{"token_hash", "order_id", "idx"}, func(emit func(...any) error) error {
			return s.DownloadTokens(func(hash, order string, i int) error { return emit(hash, []byte(order), int32(i)) })
		})
	}
	if err == nil {
		err = cp("licenses", []string{"hash", "order_id", "record"}, func(emit func(...any) error) error {
			return s.Licenses(func(l *fulfil.License) error {
				b, err := json.Marshal(l)
				if err != nil {
					return err
				}
				return emit(l.Hash, []byte(l.OrderID), b)
			})
		})
	}
	if err == nil {
		err = cp("license_pool", []string{"product", "pos"}, func(emit func(...any) error) error {
			return s.LicensePools(func(product string, pos uint64) error { return emit(product, int64(pos)) })
		})
	}
	if err == nil {
		err = cp("license_pool_used", []string{"hash", "order_id"}, func(emit func(...any) error) error {
			return s.PoolKeysUsed(func(hash, order string) error { return emit(hash, []byte(order)) })
		})
	}
	if err != nil {
		return err
	}
	pub := s.SigningPub()
	if pub == nil {
		return nil
	}
	var seed []byte
	if err := tx.QueryRow(ctx, `SELECT seed FROM license_signing WHERE id = 1 FOR UPDATE`).Scan(&seed); err != nil {
		return err
	}
	if seed != nil && !ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey).Equal(pub) {
		return errors.New("the database holds another license signing key than the one the store's signed keys were issued with: migrate into a new database")
	}
	_, err = tx.Exec(ctx, `UPDATE license_signing SET pub = $1 WHERE id = 1`, []byte(pub))
	return err
}

// exportFulfilment copies the fulfilment in Export's snapshot tx into w,
// counting the rows per table in copied.
func exportFulfilment(ctx context.Context, tx pgx.Tx, w *store.Importer, copied map[string]int64) error {
	each := func(sql string, fn func(pgx.Rows) error) error { return queriedRows(ctx, tx)(sql, nil, fn) }
	err := each(`SELECT order_id, record FROM fulfilments ORDER BY order_id`, func(r pgx.Rows) error {
		var id, b []byte
		if err := r.Scan(&id, &b); err != nil {
			return err
		}
		rec := new(fulfil.Record)
		if err := decode(b, rec, fmt.Sprintf("deliveries of order %q", id)); err != nil {
			return err
		}
		copied["fulfilments"]++
		return w.Fulfilment(rec)
	})
	if err == nil {
		err = each(`SELECT token_hash, order_id, idx FROM dl_tokens ORDER BY token_hash`, func(r pgx.Rows) error {
			var h string
			var id []byte
			var i int32
			if err := r.Scan(&h, &id, &i); err != nil {
				return err
			}
			copied["dl_tokens"]++
			return w.DownloadToken(h, string(id), int(i))
		})
	}
	if err == nil {
		err = each(`SELECT hash, record FROM licenses ORDER BY hash`, func(r pgx.Rows) error {
			var h string
			var b []byte
			if err := r.Scan(&h, &b); err != nil {
				return err
			}
			l := new(fulfil.License)
			if err := decode(b, l, "license"); err != nil {
				return err
			}
			copied["licenses"]++
			return w.License(l)
		})
	}
	if err == nil {
		err = each(`SELECT product, pos FROM license_pool ORDER BY product`, func(r pgx.Rows) error {
			var p string
			var pos int64
			if err := r.Scan(&p, &pos); err != nil {
				return err
			}
			copied["license_pool"]++
			return w.LicensePool(p, uint64(pos))
		})
	}
	if err == nil {
		err = each(`SELECT hash, order_id FROM license_pool_used ORDER BY hash`, func(r pgx.Rows) error {
			var h string
			var id []byte
			if err := r.Scan(&h, &id); err != nil {
				return err
			}
			copied["license_pool_used"]++
			return w.PoolKeyUsed(h, string(id))
		})
	}
	if err != nil {
		return err
	}
	_, pub, err := signingRow(ctx, tx)
	if err != nil || pub == nil {
		return err
	}
	return w.SigningPub(ed25519.PublicKey(pub))
}

// SigningSeed returns the seed of the license signing key the database
// keeps (nil: none yet) and whether signed keys were issued with it.
func (db *DB) SigningSeed(ctx context.Context) (seed []byte, issued bool, err error) {
	seed, pub, err := signingRow(ctx, db.pool)
	if err != nil {
		return nil, false, unavailable(err)
	}
	return seed, pub != nil, nil
}
