package edge

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/internal/ops"
	"github.com/keyedge/keyedge/internal/ratelog"
	"github.com/keyedge/keyedge/internal/tlsconf"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Server. Every field but Store has a working zero
// value; defaults are in brackets.
type Options struct {
	// Store is the keystore certificates and origins come from. Required.
	Store *keystore.Store

	// Keyless signs through key servers: keyless tenants' own, and the
	// KeyServers directory's for geo-restricted keys this node may not
	// open. The Server registers its metrics and closes it on Shutdown.
	// Nil: handshakes needing a key server fail with ErrNoKeyServer.
	Keyless *keyserver.Client

	// KeyServers is the directory of key servers that sign for
	// geo-restricted keys, with the attributes each runs under. A key
	// whose policy admits this node's attributes, those of Store's node
	// key (keystore.Options.NodeKey), is signed locally; any other
	// restricted key through a KeyServers entry its policy admits.
	KeyServers []KeyServer

	// ACME answers TLS-ALPN-01 challenges in the handshake and obtains
	// certificates on demand for names without one [none]. The caller
	// owns the ACME manager behind the hooks (its renewal loop, Close);
	// the port-80 listener is NewHTTPServer's.
	ACME ACME

	// Fallback is served to clients without SNI or with a name no tenant
	// has. Nil refuses them with an unrecognized_name alert.
	Fallback *tls.Certificate

	// Tickets derives the session ticket keys from the fleet's secret,
	// so sessions resume on any node. Nil: crypto/tls's own random,
	// rotating keys, so tickets resume only on this process.
	Tickets *TicketKeys

	// ECH serves Encrypted ClientHello with the fleet's keys derived
	// from its secret, under one public name. Nil: ECH off (a client
	// offering it is served for its outer name, without retry configs).
	ECH *ECHKeys

	// Curves are the key exchanges offered [X25519MLKEM768, X25519,
	// P-256]. crypto/tls applies its own preference order among them,
	// which puts the hybrid post-quantum X25519MLKEM768 first.
	Curves []tls.CurveID

	// MinVersion is the lowest TLS version accepted [TLS 1.2, with ECDHE
	// AEAD cipher suites only].
	MinVersion uint16

	Limits Limits

	// TrustedProxies are the networks whose connections must start with a
	// PROXY protocol (v1 or v2) header naming the real client; a header
	// from anywhere else fails the connection. Empty: PROXY protocol off.
	TrustedProxies []netip.Prefix

	Proxy ProxyOptions

	// HTTP3 configures HTTP/3, served by ServeHTTP3 (http3.go). Fixed
	// at NewServer.
	HTTP3 HTTP3Options

	// AccessLog gets a record of every request the server answers
	// (package accesslog); the Server registers its metrics. The caller
	// closes it after Shutdown. Nil: no access log.
	AccessLog *accesslog.Logger

	// Logger [slog.Default()]. Registerer, if set, gets every metric.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Limits bound what one client can hold. Zero values get the defaults in
// brackets.
type Limits struct {
	HandshakeTimeout  time.Duration // accept to finished handshake [10s]
	ReadHeaderTimeout time.Duration // a request's headers [10s]
	IdleTimeout       time.Duration // keep-alive between requests [120s]
	MaxConns          int           // open client connections [10000]; more are closed at accept
	MaxHeaderBytes    int           // request header size [64 KiB]

	// MaxConnsPerIP bounds the open connections of one client address
	// (an IPv6 client's /64), as the PROXY header names it when PROXY
	// protocol is on, so one client cannot take all of MaxConns; more
	// are closed at accept. [256, or MaxConns/4 if that is less, at
	// least 1]
	MaxConnsPerIP int

	// SendTimeout bounds how long a write to a client may wait for the
	// client to read, once its handshake is done: a client that stops
	// reading a response (or a tunnel's data) for this long has its
	// connection closed, as nginx's send_timeout does, so it cannot hold
	// the connection and its origin connection forever. A write that
	// makes progress waits anew. [60s]
	SendTimeout time.Duration
}

// check reports the limits that are negative, each by name; zero means
// the default.
func (l Limits) check() error {
	err := errors.Join(
		checkPositive("Limits.HandshakeTimeout", l.HandshakeTimeout),
		checkPositive("Limits.ReadHeaderTimeout", l.ReadHeaderTimeout),
		checkPositive("Limits.IdleTimeout", l.IdleTimeout),
		checkPositive("Limits.MaxConns", l.MaxConns),
		checkPositive("Limits.MaxHeaderBytes", l.MaxHeaderBytes),
		checkPositive("Limits.MaxConnsPerIP", l.MaxConnsPerIP),
		checkPositive("Limits.SendTimeout", l.SendTimeout),
	)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	return nil
}

// checkPositive reports a negative setting; zero means the default.
func checkPositive[T int | time.Duration](name string, v T) error {
	if v < 0 {
		return fmt.Errorf("%s: must be positive, got %v", name, v)
	}
	return nil
}

// WithDefaults returns l with every zero field set to its default, the
// limits a Server given l enforces.
func (l Limits) WithDefaults() Limits {
	l.HandshakeTimeout = cmp.Or(l.HandshakeTimeout, 10*time.Second)
	l.ReadHeaderTimeout = cmp.Or(l.ReadHeaderTimeout, 10*time.Second)
	l.IdleTimeout = cmp.Or(l.IdleTimeout, 120*time.Second)
	l.MaxConns = cmp.Or(l.MaxConns, 10_000)
	l.MaxHeaderBytes = cmp.Or(l.MaxHeaderBytes, 64<<10)
	l.MaxConnsPerIP = cmp.Or(l.MaxConnsPerIP, max(1, min(256, l.MaxConns/4)))
	l.SendTimeout = cmp.Or(l.SendTimeout, 60*time.Second)
	return l
}

// withDefaults returns o with every zero field that has a default set
// to it: Logger, MinVersion, Curves, Limits, and Proxy.Logger (the
// server's Logger). Proxy's other fields are NewProxy's to fill.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Proxy.Logger == nil {
		o.Proxy.Logger = o.Logger
	}
	o.MinVersion = cmp.Or(o.MinVersion, tls.VersionTLS12)
	if len(o.Curves) == 0 {
		o.Curves = tlsconf.DefaultCurves()
	}
	o.Limits = o.Limits.WithDefaults()
	return o
}

// tls12Suites are the TLS 1.2 cipher suites: ECDHE for forward secrecy
// and AEAD only. TLS 1.3 suites are not configurable and all AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Server terminates TLS for every tenant in a keystore and proxies their
// requests to their origins.
type Server struct {
	// Static after NewServer.
	store         *keystore.Store
	acme          ACME // zero without ACME
	proxyProtocol bool // TrustedProxies were set: Serve reads PROXY headers
	http          *http.Server
	metrics       *metrics
	log           *slog.Logger
	limiter       *rateLimiter // tenants' rate limits (tenanthttp.go)

	// tlsConfig is the handshakes' configuration, replaced by Reload
	// (MinVersion, CurvePreferences); ticket keys are installed into it
	// under ticketsMu.
	tlsConfig atomic.Pointer[tls.Config]
	settings  atomic.Pointer[settings] // replaced whole by Reload
	open      atomic.Int64             // client connections open
	clients   clientConns              // client connections open, by client

	// logs spaces out warnings a flood of handshakes would repeat
	// (failed on-demand issuance, no key server for a certificate);
	// metrics count every event.
	logs ratelog.Limiter

	ticketsChanged chan struct{} // Reload wakes the ticket rotation
	ticketsMu      sync.Mutex    // orders installTicketKeys calls, so the newest settings win
	done           chan struct{} // closed by Shutdown

	mu        sync.Mutex // guards listeners
	listeners []*tlsListener

	// HTTP/1 connections whose first request has not reached the handler
	// yet. net/http drops a request it reads after Shutdown has begun (it
	// checks just after the connection turns active), so Shutdown lets
	// these reach the handler, past that check, or close, first.
	fresh      sync.Map      // net.Conn → struct{}
	freshCount atomic.Int64  // entries in fresh
	freshLeft  chan struct{} // 1-buffered: a fresh connection left fresh

	h3     h3State      // HTTP/3 servers (http3.go)
	h3opts HTTP3Options // static after NewServer

	h1     h1Conns // HTTP/1.1 connections served by the loop (h1conn.go)
	h1Loop bool    // serve HTTP/1.1 connections with the loop; false in tests comparing it with net/http

	streams streamWatch // HTTP/2 responses' writes, which SendTimeout bounds (streamwatch.go)
}

// settings are the options Reload can change on a running server, and
// what is built from them.
type settings struct {
	fallback   *tls.Certificate
	fallbackID string // fallbackID(fallback), for session bindings
	limits     Limits
	tickets    *TicketKeys // nil: crypto/tls's own keys
	ech        *ECHKeys    // nil: ECH off
	trusted    []netip.Prefix
	router     *router // Keyless and KeyServers
	proxy      *Proxy
	proxyOpts  ProxyOptions // proxy's, to rebuild it only when they change
}

// newSettings checks the reloadable options of opts, which has its
// defaults applied, and returns them; prev are the settings they
// replace (nil in NewServer), whose proxy is kept if its options are
// unchanged, so its idle origin connections are kept too.
func (s *Server) newSettings(opts Options, prev *settings) (*settings, error) {
	if err := opts.Limits.check(); err != nil {
		return nil, err
	}
	if opts.Tickets != nil {
		if err := opts.Tickets.check(); err != nil {
			return nil, err
		}
	}
	if opts.ECH != nil {
		if err := opts.ECH.check(); err != nil {
			return nil, err
		}
		s.warnECHPublicName(opts.ECH)
	}
	set := &settings{
		ech:        opts.ECH,
		fallback:   opts.Fallback,
		fallbackID: fallbackID(opts.Fallback),
		limits:     opts.Limits,
		tickets:    opts.Tickets,
		trusted:    opts.TrustedProxies,
		router: &router{
			node:      s.store.NodeAttributes(),
			directory: opts.KeyServers,
			client:    opts.Keyless,
			decisions: s.metrics.routeCounters(),
			log:       s.log,
			logs:      &s.logs,
		},
		proxyOpts: opts.Proxy,
	}
	switch {
	case prev == nil:
		set.proxy = newTenantProxy(opts.Proxy, s.tenant)
		set.proxy.accessLog = opts.AccessLog
		set.proxy.streams = &s.streams
	case prev.proxyOpts == opts.Proxy && prev.proxy.accessLog == opts.AccessLog:
		set.proxy = prev.proxy
	default:
		set.proxy = prev.proxy.withOptions(opts.Proxy)
		set.proxy.accessLog = opts.AccessLog
	}
	return set, nil
}

// NewServer returns a Server; call Serve to run it.
func NewServer(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("edge: Options.Store is nil")
	}
	opts = opts.withDefaults()
	s := &Server{
		store:         opts.Store,
		acme:          opts.ACME,
		proxyProtocol: len(opts.TrustedProxies) > 0,
		metrics:       newMetrics(),
		log:           opts.Logger,
		h3opts:        opts.HTTP3,
		limiter:       newRateLimiter(time.Now),

		h1Loop:         true,
		ticketsChanged: make(chan struct{}, 1),
		freshLeft:      make(chan struct{}, 1),
		done:           make(chan struct{}),
	}
	set, err := s.newSettings(opts, nil)
	if err != nil {
		return nil, err
	}
	limits := set.limits
	s.settings.Store(set)
	tlsConfig := &tls.Config{
		MinVersion:       opts.MinVersion,
		CurvePreferences: opts.Curves,
		CipherSuites:     tls12Suites,
		NextProtos:       []string{"h2", "http/1.1"},
		GetCertificate:   s.getCertificate,
		WrapSession:      s.wrapSession,
		UnwrapSession:    s.unwrapSession,

		GetEncryptedClientHelloKeys: s.echKeys,
		// ACME's TLS-ALPN-01 validations; tenants' client certificates.
		GetConfigForClient: s.configForClient,
	}
	s.tlsConfig.Store(tlsConfig)
	s.installTicketKeys()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	s.http = &http.Server{
		Handler:           s.firstRequestHandler(http.HandlerFunc(s.serveProxy)),
		ConnContext:       withConn,
		TLSConfig:         tlsConfig.Clone(), // for net/http's HTTP/2 set-up, which writes to it while Reload may clone tlsConfig; handshakes are tlsListener's
		Protocols:         &protocols,
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState:         s.trackNew,
	}
	collectors := append(s.metrics.collectors(), set.proxy.Collectors()...)
	collectors = append(collectors, s.limiter.limited)
	if opts.Keyless != nil {
		collectors = append(collectors, opts.Keyless.Collectors()...)
	}
	if opts.AccessLog != nil {
		collectors = append(collectors, opts.AccessLog.Collectors()...)
	}
	if err := ops.Register(opts.Registerer, collectors...); err != nil {
		return nil, fmt.Errorf("edge: failed to register metrics: %w", err)
	}
	// Last: from here NewServer cannot fail, so the goroutine cannot leak.
	go s.rotateTickets()
	go s.watchStreams()
	return s, nil
}

// Serve accepts TLS connections on l until Shutdown. Like
// http.Server.Serve, it returns http.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if s.proxyProtocol {
		l = &proxyproto.Listener{
			Listener:          l,
			ConnPolicy:        s.proxyPolicy,
			ReadHeaderTimeout: s.settings.Load().limits.HandshakeTimeout,
		}
	}
	tl := newTLSListener(l, s)
	s.mu.Lock()
	s.listeners = append(s.listeners, tl)
	s.mu.Unlock()
	err := s.http.Serve(tl)
	select {
	case <-s.done:
		// Shutdown closed the listener before telling net/http.
		return http.ErrServerClosed
	default:
		return err
	}
}

// proxyPolicy requires a PROXY header from trusted networks and refuses
// one from anywhere else.
func (s *Server) proxyPolicy(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
	if s.trustedUpstream(o.Upstream) {
		return proxyproto.REQUIRE, nil
	}
	return proxyproto.REJECT, nil
}

// trustedUpstream reports whether addr is in Options.TrustedProxies.
func (s *Server) trustedUpstream(addr net.Addr) bool {
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		for _, p := range s.settings.Load().trusted {
			if p.Contains(ap.Addr().Unmap()) {
				return true
			}
		}
	}
	return false
}

// Shutdown stops accepting connections, lets the handshakes in flight
// finish and waits for requests in flight to finish until ctx ends; then
// it closes what is left. No connection the server accepted is dropped
// unless ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	waitH3 := s.shutdownHTTP3(ctx)
	s.mu.Lock()
	listeners := s.listeners
	s.mu.Unlock()
	for _, l := range listeners {
		l.stopAccepting()
	}
	for _, l := range listeners {
		select {
		case <-l.drained:
		case <-ctx.Done():
		}
	}
	s.awaitFirstRequests(ctx)
	s.h1.drain()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	if h1Err := s.h1.wait(ctx); err == nil {
		err = h1Err
	}
	if h3Err := waitH3(); err == nil {
		err = h3Err
	}
	set := s.settings.Load()
	set.proxy.Close()
	set.proxy.health.close()
	if set.router.client != nil {
		set.router.client.Close()
	}
	return err
}

// refuse counts a connection closed at accept for reason, and logs it,
// at most once per interval for each reason.
func (s *Server) refuse(reason, setting string, limit int, args ...any) {
	s.metrics.refused.WithLabelValues(reason).Inc()
	args = append([]any{setting, limit}, args...)
	s.logs.Log(context.Background(), s.log, slog.LevelWarn, "refused_"+reason, "edge: connection refused at accept: limit reached", args...)
}

// trackNew is the http.Server's ConnState hook: it counts the HTTP/1
// connections that have not read a request yet, until their first
// request reaches the handler (firstRequestHandler) or they go idle,
// closed or hijacked without one. StateActive does not end it: net/http
// reports it just before checking for shutdown. (HTTP/2 connections
// leave StateNew without a hook call; their graceful shutdown is
// GOAWAY's.)
func (s *Server) trackNew(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			return
		}
		s.markFresh(c)
	case http.StateActive:
	default:
		s.notFresh(c)
	}
}

// markFresh counts c as waiting for its first request, once.
func (s *Server) markFresh(c net.Conn) {
	if _, loaded := s.fresh.LoadOrStore(c, struct{}{}); !loaded {
		s.freshCount.Add(1)
	}
}

// shuttingDown reports whether Shutdown has begun: responses from then
// on close their connection.
func (s *Server) shuttingDown() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// notFresh ends c's wait for its first request, if it was waiting, and
// wakes awaitFirstRequests.
func (s *Server) notFresh(c net.Conn) {
	if _, ok := s.fresh.LoadAndDelete(c); ok {
		s.freshCount.Add(-1)
		select {
		case s.freshLeft <- struct{}{}:
		default:
		}
	}
}

// connKey is the request context key of the connection a request came on.
type connKey struct{}

// withConn is the http.Server's ConnContext hook: it lets the handler
// find a request's connection.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// firstRequestHandler marks a request's connection as no longer fresh
// before h serves it: by then net/http is past its shutdown check, so the
// request is served even if Shutdown begins now.
func (s *Server) firstRequestHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			s.notFresh(c)
		}
		h.ServeHTTP(w, r)
	})
}

// awaitFirstRequests waits, at most ReadHeaderTimeout or until ctx ends,
// for fresh HTTP/1 connections to bring their first request to the
// handler, or to close.
func (s *Server) awaitFirstRequests(ctx context.Context) {
	deadline := time.NewTimer(s.settings.Load().limits.ReadHeaderTimeout)
	defer deadline.Stop()
	for s.freshCount.Load() > 0 {
		select {
		case <-s.freshLeft:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// serveProxy serves a request through the tenant's HTTP settings and
// the current settings' proxy, looking the tenant up once for both.
func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request) {
	// net/http runs each HTTP/2 request on a new goroutine, whose stack
	// grew from 2 KiB deep in the origin round trip, copying ~20 frames
	// (8.5% of the CPU of h2load's requests); growing it here, shallow,
	// costs a short copy. An HTTP/1 connection's goroutine has grown once.
	reserveStack8K()
	if r.ProtoMajor < 3 {
		s.advertiseHTTP3(w.Header())
	}
	p := s.settings.Load().proxy
	c, err := s.tenant(r)
	if err == nil {
		var ok bool
		if w, ok = s.applyTenant(w, r, p, c); !ok {
			return
		}
	}
	p.serveTenant(w, r, c, err)
}

// ErrNotReloadable is returned by Reload for options it cannot change
// on a running server; the caller starts a new one instead.
var ErrNotReloadable = errors.New("edge: option cannot change without a restart")

// Reload applies the options that can change without a restart, from
// the next handshake or request on, without dropping a connection:
// MinVersion, Curves, Fallback, Tickets (a fleet secret rotation: the
// new ticket keys are in use when Reload returns), ECH, Limits'
// HandshakeTimeout, MaxConns and MaxConnsPerIP, TrustedProxies, Proxy
// (a new origin connection pool when they change; requests in flight
// finish on the old one), KeyServers and Keyless (a Keyless client that
// is not the running one replaces it, and the old one is closed once
// the handshakes that may still use it have ended). Store, ACME, HTTP3,
// Logger and Registerer are fixed, and so are Limits' ReadHeaderTimeout,
// IdleTimeout and MaxHeaderBytes (the http.Server's). Turning PROXY
// protocol (TrustedProxies) or Keyless on or off returns an error
// wrapping ErrNotReloadable. Any error changes nothing.
func (s *Server) Reload(opts Options) error {
	opts = opts.withDefaults()
	prev := s.settings.Load()
	if (len(opts.TrustedProxies) > 0) != s.proxyProtocol {
		return fmt.Errorf("%w: TrustedProxies (PROXY protocol on or off)", ErrNotReloadable)
	}
	if (opts.Keyless == nil) != (prev.router.client == nil) {
		return fmt.Errorf("%w: Keyless (keyless signing on or off)", ErrNotReloadable)
	}
	// The other limits are the http.Server's, fixed by NewServer.
	fresh := opts.Limits
	opts.Limits = prev.limits
	opts.Limits.HandshakeTimeout, opts.Limits.MaxConns, opts.Limits.MaxConnsPerIP = fresh.HandshakeTimeout, fresh.MaxConns, fresh.MaxConnsPerIP
	opts.Limits.SendTimeout = fresh.SendTimeout // from the next handshake on; for HTTP/2 streams, from the next sweep (watchStreams)
	if err := fresh.check(); err != nil {
		return err
	}
	set, err := s.newSettings(opts, prev)
	if err != nil {
		return err
	}
	tlsConfig := s.tlsConfig.Load().Clone() // with its ticket keys, so sessions keep resuming
	tlsConfig.MinVersion, tlsConfig.CurvePreferences = opts.MinVersion, opts.Curves
	s.ticketsMu.Lock()
	s.settings.Store(set)
	s.tlsConfig.Store(tlsConfig)
	s.ticketsMu.Unlock()
	// The new secrets apply from now on; the rotation then re-arms its
	// timer for the new period.
	s.installTicketKeys()
	select {
	case s.ticketsChanged <- struct{}{}:
	default:
	}
	if set.proxy != prev.proxy {
		prev.proxy.Close() // its idle connections; those in use close when idle
	}
	if old := prev.router.client; old != set.router.client {
		// A handshake that began before now may still sign through old,
		// for at most its handshake timeout.
		time.AfterFunc(max(prev.limits.HandshakeTimeout, set.limits.HandshakeTimeout), func() { old.Close() })
	}
	return nil
}

// rotateTickets installs the ticket keys of each new epoch as it begins,
// and re-arms after a Reload, until Shutdown. Without fleet tickets it
// only waits: crypto/tls rotates its own keys.
func (s *Server) rotateTickets() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if wait, ok := s.installTicketKeys(); ok {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-timer.C:
		case <-s.ticketsChanged:
		case <-s.done:
			return
		}
	}
}

// installTicketKeys sets the ticket keys of the current epoch, by the
// fleet tickets' clock, and says how long until the next epoch begins by
// that clock. Without fleet tickets it changes nothing and returns false.
func (s *Server) installTicketKeys() (untilNext time.Duration, ok bool) {
	s.ticketsMu.Lock()
	defer s.ticketsMu.Unlock()
	t := s.settings.Load().tickets
	if t == nil {
		return 0, false
	}
	now := t.now()
	s.tlsConfig.Load().SetSessionTicketKeys(t.Keys(now))
	return t.next(now).Sub(now), true
}

// tenant finds the certificate whose record names the origins of a
// request's host (its first: every record of a name holds the same
// origins). The host must be the
// connection's SNI, or a name the SNI's certificate also covers (a
// client reusing a connection for another name on the same certificate,
// as HTTP/2 allows); anything else is misdirected. The SNI's entry is
// checked first, from the cache its handshake filled, so a stream of
// made-up hosts on one connection costs the keystore nothing.
func (s *Server) tenant(r *http.Request) (*keystore.Cert, error) {
	host := hostOf(r)
	sni := ""
	if r.TLS != nil {
		sni = r.TLS.ServerName
	}
	if sni == "" {
		return nil, ErrMisdirected
	}
	if !sameName(host, sni) {
		conn, err := s.store.Lookup(r.Context(), sni)
		if errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrBadName) {
			return nil, fmt.Errorf("%w: %v", ErrMisdirected, err)
		}
		if err != nil {
			return nil, err
		}
		if !coversName(conn, host) {
			return nil, ErrMisdirected
		}
	}
	entry, err := s.store.Lookup(r.Context(), host)
	if errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrBadName) {
		return nil, fmt.Errorf("%w: %v", ErrNoOrigin, err)
	}
	if err != nil {
		return nil, err
	}
	return entry.Certs[0], nil
}

// hostOf is r's Host without its port.
func hostOf(r *http.Request) string {
	if !strings.Contains(r.Host, ":") {
		return r.Host // no port; SplitHostPort would allocate its error
	}
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		return h
	}
	return r.Host
}

// sameName reports whether two DNS names are the same, ignoring case and
// a trailing dot.
func sameName(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

func coversName(e *keystore.Entry, name string) bool {
	for _, c := range e.Certs {
		if c.Leaf.VerifyHostname(name) == nil {
			return true
		}
	}
	return false
}
