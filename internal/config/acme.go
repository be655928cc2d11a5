package config

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/certs/acme"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// ACMEManager makes the ACME manager of a node whose keystore is store
// over storage, answering challenges on the node's bound listeners
// httpAddr (port 80) and tlsAddr (443). It returns nil when ACME is off.
func (c *Edge) ACMEManager(store *keystore.Store, storage certmagic.Storage, httpAddr, tlsAddr net.Addr, log *slog.Logger, reg prometheus.Registerer) (*acme.Manager, error) {
	a := c.ACME
	if a.CA == "" {
		return nil, nil
	}
	opts := acme.Options{
		Store: store, Storage: storage, CA: a.CA, Email: a.Email,
		RenewalWindow: a.RenewalWindow, CheckInterval: a.CheckInterval,
		Logger: log, Registerer: reg,
	}
	roots, err := c.acmeRoots()
	if err != nil {
		return nil, err
	}
	opts.TrustedRoots = roots
	// certmagic opens its own challenge listener unless one is bound at
	// the ports it is told; tell it the node's own.
	if ta, ok := tlsAddr.(*net.TCPAddr); ok && ta.Port != 443 {
		opts.TLSPort = ta.Port
	}
	if ha, ok := httpAddr.(*net.TCPAddr); ok && ha.Port != 80 {
		opts.HTTPPort = ha.Port
	}
	if p := a.OnDemand; p.Enabled {
		opts.OnDemand = &acme.OnDemandPolicy{
			Rate: rate.Limit(p.PerMinute / 60), Burst: p.Burst,
			CheckRate: rate.Limit(p.ChecksPerSecond), CheckBurst: p.CheckBurst, RefusedTTL: p.RefusedTTL,
		}
		if p.AllowURL != "" {
			allow, err := acme.AllowURL(nil, p.AllowURL)
			if err != nil {
				return nil, fmt.Errorf("edge: acme.on_demand.allow_url: %w", err)
			}
			opts.OnDemand.Allow = allow
		}
	}
	return acme.NewManager(opts)
}

// acmeRoots reads acme.ca_root_file, or returns nil (the system roots)
// without one.
func (c *Edge) acmeRoots() (*x509.CertPool, error) {
	if c.ACME.CARootFile == "" {
		return nil, nil
	}
	roots, err := certs.ReadCertPool(c.Path(c.ACME.CARootFile))
	if err != nil {
		return nil, fmt.Errorf("edge: acme.ca_root_file: %w", err)
	}
	return roots, nil
}
