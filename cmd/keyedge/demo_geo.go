package main

import (
	"context"
	"fmt"

	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// The demo's geo-restricted tenants. The edge runs as an EU node: it
// signs for the EU tenant with its own node key, and cannot open the US
// tenant's key, which a key server with US attributes signs instead.
const (
	geoEUHost     = "eu.geo." + demoDomain
	geoUSHost     = "us.geo." + demoDomain
	demoEdgeAttrs = "region: eu, country: de, dc: fra1"
	demoKSAttrs   = "region: us, country: us, dc: iad1"
)

// demoGeo creates the geo master key and the edge's node key, stores the
// two restricted tenants, and starts the US key server over the same
// keystore with its own node key. It returns the edge.yaml lines.
func demoGeo(ctx context.Context, w *testworld.World) (string, error) {
	if err := w.EnableGeo(ctx); err != nil {
		return "", err
	}
	edgeKey, err := w.NodeKey(demoEdgeAttrs)
	if err != nil {
		return "", err
	}
	if err := geo.WriteNodeKeyFile(w.Path("node.key"), edgeKey); err != nil {
		return "", err
	}
	for host, policy := range map[string]string{geoEUHost: "region: eu", geoUSHost: "region: us"} {
		if _, err := w.PutRestricted(ctx, host, policy); err != nil {
			return "", err
		}
	}

	ksKey, err := w.NodeKey(demoKSAttrs)
	if err != nil {
		return "", err
	}
	ksStore, err := w.OpenStore(ctx, keystore.Options{NodeKey: ksKey})
	if err != nil {
		return "", err
	}
	ks := demoKeyServer(geoUSHost)
	ks.Store = ksStore
	addr, err := w.StartKeyServer(ks)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("geo:\n  attributes: %q\n  node_key_file: node.key\n  key_servers:\n    - addr: %s\n      attributes: %q\n", demoEdgeAttrs, addr, demoKSAttrs), nil
}
