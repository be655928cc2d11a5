package edge

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/pires/go-proxyproto"
)

// connFacts are what the access log says about a request's connection:
// facts of its handshake, recorded by the handshake's goroutine (the
// listener's, getCertificate's and the signer's) before the connection
// is handed to net/http, and only read afterwards.
type connFacts struct {
	tenant    string        // of the certificate served; "" for the fallback
	cert      string        // its ID
	route     string        // routeLocal, routeKeyless, routeGeo; "" without a signature (resumed)
	keyServer string        // the key server that signed, for routeKeyless and routeGeo
	handshake time.Duration // accept to finished handshake, the PROXY header included
	trusted   bool          // came through a trusted PROXY protocol upstream: its X-Request-ID is kept

	echOffered bool // the ClientHello offered ECH (for the metrics; not logged)
}

// Signing routes, as the access log names them.
const (
	routeLocal   = "local"   // this node's key
	routeKeyless = "keyless" // a keyless tenant's own key servers
	routeGeo     = "geo"     // the directory's key servers, for a key whose policy excludes this node
)

// connFactsOf returns the facts of r's connection, or nil for a request
// that did not come through a Server's listener.
func connFactsOf(r *http.Request) *connFacts {
	if qc := quicConnOf(r.Context()); qc != nil {
		return &qc.facts
	}
	tc := trackedConnOf(r.Context())
	if tc == nil {
		return nil
	}
	return &tc.facts
}

// trackedConnOf returns the connection of the request whose context is
// ctx, or nil for a request that did not come over TCP through a
// Server's listener.
func trackedConnOf(ctx context.Context) *trackedConn {
	// A *tls.Conn, or a handoffConn wrapping one.
	c, _ := ctx.Value(connKey{}).(interface{ NetConn() net.Conn })
	if c == nil {
		return nil
	}
	tc, _ := c.NetConn().(*trackedConn)
	return tc
}

// signedBy records where a handshake's signature was made.
func (f *connFacts) signedBy(route string, signer any) {
	if f == nil {
		return
	}
	f.route = route
	if k, ok := signer.(interface{ Server() string }); ok {
		f.keyServer = k.Server()
	}
}

var (
	_ interface{ Server() string } = (*keyserver.RemoteKey)(nil)
	_ interface{ Server() string } = (*keyserver.RemoteRSAKey)(nil)
)

// requestIDHeader is the request ID's header field, canonical.
const requestIDHeader = "X-Request-Id"

// maxRequestID bounds a request ID taken from an upstream.
const maxRequestID = 200

// setRequestID makes sure r carries one X-Request-ID, which the origin
// gets and the access log records, and returns it: the upstream's own
// when r came through a trusted upstream (Options.TrustedProxies) and
// it is 1 to 200 visible ASCII characters, else a new random one, 32
// hex digits, replacing whatever the client sent. Like nginx and Caddy,
// the edge does not add it to the response; an origin may. A new ID's
// header value goes in slot, a slice of length 1 the caller owns for
// the request's lifetime, to save an allocation.
func setRequestID(r *http.Request, conn *connFacts, slot []string) string {
	if conn != nil && conn.trusted {
		if v := r.Header[requestIDHeader]; len(v) == 1 && validRequestID(v[0]) {
			return v[0]
		}
	}
	id := newRequestID()
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	slot[0] = id
	r.Header[requestIDHeader] = slot[:1:1]
	return id
}

func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

// newRequestID returns 128 random bits in hex, like nginx's $request_id.
// They need to be unique, not secret: math/rand/v2's generator, seeded
// by the OS, costs nothing next to crypto/rand's system call.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// logRequest writes r's access log record, if the proxy has an access
// log: what the client asked, what it got (w), where it went (route), and
// its connection's handshake.
func (p *Proxy) logRequest(w *proxyWriter, r *http.Request, route *proxyRoute, conn *connFacts, requestID string, start time.Time) {
	if p.accessLog == nil {
		return
	}
	rec := accesslog.Record{
		Time:      start,
		RequestID: requestID,
		Client:    r.RemoteAddr,
		Proto:     "h1",
		Method:    r.Method,
		Host:      r.Host,
		Path:      r.URL.Path,
		Status:    w.code,
		BytesIn:   route.body.count(),
		BytesOut:  w.written,
		Total:     time.Since(start),
		Origin:    route.originTime,
		Error:     route.reason,
	}
	switch r.ProtoMajor {
	case 2:
		rec.Proto = "h2"
	case 3:
		rec.Proto = "h3"
	}
	switch {
	case w.clientGone:
		rec.Status = 0 // whatever the error response said, nobody read it
	case rec.Status == 0:
		rec.Status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	if w.tunnel != nil {
		rec.BytesIn, rec.BytesOut = rec.BytesIn+w.tunnel.read.Load(), rec.BytesOut+w.tunnel.written.Load()
	}
	if route.origin != nil {
		rec.OriginAddr = route.origin.Host
	}
	if cs := r.TLS; cs != nil {
		rec.SNI, rec.TLSVersion, rec.Group, rec.Resumed = cs.ServerName, cs.Version, cs.CurveID, cs.DidResume
	}
	if conn != nil {
		rec.Tenant, rec.Cert, rec.Route, rec.KeyServer, rec.Handshake = conn.tenant, conn.cert, conn.route, conn.keyServer, conn.handshake
	}
	p.accessLog.Log(&rec)
}

// connected records the facts of a finished handshake on conn, raw's
// TLS connection, that the handshake's hooks did not: whether it came
// through a trusted upstream, and recordResumed's.
func (s *Server) connected(ctx context.Context, cs *tls.ConnectionState, raw *trackedConn) {
	if pc, ok := raw.Conn.(*proxyproto.Conn); ok {
		raw.facts.trusted = s.trustedUpstream(pc.Raw().RemoteAddr())
	}
	s.recordResumed(ctx, cs, &raw.facts)
}

// recordResumed records in facts, for a resumed session, which makes no
// certificate choice, the tenant of its name (and the certificate when
// the name has only one).
func (s *Server) recordResumed(ctx context.Context, cs *tls.ConnectionState, facts *connFacts) {
	if !cs.DidResume || cs.ServerName == "" {
		return
	}
	entry, err := s.store.Lookup(ctx, cs.ServerName)
	if err != nil {
		return // the fallback's session, or the keystore failed: no tenant to name
	}
	facts.tenant = entry.Certs[0].Meta.Tenant
	if len(entry.Certs) == 1 {
		facts.cert = entry.Certs[0].ID
	}
}
