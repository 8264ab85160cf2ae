package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"ipnd/ipn"
)

// TestImportFailingAfterAChunkLeavesNoFile: a copy that fails after
// some of its transactions have committed leaves no file; one that
// succeeds holds every record, and a file there is refused.
func TestImportFailingAfterAChunkLeavesNoFile(t *testing.T) {
	defer func(n int) { importChunk = n }(importChunk)
	importChunk = 2
	path := filepath.Join(t.TempDir(), "new.db")
	fill := func(fail bool) func(w *Importer) error {
		return func(w *Importer) error {
			for id := uint64(1); id <= 5; id++ {
				n := &ipn.Notification{ID: id, Gateway: "test", DedupKey: "k" + string(rune('0'+id)), ReceivedAt: time.Unix(0, int64(id)).UTC(), Body: []byte("{}")}
				if err := w.Notification(n, nil); err != nil {
					return err
				}
			}
			if fail {
				return errors.New("the source went away")
			}
			return w.Counters(7, 5, 0)
		}
	}
	if err := Import(path, fill(true)); err == nil {
		t.Fatal("Import whose fill fails = nil")
	}
	if left, _ := filepath.Glob(path + "*"); len(left) > 0 {
		t.Fatalf("files left by the failed copy: %v", left)
	}
	if err := Import(path, fill(false)); err != nil {
		t.Fatal(err)
	}
	if err := Import(path, fill(false)); err == nil {
		t.Error("Import onto an existing file = nil")
	}
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for id := uint64(1); id <= 5; id++ {
		if _, _, err := db.Get(id); err != nil {
			t.Errorf("notification %d: %v", id, err)
		}
	}
	if db.Cursor() != 5 {
		t.Errorf("cursor %d, want 5", db.Cursor())
	}
}
