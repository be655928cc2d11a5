package acme

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
	"github.com/maypok86/otter/v2"
	"golang.org/x/time/rate"
)

// ErrNotAllowed is returned by OnDemand for a name that is not a known
// tenant's: nothing is sent to the CA.
var ErrNotAllowed = errors.New("acme: on-demand issuance not allowed for this name")

// ErrRateLimited is returned by OnDemand when this node's on-demand
// budget (of checks or of orders) is spent, or the name is backing off
// after a failed order.
var ErrRateLimited = errors.New("acme: on-demand issuance rate limited")

// OnDemandPolicy guards obtaining certificates during handshakes, so a
// flood of random SNIs can make the edge spam neither the CA nor its
// storage nor the operator's allow service.
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

	// CheckRate and CheckBurst bound, all names together, the decisions
	// that need I/O: reading a name's ACME entry from storage, and
	// calling Allow for a name that has none [10 per second, burst 20].
	// Past them a name gets ErrRateLimited without any I/O, so a flood of
	// distinct unknown names costs at most this budget, not a storage
	// read and an HTTP call each. A declared name's first handshake
	// draws on the same budget.
	CheckRate  rate.Limit
	CheckBurst int

	// RefusedTTL is how long a name that was refused (not declared, or
	// refused by Allow) is refused again at once, without storage or
	// Allow [1m]. Up to 10,000 such names are remembered. A name declared
	// through this Manager is forgotten at once; one declared by another
	// node waits out the TTL here. A refusal caused by the caller's
	// context ending is not remembered.
	RefusedTTL time.Duration

	// Now is the clock of the rate limits, the refusal memory and the
	// backoff check [Options.Now].
	Now func() time.Time
}

// maxRefused bounds the names an onDemandGuard remembers as refused.
const maxRefused = 10_000

// onDemandGuard is an OnDemandPolicy in force. Static after NewManager;
// its limiters and cache are safe for concurrent use.
type onDemandGuard struct {
	allow   func(ctx context.Context, name string) (Request, error) // nil: declared names only
	orders  *rate.Limiter                                           // CA orders
	checks  *rate.Limiter                                           // storage reads and Allow calls
	refused *otter.Cache[string, struct{}]                          // names refused within RefusedTTL
	now     func() time.Time
}

// withDefaults returns p with every zero field set to its default; Now
// defaults to the Manager's clock, managerNow.
func (p OnDemandPolicy) withDefaults(managerNow func() time.Time) OnDemandPolicy {
	p.Rate = cmp.Or(p.Rate, rate.Every(time.Minute))
	p.Burst = cmp.Or(p.Burst, 5)
	p.CheckRate = cmp.Or(p.CheckRate, 10)
	p.CheckBurst = cmp.Or(p.CheckBurst, 20)
	p.RefusedTTL = cmp.Or(p.RefusedTTL, time.Minute)
	if p.Now == nil {
		p.Now = managerNow
	}
	return p
}

// newOnDemandGuard puts p, with its defaults applied, in force.
func newOnDemandGuard(p OnDemandPolicy) *onDemandGuard {
	return &onDemandGuard{
		allow:  p.Allow,
		orders: rate.NewLimiter(p.Rate, p.Burst),
		checks: rate.NewLimiter(p.CheckRate, p.CheckBurst),
		refused: otter.Must(&otter.Options[string, struct{}]{
			MaximumSize:      maxRefused,
			ExpiryCalculator: otter.ExpiryWriting[string, struct{}](p.RefusedTTL),
			Clock:            otterClock(p.Now),
		}),
		now: p.Now,
	}
}

// otterClock makes a clock function an otter.Clock. It does not tick:
// expired names are dropped when read or evicted by the size bound.
type otterClock func() time.Time

func (c otterClock) NowNano() int64                      { return c().UnixNano() }
func (c otterClock) Tick(time.Duration) <-chan time.Time { return nil }

// refuse records that name was refused, unless ctx ended: a refusal the
// caller's deadline caused says nothing about the name.
func (g *onDemandGuard) refuse(ctx context.Context, name string) {
	if ctx.Err() == nil {
		g.refused.Set(name, struct{}{})
	}
}

// OnDemand obtains a certificate for a server name that has none, during
// a handshake: the edge calls it when the keystore has no certificate for
// the name, and looks the name up again on success. It returns
// ErrNotAllowed unless the policy allows the name (nothing reaches the
// CA then), ErrRateLimited when the check or order budget is spent or
// the name is backing off, and the order's error otherwise. It is
// bounded by ctx, the handshake's deadline. Without an OnDemand policy it
// returns ErrNotAllowed.
//
// The order of the steps is the point: a name refused recently is
// refused from memory, then the check budget is taken, and only then are
// storage and Allow asked; the order budget is taken before the CA is.
func (m *Manager) OnDemand(ctx context.Context, serverName string) error {
	g := m.onDemand
	if g == nil {
		m.metrics.onDemand.WithLabelValues("refused").Inc()
		return ErrNotAllowed
	}
	name, err := keystore.NormalizeName(serverName)
	if err != nil {
		m.metrics.onDemand.WithLabelValues("refused").Inc()
		return fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	if _, ok := g.refused.GetIfPresent(name); ok {
		m.metrics.onDemand.WithLabelValues("refused").Inc()
		return fmt.Errorf("%w: %s was refused recently", ErrNotAllowed, name)
	}
	if !g.checks.AllowN(g.now(), 1) {
		m.metrics.onDemand.WithLabelValues("rate_limited").Inc()
		return fmt.Errorf("%w: too many names without a certificate", ErrRateLimited)
	}
	e, err := m.loadEntry(ctx, name)
	switch {
	case errors.Is(err, ErrNotManaged):
		req, err := m.allowOnDemand(ctx, name)
		if err != nil {
			g.refuse(ctx, name)
			m.metrics.onDemand.WithLabelValues("refused").Inc()
			return err
		}
		if !g.orders.AllowN(g.now(), 1) {
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
	case g.now().Before(e.RetryAt):
		m.metrics.onDemand.WithLabelValues("rate_limited").Inc()
		return fmt.Errorf("%w: %s is backing off until %s", ErrRateLimited, name, e.RetryAt.UTC().Format(time.RFC3339))
	case e.CertID != "" && !m.needsOrder(e, orderOnDemand, g.now()):
		// Obtained by another node since this node's keystore cache
		// said the name had none: nothing to order.
		m.metrics.onDemand.WithLabelValues("obtained").Inc()
		return nil
	case !g.orders.AllowN(g.now(), 1):
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

// allowOnDemand asks the policy's Allow about a name that is not
// managed, and returns the request to declare, or an error wrapping
// ErrNotAllowed.
func (m *Manager) allowOnDemand(ctx context.Context, name string) (Request, error) {
	if m.onDemand.allow == nil {
		return Request{}, fmt.Errorf("%w: %s is not declared for ACME", ErrNotAllowed, name)
	}
	req, err := m.onDemand.allow(ctx, name)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %s: %w", ErrNotAllowed, name, err)
	}
	if len(req.Names) == 0 {
		req.Names = []string{name}
	}
	if req.Names[0] != name {
		return Request{}, fmt.Errorf("%w: allow hook answered for %q, not %s", ErrNotAllowed, req.Names[0], name)
	}
	return req, nil
}

// AllowURL returns an OnDemandPolicy.Allow that asks the operator's
// service whether a name may get a certificate: GET base?domain=<name>;
// 200 allows, and a JSON body {"tenant": ..., "origin": ...} may name the
// tenant and origin (the tenant defaults to the name). Anything else
// refuses. client should have a short timeout [5s].
func AllowURL(client *http.Client, base string) (func(ctx context.Context, name string) (Request, error), error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("acme: allow URL %q is not an http(s) URL", base)
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
