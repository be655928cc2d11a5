package edge

import (
	"context"
	"crypto"

	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
)

// KeylessRoute signs certificates whose meta says RouteKeyless through
// the key servers the meta lists, with client: the first healthy one in
// the tenant's order of preference, failing over to the next. Every
// other certificate is signed with its local key.
func KeylessRoute(client *keyserver.Client) RouteFunc {
	return func(ctx context.Context, c *keystore.Cert) (crypto.Signer, error) {
		if c.Meta.Route != keystore.RouteKeyless {
			return LocalRoute(ctx, c)
		}
		servers := make([]keyserver.Endpoint, len(c.Meta.KeyServers))
		for i, addr := range c.Meta.KeyServers {
			servers[i] = keyserver.Endpoint{Addr: addr, Preference: i}
		}
		ref := keyserver.KeyRef{CertID: c.ID}
		if len(c.Leaf.DNSNames) > 0 {
			ref.SNI = c.Leaf.DNSNames[0]
		}
		return client.Key(ctx, c.Leaf.PublicKey, ref, servers)
	}
}
