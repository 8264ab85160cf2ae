package pg

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"ipnd/fulfil"
	"ipnd/ipn"
)

// ErrNotBuilt is returned by the parts of the store not built on
// PostgreSQL yet. Each group below is replaced by its own file.
var ErrNotBuilt = errors.New("not built on the postgres backend yet")

func notBuilt(what string) error { return fmt.Errorf("%s: %w", what, ErrNotBuilt) }

// --- fulfilment (fulfil.go) ---

func (d *Dashboard) Catalog() *fulfil.Catalog { return nil }

func (d *Dashboard) SetCatalog(c *fulfil.Catalog) {}

func (d *Dashboard) SigningKey() (ed25519.PublicKey, error) { return nil, notBuilt("SigningKey") }

func (d *Dashboard) Reissue(id string, now time.Time) ([]ipn.Delivered, error) {
	return nil, notBuilt("Reissue")
}

func (d *Dashboard) License(key string) (*fulfil.License, error) { return nil, notBuilt("License") }

func (d *Dashboard) UpdateLicense(key string, f func(fulfil.License) (fulfil.License, error)) (fulfil.License, error) {
	return fulfil.License{}, notBuilt("UpdateLicense")
}

func (d *Dashboard) Download(token string, now time.Time) (*fulfil.Grant, string, error) {
	return nil, "", notBuilt("Download")
}

func (d *Dashboard) CountDownload(g *fulfil.Grant, n, size int64) error {
	return notBuilt("CountDownload")
}

func (d *Dashboard) PoolRemaining() map[string]int { return nil }
