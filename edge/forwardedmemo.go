package edge

import (
	"net"
	"net/http"
)

// forwardedMemo holds the client address and Forwarded element that
// proxyRewriteTo last derived, and what it derived them from. The
// HTTP/1.1 loop keeps one per connection, whose client address does not
// change: its requests parse the address and build the Forwarded value
// (an allocation) once, not once each. It is used by one request at a
// time.
type forwardedMemo struct {
	remoteAddr, host string // of the request the values are for
	tls              bool
	valid            bool

	ip    string // the host part of remoteAddr, when hasIP
	hasIP bool
	value string // proxyForwarded's
}

// of returns m, up to date for r.
func (m *forwardedMemo) of(r *http.Request) *forwardedMemo {
	tls := r.TLS != nil
	if m.valid && m.remoteAddr == r.RemoteAddr && m.host == r.Host && m.tls == tls {
		return m
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	*m = forwardedMemo{remoteAddr: r.RemoteAddr, host: r.Host, tls: tls, valid: true,
		ip: ip, hasIP: err == nil, value: proxyForwarded(r)}
	return m
}
