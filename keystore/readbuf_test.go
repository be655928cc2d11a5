package keystore_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

// TestLookupsKeepNothingOfTheReadBuffer: a cold lookup reads its name
// file and record into a buffer the next lookup reuses, so every loaded
// tenant must keep copies. Tenants loaded one after the other still have
// their own chain, meta and sealed key: each opens its own private key.
func TestLookupsKeepNothingOfTheReadBuffer(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	var bundles []*keystore.Bundle
	var names []string
	for i, kt := range []testpki.KeyType{testpki.ECDSAP256, testpki.RSA2048, testpki.ECDSAP256, testpki.Ed25519, testpki.ECDSAP256} {
		names = append(names, fmt.Sprintf("t%d.example.com", i))
		b := f.bundle(t, kt, names[i])
		put(t, w, b)
		bundles = append(bundles, b)
	}
	s := f.open(t, keystore.Options{})
	ctx := context.Background()
	var loaded []*keystore.Cert
	for _, name := range names {
		e, err := s.Lookup(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		loaded = append(loaded, e.Certs[0])
	}
	for i, c := range loaded {
		b := bundles[i]
		if !bytes.Equal(c.Chain[0], b.Chain[0]) || c.Meta.Tenant != b.Meta.Tenant || c.Leaf.DNSNames[0] != names[i] {
			t.Fatalf("tenant %d: loaded %q with names %v, want %q", i, c.Meta.Tenant, c.Leaf.DNSNames, b.Meta.Tenant)
		}
		key, err := c.PrivateKey(ctx)
		if err != nil {
			t.Fatalf("tenant %d: %v", i, err)
		}
		if !certs.SamePublicKey(key.Public(), c.Leaf.PublicKey) {
			t.Fatalf("tenant %d: the key opened is not the certificate's", i)
		}
	}
}
