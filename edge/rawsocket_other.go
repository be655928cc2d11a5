//go:build !linux

package edge

import "net"

// rawSocket is Linux's (rawsocket_linux.go); elsewhere connections are
// read and written as they are.
type rawSocket struct{ net.Conn }

func newRawSocket(net.Conn) *rawSocket { return nil }
