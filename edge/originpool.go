package edge

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyedge/keyedge/keystore"
)

// Origin pools: a tenant's origins (keystore.OriginPool) as the proxy
// uses them. A pool is built once per keystore cache entry
// (keystore.Cert.Memo), so a request pays a map load for it, not a
// parse; a change to the record makes a new Cert, hence a new pool.
//
// Each request picks an origin by weight among those up. An origin is
// taken out (ejected) when a connection to it fails or it answers with
// ejectAfter5xx 5xx responses in a row, and, for a pool with a health
// check, when checks fail (originhealth.go). It comes back when checks
// succeed, or, without a health check, after passiveEjection. When every
// origin is out, requests go to all of them rather than to none. An
// idempotent bodiless request whose connection failed before any byte of
// a response is sent once more, to another origin.
//
// A pool of one origin skips all of it: the origin is the answer, as it
// was before pools.

// originPool is a tenant's origins. Static after build, but for each
// target's health and the pool's activity (lastUsed, tracked).
type originPool struct {
	targets []*originTarget
	tr      *originTransports     // the proxy's own, or the pool's TLS settings' and timeouts'
	health  keystore.OriginHealth // with defaults; Path "": no active check
	tenant  string                // for logs
	err     error                 // the pool cannot be used: every request fails with it
	book    *healthBook

	lastUsed atomic.Int64 // unix nanos of the last pick, by book.now; multi-target pools only
	tracked  atomic.Bool  // book checks it actively
}

// originTarget is one origin of a pool and its health on this node.
type originTarget struct {
	url    *url.URL
	weight int

	// downUntil is when an ejected target is tried again, unix nanos;
	// 0: up. math.MaxInt64: until health checks bring it back.
	downUntil atomic.Int64
	fiveXX    atomic.Int32 // 5xx responses in a row

	mu         sync.Mutex // guards the check streaks; held by one check at a time
	okStreak   int
	failStreak int
}

// Passive ejection: how many 5xx responses in a row take an origin out,
// and for how long an origin is out without a health check to bring it
// back.
const (
	ejectAfter5xx   = 5
	passiveEjection = 30 * time.Second
)

// up reports whether t takes requests at now (unix nanos).
func (t *originTarget) up(now int64) bool {
	d := t.downUntil.Load()
	return d == 0 || now >= d
}

// originTransports are the clients a pool's requests go through: the
// fast path for plain-HTTP origins' bodiless idempotent requests, and
// an http.Transport for the rest.
type originTransports struct {
	fast *originClient
	std  *http.Transport
}

// close closes the idle connections of both.
func (t *originTransports) close() {
	t.std.CloseIdleConnections()
	t.fast.CloseIdleConnections()
}

// singlePool returns a pool of the one origin u, with the proxy's
// transports.
func singlePool(u *url.URL, tr *originTransports) *originPool {
	return &originPool{targets: []*originTarget{{url: u, weight: 1}}, tr: tr}
}

// pool returns the pool of a certificate's record, built on first use
// for this proxy.
func (p *Proxy) pool(c *keystore.Cert) *originPool {
	return c.Memo(p, func(c *keystore.Cert) any { return p.buildPool(c) }).(*originPool)
}

// buildPool parses a record's origins. A pool that cannot be used
// carries the reason in err: ErrNoOrigin without origins, else what is
// wrong with its settings, never a key byte.
func (p *Proxy) buildPool(c *keystore.Cert) *originPool {
	cfg := c.Meta.Origins()
	pool := &originPool{tr: p.defaults, tenant: c.Meta.Tenant, book: p.health, health: cfg.Health}
	if len(cfg.Targets) == 0 {
		pool.err = fmt.Errorf("%w: tenant %s has no origin", ErrNoOrigin, c.Meta.Tenant)
		return pool
	}
	if cfg.Health.Path != "" {
		pool.health = cfg.Health.WithDefaults()
	}
	for _, t := range cfg.Targets {
		u, err := keystore.ParseOrigin(t.URL)
		if err != nil {
			pool.err = fmt.Errorf("edge: tenant %s: %w", c.Meta.Tenant, err)
			return pool
		}
		pool.targets = append(pool.targets, &originTarget{url: u, weight: max(t.Weight, 1)})
	}
	if cfg.TLS != nil || cfg.ConnectTimeout != 0 || cfg.ResponseTimeout != 0 {
		tr, err := p.tenantTransports.get(c, cfg)
		if err != nil {
			pool.err = fmt.Errorf("edge: tenant %s: origin settings: %w", c.Meta.Tenant, err)
			return pool
		}
		pool.tr = tr
	}
	return pool
}

// pick chooses an origin by weight among those up, but not skip; all of
// them but skip when none is up; nil when there is no other than skip.
func (pool *originPool) pick(skip *originTarget) *originTarget {
	if len(pool.targets) == 1 {
		if t := pool.targets[0]; t != skip {
			return t
		}
		return nil
	}
	now := pool.book.now().UnixNano()
	pool.used(now)
	total := 0
	for _, t := range pool.targets {
		if t != skip && t.up(now) {
			total += t.weight
		}
	}
	anyState := total == 0
	if anyState {
		for _, t := range pool.targets {
			if t != skip {
				total += t.weight
			}
		}
	}
	if total == 0 {
		return nil
	}
	n := rand.IntN(total)
	for _, t := range pool.targets {
		if t == skip || !anyState && !t.up(now) {
			continue
		}
		if n -= t.weight; n < 0 {
			return t
		}
	}
	return nil // not reached
}

// used records traffic at now, so the pool's health is checked.
func (pool *originPool) used(now int64) {
	// One store a second at most: many requests share the line.
	if now-pool.lastUsed.Load() > int64(time.Second) {
		pool.lastUsed.Store(now)
	}
	if pool.health.Path != "" && !pool.tracked.Load() {
		pool.book.track(pool)
	}
}

// eject takes t out after a failure of the given cause.
func (pool *originPool) eject(t *originTarget, cause string) {
	until := pool.book.now().Add(passiveEjection).UnixNano()
	if pool.tracked.Load() {
		until = math.MaxInt64 // the checks bring it back
	}
	if t.downUntil.Swap(until) == 0 {
		pool.book.metrics.ejections.WithLabelValues(cause).Inc()
	}
	t.fiveXX.Store(0)
}

// observe counts a response's status for passive ejection.
func (pool *originPool) observe(t *originTarget, code int) {
	if code < 500 {
		if t.fiveXX.Load() != 0 {
			t.fiveXX.Store(0)
		}
		return
	}
	if t.fiveXX.Add(1) >= ejectAfter5xx {
		pool.eject(t, ejectCause5xx)
	}
}

// Causes of ejection, the values of keyedge_origin_ejections_total's
// cause label.
const (
	ejectCauseConnect = "connect"
	ejectCause5xx     = "5xx"
	ejectCauseCheck   = "check"
)

// originRoundTrip sends out to route's origin through the pool's
// transports, passing 1xx responses to got1xx (nil: the request's
// client trace's, on the fast path). For a pool of several origins, it
// counts the response for passive ejection, ejects the origin when the
// connection failed, and then sends an idempotent bodiless request once
// more, to another origin, recorded in route.
func (p *Proxy) originRoundTrip(route *proxyRoute, out *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	res, err := p.send(route.pool.tr, out, got1xx)
	pool := route.pool
	if len(pool.targets) < 2 {
		return res, err
	}
	if err == nil {
		pool.observe(route.target, res.StatusCode)
		return res, nil
	}
	if out.Context().Err() != nil || !connectionFailed(err) {
		return nil, err
	}
	pool.eject(route.target, ejectCauseConnect)
	next := pool.pick(route.target)
	if next == nil || !replayable(out) {
		return nil, err
	}
	pool.book.metrics.retries.Inc()
	retry := out.Clone(out.Context())
	in := *route.in
	retry.URL = &in
	(&httputil.ProxyRequest{Out: retry}).SetURL(next.url)
	route.target, route.origin = next, next.url
	if res, err = p.send(pool.tr, retry, got1xx); err == nil {
		pool.observe(next, res.StatusCode)
	} else if connectionFailed(err) {
		pool.eject(next, ejectCauseConnect)
	}
	return res, err
}

// send sends out through tr.
func (p *Proxy) send(tr *originTransports, out *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	if !fastPath(out) {
		return tr.std.RoundTrip(out)
	}
	if got1xx != nil {
		return tr.fast.do(out, got1xx)
	}
	return tr.fast.RoundTrip(out)
}

// connectionFailed reports whether err is a failure to connect to an
// origin, or the connection's failing before any byte of a response:
// the origin did not answer, so another may. A timeout waiting for the
// response is not one (the origin may be at work on the request), nor
// is a certificate the edge refused.
func connectionFailed(err error) bool {
	var certErr *x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &hostErr) {
		return false
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true // refused, unreachable, or no connection in time
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return false
	}
	return errors.Is(err, errNoResponse) || errors.Is(err, syscall.ECONNREFUSED) || err == io.EOF
}

// replayable reports whether out may be sent again: bodiless, with an
// idempotent method (RFC 9110, section 9.2.2) or an Idempotency-Key.
func replayable(out *http.Request) bool {
	if out.Body != nil && out.Body != http.NoBody || out.ContentLength > 0 {
		return false
	}
	switch out.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	_, key := out.Header["Idempotency-Key"]
	_, xkey := out.Header["X-Idempotency-Key"]
	return key || xkey
}

// errNoResponse marks a failure on a connection to an origin before any
// byte of its response arrived.
var errNoResponse = errors.New("edge: origin connection failed before a response")
