package main

import (
	"context"
	"fmt"
	"io"
	"os"

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
	resp, err := c.get(ctx, "/api/backup")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	tmp := dst + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	n, err := io.Copy(f, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
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
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes): %s\n", dst, n, fi)
	return nil
}
