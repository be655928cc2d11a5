package testworld

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// TestWorld: the files of the layout exist, generated tenants are
// readable through a store that requires an initialised keystore, with
// the world's origin, which answers with its handler.
func TestWorld(t *testing.T) {
	origin := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
	w := ForTest(t, Options{Origin: origin})
	for _, f := range []string{FleetKeyFile, CAFile, "testca.key", IdentityCAFile, "identity-ca.key", KeystoreDir} {
		if _, err := os.Stat(w.Path(f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	ctx := context.Background()
	if err := w.GenerateTenants(ctx, testpki.TenantSpec{Count: 3}); err != nil {
		t.Fatal(err)
	}
	store, err := w.OpenStore(ctx, keystore.Options{RequireInit: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := store.Lookup(ctx, "t2.keyedge.test")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Certs[0].Meta.Origin; got != w.OriginURL {
		t.Errorf("tenant's origin %q, want the world's %q", got, w.OriginURL)
	}
	if _, err := e.Certs[0].Leaf.Verify(x509.VerifyOptions{Roots: w.Roots, DNSName: "t2.keyedge.test"}); err != nil {
		t.Errorf("tenant certificate not issued by the world's CA: %v", err)
	}
	resp, err := http.Get(w.OriginURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" {
		t.Errorf("origin answered %q", body)
	}
}

// TestBulk: with Options.Bulk, generated tenants land in the keystore
// that a store of the world's reads.
func TestBulk(t *testing.T) {
	w := ForTest(t, Options{Bulk: true})
	ctx := context.Background()
	if err := w.GenerateTenants(ctx, testpki.TenantSpec{Count: 5, Domain: "bulk.test"}); err != nil {
		t.Fatal(err)
	}
	store, err := w.OpenStore(ctx, keystore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Lookup(ctx, "t4.bulk.test"); err != nil {
		t.Fatal(err)
	}
}

// TestKeyServer: a key server over held keys signs for the client its
// rule names and refuses another client of the same CA (as if it did
// not hold the key).
func TestKeyServer(t *testing.T) {
	w := ForTest(t, Options{})
	leaf, err := w.CA.Issue(testpki.LeafSpec{Names: []string{"keyless.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.HoldKey("keyless", leaf); err != nil {
		t.Fatal(err)
	}
	addr, err := w.StartKeyServer(KeyServer{
		Name: "ks.test",
		Rule: keyserver.Rule{Clients: []string{"dns:edge.test"}, Keys: []string{"name:keyless.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutKeyless(context.Background(), "keyless", leaf, addr); err != nil {
		t.Fatal(err)
	}
	if err := sign(t, w, "edge.test", addr, leaf.Cert.PublicKey, "keyless.test"); err != nil {
		t.Errorf("authorized client: %v", err)
	}
	if err := sign(t, w, "other.test", addr, leaf.Cert.PublicKey, "keyless.test"); err == nil {
		t.Error("a client the rule does not name got a signature")
	}
}

// TestGeo: a restricted tenant's key opens on a node whose attributes
// the policy admits and not on another, and a key server over a store
// with the admitted node key signs with it.
func TestGeo(t *testing.T) {
	w := ForTest(t, Options{})
	ctx := context.Background()
	if err := w.EnableGeo(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.PutRestricted(ctx, "eu.geo.test", "region: eu"); err != nil {
		t.Fatal(err)
	}
	open := func(attrs string) (*keystore.Store, crypto.PublicKey, error) {
		nk, err := w.NodeKey(attrs)
		if err != nil {
			t.Fatal(err)
		}
		s, err := w.OpenStore(ctx, keystore.Options{NodeKey: nk})
		if err != nil {
			t.Fatal(err)
		}
		e, err := s.Lookup(ctx, "eu.geo.test")
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Certs[0].PrivateKey(ctx)
		return s, e.Certs[0].Leaf.PublicKey, err
	}
	if _, _, err := open("region: us"); !errors.Is(err, geo.ErrNotAdmitted) {
		t.Errorf("US node opening the EU key: %v, want geo.ErrNotAdmitted", err)
	}
	euStore, pub, err := open("region: eu")
	if err != nil {
		t.Fatalf("EU node opening the EU key: %v", err)
	}
	addr, err := w.StartKeyServer(KeyServer{
		Name:  "ks-eu.test",
		Rule:  keyserver.Rule{Clients: []string{"dns:edge.test"}, Keys: []string{"*"}},
		Store: euStore,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sign(t, w, "edge.test", addr, pub, "eu.geo.test"); err != nil {
		t.Errorf("EU key server: %v", err)
	}
}

// sign asks the key server at addr, as client name, for an ECDSA
// signature with the key of pub serving host, and verifies it.
func sign(t *testing.T, w *World, name, addr string, pub crypto.PublicKey, host string) error {
	t.Helper()
	id, err := w.ClientIdentity(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := keyserver.NewClient(keyserver.ClientOptions{TLSConfig: w.ClientTLS(id), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k, err := c.Key(context.Background(), pub, keyserver.KeyRef{SNI: host}, []keyserver.Endpoint{{Addr: addr}})
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte("testworld"))
	sig, err := k.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		return errors.New("signature does not verify")
	}
	return nil
}

// TestNewError: New in a directory that does not exist fails, saying so.
func TestNewError(t *testing.T) {
	w, err := New(context.Background(), Options{Dir: t.TempDir() + "/missing"})
	if err == nil || w != nil || !strings.HasPrefix(err.Error(), "testworld: ") {
		t.Fatalf("New: %v, %v; want a testworld error", w, err)
	}
}
