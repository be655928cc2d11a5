package edge

import (
	"cmp"
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/keyedge/keyedge/internal/ratelog"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// ErrNoKeyServer is returned when a handshake needs a key server and none
// is available to this node: a keyless tenant on a node with no keyless
// client, or a geo-restricted key whose policy excludes this node and
// admits none of the key servers in the directory.
var ErrNoKeyServer = errors.New("edge: no key server this node may use for the certificate")

// KeyServer is an entry of the key server directory: a key server that
// can sign for geo-restricted keys whose policy admits its attributes.
type KeyServer struct {
	Addr       string         // host:port
	Attributes geo.Attributes // where it runs, as its node key says
	Preference int            // lower is preferred; latency orders equals
}

// router decides, per certificate, where its handshake signatures are
// made (DESIGN.md, "Data flow", step 3):
//
//   - a keyless tenant: through the key servers its record lists;
//   - no geo policy: the local key;
//   - a policy admitting this node: the local key, opened through the
//     policy key;
//   - otherwise: the directory's key servers the policy admits, most
//     preferred first, with failover by the keyless client.
type router struct {
	node      geo.Attributes // the store's node key's: keystore.Store.NodeAttributes
	directory []KeyServer
	client    *keyserver.Client // nil: no keyless signing
	decisions routeCounters
	log       *slog.Logger
	logs      *ratelog.Limiter // refusals are logged at most every 10s; metrics count all

	admitted sync.Map // policy ID → []keyserver.Endpoint
}

// signer returns the signer for c's handshake signature, and its route:
// routeLocal, routeKeyless or routeGeo.
func (r *router) signer(ctx context.Context, c *keystore.Cert) (crypto.Signer, string, error) {
	if c.Meta.Route == keystore.RouteKeyless {
		servers := make([]keyserver.Endpoint, len(c.Meta.KeyServers))
		for i, addr := range c.Meta.KeyServers {
			servers[i] = keyserver.Endpoint{Addr: addr, Preference: i}
		}
		signer, err := r.remote(ctx, c, servers)
		return signer, routeKeyless, err
	}
	if c.Policy == nil || c.Policy.Admits(r.node) {
		key, err := c.Signer(ctx)
		if err == nil {
			r.decisions.local.Inc()
			return key, routeLocal, nil
		}
		// A key this node cannot open after all (a policy that admits
		// even no attributes on a node without a node key, or a key
		// moving to another policy) may still be signed by an admitted
		// key server.
		if c.Policy == nil || !errors.Is(err, keystore.ErrCannotOpen) {
			return nil, "", err
		}
	}
	signer, err := r.remote(ctx, c, r.admittedServers(c.Policy))
	return signer, routeGeo, err
}

// remote signs through the first reachable of servers.
func (r *router) remote(ctx context.Context, c *keystore.Cert, servers []keyserver.Endpoint) (crypto.Signer, error) {
	if r.client == nil || len(servers) == 0 {
		r.decisions.none.Inc()
		err := fmt.Errorf("%w: certificate %s of tenant %q (policy %q)", ErrNoKeyServer, c.ID, c.Meta.Tenant, c.Meta.Policy)
		r.logs.Log(ctx, r.log, slog.LevelWarn, "no_key_server", "edge: handshake refused: no key server this node may use for the certificate (logged at most every 10s)",
			"cert", c.ID, "tenant", c.Meta.Tenant, "policy", c.Meta.Policy, "fix", r.noKeyServerFix(c))
		return nil, err
	}
	r.decisions.keyless.Inc()
	ref := keyserver.KeyRef{CertID: c.ID}
	if len(c.Leaf.DNSNames) > 0 {
		ref.SNI = c.Leaf.DNSNames[0]
	}
	return r.client.Key(ctx, c.Leaf.PublicKey, ref, servers)
}

// noKeyServerFix says what an operator can do about a certificate with
// no key server this node may use.
func (r *router) noKeyServerFix(c *keystore.Cert) string {
	switch {
	case r.client == nil:
		return "give this node a keyless section in edge.yaml (its identity to key servers), then SIGUSR2"
	case c.Meta.Route == keystore.RouteKeyless:
		return "the certificate lists no key server: keyctl route NAME keyless --key-server HOST:PORT"
	}
	return "add a key server whose attributes the policy admits to geo.key_servers (SIGHUP), or widen the policy with keyctl policy set"
}

// admittedServers returns the directory entries whose attributes pol
// admits, most preferred first. The answer is kept per policy: the
// directory does not change while the server runs.
func (r *router) admittedServers(pol *geo.Policy) []keyserver.Endpoint {
	if v, ok := r.admitted.Load(pol.ID()); ok {
		return v.([]keyserver.Endpoint)
	}
	var servers []keyserver.Endpoint
	for _, ks := range r.directory {
		if pol.Admits(ks.Attributes) {
			servers = append(servers, keyserver.Endpoint{Addr: ks.Addr, Preference: ks.Preference})
		}
	}
	slices.SortStableFunc(servers, func(a, b keyserver.Endpoint) int { return cmp.Compare(a.Preference, b.Preference) })
	r.admitted.Store(pol.ID(), servers)
	return servers
}
