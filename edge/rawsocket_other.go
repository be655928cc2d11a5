//go:build !linux

package edge

import (
	"net"
	"sync/atomic"
	"time"
)

// rawSocket is Linux's (rawsocket_linux.go); elsewhere connections are
// read and written as they are.
type rawSocket struct {
	net.Conn
	waiting atomic.Bool
}

func newRawSocket(net.Conn) *rawSocket { return nil }

// writeBounded is Linux's; newRawSocket never returns one here.
func (s *rawSocket) writeBounded(p []byte, _ time.Duration) (int, error) { return s.Write(p) }
