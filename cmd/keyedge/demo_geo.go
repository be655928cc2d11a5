package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver"
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
// keystore with its own node key. It returns the edge.yaml lines and a
// function stopping the key server.
func demoGeo(ctx context.Context, dir string, ca, idCA *testpki.CA, originURL string) (string, func(), error) {
	master, err := geo.GenerateMasterKey(nil)
	if err != nil {
		return "", nil, err
	}
	if err := geo.WriteMasterKeyFile(filepath.Join(dir, "geo-master.key"), master); err != nil {
		return "", nil, err
	}
	if err := writeNodeKey(master, demoEdgeAttrs, filepath.Join(dir, "node.key")); err != nil {
		return "", nil, err
	}
	fleet, err := keystore.ReadFleetKeyFile(filepath.Join(dir, "fleet.key"))
	if err != nil {
		return "", nil, err
	}
	storage := &certmagic.FileStorage{Path: filepath.Join(dir, "keystore")}
	writer, err := keystore.Open(ctx, keystore.Options{Storage: storage, FleetKey: fleet, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", nil, err
	}
	defer writer.Close()
	if err := writer.SetGeoParams(ctx, &master.Params); err != nil {
		return "", nil, err
	}
	for host, policy := range map[string]string{geoEUHost: "region: eu", geoUSHost: "region: us"} {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{host}})
		if err != nil {
			return "", nil, err
		}
		b := &keystore.Bundle{Meta: keystore.Meta{Tenant: host, Origin: originURL, Policy: policy}, Chain: leaf.Chain, Key: leaf.Key}
		if _, err := writer.Put(ctx, b); err != nil {
			return "", nil, err
		}
	}

	ksAttrs, err := geo.ParseAttributes(demoKSAttrs)
	if err != nil {
		return "", nil, err
	}
	ksKey, err := master.NodeKey(nil, ksAttrs)
	if err != nil {
		return "", nil, err
	}
	ksStore, err := keystore.Open(ctx, keystore.Options{Storage: storage, FleetKey: fleet, NodeKey: ksKey, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", nil, err
	}
	addr, stop, err := startDemoKeyServer(idCA, keyserver.NewKeystoreSource(ksStore), ksStore.Close, geoUSHost)
	if err != nil {
		return "", nil, err
	}
	cfg := fmt.Sprintf("geo:\n  attributes: %q\n  node_key_file: node.key\n  key_servers:\n    - addr: %s\n      attributes: %q\n", demoEdgeAttrs, addr, demoKSAttrs)
	return cfg, stop, nil
}

// writeNodeKey issues the node key for attrs and writes it 0600 to path.
func writeNodeKey(master *geo.MasterKey, attrs, path string) error {
	a, err := geo.ParseAttributes(attrs)
	if err != nil {
		return err
	}
	k, err := master.NodeKey(nil, a)
	if err != nil {
		return err
	}
	return geo.WriteNodeKeyFile(path, k)
}
