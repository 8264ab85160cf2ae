package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRestoreCrashBeforeInstallGivesNoIDAgain: a restore cut short (a
// crash, Ctrl-C) after it moved the previous files aside and before it
// renamed the restored copy into place must not leave the data
// directory without a database: the next start would create an empty
// one and give the ids 1, 2, ... again.
func TestRestoreCrashBeforeInstallGivesNoIDAgain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipnd.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN := func(db *DB, from, n int) uint64 {
		var id uint64
		for i := from; i < from+n; i++ {
			if id, _, err = db.Append(context.Background(), sample("test", fmt.Sprintf("k%d", i), "{}")); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	appendN(db, 0, 3)
	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Backup(f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	last := appendN(db, 3, 3)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	restoreCrashPoint = func(at string) {
		if at == "install" {
			panic(crash)
		}
	}
	t.Cleanup(func() { restoreCrashPoint = nil })
	func() {
		defer func() {
			if p := recover(); p != crash {
				t.Fatalf("restore did not reach its install step: %v", p)
			}
		}()
		Restore(path, backup, time.Now())
	}()
	restoreCrashPoint = nil
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if id := appendN(db, 100, 1); id <= last {
		t.Fatalf("after a restore cut short, a new notification got id %d: ids up to %d were given already", id, last)
	}
}

// TestRestoreWithoutDatabaseSaysIDsUnknown: restored where there is no
// database and no journal (the data directory was moved away, or a new
// machine), restore cannot know which ids the lost database gave after
// the backup: it must say so (Unknown), not pass them as never given.
func TestRestoreWithoutDatabaseSaysIDsUnknown(t *testing.T) {
	db := mustOpen(t)
	if _, _, err := db.Append(context.Background(), sample("test", "k1", "{}")); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Backup(f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, err := Restore(filepath.Join(t.TempDir(), "ipnd.db"), backup, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Unknown {
		t.Errorf("restored into an empty directory: Unknown is false, so nothing warns that ids after %d may be given again", r.Backup.Sequence)
	}
}
