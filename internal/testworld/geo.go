package testworld

import (
	"context"
	"fmt"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// EnableGeo creates the geo master key (Master, written to
// Dir/geo-master.key) and gives the keystore its public parameters, so
// keys can be stored under policies.
func (w *World) EnableGeo(ctx context.Context) error {
	master, err := geo.GenerateMasterKey(nil)
	if err != nil {
		return fmt.Errorf("testworld: %w", err)
	}
	if err := geo.WriteMasterKeyFile(w.Path(MasterKeyFile), master); err != nil {
		return fmt.Errorf("testworld: %w", err)
	}
	if err := w.Writer.SetGeoParams(ctx, &master.Params); err != nil {
		return fmt.Errorf("testworld: %w", err)
	}
	w.Master = master
	return nil
}

// NodeKey issues, from Master, the node key of a node with attrs in the
// policy syntax ("region: eu, country: de").
func (w *World) NodeKey(attrs string) (*geo.NodeKey, error) {
	a, err := geo.ParseAttributes(attrs)
	if err != nil {
		return nil, fmt.Errorf("testworld: %w", err)
	}
	k, err := w.Master.NodeKey(nil, a)
	if err != nil {
		return nil, fmt.Errorf("testworld: %w", err)
	}
	return k, nil
}

// PutRestricted stores a tenant for host, an ECDSA certificate and its
// key, with the world's origin and its key sealed under policy, and
// returns the certificate's ID. EnableGeo must have run.
func (w *World) PutRestricted(ctx context.Context, host, policy string) (string, error) {
	leaf, err := w.CA.Issue(testpki.LeafSpec{Names: []string{host}})
	if err != nil {
		return "", fmt.Errorf("testworld: %w", err)
	}
	ids, err := w.Writer.Put(ctx, &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: host, Origin: w.OriginURL, Policy: policy},
		Chain: leaf.Chain,
		Key:   leaf.Key,
	})
	if err != nil {
		return "", fmt.Errorf("testworld: %w", err)
	}
	return ids[0], nil
}
