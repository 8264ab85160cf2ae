package main

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/public"
)

// FulfilmentConfig is [fulfilment] (SPEC §11).
type FulfilmentConfig struct {
	// FilesDir holds the files products deliver; every product's file is
	// under it.
	FilesDir string `toml:"files_dir"`
	// LicenseGrace is how long a subscription's license runs past the end
	// of its paid period.
	LicenseGrace Duration `toml:"license_grace"`
}

// ProductConfig is one [[product]]: something ipnd delivers.
type ProductConfig struct {
	ID                 string   `toml:"id"`
	Name               string   `toml:"name"`
	File               string   `toml:"file"`
	DownloadLimit      int      `toml:"download_limit"`
	LinkTTL            Duration `toml:"link_ttl"`
	License            string   `toml:"license"`
	LicensePool        string   `toml:"license_pool"`
	LicenseActivations int      `toml:"license_activations"`
	LicenseFormat      string   `toml:"license_format"`
}

// Defaults of [[product]] (a product's zero values take them).
const (
	defaultDownloadLimit = 5
	defaultLinkTTL       = 168 * time.Hour
	defaultActivations   = 3
	defaultLicenseGrace  = 72 * time.Hour
)

// validateFulfilment fills in the defaults of [fulfilment], [[product]]
// and server.public_url and checks them: unique ids, each file a readable
// regular file under files_dir (no escaping it), each pool file with
// keys.
func (c *Config) validateFulfilment() error {
	if c.Fulfilment.LicenseGrace == 0 {
		c.Fulfilment.LicenseGrace = Duration(defaultLicenseGrace)
	}
	if c.Fulfilment.LicenseGrace < 0 {
		return configError("fulfilment.license_grace", c.Fulfilment.LicenseGrace.String(), "must not be negative")
	}
	if c.Server.PublicURL == "" && len(c.Server.AcmeDomains) > 0 {
		c.Server.PublicURL = "https://" + c.Server.AcmeDomains[0]
	}
	c.Server.PublicURL = strings.TrimRight(c.Server.PublicURL, "/")
	if c.Server.PublicURL != "" {
		u, err := url.Parse(c.Server.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return configError("server.public_url", c.Server.PublicURL, "must be an http(s) URL without query")
		}
	}
	if len(c.Products) == 0 {
		return nil
	}
	if c.Server.PublicURL == "" {
		return configError("server.public_url", "", "is needed for download links (or set server.acme_domains)")
	}
	if c.Fulfilment.FilesDir == "" {
		return configError("fulfilment.files_dir", "", "is needed when a [[product]] is configured")
	}
	seen := map[string]bool{}
	for i := range c.Products {
		p := &c.Products[i]
		key := fmt.Sprintf("product[%d]", i)
		if err := ipn.CheckProductID(p.ID); err != nil {
			return configError(key+".id", p.ID, err.Error())
		}
		if seen[p.ID] {
			return configError(key+".id", p.ID, "another product has this id")
		}
		seen[p.ID] = true
		if p.Name == "" {
			p.Name = p.ID
		}
		if p.DownloadLimit == 0 {
			p.DownloadLimit = defaultDownloadLimit
		}
		if p.LinkTTL == 0 {
			p.LinkTTL = Duration(defaultLinkTTL)
		}
		if p.LicenseActivations == 0 {
			p.LicenseActivations = defaultActivations
		}
		if p.License == "" {
			p.License = fulfil.LicenseNone
		}
		if p.LicenseFormat == "" {
			p.LicenseFormat = fulfil.FormatGrouped
		}
		switch {
		case p.DownloadLimit < 0:
			return configError(key+".download_limit", p.DownloadLimit, "must be positive")
		case p.LinkTTL < 0:
			return configError(key+".link_ttl", p.LinkTTL.String(), "must be positive")
		case p.LicenseActivations < 0:
			return configError(key+".license_activations", p.LicenseActivations, "must be positive")
		case p.License != fulfil.LicenseNone && p.License != fulfil.LicenseGenerated && p.License != fulfil.LicensePool:
			return configError(key+".license", p.License, `must be "none", "generated" or "pool"`)
		case p.LicenseFormat != fulfil.FormatGrouped && p.LicenseFormat != fulfil.FormatSigned:
			return configError(key+".license_format", p.LicenseFormat, `must be "grouped" or "signed"`)
		case p.License == fulfil.LicensePool && p.LicensePool == "":
			return configError(key+".license_pool", "", `is needed with license = "pool"`)
		case p.License != fulfil.LicensePool && p.LicensePool != "":
			return configError(key+".license_pool", p.LicensePool, `is read only with license = "pool"`)
		}
		if _, _, err := c.productFile(*p); err != nil {
			return configError(key+".file", p.File, err.Error())
		}
		if p.License == fulfil.LicensePool {
			if _, err := readPool(p.LicensePool); err != nil {
				return configError(key+".license_pool", p.LicensePool, err.Error())
			}
		}
	}
	return nil
}

// productFile returns files_dir (symbolic links resolved) and the
// absolute path of p's file under it: a regular file that can be opened
// (as the download route opens it: public.OpenProductFile).
func (c *Config) productFile(p ProductConfig) (string, string, error) {
	if p.File == "" {
		return "", "", fmt.Errorf("is empty")
	}
	dir, err := filepath.Abs(c.Fulfilment.FilesDir)
	if err != nil {
		return "", "", err
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	} else {
		return "", "", fmt.Errorf("fulfilment.files_dir: %v", err)
	}
	if filepath.IsAbs(p.File) || !filepath.IsLocal(p.File) {
		return "", "", fmt.Errorf("must be a relative path under fulfilment.files_dir")
	}
	full, err := filepath.EvalSymlinks(filepath.Join(dir, p.File))
	if err != nil {
		return "", "", fmt.Errorf("cannot be read: %v", err)
	}
	if rel, err := filepath.Rel(dir, full); err != nil || !filepath.IsLocal(rel) {
		return "", "", fmt.Errorf("leads out of fulfilment.files_dir")
	}
	f, _, err := public.OpenProductFile(dir, full)
	if err != nil {
		return "", "", fmt.Errorf("cannot be served: %v", err)
	}
	f.Close()
	return dir, full, nil
}

// readPool reads a license pool file: one key per line, blank lines and
// lines starting with # skipped, each key once.
func readPool(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %v", err)
	}
	defer f.Close()
	var keys []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		k := strings.TrimSpace(sc.Text())
		if k == "" || strings.HasPrefix(k, "#") {
			continue
		}
		if seen[k] {
			return nil, fmt.Errorf("line %d: key repeated", n)
		}
		seen[k] = true
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("has no keys")
	}
	return keys, nil
}

// usesSignedKeys reports whether a product issues signed keys.
func (c *Config) usesSignedKeys() bool {
	for _, p := range c.Products {
		if p.License == fulfil.LicenseGenerated && p.LicenseFormat == fulfil.FormatSigned {
			return true
		}
	}
	return false
}

// catalog builds what the store and the public listener deliver. signer
// is the signing key (nil unless a product issues signed keys).
func (c *Config) catalog(signer ed25519.PrivateKey) (*fulfil.Catalog, error) {
	cat := &fulfil.Catalog{Products: map[string]*fulfil.Product{}, Grace: time.Duration(c.Fulfilment.LicenseGrace),
		PublicURL: c.Server.PublicURL, Signer: signer}
	for i, p := range c.Products {
		root, file, err := c.productFile(p)
		if err != nil {
			return nil, configError(fmt.Sprintf("product[%d].file", i), p.File, err.Error())
		}
		fp := &fulfil.Product{ID: p.ID, Name: p.Name, File: file, Root: root, DownloadLimit: p.DownloadLimit, LinkTTL: time.Duration(p.LinkTTL),
			License: p.License, Activations: p.LicenseActivations, Format: p.LicenseFormat}
		if p.License == fulfil.LicensePool {
			if fp.Pool, err = readPool(p.LicensePool); err != nil {
				return nil, configError(fmt.Sprintf("product[%d].license_pool", i), p.LicensePool, err.Error())
			}
		}
		cat.Products[p.ID] = fp
	}
	return cat, nil
}

// fulfilSummary is what ipnd check says about the products.
func (c *Config) fulfilSummary() string {
	var b strings.Builder
	for _, p := range c.Products {
		fmt.Fprintf(&b, "# product %q: %s, %d downloads per link for %s, license %s", p.ID, p.File, p.DownloadLimit,
			time.Duration(p.LinkTTL), p.License)
		if p.License == fulfil.LicensePool {
			keys, _ := readPool(p.LicensePool)
			fmt.Fprintf(&b, " (%d keys in %s)", len(keys), p.LicensePool)
		} else if p.License == fulfil.LicenseGenerated {
			fmt.Fprintf(&b, " (%s)", p.LicenseFormat)
		}
		b.WriteString("\n")
	}
	if len(c.Products) > 0 {
		fmt.Fprintf(&b, "# download links: %s/dl/<token>\n", c.Server.PublicURL)
	}
	if c.usesSignedKeys() {
		path := signingKeyPath(c)
		st, err := os.Stat(path)
		switch priv, lerr := loadSigningKey(c, false); {
		case errors.Is(err, os.ErrNotExist) && c.postgres():
			fmt.Fprintf(&b, "# license signing key: kept in the PostgreSQL database, the same for every ipnd on it "+
				"(ipnd licenses pubkey prints its public key); back it up with the database\n")
		case errors.Is(err, os.ErrNotExist):
			fmt.Fprintf(&b, "# license signing key %s does not exist: ipnd serve creates it, unless signed keys were issued already "+
				"(then it refuses to start: restore the file from a backup)\n", path)
		case lerr != nil:
			fmt.Fprintf(&b, "# warning: %v: ipnd serve will refuse to start\n", lerr)
		default:
			if c.postgres() {
				fmt.Fprintf(&b, "# license signing key %s (public key %s): offered to the PostgreSQL database, which keeps it when it has none "+
					"yet; else the database's key signs (ipnd licenses pubkey prints it)\n", path,
					base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)))
			} else {
				fmt.Fprintf(&b, "# license signing key %s (public key %s): back it up with the database\n", path,
					base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)))
			}
			if st.Mode().Perm()&0o077 != 0 {
				fmt.Fprintf(&b, "# warning: license signing key %s is readable by others (%v): chmod 600 it\n", path, st.Mode().Perm())
			}
		}
	}
	return b.String()
}
