// Package fulfil holds the rules of delivering what was bought (SPEC
// §11): which download links and license keys an order's transition
// issues, revokes or restores, when a link may still be downloaded and
// what the License API answers. It is pure: randomness and time are
// arguments, and it imports only ipn. The store records what it decides
// in the transaction that changes the order.
package fulfil

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"ipnd/ipn"
)

// License kinds of a product.
const (
	LicenseNone      = "none"
	LicenseGenerated = "generated"
	LicensePool      = "pool"
)

// License key formats.
const (
	FormatGrouped = "grouped"
	FormatSigned  = "signed"
)

// Product is one [[product]] of the config.
type Product struct {
	ID            string
	Name          string
	File          string // absolute path of the file served, under Root
	Root          string // fulfilment.files_dir, symbolic links resolved
	DownloadLimit int
	LinkTTL       time.Duration
	License       string // LicenseNone, LicenseGenerated, LicensePool
	Activations   int
	Format        string // FormatGrouped, FormatSigned
	Pool          []string
}

// Catalog is what the config says about fulfilment.
type Catalog struct {
	Products  map[string]*Product
	Grace     time.Duration // license_grace: how long a subscription's license runs past its period
	PublicURL string        // base of the links, without a trailing slash
	Signer    Signer        // signs license_format = "signed" keys (nil: none configured)
}

// Enabled reports whether any product is configured: without one, none of
// SPEC §11 applies.
func (c *Catalog) Enabled() bool { return c != nil && len(c.Products) > 0 }

// Record is what an order was delivered: its links (one per unit bought)
// and whether they are revoked. Stored under the order id.
type Record struct {
	OrderID    string     `json:"order_id"`
	Test       bool       `json:"test,omitempty"`
	Revoked    bool       `json:"revoked,omitempty"`
	Reason     string     `json:"reason,omitempty"` // why revoked
	Deliveries []Delivery `json:"deliveries"`
	IssuedAt   time.Time  `json:"issued_at"`
	Reissues   int        `json:"reissues,omitempty"`
}

// Delivery is one unit's download link (its token only as a hash) and
// the hash of its license key, if any.
//
// Its download limit is counted in bytes: Sent is how many bytes of the
// file the link has sent (a range, a resumed download, a response cut
// short: what went out), and the link allows Limit times the file's size
// (see Budget). Downloads is that in whole copies, for display.
type Delivery struct {
	Product     string    `json:"product"`
	TokenHash   string    `json:"token_hash"`
	Downloads   int       `json:"downloads"`
	Sent        int64     `json:"sent,omitempty"`
	Limit       int       `json:"limit"`
	ExpiresAt   time.Time `json:"expires_at"`
	LicenseHash string    `json:"license_hash,omitempty"`
}

// License is one license key. Stored under Hash (the key's sha256); Key
// is kept for the merchant (admin API, emails re-sent).
type License struct {
	Hash           string     `json:"hash"`
	Key            string     `json:"key"`
	OrderID        string     `json:"order_id"`
	Product        string     `json:"product"`
	ProductName    string     `json:"product_name,omitempty"`
	Limit          int        `json:"activation_limit"`
	Instances      []Instance `json:"instances"`
	CreatedAt      time.Time  `json:"created_at"`
	ExpiresAt      *time.Time `json:"expires_at"`
	Disabled       bool       `json:"disabled,omitempty"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
	Manual         bool       `json:"manual,omitempty"` // disabled by the merchant: a won dispute does not restore it
	Test           bool       `json:"test,omitempty"`
	CustomerName   string     `json:"customer_name,omitempty"`
	CustomerEmail  string     `json:"customer_email,omitempty"`
	SubscriptionID string     `json:"subscription_id,omitempty"`
}

// Instance is one activation of a license.
type Instance struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Hash returns the hex sha256 of a token or key: what the store keeps
// and looks up.
func Hash(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(s[:])
}

// NewToken returns a download token: 24 random bytes (192 bits),
// base64url.
func NewToken(rnd io.Reader) (string, error) {
	b := make([]byte, 24)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// groupAlphabet has no 0/O, 1/I/L: keys are read and typed by people.
const groupAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"

// NewGroupedKey returns a key XXXXX-XXXXX-XXXXX-XXXXX of 20 characters
// from a 31-letter alphabet (99 bits), unbiased.
func NewGroupedKey(rnd io.Reader) (string, error) {
	var sb strings.Builder
	buf := make([]byte, 1)
	for n := 0; n < 20; {
		if _, err := io.ReadFull(rnd, buf); err != nil {
			return "", fmt.Errorf("license key: %w", err)
		}
		if int(buf[0]) >= 256-256%len(groupAlphabet) {
			continue // rejection sampling: no bias
		}
		if n > 0 && n%5 == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(groupAlphabet[int(buf[0])%len(groupAlphabet)])
		n++
	}
	return sb.String(), nil
}

// Action is what an order's transition does to its deliveries.
type Action int

// Actions.
const (
	None    Action = iota
	Issue          // the order became paid for the first time: issue
	Revoke         // refunded in full, reversed or disputed: revoke
	Restore        // back to paid after a revocation (a dispute won): restore
)

// paidLike: the order was paid and keeps its goods (a partial refund
// does not take them back).
func paidLike(s ipn.OrderStatus) bool { return s == ipn.OrderPaid || s == ipn.OrderPartiallyRefunded }

func revoking(s ipn.OrderStatus) bool {
	return s == ipn.OrderRefunded || s == ipn.OrderReversed || s == ipn.OrderDisputed
}

// Decide returns what the order's move from status from to status to
// does, given its record (nil: nothing issued yet). Only the move into
// paid issues: an order paid before its products were configured (or
// without items) gets nothing later from a partial refund or a dispute
// won.
func Decide(from, to ipn.OrderStatus, rec *Record) Action {
	switch {
	case paidLike(to) && rec == nil && !paidLike(from) && !revoking(from):
		return Issue
	case paidLike(to) && rec != nil && rec.Revoked && !paidLike(from):
		return Restore
	case revoking(to) && rec != nil && !rec.Revoked:
		return Revoke
	}
	return None
}

// Items returns what order o delivers: its registered items, else the
// ones the paying event names.
func Items(o *ipn.Order, ev *ipn.Event) ([]ipn.Item, error) {
	if len(o.Items) > 0 {
		return o.Items, nil
	}
	if ev == nil || ev.Items == "" {
		return nil, nil
	}
	return ipn.ParseItems(ev.Items)
}

// Unknown returns the products of items the catalog does not have.
func (c *Catalog) Unknown(items []ipn.Item) []string {
	var out []string
	for _, it := range items {
		if c.Products[it.Product] == nil {
			out = append(out, it.Product)
		}
	}
	return out
}

// ErrPoolEmpty: a pool product has no key left to hand out.
var ErrPoolEmpty = errors.New("license pool is empty")

// Issued is what Issue creates: the record, the licenses and what the
// customer and the shop are told (with the tokens and keys in clear).
type Issued struct {
	Record    Record
	Licenses  []License
	Delivered []ipn.Delivered
}

// PoolKey hands out the next unused key of a pool product (the store
// records the pool's position in the same transaction).
type PoolKey func(p *Product) (string, error)

// Issue creates the links and keys of order o's items at now. Every
// product must be in the catalog (see Unknown). subscription is the
// subscription the order pays ("" for a one-off purchase): its licenses
// run until periodEnd + Grace.
func (c *Catalog) Issue(o *ipn.Order, items []ipn.Item, rnd io.Reader, now time.Time, pool PoolKey, subscription string, periodEnd time.Time) (Issued, error) {
	now = now.UTC()
	out := Issued{Record: Record{OrderID: o.ID, Test: o.Test, IssuedAt: now}}
	for _, it := range items {
		p := c.Products[it.Product]
		if p == nil {
			return Issued{}, fmt.Errorf("product %q is not configured", it.Product)
		}
		for range it.Quantity {
			tok, err := NewToken(rnd)
			if err != nil {
				return Issued{}, err
			}
			d := Delivery{Product: p.ID, TokenHash: Hash(tok), Limit: p.DownloadLimit, ExpiresAt: now.Add(p.LinkTTL)}
			shown := ipn.Delivered{Product: p.ID, ProductName: p.Name, DownloadURL: c.PublicURL + "/dl/" + tok,
				DownloadsLeft: p.DownloadLimit, ExpiresAt: d.ExpiresAt}
			if p.License != LicenseNone && p.License != "" {
				l := License{OrderID: o.ID, Product: p.ID, ProductName: p.Name, Limit: p.Activations, CreatedAt: now,
					Instances: []Instance{}, Test: o.Test, CustomerName: o.CustomerName, CustomerEmail: o.CustomerEmail,
					SubscriptionID: subscription}
				if subscription != "" && !periodEnd.IsZero() {
					exp := periodEnd.UTC().Add(c.Grace)
					l.ExpiresAt = &exp
				}
				key, err := c.newKey(p, &l, rnd, pool)
				if err != nil {
					return Issued{}, err
				}
				l.Key, l.Hash = key, Hash(key)
				d.LicenseHash = l.Hash
				shown.LicenseKey = key
				out.Licenses = append(out.Licenses, l)
			}
			out.Record.Deliveries = append(out.Record.Deliveries, d)
			out.Delivered = append(out.Delivered, shown)
		}
	}
	return out, nil
}

func (c *Catalog) newKey(p *Product, l *License, rnd io.Reader, pool PoolKey) (string, error) {
	switch {
	case p.License == LicensePool:
		return pool(p)
	case p.Format == FormatSigned:
		if c.Signer == nil {
			return "", errors.New("no signing key for signed license keys")
		}
		return SignKey(c.Signer, l, rnd)
	default:
		return NewGroupedKey(rnd)
	}
}

// Reissue gives every delivery of rec a new token, its full download
// limit and a new ttl from now; the old tokens stop working. It returns
// the new record, the old token hashes and what the customer is told.
// Licenses are kept (lic: by hash, for their keys in the email).
func (c *Catalog) Reissue(rec Record, lic map[string]*License, rnd io.Reader, now time.Time) (Record, []string, []ipn.Delivered, error) {
	now = now.UTC()
	next := rec
	next.Deliveries = slices.Clone(rec.Deliveries)
	next.Reissues++
	var old []string
	var shown []ipn.Delivered
	for i := range next.Deliveries {
		d := &next.Deliveries[i]
		tok, err := NewToken(rnd)
		if err != nil {
			return Record{}, nil, nil, err
		}
		old = append(old, d.TokenHash)
		d.TokenHash, d.Downloads, d.Sent = Hash(tok), 0, 0
		name := d.Product
		if p := c.Products[d.Product]; p != nil {
			d.Limit, d.ExpiresAt, name = p.DownloadLimit, now.Add(p.LinkTTL), p.Name
		} else {
			d.ExpiresAt = now.Add(d.ExpiresAt.Sub(rec.IssuedAt))
		}
		s := ipn.Delivered{Product: d.Product, ProductName: name, DownloadURL: c.PublicURL + "/dl/" + tok,
			DownloadsLeft: d.Limit, ExpiresAt: d.ExpiresAt}
		if l := lic[d.LicenseHash]; l != nil {
			s.LicenseKey = l.Key
		}
		shown = append(shown, s)
	}
	return next, old, shown, nil
}

// Show returns what rec delivers as the admin API shows it: no URL (the
// tokens are kept only as hashes; a reissue makes new ones).
func Show(rec *Record, lic map[string]*License) []ipn.Delivered {
	var out []ipn.Delivered
	for _, d := range rec.Deliveries {
		s := ipn.Delivered{Product: d.Product, DownloadsLeft: max(d.Limit-d.Downloads, 0), ExpiresAt: d.ExpiresAt}
		if rec.Revoked {
			s.DownloadsLeft = 0
		}
		if l := lic[d.LicenseHash]; l != nil {
			s.LicenseKey = l.Key
		}
		out = append(out, s)
	}
	return out
}

// Why a download is refused.
const (
	RefusedLimit   = "limit"
	RefusedExpired = "expired"
	RefusedRevoked = "revoked"
	RefusedRemoved = "removed" // its product is no longer in the config
)

// Refusal returns why delivery i of rec may not be downloaded at now ("":
// it may).
func (rec *Record) Refusal(i int, now time.Time) string {
	d := rec.Deliveries[i]
	switch {
	case rec.Revoked:
		return RefusedRevoked
	case d.Downloads >= d.Limit:
		return RefusedLimit
	case !now.Before(d.ExpiresAt):
		return RefusedExpired
	}
	return ""
}

// Grant is one download a token allows: the product, its order, the
// token's hash, and the downloads left before this one.
type Grant struct {
	Product   *Product
	OrderID   string
	TokenHash string
	Left      int   // downloads left before this one
	Downloads int   // whole copies sent
	Sent      int64 // bytes of the file sent
	Limit     int   // download_limit of the link
}

// Unit is what one copy of a file of size bytes costs: its size (an
// empty file costs 1 per response, so that its limit still holds).
func Unit(size int64) int64 { return max(size, 1) }

// Budget returns how many bytes of a file of size bytes the link of g
// may still send: Limit copies of the file, less what it sent (at least
// Downloads copies, for a link counted before bytes were).
func (g *Grant) Budget(size int64) int64 {
	used := max(g.Sent, int64(g.Downloads)*Unit(size))
	return max(int64(g.Limit)*Unit(size)-used, 0)
}

// Spend returns d after sending n more bytes of a file of size bytes.
func (d Delivery) Spend(n, size int64) Delivery {
	d.Sent = max(d.Sent, int64(d.Downloads)*Unit(size)) + n
	d.Downloads = max(d.Downloads, int(d.Sent/Unit(size)))
	return d
}
