package store

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back, but
// not its times.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// preallocate reserves size bytes for f, so that later writes inside them
// do not change the file's size. A file system without fallocate gets a
// plain file instead.
func preallocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fallocate(int(fd), 0, 0, size) }); err != nil {
		return err
	}
	if serr == syscall.EOPNOTSUPP {
		return nil
	}
	return serr
}
