package edge

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
)

// ProxyOptions tunes a Proxy. The zero value is ready to use: a zero field
// gets the default in brackets.
type ProxyOptions struct {
	// OriginTimeout bounds the wait for an origin's response headers once
	// the request, body included, has been sent. A slower origin gets the
	// client a 504. It does not bound the response body, which streams
	// for as long as the origin sends it (downloads, server-sent events,
	// WebSockets). [30s]
	OriginTimeout time.Duration

	// DialTimeout bounds connecting to an origin and, separately, the
	// TLS handshake with an https origin. A connection that cannot be
	// made in time gets the client a 502. [5s]
	DialTimeout time.Duration

	// MaxIdleConnsPerHost is how many idle connections are kept for
	// each origin host, so busy origins reuse connections. Past it, each
	// request in flight beyond the idle ones costs a dial and a close:
	// HTTP/2 clients multiplex many requests per connection, so a busy
	// origin easily has a few hundred in flight. [256]
	MaxIdleConnsPerHost int

	// IdleConnTimeout is how long an idle origin connection is kept
	// before it is closed. [90s]
	IdleConnTimeout time.Duration

	// TunnelIdleTimeout closes a connection switched to another
	// protocol (WebSocket) once no byte has passed either way for this
	// long, as IdleTimeout does to idle keep-alive connections. [5m]
	TunnelIdleTimeout time.Duration

	// BodyReadTimeout bounds the wait for each read of a request body,
	// like nginx's client_body_timeout: a client that sends no byte of
	// its body for this long gets a 408 (or, once the origin's response
	// has begun, its response cut off), and the origin request it was
	// streaming into is aborted, releasing that origin connection. It
	// needs read deadlines from the server (net/http's HTTP/1 and
	// HTTP/2 have them). [60s]
	BodyReadTimeout time.Duration

	// OriginRootCAs are the certificate authorities trusted to sign
	// https origins' certificates. [system roots]
	OriginRootCAs *x509.CertPool

	// Logger receives origin failures at Warn, with the request's host,
	// the origin and the error; client-side outcomes (no tenant for the
	// host, misdirected, malformed or refused requests, clients going
	// away) at Debug. [slog.Default()]
	Logger *slog.Logger
}

// An OriginFunc returns the origin URL for a request: scheme http or
// https, host[:port] and an optional base path that the request's path is
// joined to. When the request's host has no tenant it returns an error
// wrapping ErrNoOrigin (the client gets a 404); when the host is not
// served on the connection the request came in on, an error wrapping
// ErrMisdirected (a 421, so the client retries on a new connection). Any
// other error gets the client a 502.
//
// An OriginFunc is called for every request, from many goroutines at once.
type OriginFunc func(r *http.Request) (*url.URL, error)

var (
	// ErrNoOrigin reports that no tenant serves the request's host.
	ErrNoOrigin = errors.New("edge: no origin for host")

	// ErrMisdirected reports that the request's host is served, but not
	// on the connection the request arrived on: for instance an HTTP/2
	// connection whose certificate does not cover the host.
	ErrMisdirected = errors.New("edge: host not served on this connection")
)

// Proxy is the edge's reverse proxy: it forwards each request to the
// origin its OriginFunc names (a Server's: one of the tenant's origin
// pool, originpool.go), streaming bodies both ways, over one pool of
// origin connections shared by all tenants but those with origin TLS
// settings or timeouts of their own.
//
// The origin sees X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto and
// an RFC 7239 Forwarded header describing the client, and never the
// client's own values of those headers, so a client cannot spoof them.
// It also sees an X-Request-ID: the client's own only when the request
// came through a trusted PROXY protocol upstream (Options.TrustedProxies),
// else a new random one; the access log records it.
// The Host header is the origin's host. WebSocket and other HTTP/1.1
// upgrades pass through, but for h2c's, which is removed; an upgraded
// connection closes after TunnelIdleTimeout without traffic.
//
// The proxy answers some requests itself: TRACE and TRACK get a 405; an
// HTTP/2 request whose Host conflicts with its :authority, or that has
// conflicting content-length values, and a request naming no host get a
// 400, and so does a request whose body breaks its framing before the
// origin has answered. A request whose body stops arriving for
// BodyReadTimeout gets a 408, and its origin request is aborted. After a
// request with a chunked HTTP/1 body, or a 408, the connection closes
// (RFC 9112, section 6.1).
//
// A Proxy is safe for concurrent use.
type Proxy struct {
	origin      OriginFunc // NewProxy's; nil for a Server's proxy, which has tenant
	tenant      tenantFunc
	tunnelIdle  time.Duration // TunnelIdleTimeout
	bodyTimeout time.Duration // BodyReadTimeout
	log         *slog.Logger
	metrics     *proxyMetrics
	transport   *http.Transport   // shared by all tenants; Close drains it
	fast        *originClient     // http:// origins' bodiless idempotent requests; Close drains it too
	defaults    *originTransports // fast and transport, for pools without settings of their own

	// Origin pools (originpool.go): the health book, shared with the
	// proxies replacing this one on reload; tenants' own transports; and
	// the pool of NewProxy's last origin, so a fixed OriginFunc costs no
	// pool per request.
	health           *healthBook
	tenantTransports *transportCache
	last             atomic.Pointer[originPool]
	rp               *httputil.ReverseProxy
	accessLog        *accesslog.Logger // nil: none; set by NewServer before serving
	streams          *streamWatch      // the Server's, bounding HTTP/2 responses' writes; nil: none (NewProxy's)
}

// proxyFlushInterval bounds how long response bytes wait in the server's
// write buffer when the origin sent a Content-Length. Responses of unknown
// length, server-sent events included, are flushed on every write anyway.
const proxyFlushInterval = 100 * time.Millisecond

// proxyMinIdleConns is the floor of the total idle origin connections
// kept, across all origins: enough for many busy origins, few enough
// (each costs a descriptor, and on http.Transport two goroutines) that a million tenants
// cannot exhaust the node.
const proxyMinIdleConns = 4096

// NewProxy returns a Proxy that sends each request to the origin named by
// origin.
func NewProxy(opts ProxyOptions, origin OriginFunc) *Proxy {
	p := newProxy(opts, newProxyMetrics(), nil)
	p.origin = origin
	return p
}

// newTenantProxy returns a Proxy sending each request to the origins of
// the keystore certificate tenant finds for it.
func newTenantProxy(opts ProxyOptions, tenant tenantFunc) *Proxy {
	p := newProxy(opts, newProxyMetrics(), nil)
	p.tenant = tenant
	return p
}

// withOptions returns a Proxy with opts, p's OriginFunc (or tenantFunc),
// p's metrics and health book, so a reload keeps counting in the series
// registered once.
func (p *Proxy) withOptions(opts ProxyOptions) *Proxy {
	np := newProxy(opts, p.metrics, p.health)
	np.origin, np.tenant, np.streams = p.origin, p.tenant, p.streams
	return np
}

// newProxy returns a Proxy with opts, metrics and health (nil: a new
// book), that has yet to be given its OriginFunc or tenantFunc.
func newProxy(opts ProxyOptions, metrics *proxyMetrics, health *healthBook) *Proxy {
	opts = opts.withDefaults()
	if health == nil {
		health = newHealthBook(opts.Logger)
	}
	p := &Proxy{tunnelIdle: opts.TunnelIdleTimeout, bodyTimeout: opts.BodyReadTimeout, log: opts.Logger, metrics: metrics, health: health}
	maxIdle := max(proxyMinIdleConns, opts.MaxIdleConnsPerHost)
	p.transport = newStdTransport(opts, &tls.Config{RootCAs: opts.OriginRootCAs, MinVersion: tls.VersionTLS12}, maxIdle)
	p.fast = newOriginClient(opts, maxIdle)
	p.defaults = &originTransports{fast: p.fast, std: p.transport}
	p.tenantTransports = newTransportCache(opts, health.metrics)
	p.rp = &httputil.ReverseProxy{
		Rewrite:       proxyRewrite,
		Transport:     proxyTimedTransport{p},
		FlushInterval: proxyFlushInterval,
		BufferPool:    new(proxyBufferPool),
		ErrorHandler:  p.handleError,
		// ReverseProxy's own messages (body copy errors) repeat what
		// record logs with the host, so they are kept at Debug.
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return p
}

// newStdTransport returns the http.Transport of origin requests the
// fast path does not serve, keeping at most maxIdle idle connections.
func newStdTransport(opts ProxyOptions, tlsConfig *tls.Config, maxIdle int) *http.Transport {
	dialer := &net.Dialer{Timeout: opts.DialTimeout}
	return &http.Transport{
		// No Proxy: origins are reached directly, whatever HTTP_PROXY says.
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   opts.DialTimeout,
		ForceAttemptHTTP2:     true, // for https origins; a custom dialer and TLS config would disable it
		MaxIdleConns:          maxIdle,
		MaxIdleConnsPerHost:   opts.MaxIdleConnsPerHost,
		IdleConnTimeout:       opts.IdleConnTimeout,
		ResponseHeaderTimeout: opts.OriginTimeout,
		ExpectContinueTimeout: 1 * time.Second,
		// Pass bodies through as the origin encoded them rather than
		// asking for gzip and decompressing on the client's behalf.
		DisableCompression: true,
	}
}

// withDefaults returns o with every zero (or negative) field set to its
// default.
func (o ProxyOptions) withDefaults() ProxyOptions {
	o.OriginTimeout = cmp.Or(max(o.OriginTimeout, 0), 30*time.Second)
	o.DialTimeout = cmp.Or(max(o.DialTimeout, 0), 5*time.Second)
	o.MaxIdleConnsPerHost = cmp.Or(max(o.MaxIdleConnsPerHost, 0), 256)
	o.IdleConnTimeout = cmp.Or(max(o.IdleConnTimeout, 0), 90*time.Second)
	o.TunnelIdleTimeout = cmp.Or(max(o.TunnelIdleTimeout, 0), 5*time.Minute)
	o.BodyReadTimeout = cmp.Or(max(o.BodyReadTimeout, 0), 60*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// proxyRouteKey is the request context key under which ServeHTTP hands
// a *proxyRoute to proxyRewrite and handleError.
type proxyRouteKey struct{}

// proxyRoute is where a request goes, and the host it asked for (the
// outbound request's Host is the origin's), and how it went there.
type proxyRoute struct {
	origin *url.URL      // nil until chosen: target's URL
	pool   *originPool   // the tenant's origins; nil until found
	target *originTarget // the origin of pool the request went to
	in     *url.URL      // the client's request URL, to send it to another origin
	host   string
	body   *clientBody // nil without a request body

	// requestID is the X-Request-Id the origin gets (setRequestID), set
	// again on the outbound request: a client may name the field in
	// Connection, and hop-by-hop removal would drop it.
	requestID []string

	originTime time.Duration // until the origin's response header
	reason     string        // why the request failed (proxyReason*); "" if it did not
}

// ServeHTTP forwards r to its origin and copies the origin's response to
// w. When there is no response to copy, the client gets a short plain-text
// error naming the status and the cause, never the origin's address or an
// internal error.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.serve(w, r, nil)
}

// tenantLookup is what a tenantFunc returned for a request.
type tenantLookup struct {
	cert *keystore.Cert
	err  error
}

// serveTenant is ServeHTTP for a request whose tenant the caller has
// looked up with the Proxy's tenantFunc (the Server's handler, which
// needs it first for the tenant HTTP layer): one keystore lookup per
// request instead of two.
func (p *Proxy) serveTenant(w http.ResponseWriter, r *http.Request, c *keystore.Cert, err error) {
	p.serve(w, r, &tenantLookup{cert: c, err: err})
}

// serve is ServeHTTP, with r's tenant already looked up unless looked
// is nil.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, looked *tenantLookup) {
	ex := p.track(w, r)
	defer ex.finish()
	pw, route := &ex.w, &ex.route

	if err := checkRequest(r); err != nil {
		reason := proxyReasonBadRequest
		if errors.Is(err, errMethodNotAllowed) {
			reason = proxyReasonNotAllowed
		}
		p.fail(pw, r, reason, route, err)
		return
	}
	var pool *originPool
	var err error
	if looked != nil {
		pool, err = p.tenantPool(looked.cert, looked.err)
	} else {
		pool, err = p.resolve(r)
	}
	if err != nil {
		reason := proxyReasonOther
		switch {
		case errors.Is(err, ErrNoOrigin):
			reason = proxyReasonNoOrigin
		case errors.Is(err, ErrMisdirected):
			reason = proxyReasonMisdirected
		}
		p.fail(pw, r, reason, route, err)
		return
	}

	route.setTarget(pool, pool.pick(nil))
	p.forward(ex, r)
}

// serveFast serves r, which direct accepts for target, of pool, and
// checkRequest lets through, from the HTTP/1.1 connection loop
// (h1conn.go): ServeHTTP without the checks and the origin lookup the
// loop has done, in the loop's exchange ex, reused from one request to
// the next, with the connection's Forwarded values in memo.
func (p *Proxy) serveFast(ex *proxyExchange, memo *forwardedMemo, w http.ResponseWriter, r *http.Request, pool *originPool, target *originTarget) {
	p.trackIn(ex, w, r)
	ex.fwdMemo = memo
	defer ex.finish()
	ex.route.setTarget(pool, target)
	p.forward(ex, r)
}

// setTarget records that the request goes to target, of pool.
func (route *proxyRoute) setTarget(pool *originPool, target *originTarget) {
	route.pool, route.target, route.origin = pool, target, target.url
}

// A tenantFunc finds the keystore certificate whose record names the
// origins of a request's host, with the errors an OriginFunc returns.
type tenantFunc func(r *http.Request) (*keystore.Cert, error)

// resolve returns the origin pool of a request, with the errors an
// OriginFunc returns, and the pool's own when it cannot be used.
func (p *Proxy) resolve(r *http.Request) (*originPool, error) {
	if p.tenant != nil {
		return p.tenantPool(p.tenant(r))
	}
	u, err := p.origin(r)
	if err == nil {
		err = proxyCheckOrigin(u)
	}
	if err != nil {
		return nil, err
	}
	if last := p.last.Load(); last != nil && last.targets[0].url == u {
		return last, nil
	}
	pool := singlePool(u, p.defaults)
	p.last.Store(pool)
	return pool, nil
}

// tenantPool is resolve given what the tenantFunc returned.
func (p *Proxy) tenantPool(c *keystore.Cert, err error) (*originPool, error) {
	if err != nil {
		return nil, err
	}
	pool := p.pool(c)
	return pool, pool.err
}

// forward sends r to its route's origin and copies the response to the
// client.
func (p *Proxy) forward(ex *proxyExchange, r *http.Request) {
	pw, route := &ex.w, &ex.route
	w := pw.ResponseWriter
	stripH2C(r.Header)
	// ReverseProxy, and serveDirect, panic with http.ErrAbortHandler when
	// the response body cannot be copied, because the client went away
	// or the origin failed mid-body; finished stays false then.
	finished := false
	defer func() {
		if !finished {
			p.record(r.Context(), proxyAbortReason(r, route), route, errProxyAborted)
		}
	}()
	if direct(r, route.origin) {
		p.serveDirect(ex, r)
		finished = true
		return
	}
	// The body is wrapped in the copy WithContext makes, never in the
	// server's request: net/http's HTTP/1 server looks at that one's body
	// to know whether a "100 Continue" was owed and never sent, and closes
	// the connection then rather than read a body the client may be
	// waiting to send.
	r = r.WithContext(context.WithValue(r.Context(), proxyRouteKey{}, route))
	if r.Body != nil && r.Body != http.NoBody {
		route.body = &clientBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: p.bodyTimeout}
		r.Body = route.body
		defer route.body.finish()
	}
	p.rp.ServeHTTP(pw, r)
	finished = true
}

// errProxyAborted is logged when a response is cut off mid-body.
var errProxyAborted = errors.New("edge: response aborted mid-body")

// Collectors returns the proxy's Prometheus collectors for the caller to
// register:
//
//   - keyedge_proxy_requests_total{code}: requests by the status class the
//     client got ("1xx" for protocol switches such as WebSocket, to "5xx"),
//     counting the proxy's own error responses; a client that went away
//     before any response is not counted here.
//   - keyedge_proxy_protocol_requests_total{proto}: the same requests by
//     the HTTP version the client used: h1, h2 or h3.
//   - keyedge_proxy_upstream_seconds: time from sending a request to the
//     origin (connection setup and request body included) to its response
//     headers.
//   - keyedge_proxy_errors_total{reason}: failures by reason: unreachable,
//     timeout, no_origin, misdirected, bad_request (malformed: a host or
//     length conflict, no host, a broken body), body_timeout (the
//     client stopped sending its request body; a 408), not_allowed (TRACE, CONNECT),
//     canceled (the client went away) or other.
//   - keyedge_proxy_retries_total: idempotent requests sent again to
//     another origin of their pool after a connection failure.
//   - keyedge_origin_ejections_total{cause}: origins taken out of their
//     pool: connect, 5xx (a burst), check (failed health checks).
//   - keyedge_origin_health_checks_total{result}: ok or fail.
//   - keyedge_origin_checked{state}: origins health-checked now (pools
//     with recent traffic), up or out.
//   - keyedge_origin_transports: connection pools kept for tenants'
//     own origin TLS settings or timeouts.
//
// No label carries a hostname, so the series are bounded however many
// tenants there are.
func (p *Proxy) Collectors() []prometheus.Collector {
	return append([]prometheus.Collector{p.metrics.requests, p.metrics.upstream, p.metrics.errors, p.metrics.protocols}, p.health.collectors()...)
}

// Close closes idle origin connections. Requests in flight are not
// affected, and the Proxy remains usable.
func (p *Proxy) Close() {
	p.defaults.close()
	p.tenantTransports.close()
}

// proxyCheckOrigin reports whether u is an origin URL the proxy can use.
func proxyCheckOrigin(u *url.URL) error {
	if u == nil {
		return errors.New("edge: OriginFunc returned neither an origin nor an error")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("edge: origin URL %q is not http(s)://host", u.Redacted())
	}
	return nil
}

// proxyRewrite points the outbound request at the origin and replaces the
// forwarding headers (ReverseProxy has already removed the client's
// X-Forwarded-* and Forwarded; X-Real-IP, which some origins trust as
// the client address, is removed here).
func proxyRewrite(pr *httputil.ProxyRequest) {
	proxyRewriteTo(pr, pr.In.Context().Value(proxyRouteKey{}).(*proxyRoute), make([]string, 4), nil)
}

// proxyRewriteTo is proxyRewrite with the route given. It sets the
// X-Forwarded-* fields as pr.SetXForwarded does (there is no prior
// X-Forwarded-For to append to: the client's is gone), the four fields'
// values in v (of length 4) rather than in a slice each, and the route's
// X-Request-Id.
func proxyRewriteTo(pr *httputil.ProxyRequest, route *proxyRoute, v []string, memo *forwardedMemo) {
	pr.SetURL(route.origin)
	h, in := pr.Out.Header, pr.In
	if memo == nil {
		memo = new(forwardedMemo)
	}
	fwd := memo.of(in)
	if fwd.hasIP {
		v[0] = fwd.ip
		h["X-Forwarded-For"] = v[0:1:1]
	} else {
		delete(h, "X-Forwarded-For")
	}
	v[1] = in.Host
	h["X-Forwarded-Host"] = v[1:2:2]
	v[2] = "http"
	if in.TLS != nil {
		v[2] = "https"
	}
	h["X-Forwarded-Proto"] = v[2:3:3]
	v[3] = fwd.value
	h["Forwarded"] = v[3:4:4]
	delete(h, "X-Real-Ip")
	h[requestIDHeader] = route.requestID
}

// proxyForwarded returns the RFC 7239 Forwarded element for r: the client
// address, the host it asked for and the protocol it used, matching the
// X-Forwarded-* headers.
func proxyForwarded(r *http.Request) string {
	node := "unknown" // RFC 7239, section 6.2
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			ip = ip.WithZone("")
			if ip.Is4() {
				node = host // as ip.String() writes it: ParseAddr takes no other form
			} else {
				node = `"[` + ip.String() + `]"` // sections 6.1 and 4: IPv6 in brackets, quoted
			}
		}
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	return "for=" + node + ";host=" + proxyForwardedValue(r.Host) + ";proto=" + proto
}

// proxyForwardedValue returns v as a Forwarded parameter value: a token if
// it is one, else a quoted-string (RFC 7239, section 4).
func proxyForwardedValue(v string) string {
	if v != "" && !strings.ContainsFunc(v, func(c rune) bool { return !httpguts.IsTokenRune(c) }) {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

// Reasons, the values of keyedge_proxy_errors_total's reason label.
const (
	proxyReasonUnreachable = "unreachable"
	proxyReasonTimeout     = "timeout"
	proxyReasonNoOrigin    = "no_origin"
	proxyReasonMisdirected = "misdirected"
	proxyReasonBadRequest  = "bad_request"
	proxyReasonBodyTimeout = "body_timeout"
	proxyReasonNotAllowed  = "not_allowed"
	proxyReasonCanceled    = "canceled"
	proxyReasonOther       = "other"
)

// handleError is the ReverseProxy's ErrorHandler: the origin round trip
// (or a protocol switch) failed.
func (p *Proxy) handleError(w http.ResponseWriter, r *http.Request, err error) {
	p.routeError(w.(*proxyWriter), r, r.Context().Value(proxyRouteKey{}).(*proxyRoute), err)
}

// routeError is handleError with the route given.
func (p *Proxy) routeError(w *proxyWriter, r *http.Request, route *proxyRoute, err error) {
	bodyErr := route.body.readErr()
	reason := proxyErrorReason(r.Context(), bodyErr, err)
	if bodyErr != nil {
		err = fmt.Errorf("%w (reading the request body: %w)", err, bodyErr)
	}
	p.fail(w, r, reason, route, err)
}

// proxyErrorReason classifies an origin round-trip error, given the error
// reading the client's request body gave, if any. A body that ended
// before its length or broke its chunked framing is the client's error; a
// client that went away mid-body is canceled.
func proxyErrorReason(ctx context.Context, bodyErr, err error) string {
	// Before the context: a read deadline passing on an HTTP/1
	// connection cancels the request's context too.
	if errors.Is(bodyErr, os.ErrDeadlineExceeded) {
		return proxyReasonBodyTimeout
	}
	if bodyErr != nil && (ctx.Err() == nil || errors.Is(bodyErr, io.ErrUnexpectedEOF)) {
		return proxyReasonBadRequest
	}
	switch ctxErr := ctx.Err(); {
	case errors.Is(ctxErr, context.Canceled):
		return proxyReasonCanceled
	case ctxErr != nil: // a deadline the caller set on the request
		return proxyReasonTimeout
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" { // refused, no route, DNS, dial timeout
		return proxyReasonUnreachable
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() { // response headers or TLS handshake
		return proxyReasonTimeout
	}
	return proxyReasonOther
}

// proxyAbortReason classifies a response cut off mid-body: the origin
// had answered before the client's request body stalled, or the client
// went away, or the origin failed.
func proxyAbortReason(r *http.Request, route *proxyRoute) string {
	if route.body.timedOut() {
		return proxyReasonBodyTimeout
	}
	if r.Context().Err() != nil {
		return proxyReasonCanceled
	}
	return proxyReasonOther
}

// fail records a failure and, unless the connection was taken over by a
// protocol switch, answers the client with a short plain-text error.
func (p *Proxy) fail(w *proxyWriter, r *http.Request, reason string, route *proxyRoute, err error) {
	p.record(r.Context(), reason, route, err)
	if reason == proxyReasonCanceled {
		w.clientGone = true
	}
	if w.hijacked {
		return
	}
	if reason == proxyReasonNotAllowed {
		w.Header().Set("Allow", allowedMethods)
	}
	if reason == proxyReasonBodyTimeout && r.ProtoMajor == 1 {
		w.mustClose = true // the rest of the body may still come
	}
	code, msg := proxyFailureResponse(reason)
	http.Error(w, msg, code)
}

// proxyFailureResponse returns the status and body the client gets for a
// failure. The body says what went wrong in general terms only.
func proxyFailureResponse(reason string) (int, string) {
	switch reason {
	case proxyReasonUnreachable:
		return http.StatusBadGateway, "502 Bad Gateway: origin unreachable"
	case proxyReasonTimeout:
		return http.StatusGatewayTimeout, "504 Gateway Timeout: origin did not answer in time"
	case proxyReasonNoOrigin:
		return http.StatusNotFound, "404 Not Found: no site is configured for this host"
	case proxyReasonMisdirected:
		return http.StatusMisdirectedRequest, "421 Misdirected Request: this host is not served on this connection"
	case proxyReasonBadRequest:
		return http.StatusBadRequest, "400 Bad Request: malformed request"
	case proxyReasonBodyTimeout:
		return http.StatusRequestTimeout, "408 Request Timeout: the request body stopped arriving"
	case proxyReasonNotAllowed:
		return http.StatusMethodNotAllowed, "405 Method Not Allowed"
	default:
		return http.StatusBadGateway, "502 Bad Gateway"
	}
}

// record counts a failure and logs it: at Warn when the origin or the
// tenant's configuration is at fault, at Debug when the client is.
func (p *Proxy) record(ctx context.Context, reason string, route *proxyRoute, err error) {
	p.metrics.errors.WithLabelValues(reason).Inc()
	route.reason = reason
	level := slog.LevelWarn
	switch reason {
	case proxyReasonNoOrigin, proxyReasonMisdirected, proxyReasonBadRequest, proxyReasonBodyTimeout, proxyReasonNotAllowed, proxyReasonCanceled:
		level = slog.LevelDebug
	}
	if !p.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("reason", reason), slog.String("host", route.host)}
	if route.origin != nil {
		attrs = append(attrs, slog.String("origin", route.origin.Redacted()))
	}
	attrs = append(attrs, slog.Any("err", err))
	p.log.LogAttrs(ctx, level, "edge: proxy request failed", attrs...)
}

// countRequest counts a finished request by the status class the client
// got, and by its HTTP version.
func (p *Proxy) countRequest(w *proxyWriter, r *http.Request) {
	if w.clientGone {
		return
	}
	p.metrics.protos[min(max(r.ProtoMajor, 1), 3)-1].Inc()
	code := w.code
	if code == 0 {
		code = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	class := min(max(code/100, 1), 5) // WriteHeader allows 100 to 999
	p.metrics.codes[class-1].Inc()
}

// proxyWriter is the ResponseWriter ReverseProxy writes to: it records
// what the client got. It is used by one request's goroutine only.
type proxyWriter struct {
	http.ResponseWriter
	tunnelIdle time.Duration // a hijacked connection's idle timeout
	mustClose  bool          // close the client's connection after the response

	code       int       // first final (non-1xx) status written; 0 until then
	written    int64     // response body bytes written
	hijacked   bool      // the connection was taken over for a protocol switch
	tunnel     *idleConn // the connection, once hijacked
	clientGone bool      // the client went away before any response

	stream *watchedStream // an HTTP/2 response's, whose writes it marks (streamwatch.go); nil: not watched
}

func (w *proxyWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.final(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *proxyWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.final(http.StatusOK)
	}
	if w.stream != nil {
		w.stream.begin()
	}
	n, err := w.ResponseWriter.Write(b)
	if w.stream != nil {
		w.stream.end()
	}
	w.written += int64(n)
	return n, err
}

// FlushError flushes the response to the client (through Unwrap), its
// wait watched as Write's is.
func (w *proxyWriter) FlushError() error {
	if w.stream != nil {
		w.stream.begin()
		defer w.stream.end()
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// final records the response's status just before its header is sent.
func (w *proxyWriter) final(code int) {
	w.code = code
	if w.mustClose {
		w.Header().Set("Connection", "close") // net/http closes after the response
	}
}

// Hijack takes over the connection for a protocol switch; ReverseProxy
// then writes the origin's 101 response itself, and tunnels through the
// connection until either side closes or it is idle for tunnelIdle.
func (w *proxyWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return conn, brw, err
	}
	w.hijacked = true
	w.code = http.StatusSwitchingProtocols
	w.tunnel = newIdleConn(conn, w.tunnelIdle)
	return w.tunnel, brw, nil
}

// Unwrap lets http.ResponseController reach the server's writer, to flush.
func (w *proxyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// proxyTimedTransport sends ReverseProxy's requests to their route's
// origin (originRoundTrip) and observes the time to each origin
// response's headers.
type proxyTimedTransport struct{ p *Proxy }

func (t proxyTimedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	route := r.Context().Value(proxyRouteKey{}).(*proxyRoute)
	res, err := t.p.originRoundTrip(route, r, nil)
	if err == nil {
		t.p.originAnswered(route, start)
		if err = checkH3Upgrade(r, res); err != nil { // h3websocket.go
			return nil, err
		}
	}
	return res, err
}

// originAnswered observes the time from start, when the request to the
// origin began, to its response header, and records it in route (which
// may be nil).
func (p *Proxy) originAnswered(route *proxyRoute, start time.Time) {
	d := time.Since(start)
	p.metrics.upstream.Observe(d.Seconds())
	if route != nil {
		route.originTime = d
	}
}

// proxyBufferSize is the size of the buffers that copy response bodies.
const proxyBufferSize = 32 << 10

// proxyBufferPool recycles body copy buffers. It pools array pointers, so
// that Put does not allocate.
type proxyBufferPool struct{ pool sync.Pool }

func (bp *proxyBufferPool) Get() []byte {
	if b, ok := bp.pool.Get().(*[proxyBufferSize]byte); ok {
		return b[:]
	}
	return new([proxyBufferSize]byte)[:]
}

func (bp *proxyBufferPool) Put(b []byte) {
	if len(b) == proxyBufferSize {
		bp.pool.Put((*[proxyBufferSize]byte)(b))
	}
}

// proxyMetrics are the keyedge_proxy_* series. Labels are bounded: never
// a hostname.
type proxyMetrics struct {
	requests *prometheus.CounterVec // code: 1xx to 5xx
	codes    [5]prometheus.Counter  // requests' children, by status class - 1
	protos   [3]prometheus.Counter  // keyedge_proxy_protocol_requests_total's children, by HTTP major version - 1
	upstream prometheus.Histogram
	errors   *prometheus.CounterVec // reason: see the proxyReason constants

	protocols *prometheus.CounterVec // proto: h1, h2, h3
}

func newProxyMetrics() *proxyMetrics {
	m := &proxyMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_proxy_requests_total",
			Help: "Proxied requests by the status class the client got, proxy errors included.",
		}, []string{"code"}),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_proxy_upstream_seconds",
			Help:    "Time from sending a request to the origin to its response headers.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1ms to 33s, past the 30s default OriginTimeout
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_proxy_errors_total",
			Help: "Proxy failures by reason: unreachable, timeout, no_origin, misdirected, bad_request, body_timeout, not_allowed, canceled, other.",
		}, []string{"reason"}),
	}
	protocols := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyedge_proxy_protocol_requests_total",
		Help: "Proxied requests by the HTTP version the client used: h1, h2, h3 (counted as keyedge_proxy_requests_total).",
	}, []string{"proto"})
	for i := range m.protos {
		m.protos[i] = protocols.WithLabelValues(fmt.Sprintf("h%d", i+1))
	}
	m.protocols = protocols
	for i := range m.codes {
		m.codes[i] = m.requests.WithLabelValues(fmt.Sprintf("%dxx", i+1))
	}
	// Every reason is exported from the start, at zero.
	for _, reason := range []string{proxyReasonUnreachable, proxyReasonTimeout, proxyReasonNoOrigin,
		proxyReasonMisdirected, proxyReasonBadRequest, proxyReasonBodyTimeout, proxyReasonNotAllowed, proxyReasonCanceled, proxyReasonOther} {
		m.errors.WithLabelValues(reason)
	}
	return m
}
