package pgtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestPGClusterStartsStopsAndRestarts(t *testing.T) {
	c := Start(t)
	dial := func() error {
		conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)))
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("server not reachable: %v", err)
	}
	c.Stop()
	if err := dial(); err == nil {
		t.Fatal("server still reachable after Stop")
	}
	c.Start()
	if err := dial(); err != nil {
		t.Fatalf("server not reachable after restart: %v", err)
	}
}

// A cluster whose test binary died without its cleanups (a panic,
// -timeout, kill -9) is stopped and removed by the next Start's sweep;
// one whose binary runs is left alone.
func TestPGSweepStopsOrphans(t *testing.T) {
	c := Start(t)
	dial := func() error {
		conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)))
		if err == nil {
			conn.Close()
		}
		return err
	}
	sweep(c.bin, c.uid, c.gid)
	if err := dial(); err != nil {
		t.Fatalf("the sweep stopped a cluster whose process runs: %v", err)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.root, ownerFile), []byte(strconv.Itoa(gone.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sweep(c.bin, c.uid, c.gid)
	if _, err := os.Stat(c.root); !os.IsNotExist(err) {
		t.Errorf("an orphaned cluster's directory is still there: %v", err)
	}
	if err := dial(); err == nil {
		t.Error("an orphaned cluster still answers")
	}
}
