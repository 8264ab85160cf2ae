//go:build !linux

package store

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

// preallocate does nothing where fallocate is not available: the segment
// grows as it is written.
func preallocate(*os.File, int64) error { return nil }
