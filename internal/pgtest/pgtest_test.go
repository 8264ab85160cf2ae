package pgtest

import (
	"net"
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
