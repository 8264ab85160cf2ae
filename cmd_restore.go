package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"ipnd/store"
)

var restoreCommand = command{
	name:    "restore",
	args:    "[flags] BACKUP",
	summary: "install a backup with ipnd stopped (the current files are moved aside)",
	run:     cmdRestore,
}

// cmdRestore installs a backup with ipnd stopped (see store.Restore).
func cmdRestore(_ context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newCmdline("restore", getenv, stdout)
	if err := fs.parse(args, 1, 1, "BACKUP"); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	if cfg.postgres() {
		return errors.New(`restore: the store is PostgreSQL (store.backend = "postgres"): restore it with PostgreSQL's tools (pg_restore of a pg_dump, or a base backup); ipnd restore puts back a bbolt backup (to move one into PostgreSQL: ipnd migrate -from FILE -to DSN)`)
	}
	r, err := store.Restore(cfg.Store.Path, fs.Arg(0), time.Now())
	if err != nil {
		return err
	}
	if r.Aside != "" {
		fmt.Fprintf(stdout, "moved the previous database and journal to %s (delete it once the restore is fine)\n", r.Aside)
	}
	if r.FromJournal > 0 {
		fmt.Fprintf(stdout, "brought back from the journal %d notifications the backup did not have (last id %d)\n", r.FromJournal, r.LastID)
	}
	for _, d := range r.NotBack {
		fmt.Fprintf(stdout, "not brought back: %s; recorded as lost, never given again\n", d)
	}
	if r.Unknown {
		fmt.Fprintf(stdout, "no previous database could be read here (none, or damaged) and no journal was beside it: ids it gave after %d may be given again "+
			"(if its data directory was moved away, restore in that directory instead)\n", r.Backup.Sequence)
	}
	fmt.Fprintf(stdout, "restored %s as %s: %s\n", fs.Arg(0), cfg.Store.Path, r.FileInfo)
	return nil
}
