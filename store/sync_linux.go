package store

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back, but
// not its times.
func fdatasync(f *os.File) error {
	return withFD(f, func(fd int) error { return syscall.Fdatasync(fd) })
}

// preallocate reserves size bytes for f, so that later writes inside them
// do not change the file's size. A file system without fallocate gets a
// plain file instead.
func preallocate(f *os.File, size int64) error {
	err := withFD(f, func(fd int) error { return syscall.Fallocate(fd, 0, 0, size) })
	if err == syscall.EOPNOTSUPP {
		return nil
	}
	return err
}

// withFD runs fn on f's descriptor (without putting f in blocking mode, as
// f.Fd would).
func withFD(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// unlinked reports whether the file st describes has no name left.
func unlinked(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Nlink == 0
}

// freeBytes is the room left for an unprivileged writer on dir's file
// system; not known (false) on one that reports no size at all (ramfs,
// a tmpfs mounted with size=0, some FUSE file systems report 0 blocks).
func freeBytes(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Blocks == 0 {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
