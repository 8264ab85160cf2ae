// Package tmpfs gives tests a small file system of their own, to fill up:
// a tmpfs mounted on a temporary directory (needs root, as CI has).
package tmpfs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes on a new directory and unmounts it
// when the test ends. It fails the test, with the reason, where mounting
// is not possible (not root, no mount command): the test does not pass
// by skipping.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	return mount(t, "tmpfs", "size="+strconv.FormatInt(size, 10))
}

// Unsized mounts a ramfs, a file system that reports no size (0 blocks,
// 0 free) yet takes what is written, on a new directory and unmounts it
// when the test ends.
func Unsized(t testing.TB) string {
	t.Helper()
	return mount(t, "ramfs", "mode=700")
}

func mount(t testing.TB, fstype, opts string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", fstype, "-o", opts, fstype, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("this test needs a file system of its own: mount -t %s failed (run the tests as root): %v: %s", fstype, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Fill writes a new file in dir until the file system is full, then gives
// back leave bytes, and returns a function that removes the file.
func Fill(t testing.TB, dir string, leave int64) (free func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		t.Fatal(err)
	}
	path := f.Name()
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var size int64
	for {
		n, err := f.Write(chunk)
		size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if leave > 0 {
		if err := f.Truncate(max(size-leave, 0)); err != nil {
			t.Fatal(err)
		}
	}
	return func() { os.Remove(path) }
}
