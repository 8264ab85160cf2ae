package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"ipnd/store"
	"ipnd/store/pg"
)

var migrateCommand = command{
	name:    "migrate",
	args:    "[flags]",
	summary: "copy a stopped store (-from FILE) into an empty PostgreSQL database (-to DSN), or back to a new file",
	run:     cmdMigrate,
}

// cmdMigrate copies a bbolt store, with ipnd stopped, into an empty
// PostgreSQL database (SPEC §12): in one transaction, verified per table
// before the commit; or, -from naming a database, that database into a
// new bbolt file.
func cmdMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newCmdline("migrate", getenv, stdout)
	from := fs.String("from", "", "the bbolt database file to copy (default: the config's store.path), ipnd stopped; or a PostgreSQL database (libpq key/value or URL) to copy into a new file")
	to := fs.String("to", "", "the PostgreSQL database to copy into, empty (libpq key/value or URL); or the new bbolt file to write")
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	if isDSN(*from) {
		if *to == "" || isDSN(*to) {
			return usageErrorf("migrate: from PostgreSQL, -to names the new bbolt file; usage: %s", fs.synopsis())
		}
		return migrateBack(ctx, *from, *to, stdout)
	}
	if *to == "" {
		return usageErrorf("migrate: missing -to DSN; usage: %s", fs.synopsis())
	}
	if *from == "" {
		cfg, err := loadConfig(*fs.config, getenv)
		if err != nil {
			return err
		}
		if cfg.postgres() {
			return usageErrorf("migrate: the config's store is PostgreSQL: name the bbolt file to copy with -from FILE")
		}
		*from = cfg.Store.Path
	}
	db, err := pg.Open(ctx, *to, pg.Options{Timeout: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer db.Close()
	var got pg.Copied
	var left map[string]int
	var signed bool
	start := time.Now()
	err = store.Export(*from, func(s *store.Snapshot) error {
		left = s.NotCopied()
		signed = s.SigningPub() != nil
		var err error
		got, err = db.Import(ctx, s)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate: %w (nothing was committed)", err)
	}
	fmt.Fprintf(stdout, "copied %s into PostgreSQL in %s, verified:\n", *from, time.Since(start).Round(time.Millisecond))
	printCopied(stdout, got)
	for _, k := range slices.Sorted(maps.Keys(left)) {
		fmt.Fprintf(stdout, "not copied (not kept on PostgreSQL yet): %s %d\n", k, left[k])
	}
	if signed {
		// The database keeps the signing key once an ipnd on it offers it.
		fmt.Fprintf(stdout, "signed license keys were issued: put %s in the data directory of the first ipnd you start on the database "+
			"(it keeps the key there for every ipnd)\n", filepath.Join(filepath.Dir(*from), signingKeyFile))
	}
	return nil
}

// migrateBack copies the PostgreSQL database dsn into a new bbolt file
// at path, from one snapshot, verified per table; a failure leaves no
// file.
func migrateBack(ctx context.Context, dsn, path string, stdout io.Writer) error {
	db, err := pg.Open(ctx, dsn, pg.Options{Timeout: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer db.Close()
	// The signing key the database keeps goes next to the new file, as
	// the bbolt store keeps it (its data directory's license-signing.key).
	seed, _, err := db.SigningSeed(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	keyPath := filepath.Join(filepath.Dir(path), signingKeyFile)
	writeKey := false
	if seed != nil {
		switch b, err := os.ReadFile(keyPath); {
		case errors.Is(err, os.ErrNotExist):
			writeKey = true
		case err != nil:
			return fmt.Errorf("migrate: %w", err)
		case strings.TrimSpace(string(b)) != base64.StdEncoding.EncodeToString(seed):
			return fmt.Errorf("migrate: %s holds another license signing key than the database's: move it away, or write the new file in another directory", keyPath)
		}
	}
	start := time.Now()
	var got pg.Copied
	err = store.Import(path, func(w *store.Importer) error {
		var err error
		got, err = db.Export(ctx, w)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate: %w (no file was left)", err)
	}
	fmt.Fprintf(stdout, "copied PostgreSQL into %s in %s, verified:\n", path, time.Since(start).Round(time.Millisecond))
	printCopied(stdout, got)
	if writeKey {
		if err := writeSigningKey(keyPath, seed); err != nil {
			return fmt.Errorf("migrate: the copy is complete, but the license signing key could not be written: %w", err)
		}
		fmt.Fprintf(stdout, "license signing key written to %s\n", keyPath)
	}
	return nil
}

// printCopied prints the rows per table and the counters.
func printCopied(stdout io.Writer, got pg.Copied) {
	for _, t := range got.Tables {
		fmt.Fprintf(stdout, "  %-16s %d\n", t.Table, t.Rows)
	}
	fmt.Fprintf(stdout, "counters: next notification id %d, next outbox id %d, cursor %d\n", got.Notification+1, got.Outbox+1, got.Cursor)
}

// isDSN says whether s names a PostgreSQL database rather than a file.
func isDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") || strings.Contains(s, "=")
}
