package acme

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mathrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/excerpt"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// ErrWildcard is returned for a wildcard name: HTTP-01 and TLS-ALPN-01,
// the challenges an edge can answer, cannot prove control of one.
var ErrWildcard = errors.New("acme: wildcard names need DNS-01, which the edge does not answer")

// Options configures a Manager. Store, Storage and CA are required;
// every other field has a working zero value, with the default in brackets.
type Options struct {
	// Store is the keystore obtained certificates are Put into (their
	// keys sealed at rest with its fleet key) and looked up from.
	Store *keystore.Store

	// Storage must be the Store's storage. It also holds the ACME account
	// (so a fleet shares one), the per-name issuance locks, the
	// challenge tokens any node answers from, and the index of managed
	// names (acme/managed/<h2>/<name>).
	Storage certmagic.Storage

	// CA is the ACME directory URL, e.g. Let's Encrypt's staging
	// directory. There is no default, so nobody reaches a production CA
	// by accident. Every node of a fleet must use the same URL: challenge
	// tokens are stored under it.
	CA string

	// Email is the ACME account's contact address (expiry notices); empty
	// registers an account without one.
	Email string

	// TrustedRoots verify the CA's HTTPS certificate [the system roots].
	TrustedRoots *x509.CertPool

	// ChallengeHost, HTTPPort and TLSPort are where this node answers
	// challenges [all interfaces, 80, 443]. The edge answers them on its
	// own listeners (HTTPHandler, GetChallengeConfig); certmagic opens a
	// listener there only for as long as a challenge lasts, and only if
	// nothing listens there yet, so bind the edge's listeners first.
	ChallengeHost     string
	HTTPPort, TLSPort int

	// DisableHTTP01 and DisableTLSALPN01 turn a challenge type off, both
	// for orders and for answering.
	DisableHTTP01, DisableTLSALPN01 bool

	// RenewalWindow is the last fraction of a certificate's lifetime in
	// which it is renewed [1/3, certmagic's default].
	RenewalWindow float64

	// CheckInterval is the period of the renewal loop, jittered by ±10%
	// [1h]. Each pass reads the managed index, one file per name.
	CheckInterval time.Duration

	// RetryBase and RetryMax bound the backoff after a failed order for a
	// name: RetryBase doubling per consecutive failure up to RetryMax,
	// ±25% jitter [1m, 6h]. The state is in storage, so it holds fleet-wide.
	RetryBase, RetryMax time.Duration

	// OnDemand, if set, allows obtaining certificates during handshakes.
	OnDemand *OnDemandPolicy

	// Now is the clock that decides when a certificate is due for
	// renewal, when a failed name may be retried (the backoff recorded
	// fleet-wide) and when a staple is refreshed [time.Now]. Tests set it
	// to step past a backoff without waiting.
	Now func() time.Time

	// HTTPClient fetches OCSP responses [a client with a 10s timeout].
	HTTPClient *http.Client

	// Logger [slog.Default()]. Registerer, if set, gets the
	// keyedge_acme_* metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// A Request names a certificate to obtain: its DNS names, the first being
// the primary name that keys the managed index, and the tenant meta it is
// stored with.
type Request struct {
	Names  []string
	Tenant string
	Origin string
}

// Manager obtains certificates from an ACME CA into the keystore, renews
// them before expiry, keeps their OCSP staples fresh, and answers the
// CA's HTTP-01 and TLS-ALPN-01 challenges for any node of the fleet. Nodes
// sharing a storage share the account and obtain each name once. It is
// safe for concurrent use.
type Manager struct {
	// Static after NewManager.
	store      *keystore.Store
	storage    certmagic.Storage
	cache      *certmagic.Cache
	magic      *certmagic.Config
	issuer     *certmagic.ACMEIssuer
	ca         string
	window     float64
	interval   time.Duration
	retryBase  time.Duration
	retryMax   time.Duration
	now        func() time.Time
	onDemand   *onDemandGuard // nil without OnDemand
	httpClient *http.Client
	log        *slog.Logger
	metrics    *metrics

	flight singleflight.Group // one order per name in this process
}

// NewManager checks opts and returns a Manager. It contacts nobody: the
// account is registered (or loaded from storage) on the first order.
// Call Run to start renewing, and Close when done.
func NewManager(opts Options) (*Manager, error) {
	switch {
	case opts.Store == nil:
		return nil, errors.New("acme: Options.Store is nil")
	case opts.Storage == nil:
		return nil, errors.New("acme: Options.Storage is nil")
	case opts.CA == "":
		return nil, errors.New("acme: Options.CA is empty (try Let's Encrypt's staging directory first)")
	case opts.DisableHTTP01 && opts.DisableTLSALPN01:
		return nil, errors.New("acme: both ACME challenge types are disabled")
	case opts.RenewalWindow < 0 || opts.RenewalWindow >= 1:
		return nil, fmt.Errorf("acme: renewal window %v is not a fraction in [0, 1)", opts.RenewalWindow)
	}
	opts = opts.withDefaults()
	m := &Manager{
		store:      opts.Store,
		storage:    opts.Storage,
		ca:         opts.CA,
		window:     opts.RenewalWindow,
		interval:   opts.CheckInterval,
		retryBase:  opts.RetryBase,
		retryMax:   opts.RetryMax,
		now:        opts.Now,
		httpClient: opts.HTTPClient,
		log:        opts.Logger,
		metrics:    newMetrics(),
	}
	if opts.OnDemand != nil {
		m.onDemand = newOnDemandGuard(*opts.OnDemand)
	}
	// certmagic logs through zap; its messages are dropped and the
	// Manager logs what it does itself through slog.
	nop := zap.NewNop()
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		Logger:           nop,
	})
	// certmagic's storage seals its private keys (the ACME account key)
	// with the fleet key, as tenant keys are.
	secrets := &sealedStorage{Storage: opts.Storage, store: opts.Store}
	m.magic = certmagic.New(m.cache, certmagic.Config{Storage: secrets, Logger: nop})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      opts.CA,
		Email:                   opts.Email,
		Agreed:                  true,
		TrustedRoots:            opts.TrustedRoots,
		ListenHost:              opts.ChallengeHost,
		AltHTTPPort:             opts.HTTPPort,
		AltTLSALPNPort:          opts.TLSPort,
		DisableHTTPChallenge:    opts.DisableHTTP01,
		DisableTLSALPNChallenge: opts.DisableTLSALPN01,
		Logger:                  nop,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	if err := m.metrics.register(opts.Registerer); err != nil {
		m.cache.Stop()
		return nil, err
	}
	return m, nil
}

// withDefaults returns o with every zero field that has a default set
// to it, OnDemand's included (a copy: the caller's policy is not
// modified).
func (o Options) withDefaults() Options {
	o.RenewalWindow = cmp.Or(o.RenewalWindow, certmagic.DefaultRenewalWindowRatio)
	o.CheckInterval = cmp.Or(o.CheckInterval, time.Hour)
	o.RetryBase = cmp.Or(o.RetryBase, time.Minute)
	o.RetryMax = cmp.Or(o.RetryMax, 6*time.Hour)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.OnDemand != nil {
		p := o.OnDemand.withDefaults(o.Now)
		o.OnDemand = &p
	}
	return o
}

// Close stops certmagic's cache goroutine. It does not stop Run, which
// ends with its context.
func (m *Manager) Close() error {
	m.cache.Stop()
	return nil
}

// Obtain declares req's names as managed and obtains a certificate for
// them unless the managed index already records a current certificate
// for exactly these names (another node may have just obtained it). It
// returns the ID of the certificate serving the names. A failure is
// recorded for the renewal loop's backoff; Obtain itself does not wait
// for a backoff to pass.
func (m *Manager) Obtain(ctx context.Context, req Request) (string, error) {
	e, err := m.declare(ctx, req)
	if err != nil {
		return "", err
	}
	e, err = m.issue(ctx, e.Names[0], orderObtain, "")
	if err != nil {
		return "", err
	}
	return e.CertID, nil
}

// Declare records req's names as managed without obtaining anything: the
// renewal loop of some node obtains the certificate on its next pass, or
// a handshake does at once when OnDemand is on. Declaring a name that is
// already managed updates its names, tenant and origin.
func (m *Manager) Declare(ctx context.Context, req Request) error {
	_, err := m.declare(ctx, req)
	return err
}

func (m *Manager) declare(ctx context.Context, req Request) (*managedEntry, error) {
	names, err := normalizeNames(req.Names)
	if err != nil {
		return nil, err
	}
	if req.Tenant == "" {
		return nil, errors.New("acme: request without a tenant")
	}
	var e *managedEntry
	err = withNameLock(ctx, m.storage, m.log, names[0], func() error {
		old, err := m.loadEntry(ctx, names[0])
		if err != nil && !errors.Is(err, ErrNotManaged) {
			return err
		}
		e = &managedEntry{}
		if old != nil {
			e = old
		}
		e.Names, e.Tenant, e.Origin = names, req.Tenant, req.Origin
		return m.storeEntry(ctx, e)
	})
	if err == nil && m.onDemand != nil {
		m.onDemand.refused.Invalidate(names[0])
	}
	return e, err
}

// Unmanage stops ACME management of name fleet-wide: no node renews it
// or obtains it on demand any more. It returns an error wrapping
// ErrNotManaged for a name that was not managed. The certificate stays in
// the keystore until removed (keyctl rm unmanages and removes).
func Unmanage(ctx context.Context, storage certmagic.Storage, name string) error {
	name, err := keystore.NormalizeName(name)
	if err != nil {
		return err
	}
	return withNameLock(ctx, storage, slog.Default(), name, func() error { return deleteEntry(ctx, storage, name) })
}

// normalizeNames normalises and de-duplicates names, keeping the first
// first, and refuses wildcards.
func normalizeNames(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, errors.New("acme: request without names")
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		norm, err := keystore.NormalizeName(n)
		if err != nil {
			return nil, fmt.Errorf("acme: name %q: %w", n, err)
		}
		if strings.HasPrefix(norm, "*.") {
			return nil, fmt.Errorf("%w: %s", ErrWildcard, norm)
		}
		if !slices.Contains(out, norm) {
			out = append(out, norm)
		}
	}
	return out, nil
}

// orderKind says why a certificate is ordered, for metrics and logs.
type orderKind string

const (
	orderObtain   orderKind = "obtain"    // keyctl issue, or a declared name without a certificate
	orderRenew    orderKind = "renew"     // in the renewal window
	orderRevoked  orderKind = "revoked"   // OCSP says revoked
	orderOnDemand orderKind = "on_demand" // a handshake
)

// issue obtains a certificate for the managed name primary, once per
// name however many goroutines (singleflight) and nodes (the storage
// lock) ask, and returns the managed entry as it then is. After taking
// the lock it re-reads the entry from storage: if another node stored a
// certificate that needs no replacing, the CA is not asked. For a
// revocation, revokedID names the revoked certificate, and nothing is
// ordered if the entry has moved on from it.
func (m *Manager) issue(ctx context.Context, primary string, kind orderKind, revokedID string) (*managedEntry, error) {
	v, err, _ := m.flight.Do(primary, func() (any, error) {
		var out *managedEntry
		err := withNameLock(ctx, m.storage, m.log, primary, func() error {
			e, err := m.loadEntry(ctx, primary)
			if err != nil {
				return err
			}
			out = e
			if kind == orderRevoked && e.CertID != revokedID {
				return nil
			}
			if e.CertID != "" && !m.needsOrder(e, kind, m.now()) {
				return nil
			}
			_, err = m.order(ctx, e, kind)
			return err
		})
		return out, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*managedEntry), nil
}

// needsOrder reports whether e, which has a certificate, should get a new
// one for an order of this kind: always after a revocation (the caller
// checked, under the lock, that the revoked certificate is still e's),
// otherwise only when the certificate no longer covers e's names or is
// in its renewal window.
func (m *Manager) needsOrder(e *managedEntry, kind orderKind, now time.Time) bool {
	return kind == orderRevoked || !slices.Equal(e.Covered, e.Names) || m.inWindow(e, now)
}

// inWindow reports whether e's certificate is in its renewal window.
func (m *Manager) inWindow(e *managedEntry, now time.Time) bool {
	life := e.NotAfter.Sub(e.NotBefore)
	renewAt := e.NotAfter.Add(-time.Duration(float64(life) * m.window))
	return !now.Before(renewAt)
}

// order asks the CA for a certificate for e, stores it with a fresh key
// sealed by the keystore, and records the outcome in e. The caller holds
// e's name lock. The certificate being replaced stays in the keystore
// until Put has stored the new one (and then for the keystore's grace).
func (m *Manager) order(ctx context.Context, e *managedEntry, kind orderKind) (string, error) {
	start := time.Now()
	id, err := m.orderOnce(ctx, e)
	if err != nil {
		e.Failures++
		e.RetryAt = m.now().Add(m.backoff(e.Failures))
		e.LastError = excerpt.Of(err.Error(), 300)
		m.metrics.certificates.WithLabelValues("failed").Inc()
		m.log.Warn("acme: order failed", "name", e.Names[0], "kind", kind, "failures", e.Failures,
			"retry_at", e.RetryAt.UTC().Format(time.RFC3339), "err", err)
		if serr := m.storeEntry(context.WithoutCancel(ctx), e); serr != nil {
			m.log.Error("acme: failed to record ACME failure", "name", e.Names[0], "err", serr)
		}
		return "", err
	}
	result := "obtained"
	if e.Orders > 1 {
		result = "renewed"
	}
	m.metrics.certificates.WithLabelValues(result).Inc()
	m.log.Info("acme: certificate stored", "name", e.Names[0], "kind", kind, "id", id,
		"not_after", e.NotAfter.UTC().Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond))
	return id, nil
}

// orderOnce does one order: key, CSR, the CA, the keystore, the index.
func (m *Manager) orderOnce(ctx context.Context, e *managedEntry) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("acme: failed to generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: e.Names[0]},
		DNSNames: e.Names,
	}, key)
	if err != nil {
		return "", fmt.Errorf("acme: failed to create CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return "", fmt.Errorf("acme: failed to parse CSR: %w", err)
	}
	issued, err := m.issuer.Issue(ctx, csr)
	if err != nil {
		return "", fmt.Errorf("acme: order for %s: %w", e.Names[0], err)
	}
	chain, err := certs.ParseChainPEM(issued.Certificate)
	if err != nil {
		return "", fmt.Errorf("acme: CA returned a bad chain for %s: %w", e.Names[0], err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return "", fmt.Errorf("acme: CA returned a bad leaf for %s: %w", e.Names[0], err)
	}
	if err := certs.KeyMatchesCert(key, leaf); err != nil {
		return "", fmt.Errorf("acme: CA returned a certificate for another key: %w", err)
	}
	b := &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: e.Tenant, Origin: e.Origin, ACMECA: m.ca},
		Chain: chain,
		Key:   key,
	}
	e.OCSPNext = time.Time{}
	// A staple is a bonus at this point: the renewal loop fetches it
	// again if the responder is down now.
	if staple, err := m.fetchOCSP(ctx, chain); err == nil {
		b.OCSP = staple.raw
		e.OCSPNext = staple.refreshAt
	} else if !errors.Is(err, errNoOCSP) {
		m.log.Warn("acme: no OCSP staple for new certificate", "name", e.Names[0], "err", err)
	}
	ids, err := m.store.Put(ctx, b)
	if err != nil {
		return "", fmt.Errorf("acme: failed to store certificate for %s: %w", e.Names[0], err)
	}
	e.CertID, e.Covered, e.NotBefore, e.NotAfter = ids[0], e.Names, leaf.NotBefore, leaf.NotAfter
	e.Failures, e.RetryAt, e.LastError = 0, time.Time{}, ""
	e.Orders++
	if err := m.storeEntry(ctx, e); err != nil {
		// The certificate is stored and served; only renewal bookkeeping
		// is behind, and the next pass sees the new NotAfter via the
		// keystore. Report it anyway.
		return ids[0], err
	}
	return ids[0], nil
}

// backoff is the wait after the n-th consecutive failure.
func (m *Manager) backoff(n int) time.Duration {
	d := float64(m.retryBase) * math.Pow(2, float64(min(n-1, 30)))
	d = min(d, float64(m.retryMax))
	return time.Duration(d * (0.75 + 0.5*mathrand.Float64()))
}

// withNameLock runs fn holding the fleet-wide issuance lock of name, the
// one certmagic itself takes for a name ("issue_cert_"+name).
func withNameLock(ctx context.Context, storage certmagic.Storage, log *slog.Logger, name string, fn func() error) error {
	key := "issue_cert_" + name
	if err := storage.Lock(ctx, key); err != nil {
		return fmt.Errorf("acme: failed to lock %s: %w", name, err)
	}
	defer func() {
		if err := storage.Unlock(context.WithoutCancel(ctx), key); err != nil {
			log.Error("acme: failed to unlock", "name", name, "err", err)
		}
	}()
	return fn()
}
