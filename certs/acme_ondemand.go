package certs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"golang.org/x/time/rate"
)

// ErrNotAllowed is returned by OnDemand for a name that is not a known
// tenant's: nothing is sent to the CA.
var ErrNotAllowed = errors.New("certs: on-demand issuance not allowed for this name")

// ErrRateLimited is returned by OnDemand when the fleet node's on-demand
// budget is spent, or the name is backing off after a failed order.
var ErrRateLimited = errors.New("certs: on-demand issuance rate limited")

// OnDemandPolicy guards obtaining certificates during handshakes, so a
// flood of random SNIs cannot make the edge spam the CA.
type OnDemandPolicy struct {
	// Allow decides whether a name without a certificate may be ordered,
	// and with which tenant and origin. Nil allows only names declared
	// for ACME (keyctl issue --defer, Manager.Declare): known tenants.
	// AllowURL asks a service of the operator instead.
	Allow func(ctx context.Context, name string) (Request, error)

	// Rate and Burst bound on-demand orders of this node, all names
	// together [1 per minute, burst 5]. Allowed names only consume it.
	Rate  rate.Limit
	Burst int
}

func (p *OnDemandPolicy) limiter() *rate.Limiter {
	return rate.NewLimiter(cmp.Or(p.Rate, rate.Every(time.Minute)), cmp.Or(p.Burst, 5))
}

// OnDemand obtains a certificate for a server name that has none, during
// a handshake: the edge calls it when the keystore has no certificate for
// the name, and looks the name up again on success. It returns
// ErrNotAllowed unless the policy allows the name (nothing reaches the
// CA then), ErrRateLimited when the rate is spent or the name is backing
// off, and the order's error otherwise. It is bounded by ctx, the
// handshake's deadline. Without an OnDemand policy it returns
// ErrNotAllowed.
func (m *Manager) OnDemand(ctx context.Context, serverName string) error {
	if m.onDemand == nil {
		m.metrics.onDemand.WithLabelValues("refused").Inc()
		return ErrNotAllowed
	}
	name, err := keystore.NormalizeName(serverName)
	if err != nil {
		m.metrics.onDemand.WithLabelValues("refused").Inc()
		return fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	e, err := m.loadEntry(ctx, name)
	switch {
	case errors.Is(err, ErrNotManaged):
		if m.onDemand.Allow == nil {
			m.metrics.onDemand.WithLabelValues("refused").Inc()
			return fmt.Errorf("%w: %s is not declared for ACME", ErrNotAllowed, name)
		}
		req, err := m.onDemand.Allow(ctx, name)
		if err != nil {
			m.metrics.onDemand.WithLabelValues("refused").Inc()
			return fmt.Errorf("%w: %s: %w", ErrNotAllowed, name, err)
		}
		if len(req.Names) == 0 {
			req.Names = []string{name}
		}
		if req.Names[0] != name {
			m.metrics.onDemand.WithLabelValues("refused").Inc()
			return fmt.Errorf("%w: allow hook answered for %q, not %s", ErrNotAllowed, req.Names[0], name)
		}
		if !m.limiter.Allow() {
			m.metrics.onDemand.WithLabelValues("rate_limited").Inc()
			return ErrRateLimited
		}
		if err := m.Declare(ctx, req); err != nil {
			m.metrics.onDemand.WithLabelValues("error").Inc()
			return err
		}
	case err != nil:
		m.metrics.onDemand.WithLabelValues("error").Inc()
		return err
	case time.Now().Before(e.RetryAt):
		m.metrics.onDemand.WithLabelValues("rate_limited").Inc()
		return fmt.Errorf("%w: %s is backing off until %s", ErrRateLimited, name, e.RetryAt.UTC().Format(time.RFC3339))
	case e.CertID != "" && !m.needsOrder(e, orderOnDemand, time.Now()):
		// Obtained by another node since this node's keystore cache
		// said the name had none: nothing to order.
		m.metrics.onDemand.WithLabelValues("obtained").Inc()
		return nil
	case !m.limiter.Allow():
		m.metrics.onDemand.WithLabelValues("rate_limited").Inc()
		return ErrRateLimited
	}
	if _, err := m.issue(ctx, name, orderOnDemand, ""); err != nil {
		m.metrics.onDemand.WithLabelValues("error").Inc()
		return err
	}
	m.metrics.onDemand.WithLabelValues("obtained").Inc()
	return nil
}

// AllowURL returns an OnDemandPolicy.Allow that asks the operator's
// service whether a name may get a certificate: GET base?domain=<name>;
// 200 allows, and a JSON body {"tenant": ..., "origin": ...} may name the
// tenant and origin (the tenant defaults to the name). Anything else
// refuses. client should have a short timeout [5s].
func AllowURL(client *http.Client, base string) (func(ctx context.Context, name string) (Request, error), error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("certs: allow URL %q is not an http(s) URL", base)
	}
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	return func(ctx context.Context, name string) (Request, error) {
		q := *u
		v := q.Query()
		v.Set("domain", name)
		q.RawQuery = v.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.String(), nil)
		if err != nil {
			return Request{}, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return Request{}, fmt.Errorf("allow URL: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return Request{}, fmt.Errorf("allow URL answered HTTP %d", resp.StatusCode)
		}
		var meta struct {
			Tenant string `json:"tenant"`
			Origin string `json:"origin"`
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if err != nil {
			return Request{}, fmt.Errorf("allow URL: %w", err)
		}
		if len(body) > 0 && json.Unmarshal(body, &meta) != nil {
			return Request{}, errors.New("allow URL answered a body that is not the expected JSON")
		}
		return Request{Names: []string{name}, Tenant: cmp.Or(meta.Tenant, name), Origin: meta.Origin}, nil
	}, nil
}
