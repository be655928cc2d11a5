package keystore

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyedge/keyedge/certs"
)

// ErrBadOriginSettings is returned for origin pool settings the edge
// cannot use (a weight, a health check, a timeout, or TLS settings); a
// bad origin URL wraps ErrBadOrigin instead.
var ErrBadOriginSettings = errors.New("keystore: bad origin settings")

// OriginPool is a tenant's origins and how the edge reaches them, set
// with `keyctl origin set` (Store.SetOrigins). Every record of a name
// holds the same pool. A zero field means the edge's default.
type OriginPool struct {
	// Targets are the origins requests are spread over, by weight.
	Targets []OriginTarget `json:"targets"`

	// Health is the active health check; a zero Path means none (the
	// edge still ejects an origin that refuses connections or answers
	// with a burst of 5xx, for a while).
	Health OriginHealth `json:"health,omitzero"`

	// ConnectTimeout bounds connecting to an origin, and separately its
	// TLS handshake [the edge's DialTimeout].
	ConnectTimeout time.Duration `json:"connect_timeout,omitempty"`
	// ResponseTimeout bounds the wait for an origin's response headers
	// [the edge's OriginTimeout].
	ResponseTimeout time.Duration `json:"response_timeout,omitempty"`

	// TLS is how the edge connects to https targets; nil: verified
	// against the edge's roots (the system's), with the URL's host as
	// the server name, and no client certificate.
	TLS *OriginTLS `json:"tls,omitempty"`
}

// OriginTarget is one origin of a pool.
type OriginTarget struct {
	URL    string `json:"url"`              // as ParseOrigin accepts it
	Weight int    `json:"weight,omitempty"` // share of requests relative to the others' [1]
}

// OriginHealth is an active health check: the edge sends GET Path to
// each origin every Interval, while the tenant has traffic, and takes an
// origin out after Unhealthy failures in a row, back after Healthy
// successes (a 2xx or 3xx answer within the interval).
type OriginHealth struct {
	Path      string        `json:"path,omitempty"`
	Interval  time.Duration `json:"interval,omitempty"`  // [10s]
	Healthy   int           `json:"healthy,omitempty"`   // [2]
	Unhealthy int           `json:"unhealthy,omitempty"` // [3]
}

// OriginTLS is how the edge connects to a pool's https origins.
// Verification is always on.
type OriginTLS struct {
	// CA is a PEM bundle of the authorities trusted for the origins'
	// certificates instead of the edge's roots; empty: the edge's.
	CA []byte `json:"ca,omitempty"`
	// ServerName is the name sent in SNI and verified in the origin's
	// certificate; empty: each URL's host.
	ServerName string `json:"server_name,omitempty"`
	// ClientCert is the PEM chain the edge presents to origins asking
	// for a client certificate (origin mTLS); its key is in
	// ClientKeySealed, sealed to the fleet key and bound to the record.
	ClientCert      []byte `json:"client_cert,omitempty"`
	ClientKeySealed []byte `json:"client_key_sealed,omitempty"`
}

// Bounds of what Check accepts.
const (
	maxOriginTargets  = 64
	maxOriginWeight   = 1000
	maxOriginPEM      = 64 << 10
	maxOriginTimeout  = 10 * time.Minute
	minHealthInterval = time.Second
	maxHealthInterval = time.Hour
	maxHealthStreak   = 10
)

// Defaults of the zero OriginHealth fields.
const (
	DefaultHealthInterval  = 10 * time.Second
	DefaultHealthHealthy   = 2
	DefaultHealthUnhealthy = 3
)

// WithDefaults returns h with its zero fields set to their defaults.
func (h OriginHealth) WithDefaults() OriginHealth {
	if h.Interval == 0 {
		h.Interval = DefaultHealthInterval
	}
	if h.Healthy == 0 {
		h.Healthy = DefaultHealthHealthy
	}
	if h.Unhealthy == 0 {
		h.Unhealthy = DefaultHealthUnhealthy
	}
	return h
}

// ParseOriginTarget parses URL[=WEIGHT], keyctl's form of a target. A
// URL with a query takes no weight (its last "=" is the query's).
func ParseOriginTarget(s string) (OriginTarget, error) {
	t := OriginTarget{URL: s, Weight: 1}
	if i := strings.LastIndexByte(s, '='); i >= 0 && !strings.ContainsAny(s[:i], "?#") && !strings.ContainsRune(s[i:], '/') {
		w, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return t, fmt.Errorf("%w: %q: weight %q is not a number", ErrBadOriginSettings, s, s[i+1:])
		}
		t.URL, t.Weight = s[:i], w
	}
	return t, nil
}

// Check reports every problem of p, each naming the setting: targets
// ParseOrigin refuses (wrapping ErrBadOrigin) or repeated, a weight
// outside 1 to 1000, a health check without a path starting with "/"
// or with an interval outside 1s to 1h, thresholds outside 1 to 10,
// negative or overlong timeouts, TLS settings with no https target, an
// unparseable CA bundle or client certificate, a server name that is
// not a host name, a client certificate without its key.
func (p *OriginPool) Check() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrBadOriginSettings}, args...)...))
	}
	switch n := len(p.Targets); {
	case n == 0:
		bad("no origin")
	case n > maxOriginTargets:
		bad("%d origins, at most %d", n, maxOriginTargets)
	}
	seen := make(map[string]bool, len(p.Targets))
	https := false
	for _, t := range p.Targets {
		u, err := ParseOrigin(t.URL)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		https = https || u.Scheme == "https"
		if seen[t.URL] {
			bad("origin %s given twice", t.URL)
		}
		seen[t.URL] = true
		if t.Weight < 1 || t.Weight > maxOriginWeight {
			bad("origin %s: weight %d, want 1 to %d", t.URL, t.Weight, maxOriginWeight)
		}
	}
	h := p.Health
	switch {
	case h.Path == "" && (h.Interval != 0 || h.Healthy != 0 || h.Unhealthy != 0):
		bad("health check settings without a health check path")
	case h.Path != "" && (!strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \r\n#")):
		bad("health check path %q: want an absolute path such as /healthz", h.Path)
	}
	if h.Interval != 0 && (h.Interval < minHealthInterval || h.Interval > maxHealthInterval) {
		bad("health check interval %v: want %v to %v", h.Interval, minHealthInterval, maxHealthInterval)
	}
	for name, n := range map[string]int{"healthy": h.Healthy, "unhealthy": h.Unhealthy} {
		if n < 0 || n > maxHealthStreak {
			bad("health check %s threshold %d: want 1 to %d", name, n, maxHealthStreak)
		}
	}
	for name, d := range map[string]time.Duration{"connect": p.ConnectTimeout, "response": p.ResponseTimeout} {
		if d < 0 || d > maxOriginTimeout {
			bad("%s timeout %v: want 0 (the edge's default) to %v", name, d, maxOriginTimeout)
		}
	}
	if p.TLS != nil {
		errs = append(errs, p.TLS.check(https))
	}
	return errors.Join(errs...)
}

// check reports the problems of t's settings; https says whether the
// pool has an https target they apply to.
func (t *OriginTLS) check(https bool) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrBadOriginSettings}, args...)...))
	}
	if !https {
		bad("TLS settings (CA bundle, server name, client certificate) but no https origin")
	}
	if len(t.CA) > 0 {
		if len(t.CA) > maxOriginPEM {
			bad("CA bundle of %d bytes, at most %d", len(t.CA), maxOriginPEM)
		} else if _, err := t.CertPool(); err != nil {
			bad("CA bundle: %v", err)
		}
	}
	if t.ServerName != "" {
		if net.ParseIP(t.ServerName) != nil {
			bad("server name %q is an IP address: the certificate is verified for the URL's host when no name is set", t.ServerName)
		} else if n, err := NormalizeName(t.ServerName); err != nil || n != t.ServerName || n[0] == '*' {
			bad("server name %q is not a host name in canonical form", t.ServerName)
		}
	}
	switch {
	case len(t.ClientCert) > maxOriginPEM:
		bad("client certificate of %d bytes, at most %d", len(t.ClientCert), maxOriginPEM)
	case len(t.ClientCert) > 0 && len(t.ClientKeySealed) == 0:
		bad("client certificate without its key")
	case len(t.ClientCert) == 0 && len(t.ClientKeySealed) > 0:
		bad("client key without its certificate")
	case len(t.ClientCert) > 0:
		if _, err := t.clientLeaf(); err != nil {
			bad("client certificate: %v", err)
		}
	}
	return errors.Join(errs...)
}

// CertPool returns the CA bundle as a pool; an error if it holds no
// certificate or a block that is not one.
func (t *OriginTLS) CertPool() (*x509.CertPool, error) {
	der, err := certs.ParseChainPEM(t.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// ClientChain returns the client certificate chain, DER, leaf first.
func (t *OriginTLS) ClientChain() ([][]byte, error) { return certs.ParseChainPEM(t.ClientCert) }

func (t *OriginTLS) clientLeaf() (*x509.Certificate, error) {
	chain, err := t.ClientChain()
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(chain[0])
}

// Origins returns the pool the edge serves the record's names from:
// OriginPool, or else a pool of the single Origin (none without one).
func (m *Meta) Origins() OriginPool {
	if m.OriginPool != nil {
		return *m.OriginPool
	}
	if m.Origin == "" {
		return OriginPool{}
	}
	return OriginPool{Targets: []OriginTarget{{URL: m.Origin, Weight: 1}}}
}

// simple reports whether p is one origin with every default, what
// Meta.Origin alone says.
func (p *OriginPool) simple() bool {
	return len(p.Targets) == 1 && p.Targets[0].Weight == 1 && p.Health == (OriginHealth{}) &&
		p.ConnectTimeout == 0 && p.ResponseTimeout == 0 && p.TLS == nil
}

// originKeyInfo binds a sealed origin client key to its record.
func originKeyInfo(id string) string { return "origin-client-key:" + id }

// SetOrigins sets the origin pool of every certificate of a name (or of
// one, by ID), with clientKey the key of pool.TLS.ClientCert (nil
// without one), sealed to the fleet key for each record. A pool of one
// origin with every default is stored as Meta.Origin alone. Every
// record also keeps the first origin in Meta.Origin, so edges from
// before origin pools go on serving the tenant. The pool is checked
// (Check, and the key against the certificate) before anything is read:
// a refused pool changes nothing. Edges pick the change up through the
// journal, like any record change.
func (s *Store) SetOrigins(ctx context.Context, nameOrID string, pool OriginPool, clientKey crypto.Signer) error {
	var keyDER []byte
	if pool.TLS != nil && len(pool.TLS.ClientCert) > 0 {
		if clientKey == nil {
			return fmt.Errorf("%w: client certificate without its key", ErrBadOriginSettings)
		}
		leaf, err := pool.TLS.clientLeaf()
		if err != nil {
			return fmt.Errorf("%w: client certificate: %v", ErrBadOriginSettings, err)
		}
		if err := certs.KeyMatchesCert(clientKey, leaf); err != nil {
			return fmt.Errorf("%w: client key: %w", ErrBadOriginSettings, err)
		}
		if keyDER, err = x509.MarshalPKCS8PrivateKey(clientKey); err != nil {
			return fmt.Errorf("%w: client key: %v", ErrBadOriginSettings, err)
		}
		defer clear(keyDER)
		// A placeholder for Check; each record gets its own seal.
		t := *pool.TLS
		t.ClientKeySealed = []byte{0}
		pool.TLS = &t
	} else if clientKey != nil {
		return fmt.Errorf("%w: client key without its certificate", ErrBadOriginSettings)
	}
	if err := pool.Check(); err != nil {
		return err
	}
	if keyDER != nil && s.fleet == nil {
		return fmt.Errorf("%w: no fleet key to seal the origin client key with", ErrNoSealer)
	}
	return s.updateRecords(ctx, nameOrID, func(id string, r *record) (func() error, error) {
		r.Origin = pool.Targets[0].URL
		if pool.simple() {
			r.OriginPool = nil
			return nil, nil
		}
		p := pool
		p.Targets = append([]OriginTarget(nil), pool.Targets...)
		if keyDER != nil {
			sealed, err := s.seal(s.fleet.priv.PublicKey(), FleetRecipient, originKeyInfo(id), keyDER)
			if err != nil {
				return nil, fmt.Errorf("keystore: failed to seal origin client key: %w", err)
			}
			t := *pool.TLS
			t.ClientKeySealed = sealed
			p.TLS = &t
		}
		r.OriginPool = &p
		return nil, nil
	})
}

// OriginClientKey opens the key of the certificate's origin client
// certificate (OriginTLS.ClientCert) with the fleet key, on first use;
// the key then stays with the cached Cert. It fails with ErrCannotOpen
// without a fleet key or a client certificate, and ErrCorrupt for a key
// sealed for another record or fleet. The key never appears in an error.
func (c *Cert) OriginClientKey() (crypto.Signer, error) {
	c.originKeyOnce.Do(func() { c.originKey, c.originKeyErr = c.openOriginKey() })
	return c.originKey, c.originKeyErr
}

func (c *Cert) openOriginKey() (crypto.Signer, error) {
	p := c.Meta.OriginPool
	if p == nil || p.TLS == nil || len(p.TLS.ClientKeySealed) == 0 {
		return nil, fmt.Errorf("%w: certificate %s has no origin client key", ErrCannotOpen, c.ID)
	}
	if c.store == nil || c.store.fleet == nil {
		return nil, fmt.Errorf("%w: origin client key of %s: no fleet key configured", ErrCannotOpen, c.ID)
	}
	f, err := parseSealed(p.TLS.ClientKeySealed)
	if err == nil && f.recipient != FleetRecipient {
		err = fmt.Errorf("%w: sealed to %q, not the fleet key", errMalformed, f.recipient)
	}
	var der []byte
	if err == nil {
		der, err = c.store.open(c.store.fleet.priv, f, originKeyInfo(c.ID))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: origin client key of %s: %w", ErrCorrupt, c.ID, err)
	}
	defer clear(der)
	key, err := certs.ParsePrivateKey("PRIVATE KEY", der)
	if err != nil {
		return nil, fmt.Errorf("%w: origin client key of %s: %w", ErrCorrupt, c.ID, err)
	}
	return key, nil
}

// memo holds what callers derive from a Cert once per cache entry
// (Cert.Memo).
type memo struct{ values sync.Map }

// Memo returns the value build derives from the certificate, for key,
// building it on first use. The value lives as long as this Cert is
// cached: a change to the record makes a new Cert, so the value is
// derived anew then, never per lookup. The edge keeps its parsed origin
// pool here. build may run more than once when callers race; one
// result wins.
func (c *Cert) Memo(key any, build func(*Cert) any) any {
	if v, ok := c.memo.values.Load(key); ok {
		return v
	}
	v, _ := c.memo.values.LoadOrStore(key, build(c))
	return v
}

// size estimates the heap p holds, for the cache's byte bound.
func (p *OriginPool) size() int64 {
	if p == nil {
		return 0
	}
	n := int64(128)
	for _, t := range p.Targets {
		n += int64(len(t.URL)) + 32
	}
	n += int64(len(p.Health.Path))
	if p.TLS != nil {
		n += int64(len(p.TLS.CA) + len(p.TLS.ServerName) + len(p.TLS.ClientCert) + len(p.TLS.ClientKeySealed))
	}
	return n
}
