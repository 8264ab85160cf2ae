//go:build !linux

package store

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

// preallocate does nothing where fallocate is not available: the segment
// grows as it is written.
func preallocate(*os.File, int64) error { return nil }

// unlinked reports whether the file st describes has no name left; not
// known here.
func unlinked(os.FileInfo) bool { return false }

// freeBytes is the room left on dir's file system; not known here.
func freeBytes(string) (int64, bool) { return 0, false }
