package main

import (
	"context"
	"net"

	"github.com/cloudflare/tableflip"
)

// sockets opens the listening sockets, or takes over those of the
// process this one replaces (SIGUSR2, tableflip).
type sockets struct {
	fds *tableflip.Fds // nil: every socket is new
}

// Listen opens a TCP (or Unix) listener on addr with lc, whose
// keep-alive settings its accepted connections get. A socket taken over
// from the previous process gets them too: Go opens such a socket
// (net.FileListener) with its default keep-alive, so each connection
// accepted on it is set to lc's, one setsockopt call more per
// connection until the next fresh start.
func (s sockets) Listen(lc *net.ListenConfig, network, addr string) (net.Listener, error) {
	listen := func(network, addr string) (net.Listener, error) {
		return lc.Listen(context.Background(), network, addr)
	}
	if s.fds == nil {
		return listen(network, addr)
	}
	ln, err := s.fds.Listener(network, addr)
	switch {
	case err != nil:
		return nil, err
	case ln == nil:
		return s.fds.ListenWithCallback(network, addr, listen)
	case lc.KeepAlive == 0 && !lc.KeepAliveConfig.Enable:
		return ln, nil // Go's default, which it has
	}
	return keepAliveListener{ln, keepAliveOf(lc)}, nil
}

// ListenPacket opens a UDP socket on addr, or takes over the previous
// process's.
func (s sockets) ListenPacket(network, addr string) (net.PacketConn, error) {
	if s.fds == nil {
		return net.ListenPacket(network, addr)
	}
	return s.fds.ListenPacket(network, addr)
}

// keepAliveOf is the keep-alive lc gives accepted TCP connections (as
// net.ListenConfig documents it).
func keepAliveOf(lc *net.ListenConfig) net.KeepAliveConfig {
	switch {
	case lc.KeepAliveConfig.Enable:
		return lc.KeepAliveConfig
	case lc.KeepAlive < 0:
		return net.KeepAliveConfig{}
	}
	return net.KeepAliveConfig{Enable: true, Idle: lc.KeepAlive}
}

// keepAliveListener sets keepAlive on the TCP connections it accepts.
type keepAliveListener struct {
	net.Listener
	keepAlive net.KeepAliveConfig
}

// Accept returns the next connection with keepAlive set. Setting it
// fails only on a connection already reset, whose first read tells the
// server so: it is returned as it is.
func (l keepAliveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		if l.keepAlive.Enable {
			tc.SetKeepAliveConfig(l.keepAlive)
		} else {
			tc.SetKeepAlive(false) // SetKeepAliveConfig would also set the timers, unused
		}
	}
	return c, err
}
