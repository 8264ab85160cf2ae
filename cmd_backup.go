package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"ipnd/store"
)

var backupCommand = command{
	name:    "backup",
	args:    "[flags] FILE",
	summary: "write a consistent copy of the database",
	run:     cmdBackup,
}

func cmdBackup(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("backup", getenv, stdout)
	if err := fs.parse(args, 1, 1, "FILE"); err != nil {
		return err
	}
	dst := fs.Arg(0)
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	// No clock bounds the whole download: a multi-GB database takes as
	// long as it takes (ipnd bounds its snapshot by what it holds back).
	// A download that stops moving for backupIdle is given up.
	hc := *c.http
	hc.Timeout = 0
	c.http = &hc
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := c.get(ctx, "/api/backup")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := &idleReader{r: resp.Body, timer: time.AfterFunc(backupIdle, cancel), idle: backupIdle}
	defer body.timer.Stop()
	n, fi, err := writeBackup(dst, body, resp.ContentLength)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes): %s\n", dst, n, fi)
	return nil
}

// writeBackup writes the database copy r (of length bytes; -1: unknown)
// to dst.partial, syncs it, checks that it opens as an ipnd database and
// only then renames it to dst, so that a failed download never replaces
// an older good backup. On an error dst.partial is removed.
func writeBackup(dst string, r io.Reader, length int64) (int64, store.FileInfo, error) {
	tmp := dst + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, store.FileInfo{}, err
	}
	n, err := io.Copy(f, r)
	if err == nil && length >= 0 && n != length {
		err = fmt.Errorf("got %d of %d bytes", n, length)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var fi store.FileInfo
	if err == nil {
		// Check what was written before it replaces an older good backup.
		if fi, err = store.Inspect(tmp); err != nil {
			err = fmt.Errorf("what was written does not check: %w", err)
		}
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, store.FileInfo{}, err
	}
	return n, fi, nil
}

// backupIdle is how long a backup download may receive nothing.
const backupIdle = 2 * time.Minute

// idleReader pushes timer back by idle on every read that returns bytes.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	idle  time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.timer.Reset(i.idle)
	}
	return n, err
}
