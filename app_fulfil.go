package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ipnd/public"
)

// fulfilClock is the License API's and the download links' clock (a
// test sets it to control time).
var fulfilClock = time.Now

// signingKeyFile is the Ed25519 key pair that signs license_format =
// "signed" keys, in the data directory, created on first use.
const signingKeyFile = "license-signing.key"

func signingKeyPath(cfg *Config) string { return filepath.Join(cfg.dataDir(), signingKeyFile) }

// loadSigningKey reads the license signing key, creating it when create
// is set and there is none (0600, written to a temporary file, synced,
// renamed into place and the directory synced: a crash leaves either no
// key or the whole key).
func loadSigningKey(cfg *Config, create bool) (ed25519.PrivateKey, error) {
	path := signingKeyPath(cfg)
	b, err := os.ReadFile(path)
	if err == nil {
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("license signing key %s: not a base64 Ed25519 seed", path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, os.ErrNotExist) || !create {
		return nil, fmt.Errorf("license signing key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Linked into place: a key another process created meanwhile wins.
	err = writeSigningKey(path, priv.Seed())
	if errors.Is(err, os.ErrExist) {
		return loadSigningKey(cfg, false)
	}
	if err != nil {
		return nil, fmt.Errorf("license signing key: %w", err)
	}
	return priv, nil
}

// writeSigningKey writes the license signing key's file: 0600, synced,
// linked into place (a file there already is left as it is: the error
// is os.ErrExist), the directory synced. loadSigningKey creates the key
// with it, and migrate writes a copied key with it.
func writeSigningKey(path string, seed []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, signingKeyFile+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(base64.StdEncoding.EncodeToString(seed) + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

// signingKey loads the license signing key, creating it only while no
// signed key was issued: once one was, a missing file or another key is
// an error (a new key pair would make every key sold fail its offline
// check; the file must be restored).
//
// A store that keeps the key itself (PostgreSQL: every ipnd on the
// database signs with the same key) answers instead: the data
// directory's key file, when there is one, is offered to it (it takes it
// when it holds none yet; a store copied from bbolt must get the key its
// signed keys were issued with).
func (a *app) signingKey(cfg *Config) (ed25519.PrivateKey, error) {
	if s, ok := a.db.(sharedSigner); ok {
		offer, err := loadSigningKey(cfg, false)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return s.SharedSigningKey(offer)
	}
	issued, err := a.db.SigningKey()
	if err != nil {
		return nil, err
	}
	path := signingKeyPath(cfg)
	priv, err := loadSigningKey(cfg, issued == nil)
	if err != nil {
		if issued != nil && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("license signing key %s is missing, but signed license keys were issued with public key %s: "+
				"restore the file from a backup (a new key pair would make every key issued fail its offline check)",
				path, base64.StdEncoding.EncodeToString(issued))
		}
		return nil, err
	}
	if pub := priv.Public().(ed25519.PublicKey); issued != nil && !pub.Equal(issued) {
		return nil, fmt.Errorf("license signing key %s (public key %s) does not match the key that signed the license keys issued "+
			"(public key %s): restore that key's file from a backup", path, base64.StdEncoding.EncodeToString(pub),
			base64.StdEncoding.EncodeToString(issued))
	}
	return priv, nil
}

// sharedSigner is a store that keeps the license signing key
// (pg.Dashboard.SharedSigningKey).
type sharedSigner interface {
	SharedSigningKey(offer ed25519.PrivateKey) (ed25519.PrivateKey, error)
}

// setFulfilment gives the store and the public listener the products of
// cfg (SPEC §11). With none, nothing is delivered and /dl and
// /v1/licenses answer 404.
func (a *app) setFulfilment(cfg *Config) error {
	var signer ed25519.PrivateKey
	if cfg.usesSignedKeys() {
		var err error
		if signer, err = a.signingKey(cfg); err != nil {
			return err
		}
	}
	cat, err := cfg.catalog(signer)
	if err != nil {
		return err
	}
	if old := a.db.Catalog(); old != nil {
		for id := range old.Products {
			if cat.Products[id] == nil {
				a.log.Warn("product removed from the config: the download links of the orders that bought it answer 410 "+
					"(no longer offered) until it is configured again; their license keys keep working", "product", id)
			}
		}
	}
	a.db.SetCatalog(cat)
	if !cat.Enabled() {
		a.rcv.SetFulfilment(nil)
		return nil
	}
	a.rcv.SetFulfilment(&public.Fulfilment{Store: a.db, Observer: a.m, Rand: rand.Reader, Now: fulfilClock,
		Stall: time.Duration(cfg.Server.WriteTimeout)})
	return nil
}
