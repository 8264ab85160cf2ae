package main

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestListenersBoundUnackedData: the sockets the daemon accepts carry
// TCP_USER_TIMEOUT, so that a peer whose machine vanished (an event
// stream's follower, a download) is dropped after unackedTimeout rather
// than after ~15 minutes of retransmissions.
func TestListenersBoundUnackedData(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Log("TCP_USER_TIMEOUT is Linux's; elsewhere the system's limit applies")
		return
	}
	ln, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got time.Duration
	var gerr error
	raw.Control(func(fd uintptr) { got, gerr = unackedTimeoutOf(fd) })
	if gerr != nil || got != unackedTimeout {
		t.Fatalf("accepted socket's TCP_USER_TIMEOUT = %v (%v), want %v", got, gerr, unackedTimeout)
	}
}
