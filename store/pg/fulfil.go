package pg

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/store"
)

// Delivering what was bought (SPEC §11) on PostgreSQL, with the bbolt
// store's semantics (store/fulfil.go): the pipeline's transaction
// records what an order's change delivers through fulfil.Apply on
// pgFulfil; the download links and the License API read and write here
// from any process. Rows that two transactions may change at once (an
// order's deliveries, a license, a pool's position) are read FOR UPDATE:
// the second waits for the first and reads what it committed, so that no
// count and no activation is lost.

// SetCatalog sets the products delivered (config load and reload). nil
// or empty: nothing is delivered.
func (db *DB) SetCatalog(c *fulfil.Catalog) { db.catalog.Store(c) }

// Catalog returns the products delivered (nil: none).
func (db *DB) Catalog() *fulfil.Catalog { return db.catalog.Load() }

// SetCatalog is DB.SetCatalog.
func (d *Dashboard) SetCatalog(c *fulfil.Catalog) { d.db.SetCatalog(c) }

// Catalog is DB.Catalog.
func (d *Dashboard) Catalog() *fulfil.Catalog { return d.db.Catalog() }

// pgFulfil is a pgTx as fulfil.Tx.
type pgFulfil struct{ t *pgTx }

var _ fulfil.Tx = pgFulfil{}

// fulfilRecord reads the deliveries of order id (nil: none), with lock
// appended to the query.
func fulfilRecord(row rowReader, id, lock string) (*fulfil.Record, error) {
	var b []byte
	found, err := row(`SELECT record FROM fulfilments WHERE order_id = $1`+lock, []any{[]byte(id)}, &b)
	if err != nil || !found {
		return nil, err
	}
	r := new(fulfil.Record)
	if err := decode(b, r, fmt.Sprintf("deliveries of order %q", id)); err != nil {
		return nil, err
	}
	return r, nil
}

// licenseRecord reads the license whose key hashes to hash (nil: none),
// with lock appended to the query.
func licenseRecord(row rowReader, hash, lock string) (*fulfil.License, error) {
	var b []byte
	found, err := row(`SELECT record FROM licenses WHERE hash = $1`+lock, []any{hash}, &b)
	if err != nil || !found {
		return nil, err
	}
	l := new(fulfil.License)
	if err := decode(b, l, "license"); err != nil {
		return nil, err
	}
	return l, nil
}

func (f pgFulfil) Record(orderID string) (*fulfil.Record, error) {
	return fulfilRecord(f.t.row, orderID, " FOR UPDATE")
}

func (f pgFulfil) License(hash string) (*fulfil.License, error) {
	return licenseRecord(f.t.row, hash, " FOR UPDATE")
}

func (f pgFulfil) PutRecord(rec *fulfil.Record) error {
	return f.t.putJSON(`INSERT INTO fulfilments (order_id, record) VALUES ($1, $2)
		ON CONFLICT (order_id) DO UPDATE SET record = excluded.record`, []byte(rec.OrderID), rec)
}

func (f pgFulfil) PutTokens(rec *fulfil.Record) error {
	hashes := make([]string, len(rec.Deliveries))
	idx := make([]int32, len(rec.Deliveries))
	for i, d := range rec.Deliveries {
		hashes[i], idx[i] = d.TokenHash, int32(i)
	}
	return f.t.exec(`INSERT INTO dl_tokens (token_hash, order_id, idx) SELECT h, $2, i FROM unnest($1::text[], $3::int[]) AS u(h, i)
		ON CONFLICT (token_hash) DO UPDATE SET order_id = excluded.order_id, idx = excluded.idx`, hashes, []byte(rec.OrderID), idx)
}

func (f pgFulfil) PutLicense(l *fulfil.License) error {
	return f.t.putJSON(`INSERT INTO licenses (hash, order_id, record) VALUES ($1, $2, $3)
		ON CONFLICT (hash) DO UPDATE SET order_id = excluded.order_id, record = excluded.record`, l.Hash, []byte(l.OrderID), l)
}

// poolWindow is how many keys of a pool TakePoolKey asks about at once.
const poolWindow = 64

// TakePoolKey hands out pool keys as the bbolt store's poolTaker: the
// next key from the product's recorded position that was not handed out
// (its hash is neither a license nor recorded as handed out: another
// product sharing the pool file may have taken it), then, past the end,
// any such key before the position, and records the new position. The
// position's row stays locked to the commit: two transactions issuing
// from one pool take one key each.
func (f pgFulfil) TakePoolKey(p *fulfil.Product, orderID string) (string, error) {
	t := f.t
	if err := t.exec(`INSERT INTO license_pool (product, pos) VALUES ($1, 0) ON CONFLICT DO NOTHING`, p.ID); err != nil {
		return "", err
	}
	var pos int64
	if _, err := t.row(`SELECT pos FROM license_pool WHERE product = $1 FOR UPDATE`, []any{p.ID}, &pos); err != nil {
		return "", err
	}
	n := len(p.Pool)
	start := min(max(int(pos), 0), n)
	for from := 0; from < n; from += poolWindow {
		var hashes []string
		for i := from; i < min(from+poolWindow, n); i++ {
			hashes = append(hashes, fulfil.Hash(p.Pool[(start+i)%n]))
		}
		used, err := poolUsed(t.rows, hashes)
		if err != nil {
			return "", err
		}
		for i, h := range hashes {
			if used[h] {
				continue
			}
			at := (start + from + i) % n
			if err := t.exec(`INSERT INTO license_pool_used (hash, order_id) VALUES ($1, $2)`, h, []byte(orderID)); err != nil {
				return "", err
			}
			if err := t.exec(`UPDATE license_pool SET pos = $2 WHERE product = $1`, p.ID, int64(at+1)); err != nil {
				return "", err
			}
			return p.Pool[at], nil
		}
	}
	return "", fmt.Errorf("product %q: %w", p.ID, fulfil.ErrPoolEmpty)
}

// poolUsed returns which of the pool key hashes were handed out:
// recorded as such, or a license (one issued before the record was
// kept, or copied from a store that had none).
func poolUsed(rows rowsReader, hashes []string) (map[string]bool, error) {
	used := map[string]bool{}
	err := rows(`SELECT hash FROM license_pool_used WHERE hash = ANY($1::text[])
		UNION SELECT hash FROM licenses WHERE hash = ANY($1::text[])`, []any{hashes}, func(r pgx.Rows) error {
		var h string
		if err := r.Scan(&h); err != nil {
			return err
		}
		used[h] = true
		return nil
	})
	return used, err
}

func (f pgFulfil) SignedWith(pub ed25519.PublicKey) error {
	return f.t.exec(`UPDATE license_signing SET pub = $1 WHERE id = 1 AND pub IS NULL`, []byte(pub))
}

// DeleteDeliveries removes what order id was delivered, in t: its
// record, its links' tokens and its licenses (a test order deleted). A
// pool key stays handed out (license_pool_used): it is never handed out
// again. For the deletion of an order (DeleteOrder).
func (t *pgTx) DeleteDeliveries(id string) error {
	oid := []byte(id)
	for _, table := range []string{"dl_tokens", "licenses", "fulfilments"} {
		if err := t.exec(`DELETE FROM `+table+` WHERE order_id = $1`, oid); err != nil {
			return err
		}
	}
	return nil
}

// fulfilUpdate runs fn in one transaction of d's database, committed
// when fn returns nil (not fenced: what it writes is the admin API's or
// a download's, which any process may write).
func (d *Dashboard) fulfilUpdate(fn func(t *pgTx) error) error {
	ctx, cancel := d.ctx()
	defer cancel()
	tx, err := d.db.pool.Begin(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	t := &pgTx{db: d.db, ctx: ctx, tx: tx}
	if err := fn(t); err != nil {
		return err
	}
	if err := t.writeCounts(); err != nil { // dashboard.go
		return unavailable(err)
	}
	if err := t.flush(); err != nil {
		return unavailable(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
	}
	return nil
}

// tokenDelivery reads the delivery token hash h opens: its order's
// record and its index, ErrNotFound for a token never issued (or
// replaced by a reissue).
func tokenDelivery(row rowReader, h, lock string) (*fulfil.Record, int, error) {
	var order, b []byte
	var i int32
	found, err := row(`SELECT t.order_id, t.idx, f.record FROM dl_tokens t JOIN fulfilments f ON f.order_id = t.order_id
		WHERE t.token_hash = $1`+lock, []any{h}, &order, &i, &b)
	if err != nil {
		return nil, 0, err
	}
	if !found {
		return nil, 0, store.ErrNotFound
	}
	rec := new(fulfil.Record)
	if err := decode(b, rec, fmt.Sprintf("deliveries of order %q", order)); err != nil {
		return nil, 0, err
	}
	if int(i) >= len(rec.Deliveries) || rec.Deliveries[i].TokenHash != h {
		return nil, 0, store.ErrNotFound
	}
	return rec, int(i), nil
}

// Download looks up a download token at now: the grant, or the refusal
// (fulfil.Refused*), or ErrNotFound for a token never issued (or
// replaced by a reissue).
func (d *Dashboard) Download(token string, now time.Time) (*fulfil.Grant, string, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	h := fulfil.Hash(token)
	rec, i, err := tokenDelivery(queried(ctx, d.db.pool), h, "")
	if err != nil {
		return nil, "", unavailable(err)
	}
	if refusal := rec.Refusal(i, now); refusal != "" {
		return nil, refusal, nil
	}
	dl := rec.Deliveries[i]
	var p *fulfil.Product
	if cat := d.db.catalog.Load(); cat != nil {
		p = cat.Products[dl.Product]
	}
	if p == nil {
		return nil, fulfil.RefusedRemoved, nil // the product was removed from the config
	}
	return &fulfil.Grant{Product: p, OrderID: rec.OrderID, TokenHash: h, Left: dl.Limit - dl.Downloads, Downloads: dl.Downloads,
		Sent: dl.Sent, Limit: dl.Limit}, "", nil
}

// CountDownload records that the link g names sent n bytes of its file
// of size bytes (fulfil.Delivery.Spend), the order's deliveries locked:
// concurrent downloads of its links each count.
func (d *Dashboard) CountDownload(g *fulfil.Grant, n, size int64) error {
	return d.fulfilUpdate(func(t *pgTx) error {
		rec, i, err := tokenDelivery(t.row, g.TokenHash, " FOR UPDATE OF f")
		if err != nil {
			return unavailable(err)
		}
		rec.Deliveries[i] = rec.Deliveries[i].Spend(n, size)
		return unavailable(pgFulfil{t}.PutRecord(rec))
	})
}

// orderLicenses reads the licenses of rec's deliveries, by hash.
func orderLicenses(rows rowsReader, rec *fulfil.Record) (map[string]*fulfil.License, error) {
	lic := map[string]*fulfil.License{}
	var hashes []string
	for _, dl := range rec.Deliveries {
		if dl.LicenseHash != "" {
			hashes = append(hashes, dl.LicenseHash)
		}
	}
	if len(hashes) == 0 {
		return lic, nil
	}
	err := rows(`SELECT hash, record FROM licenses WHERE hash = ANY($1::text[])`, []any{hashes}, func(r pgx.Rows) error {
		var h string
		var b []byte
		if err := r.Scan(&h, &b); err != nil {
			return err
		}
		l := new(fulfil.License)
		if err := decode(b, l, "license"); err != nil {
			return err
		}
		lic[h] = l
		return nil
	})
	return lic, err
}

// Deliveries returns what order id was delivered (ErrNotFound: nothing)
// and its licenses by hash.
func (d *Dashboard) Deliveries(id string) (*fulfil.Record, map[string]*fulfil.License, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	rec, err := fulfilRecord(queried(ctx, d.db.pool), id, "")
	if err != nil {
		return nil, nil, unavailable(err)
	}
	if rec == nil {
		return nil, nil, fmt.Errorf("deliveries of order %q: %w", id, store.ErrNotFound)
	}
	lic, err := orderLicenses(queriedRows(ctx, d.db.pool), rec)
	if err != nil {
		return nil, nil, unavailable(err)
	}
	return rec, lic, nil
}

// Reissue gives order id's links new tokens, their full limit and a new
// ttl (the old links stop working) and queues the customer's email with
// them. It returns what the email carries.
func (d *Dashboard) Reissue(id string, now time.Time) ([]ipn.Delivered, error) {
	cat := d.db.catalog.Load()
	if !cat.Enabled() {
		return nil, store.ErrNoProducts
	}
	var shown []ipn.Delivered
	err := d.fulfilUpdate(func(t *pgTx) error {
		rec, err := pgFulfil{t}.Record(id)
		if err != nil {
			return unavailable(err)
		}
		if rec == nil {
			return fmt.Errorf("deliveries of order %q: %w", id, store.ErrNotFound)
		}
		if rec.Revoked {
			return fmt.Errorf("order %q: %w (%s)", id, store.ErrRevoked, rec.Reason)
		}
		o, _, err := storedOrder(t.row, id)
		if err != nil {
			return unavailable(err)
		}
		lic, err := orderLicenses(t.rows, rec)
		if err != nil {
			return unavailable(err)
		}
		next, old, s, err := cat.Reissue(*rec, lic, rand.Reader, now)
		if err != nil {
			return err
		}
		if err := t.exec(`DELETE FROM dl_tokens WHERE token_hash = ANY($1::text[])`, old); err != nil {
			return err
		}
		if err := (pgFulfil{t}).PutRecord(&next); err != nil {
			return err
		}
		if err := (pgFulfil{t}).PutTokens(&next); err != nil {
			return err
		}
		shown = s
		e, ok := fulfil.ReissueEmail(id, o, next.Reissues, s)
		if !ok {
			return nil
		}
		return t.Enqueue([]ipn.Effect{e}, 0, now)
	})
	if err != nil {
		return nil, err
	}
	return shown, nil
}

// License returns the license whose key is key (ErrNotFound).
func (d *Dashboard) License(key string) (*fulfil.License, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	l, err := licenseRecord(queried(ctx, d.db.pool), fulfil.Hash(key), "")
	if err == nil && l == nil {
		err = store.ErrNotFound
	}
	return l, unavailable(err)
}

// UpdateLicense changes the license whose key is key with f, in one
// transaction, the license's row locked from its read to the commit: two
// updates of one key run one after the other, the second on what the
// first wrote. f's error (a *fulfil.Refusal) leaves it as it was.
func (d *Dashboard) UpdateLicense(key string, f func(fulfil.License) (fulfil.License, error)) (fulfil.License, error) {
	var out fulfil.License
	var refused error
	err := d.fulfilUpdate(func(t *pgTx) error {
		l, err := pgFulfil{t}.License(fulfil.Hash(key))
		if err != nil {
			return unavailable(err)
		}
		if l == nil {
			return store.ErrNotFound
		}
		next, err := f(*l)
		if err != nil {
			out, refused = *l, err
			return err
		}
		out = next
		return pgFulfil{t}.PutLicense(&next)
	})
	if refused != nil {
		return out, refused
	}
	return out, err
}

// PoolRemaining returns, per pool product of the catalog, how many of
// its pool's keys were not handed out yet (each key looked up: exact when
// products share a pool file or the file was edited). A product whose
// count cannot be read (the database unreachable) is left out.
func (d *Dashboard) PoolRemaining() map[string]int {
	cat := d.db.catalog.Load()
	out := map[string]int{}
	if !cat.Enabled() {
		return out
	}
	ctx, cancel := d.ctx()
	defer cancel()
	for id, p := range cat.Products {
		if p.License != fulfil.LicensePool {
			continue
		}
		hashes := make([]string, len(p.Pool))
		for i, k := range p.Pool {
			hashes[i] = fulfil.Hash(k)
		}
		var n int
		err := d.db.pool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) AS u(h)
			WHERE NOT EXISTS (SELECT 1 FROM license_pool_used WHERE hash = u.h) AND NOT EXISTS (SELECT 1 FROM licenses WHERE hash = u.h)`,
			hashes).Scan(&n)
		if err == nil {
			out[id] = n
		}
	}
	return out
}

// SigningKey returns the public key that signed the license keys issued
// so far (nil: no signed key was issued).
func (d *Dashboard) SigningKey() (ed25519.PublicKey, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	var pub []byte
	if _, err := queried(ctx, d.db.pool)(`SELECT pub FROM license_signing WHERE id = 1`, nil, &pub); err != nil {
		return nil, unavailable(err)
	}
	if pub == nil {
		return nil, nil
	}
	return ed25519.PublicKey(pub), nil
}

// ErrSigningKeyMissing: signed license keys were issued (by the bbolt
// store this database was copied from) with a key the database does not
// hold, and none was offered.
var ErrSigningKeyMissing = errors.New("the license signing key is not in the database")

// SharedSigningKey returns the Ed25519 key that signs license_format =
// "signed" keys, kept in the database so that every ipnd on it signs
// with the same key. The first call stores one: offer (the data
// directory's key file, nil: none) or a new key; a database copied from
// a bbolt store that issued signed keys takes only the key they were
// signed with (ErrSigningKeyMissing, or a mismatch error, otherwise).
// Once stored, the database's key is returned whatever is offered.
func (d *Dashboard) SharedSigningKey(offer ed25519.PrivateKey) (ed25519.PrivateKey, error) {
	var key ed25519.PrivateKey
	err := d.fulfilUpdate(func(t *pgTx) error {
		var seed, pub []byte
		found, err := t.row(`SELECT seed, pub FROM license_signing WHERE id = 1 FOR UPDATE`, nil, &seed, &pub)
		if err != nil {
			return unavailable(err)
		}
		if !found {
			return unavailable(errors.New("license_signing has no row"))
		}
		if seed != nil {
			if len(seed) != ed25519.SeedSize {
				return corrupt("license signing key", fmt.Errorf("%d bytes", len(seed)))
			}
			key = ed25519.NewKeyFromSeed(seed)
			return nil
		}
		switch {
		case pub != nil && offer == nil:
			return fmt.Errorf("%w: signed license keys were issued with public key %s: put that key's file (license-signing.key) in this ipnd's data directory and start it again; the database keeps it for every ipnd",
				ErrSigningKeyMissing, base64.StdEncoding.EncodeToString(pub))
		case pub != nil && !ed25519.PublicKey(pub).Equal(offer.Public()):
			return fmt.Errorf("license signing key (public key %s) does not match the key that signed the license keys issued (public key %s): put that key's file in this ipnd's data directory",
				base64.StdEncoding.EncodeToString(offer.Public().(ed25519.PublicKey)), base64.StdEncoding.EncodeToString(pub))
		case offer != nil:
			key = offer
		default:
			var err error
			if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
				return err
			}
		}
		return t.exec(`UPDATE license_signing SET seed = $1 WHERE id = 1`, key.Seed())
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// signingRow reads the license signing key's row: its seed and the
// public key of the signed keys issued (nil: none).
func signingRow(ctx context.Context, q querier) (seed, pub []byte, err error) {
	_, err = queried(ctx, q)(`SELECT seed, pub FROM license_signing WHERE id = 1`, nil, &seed, &pub)
	return seed, pub, err
}
