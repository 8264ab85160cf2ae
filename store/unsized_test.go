package store

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"ipnd/internal/tmpfs"
)

// TestUnsizedFileSystem: on a file system that reports no size at all
// (ramfs: 0 blocks, 0 free), ipnd does not take "0 bytes free" for a
// full disk: it is writable, its segments are full-sized and a backup is
// not refused. Before, Writable said ENOSPC, every segment was the
// smallest and every backup was refused.
func TestUnsizedFileSystem(t *testing.T) {
	dir := tmpfs.Unsized(t)
	if _, ok := freeBytes(dir); ok {
		t.Fatal("freeBytes claims to know the room left on ramfs")
	}
	db := openAt(t, filepath.Join(dir, "ipnd.db"), Options{})
	defer db.Close()
	if _, _, err := db.Append(context.Background(), sample("g", "1", "x")); err != nil {
		t.Fatal(err)
	}
	if err := db.Writable(); err != nil {
		t.Fatalf("Writable on ramfs = %v", err)
	}
	var buf bytes.Buffer
	if _, err := db.Backup(&buf, nil); err != nil {
		t.Fatalf("Backup on ramfs = %v", err)
	}
	if buf.Len() == 0 {
		t.Fatal("empty backup")
	}
}
