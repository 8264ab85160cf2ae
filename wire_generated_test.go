package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestGeneratedLeftoversOnlyInDataDir: the temporary files a crash left
// while writing a generated secret are removed from the data directory
// only. A data directory whose name holds glob characters ("*", "?",
// "[") must not make ipnd remove another directory's files (another
// instance's secret being written beside it).
func TestGeneratedLeftoversOnlyInDataDir(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "d*")
	other := filepath.Join(base, "dx")
	for _, d := range []string{data, other} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	theirs := filepath.Join(other, ".admin.token.tmp-42")
	ours := filepath.Join(data, ".admin.token.tmp-7")
	for _, p := range []string{theirs, ours} {
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &Config{}
	cfg.Store.Path = filepath.Join(data, "ipnd.db")
	cfg.Admin.TokenFile = filepath.Join(data, "admin.token")
	if err := ensureGenerated(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(theirs); err != nil {
		t.Errorf("a file of another directory was removed: %v", err)
	}
	if _, err := os.Stat(ours); err == nil {
		t.Errorf("the leftover in the data directory is still there")
	}
	if b, err := os.ReadFile(cfg.Admin.TokenFile); err != nil || len(b) < 32 {
		t.Errorf("admin.token: %q, %v", b, err)
	}
}
