package edge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"

	"github.com/keyedge/keyedge/keystore"
	"github.com/maypok86/otter/v2"
)

// Tenants' own origin settings (a CA bundle, a server name, a client
// certificate, timeouts) need connection pools of their own. Tenants
// with the same settings share one, so the pools are keyed by the
// settings, and at most maxTenantTransports are kept: the least used go,
// their idle connections closed (a pool still holding one keeps using
// it until its keystore entry is replaced).

// maxTenantTransports bounds the transports kept for tenants' settings,
// and tenantIdleConns each one's idle connections.
const (
	maxTenantTransports = 256
	tenantIdleConns     = 64
)

// transportCache holds the transports of tenants' origin settings. It
// is safe for concurrent use.
type transportCache struct {
	opts    ProxyOptions // the proxy's, with defaults: what a tenant's settings override
	cache   *otter.Cache[[sha256.Size]byte, *originTransports]
	metrics *originMetrics
}

func newTransportCache(opts ProxyOptions, metrics *originMetrics) *transportCache {
	return &transportCache{
		opts:    opts,
		metrics: metrics,
		cache: otter.Must(&otter.Options[[sha256.Size]byte, *originTransports]{
			MaximumSize: maxTenantTransports,
			OnDeletion: func(e otter.DeletionEvent[[sha256.Size]byte, *originTransports]) {
				metrics.transports.Dec()
				e.Value.close()
			},
		}),
	}
}

// get returns the transports of cfg's settings, with the client key of
// c's record when cfg has a client certificate, building them once
// however many requests ask.
func (tc *transportCache) get(c *keystore.Cert, cfg keystore.OriginPool) (*originTransports, error) {
	return tc.cache.Get(context.Background(), settingsKey(cfg), otter.LoaderFunc[[sha256.Size]byte, *originTransports](
		func(context.Context, [sha256.Size]byte) (*originTransports, error) {
			tr, err := tc.build(c, cfg)
			if err == nil {
				tc.metrics.transports.Inc()
			}
			return tr, err
		}))
}

// settingsKey identifies the settings a transport is built from.
func settingsKey(cfg keystore.OriginPool) [sha256.Size]byte {
	h := sha256.New()
	binary.Write(h, binary.BigEndian, [2]int64{int64(cfg.ConnectTimeout), int64(cfg.ResponseTimeout)})
	if t := cfg.TLS; t != nil {
		for _, field := range [][]byte{t.CA, []byte(t.ServerName), t.ClientCert} {
			binary.Write(h, binary.BigEndian, uint64(len(field)))
			h.Write(field)
		}
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// build makes the transports of cfg's settings.
func (tc *transportCache) build(c *keystore.Cert, cfg keystore.OriginPool) (*originTransports, error) {
	opts := tc.opts
	if cfg.ConnectTimeout > 0 {
		opts.DialTimeout = cfg.ConnectTimeout
	}
	if cfg.ResponseTimeout > 0 {
		opts.OriginTimeout = cfg.ResponseTimeout
	}
	opts.MaxIdleConnsPerHost = min(opts.MaxIdleConnsPerHost, tenantIdleConns)
	tlsConfig, err := originTLSConfig(c, cfg.TLS, opts.OriginRootCAs)
	if err != nil {
		return nil, err
	}
	return &originTransports{
		fast: newOriginClient(opts, tenantIdleConns),
		std:  newStdTransport(opts, tlsConfig, tenantIdleConns),
	}, nil
}

// originTLSConfig is the client TLS configuration for a pool's https
// origins: verified against the tenant's CA bundle, or roots (nil: the
// system's), for the tenant's server name or else each URL's host, with
// the tenant's client certificate if it has one.
func originTLSConfig(c *keystore.Cert, t *keystore.OriginTLS, roots *x509.CertPool) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if t == nil {
		return cfg, nil
	}
	if len(t.CA) > 0 {
		pool, err := t.CertPool()
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		cfg.RootCAs = pool
	}
	cfg.ServerName = t.ServerName
	if len(t.ClientCert) > 0 {
		chain, err := t.ClientChain()
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		key, err := c.OriginClientKey()
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{{Certificate: chain, PrivateKey: key}}
	}
	return cfg, nil
}

// close closes the idle connections of every transport kept.
func (tc *transportCache) close() {
	for _, tr := range tc.cache.All() {
		tr.close()
	}
}
