package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"ipnd/store"
)

var recoverCommand = command{
	name:    "recover",
	args:    "[flags]",
	summary: "apply the journal with ipnd stopped (-skip-damaged: past damage)",
	run:     cmdRecover,
}

// cmdRecover opens the database as serve would (ipnd must be stopped) and
// applies what the journal holds. On a damaged journal it reports the
// damage and fails, unless -skip-damaged: then every readable frame is
// applied, the ids at stake are recorded as lost (never given again;
// show answers 410 for them) and each damaged segment is renamed to
// <segment>.damaged.
func cmdRecover(_ context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newCmdline("recover", getenv, stdout)
	skip := fs.Bool("skip-damaged", false, "apply every readable frame of a damaged journal and record the rest as lost")
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	cfg, err := loadConfig(*fs.config, getenv)
	if err != nil {
		return err
	}
	if cfg.postgres() {
		return errors.New(`recover: the store is PostgreSQL (store.backend = "postgres"): PostgreSQL recovers its own log after a crash, and ipnd keeps no journal file to recover; ipnd recover works on a bbolt store`)
	}
	db, err := store.Open(cfg.Store.Path, store.Options{SkipDamaged: *skip})
	if err != nil {
		if errors.Is(err, store.ErrJournalDamaged) {
			fmt.Fprintln(stdout, "journal damaged; nothing was changed. Re-run with -skip-damaged to go on.")
		}
		return err
	}
	damage, recovered, applyErr, torn := db.Damaged(), db.Recovered(), db.ApplyErr(), db.TornGroups()
	if err := db.Close(); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if applyErr != nil {
		return fmt.Errorf("recover: %w", applyErr)
	}
	for _, d := range torn {
		fmt.Fprintf(stdout, "dropped, may have been acknowledged: %s (ids not given again; acknowledge with POST /api/journal/dropped/ack)\n", d)
	}
	for _, d := range damage {
		fmt.Fprintf(stdout, "lost: %s\n", d)
	}
	if len(damage) > 0 {
		fmt.Fprintf(stdout, "damaged segments moved aside as *.damaged; the lost ids are recorded and never given again\n")
	}
	fmt.Fprintf(stdout, "recovered %d notifications from the journal into %s\n", recovered, cfg.Store.Path)
	return nil
}
