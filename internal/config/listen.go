package config

import "net"

// ClientListenConfig is how the sockets that accept client connections
// (listen, http_listen) are opened: without TCP keep-alive probes unless
// limits.tcp_keepalive is set. Go turns probes on for every accepted
// connection by default, four setsockopt calls each on Linux; an edge
// does not need them: its timeouts (handshake, read_header, idle,
// body_read, tunnel_idle) close a connection whose client went away in
// every state where it waits for the client, as nginx's do (its
// so_keepalive is off by default). What they do not bound is a response
// the origin streams with long pauses (server-sent events, long polls)
// to a client gone without a FIN or RST: tcp_keepalive is for edges
// that serve those. TCP_NODELAY stays on (Go's default).
func (c *Edge) ClientListenConfig() *net.ListenConfig {
	if c.Limits.TCPKeepAlive == 0 {
		return &net.ListenConfig{KeepAlive: -1}
	}
	return &net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: c.Limits.TCPKeepAlive}}
}
