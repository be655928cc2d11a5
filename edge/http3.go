package edge

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// HTTP/3 (RFC 9114) over QUIC (RFC 9000), with quic-go. A QUIC handshake
// is a TLS 1.3 handshake carried in QUIC packets: it runs through the
// same tls.Config hooks as a TCP one (certificate selection by SNI, the
// refusal of unknown names, the signing routes, the session ticket keys
// and their tenant binding), and its requests go through the same Proxy.
// What differs:
//
//   - Limits: a QUIC connection counts towards MaxConns and MaxConnsPerIP
//     together with the TCP ones, from its first Initial packet (when
//     quic-go calls Transport.ConnContext) to its close; past a limit, the
//     attempt is refused with CONNECTION_REFUSED and counted in
//     keyedge_edge_refused_connections_total. A QUIC client's address is
//     not validated before the handshake, so a spoofed one could take
//     another client's slots for a handshake timeout: once half of
//     MaxConns is open, new clients must first prove their address with
//     a Retry (one round trip more). HandshakeTimeout bounds the handshake
//     (quic-go's HandshakeIdleTimeout, half of it), IdleTimeout an idle
//     connection, MaxHeaderBytes a request's header fields; quic-go's
//     flow control bounds the rest (100 concurrent requests per
//     connection).
//   - 0-RTT is off: a request is never replayable.
//   - WebSockets: an RFC 9220 extended CONNECT is served as the HTTP/1.1
//     upgrade it stands for (h3websocket.go).
//   - PROXY protocol is TCP only: behind a UDP load balancer, the client
//     address the limits and the access log see is the balancer's.
//   - Metrics: keyedge_edge_quic_handshakes_total counts QUIC handshakes
//     as keyedge_edge_handshakes_total counts TCP ones;
//     keyedge_proxy_protocol_requests_total{proto="h3"} counts requests;
//     keyedge_edge_open_connections includes QUIC connections.

// HTTP3Options configure HTTP/3. The zero value works.
type HTTP3Options struct {
	// AltSvcMaxAge is how long a client may remember, from an HTTP/1.1 or
	// HTTP/2 response's Alt-Svc field, that HTTP/3 is served [24h].
	AltSvcMaxAge time.Duration
}

// h3State is the Server's HTTP/3 side: the servers ServeHTTP3 runs and
// the Alt-Svc field they advertise.
type h3State struct {
	mu      sync.Mutex // guards servers
	servers []*h3Server

	// altSvc is the Alt-Svc field value, set while a ServeHTTP3 serves and
	// Shutdown has not begun; nil otherwise.
	altSvc atomic.Pointer[[]string]
	// tls is the QUIC handshakes' tls.Config, made from the Server's
	// current one by quicTLSConfig.
	tls atomic.Pointer[h3TLSConfig]
}

// h3TLSConfig is the tls.Config of QUIC handshakes (ALPN h3) and the
// Server's tls.Config it was made from.
type h3TLSConfig struct {
	base, config *tls.Config
}

// h3Server is one ServeHTTP3's QUIC listener and HTTP/3 server.
type h3Server struct {
	ln      *quic.Listener
	http    *http3.Server
	drained chan struct{} // closed when shutdownHTTP3's graceful shutdown has ended
}

// errRefused is why a QUIC connection attempt is refused: a limit, or
// the server is draining. quic-go answers it with CONNECTION_REFUSED.
var errRefused = errors.New("edge: QUIC connection refused")

// ServeHTTP3 serves HTTP/3 on pc, a UDP socket, until Shutdown, and
// while it does, HTTP/1.1 and HTTP/2 responses carry an Alt-Svc field
// advertising pc's port (one ServeHTTP3 per Server, then). Like Serve,
// it returns http.ErrServerClosed after Shutdown, once the connections
// have drained; it closes pc when it returns.
func (s *Server) ServeHTTP3(pc net.PacketConn) error {
	defer pc.Close()
	port, err := udpPort(pc.LocalAddr())
	if err != nil {
		return err
	}
	tr := &quic.Transport{
		Conn:                pc,
		ConnContext:         s.quicConnContext,
		VerifySourceAddress: s.quicVerifySource,
	}
	defer tr.Close()
	ln, err := tr.Listen(&tls.Config{GetConfigForClient: s.quicTLSConfig}, &quic.Config{GetConfigForClient: s.quicConfig})
	if err != nil {
		return fmt.Errorf("edge: failed to listen for QUIC: %w", err)
	}
	limits := s.settings.Load().limits
	srv := &h3Server{ln: ln, drained: make(chan struct{}), http: &http3.Server{
		Handler:        http.HandlerFunc(s.serveHTTP3),
		MaxHeaderBytes: limits.MaxHeaderBytes,
		IdleTimeout:    limits.IdleTimeout,
		Logger:         s.log,
		ConnContext:    s.h3ConnContext,
	}}
	s.h3.mu.Lock()
	if s.shuttingDown() {
		s.h3.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.h3.servers = append(s.h3.servers, srv)
	maxAge := cmp.Or(s.h3opts.AltSvcMaxAge, 24*time.Hour)
	s.h3.altSvc.Store(&[]string{fmt.Sprintf(`h3=":%d"; ma=%d`, port, int(maxAge.Seconds()))})
	s.h3.mu.Unlock()
	err = srv.http.ServeListener(&quicListener{Listener: ln, srv: s})
	if s.shuttingDown() {
		// The connections draining need the transport until they end.
		<-srv.drained
		return http.ErrServerClosed
	}
	s.h3.altSvc.Store(nil) // no longer true
	return err
}

// h3ConnContext is http3.Server's ConnContext: it adds the
// http.ServerContextKey that net/http sets and quic-go does not, so
// that ReverseProxy and serveDirect, seeing a server that recovers
// their panic, abort a response the origin cuts off mid-body (quic-go
// resets the stream) rather than return as if it were complete.
func (s *Server) h3ConnContext(ctx context.Context, _ *quic.Conn) context.Context {
	return context.WithValue(ctx, http.ServerContextKey, s.http)
}

// udpPort is the port of a UDP socket's address, for Alt-Svc.
func udpPort(a net.Addr) (int, error) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil || ap.Port() == 0 {
		return 0, fmt.Errorf("edge: HTTP/3 needs a UDP socket with a port, got %v", a)
	}
	return int(ap.Port()), nil
}

// advertiseHTTP3 adds the Alt-Svc field advertising HTTP/3 to the header
// of an HTTP/1.1 or HTTP/2 response, while HTTP/3 is served.
func (s *Server) advertiseHTTP3(h http.Header) {
	if v := s.h3.altSvc.Load(); v != nil {
		h["Alt-Svc"] = *v
	}
}

// shutdownHTTP3 stops advertising HTTP/3 and begins the graceful
// shutdown of every ServeHTTP3: handshakes in flight and new connection
// attempts are refused, connections get a GOAWAY and close once their
// requests are done. The returned wait returns when they have, or when
// ctx ends, after closing what is left.
func (s *Server) shutdownHTTP3(ctx context.Context) (wait func() error) {
	s.h3.mu.Lock()
	s.h3.altSvc.Store(nil)
	servers := s.h3.servers
	s.h3.servers = nil // a second Shutdown has none left to stop
	s.h3.mu.Unlock()
	errs := make(chan error, len(servers))
	for _, srv := range servers {
		go func() {
			defer close(srv.drained)
			srv.ln.Close()
			errs <- srv.http.Shutdown(ctx)
		}()
	}
	return func() error {
		var err error
		for range servers {
			err = errors.Join(err, <-errs)
		}
		return err
	}
}

// quicTLSConfig is the QUIC listener's GetConfigForClient: the TCP
// listener's current tls.Config, with its certificate selection, curves
// and session ticket hooks, offering ALPN h3; made again when Reload
// replaces that; for a tenant with client authentication, a copy asking
// for its certificates, as over TCP. TLS-ALPN-01 challenges are TCP
// only, so ACME's hook is not asked.
func (s *Server) quicTLSConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	base := s.tlsConfig.Load()
	c := s.h3.tls.Load()
	if c == nil || c.base != base {
		config := base.Clone()
		config.NextProtos = []string{http3.NextProtoH3}
		config.GetConfigForClient = nil
		c = &h3TLSConfig{base, config}
		s.h3.tls.Store(c)
	}
	if cfg := s.clientAuthConfig(hello, c.config); cfg != nil {
		return cfg, nil
	}
	return c.config, nil
}

// quicConfig is the quic.Config of a new connection, with the current
// limits: the handshake, at most HandshakeTimeout (quic-go aborts a
// handshake after twice its idle timeout), an idle connection,
// IdleTimeout. 0-RTT is off.
func (s *Server) quicConfig(*quic.ClientInfo) (*quic.Config, error) {
	limits := s.settings.Load().limits
	return &quic.Config{
		HandshakeIdleTimeout: limits.HandshakeTimeout / 2,
		MaxIdleTimeout:       limits.IdleTimeout,
		Allow0RTT:            false,
	}, nil
}

// quicVerifySource asks new clients to prove their address with a Retry
// once half of MaxConns is open, so spoofed Initial packets cannot hold
// the connection slots of other addresses.
func (s *Server) quicVerifySource(net.Addr) bool {
	return s.open.Load() >= int64(s.settings.Load().limits.MaxConns/2)
}

// quicConn is what the Server knows of one QUIC connection: its slot
// under the limits, and the facts of its handshake for the access log.
type quicConn struct {
	start      time.Time
	client     netip.Prefix // counted in srv.clients; invalid: not counted
	handshaken atomic.Bool  // Accept returned it: its handshake succeeded
	facts      connFacts    // written by the handshake, read by requests after it
}

// quicConnKey is the context key of a QUIC connection's *quicConn: the
// handshake's hooks (ClientHelloInfo.Context) and its requests find it.
type quicConnKey struct{}

// quicConnContext admits a QUIC connection attempt under MaxConns and
// MaxConnsPerIP, or refuses it; an admitted connection is uncounted when
// ctx, which quic-go cancels when the connection ends, is done.
func (s *Server) quicConnContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	if s.shuttingDown() {
		return nil, errRefused
	}
	limits := s.settings.Load().limits
	if n := s.open.Add(1); n > int64(limits.MaxConns) {
		s.open.Add(-1)
		s.refuse(refusedMaxConns, "max_conns", limits.MaxConns)
		return nil, errRefused
	}
	c := &quicConn{start: time.Now()}
	if client, ok := clientPrefix(info.RemoteAddr); ok {
		if !s.clients.acquire(client, limits.MaxConnsPerIP) {
			s.open.Add(-1)
			s.refuse(refusedPerIP, "max_conns_per_ip", limits.MaxConnsPerIP, "client", client.String())
			return nil, errRefused
		}
		c.client = client
	}
	s.metrics.openConns.Inc()
	context.AfterFunc(ctx, func() {
		s.open.Add(-1)
		s.metrics.openConns.Dec()
		if c.client.IsValid() {
			s.clients.release(c.client)
		}
		if !c.handshaken.Load() {
			s.metrics.observeQUICHandshake(quicHandshakeResult(context.Cause(ctx)), 0)
		}
	})
	return context.WithValue(ctx, quicConnKey{}, c), nil
}

// quicConnOf returns the QUIC connection a handshake's or a request's
// context belongs to, or nil.
func quicConnOf(ctx context.Context) *quicConn {
	c, _ := ctx.Value(quicConnKey{}).(*quicConn)
	return c
}

// quicHandshakeResult classifies why a QUIC connection ended before its
// handshake completed, as handshakeResult does for TCP.
func quicHandshakeResult(cause error) string {
	var idle *quic.IdleTimeoutError
	var timeout *quic.HandshakeTimeoutError
	var app *quic.ApplicationError
	switch {
	case errors.As(cause, &idle), errors.As(cause, &timeout):
		return "timeout"
	case errors.As(cause, &app), errors.Is(cause, quic.ErrServerClosed), errors.Is(cause, quic.ErrTransportClosed):
		return "closed"
	}
	return "error"
}

// quicListener is the QUIC listener http3.Server serves: it records each
// connection's finished handshake before its requests are served.
type quicListener struct {
	*quic.Listener
	srv *Server
}

func (l *quicListener) Accept(ctx context.Context) (*quic.Conn, error) {
	conn, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	cs := conn.ConnectionState().TLS
	if c := quicConnOf(conn.Context()); c != nil {
		c.handshaken.Store(true)
		c.facts.handshake = time.Since(c.start)
		l.srv.metrics.observeQUICHandshake("ok", cs.CurveID)
		l.srv.recordResumed(conn.Context(), &cs, &c.facts)
	}
	return conn, nil
}
