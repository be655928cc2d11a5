package config

import "net"

// ClientListenConfig is how the sockets that accept client connections
// (listen, http_listen) are opened: without TCP keep-alive probes unless
// limits.tcp_keepalive is set. Go turns probes on for every accepted
// connection by default, four setsockopt calls each on Linux; an edge
// does not need them: its timeouts (handshake, read_header, idle,
// body_read, tunnel_idle) close a connection whose client went away
// while keyedge waits to read from it, as nginx's do (its so_keepalive
// is off by default). Two states are not bounded by a timeout of
// keyedge's: a response the origin streams with long pauses (server-sent
// events, long polls) and an HTTP/2 stream waiting for the client's
// flow-control window. A client gone from those without a FIN or RST
// is noticed when keyedge next writes to it, whose retransmissions the
// kernel gives up after minutes (net.ipv4.tcp_retries2); with
// tcp_keepalive, after the idle time and nine unanswered probes 15s
// apart. TCP_NODELAY stays on (Go's default).
func (c *Edge) ClientListenConfig() *net.ListenConfig {
	if c.Limits.TCPKeepAlive == 0 {
		return &net.ListenConfig{KeepAlive: -1}
	}
	return &net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: c.Limits.TCPKeepAlive}}
}
