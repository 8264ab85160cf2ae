package main

import (
	"context"
	"net"
	"syscall"
	"time"
)

// unackedTimeout bounds how long a connection may hold data its peer
// has not acknowledged (Linux TCP_USER_TIMEOUT, inherited by accepted
// sockets): a follower of the event stream, a download or a gateway
// whose machine vanished is dropped after it instead of after Linux's
// default of about 15 minutes of retransmissions. A slow but live reader
// acknowledges what it reads and is not affected.
const unackedTimeout = 60 * time.Second

// listenTCP opens a TCP listener whose accepted connections carry the
// unacknowledged-data timeout where the system has one.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setUnackedTimeout(fd, unackedTimeout) }); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}
