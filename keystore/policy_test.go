package keystore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
)

// geoMaster is one geo master key for every test: CP-ABE setup is slow.
var geoMaster = sync.OnceValue(func() *geo.MasterKey {
	m, err := geo.GenerateMasterKey(nil)
	if err != nil {
		panic(err)
	}
	return m
})

// nodeKey issues a node key for attrs under geoMaster.
func nodeKey(t testing.TB, attrs string) *geo.NodeKey {
	t.Helper()
	a, err := geo.ParseAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	k, err := geoMaster().NodeKey(nil, a)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// geoFixture is a fixture whose keystore has geo parameters.
func geoFixture(t *testing.T) (*fixture, *keystore.Store) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	if err := w.SetGeoParams(context.Background(), &geoMaster().Params); err != nil {
		t.Fatal(err)
	}
	return f, w
}

// openKey looks name up in s and opens its key.
func openKey(s *keystore.Store, name string) error {
	e, err := s.Lookup(context.Background(), name)
	if err != nil {
		return err
	}
	_, err = e.Certs[0].PrivateKey(context.Background())
	return err
}

func TestPolicyRestrictsWhereKeysOpen(t *testing.T) {
	f, w := geoFixture(t)
	eu := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu, country: de")})
	us := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: us, country: us")})
	none := f.open(t, keystore.Options{}) // fleet key only

	tests := []struct {
		name, policy   string
		euOK, usOK, no bool
	}{
		{"eu.example.com", "Region: EU", true, false, false},
		{"not-us.example.com", "not country: us", true, false, false},
		{"any.example.com", "region: eu or region: us", true, true, false},
		{"open.example.com", "", true, true, true},
	}
	for _, tt := range tests {
		b := f.bundle(t, "", tt.name)
		b.Meta.Policy = tt.policy
		put(t, w, b)
	}
	for _, tt := range tests {
		for _, n := range []struct {
			node string
			s    *keystore.Store
			want bool
		}{{"eu", eu, tt.euOK}, {"us", us, tt.usOK}, {"fleet-only", none, tt.no}} {
			err := openKey(n.s, tt.name)
			switch {
			case n.want && err != nil:
				t.Errorf("%s (%q) on %s node: %v", tt.name, tt.policy, n.node, err)
			case !n.want && !errors.Is(err, keystore.ErrCannotOpen):
				t.Errorf("%s (%q) on %s node: error %v, want ErrCannotOpen", tt.name, tt.policy, n.node, err)
			}
		}
	}

	// The record carries the canonical policy, parsed.
	e, err := us.Lookup(context.Background(), "eu.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if c := e.Certs[0]; c.Meta.Policy != "region: eu" || c.Policy == nil || c.Policy.String() != "region: eu" {
		t.Errorf("stored policy %q (parsed %v), want canonical \"region: eu\"", c.Meta.Policy, c.Policy)
	}
	// The US node's failure is the CP-ABE layer refusing its attributes.
	if err := openKey(us, "eu.example.com"); !errors.Is(err, geo.ErrNotAdmitted) {
		t.Errorf("US node opening an EU key: %v, want geo.ErrNotAdmitted", err)
	}
	// One policy key per distinct policy, however many tenants use it.
	more := f.bundle(t, "", "eu2.example.com")
	more.Meta.Policy = "region: eu"
	put(t, w, more)
	entries, err := os.ReadDir(filepath.Join(f.dir, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("%d policy keys stored, want 3 (one per distinct policy)", len(entries))
	}
}

func TestPolicyKeysWarmUpAndOpenOnce(t *testing.T) {
	f, w := geoFixture(t)
	for _, name := range []string{"a.example.com", "b.example.com", "c.example.com"} {
		b := f.bundle(t, "", name)
		b.Meta.Policy = "region: eu"
		put(t, w, b)
	}
	reg := prometheus.NewPedanticRegistry()
	eu := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu"), Registerer: reg})
	opened := func() float64 {
		return counterSum(t, reg, "keyedge_keystore_policy_key_opens_total")
	}
	// Open warms the one policy key up in the background, before any lookup.
	eventually(t, 10*time.Second, "policy key warm-up", func() bool { return opened() == 1 })
	for _, name := range []string{"a.example.com", "b.example.com", "c.example.com"} {
		if err := openKey(eu, name); err != nil {
			t.Fatal(err)
		}
	}
	if n := opened(); n != 1 {
		t.Errorf("policy key opened %v times for three tenants, want 1", n)
	}
}

func TestSetPolicy(t *testing.T) {
	f, w := geoFixture(t)
	ctx := context.Background()
	eu := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu"), PollInterval: 10 * time.Millisecond})
	us := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: us"), PollInterval: 10 * time.Millisecond})
	put(t, w, f.bundle(t, "", "move.example.com"))
	for _, s := range []*keystore.Store{eu, us} {
		if err := openKey(s, "move.example.com"); err != nil {
			t.Fatalf("unrestricted key: %v", err)
		}
	}

	steps := []struct {
		policy     string
		euOK, usOK bool
	}{
		{"region: eu", true, false},
		{"region: us", false, true}, // needs the master key: the key is policy-sealed now
		{"", true, true},
	}
	for _, st := range steps {
		if err := w.SetPolicy(ctx, "move.example.com", st.policy, geoMaster()); err != nil {
			t.Fatalf("SetPolicy(%q): %v", st.policy, err)
		}
		// Running nodes follow without a restart.
		eventually(t, 5*time.Second, "policy "+st.policy+" on both nodes", func() bool {
			return (openKey(eu, "move.example.com") == nil) == st.euOK && (openKey(us, "move.example.com") == nil) == st.usOK
		})
	}

	// Without the master key a policy-sealed key cannot move, and nothing changes.
	if err := w.SetPolicy(ctx, "move.example.com", "region: eu", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.SetPolicy(ctx, "move.example.com", "region: us", nil); !errors.Is(err, keystore.ErrCannotOpen) {
		t.Errorf("SetPolicy without master key: %v, want ErrCannotOpen", err)
	}
	if err := w.SetPolicy(ctx, "move.example.com", "region: us &", geoMaster()); !errors.Is(err, geo.ErrSyntax) {
		t.Errorf("SetPolicy with a bad policy: %v, want geo.ErrSyntax", err)
	}
	e, err := w.Lookup(ctx, "move.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if e.Certs[0].Meta.Policy != "region: eu" {
		t.Errorf("policy after refused changes = %q, want region: eu", e.Certs[0].Meta.Policy)
	}
	eventually(t, 5*time.Second, "EU node opens again", func() bool { return openKey(eu, "move.example.com") == nil })
}

func TestTamperedRestrictedKey(t *testing.T) {
	f, w := geoFixture(t)
	b := f.bundle(t, "", "tamper.example.com")
	b.Meta.Tenant, b.Meta.Policy = "tamper-tenant", "region: eu"
	id := put(t, w, b)[0]
	keyFile := filepath.Join(f.dir, "certs", id[:2], id, "record") // which ends with the sealed key
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-10] ^= 1
	if err := os.WriteFile(keyFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	eu := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu")})
	err = openKey(eu, "tamper.example.com")
	if !errors.Is(err, keystore.ErrCorrupt) || !strings.Contains(err.Error(), `tenant "tamper-tenant"`) {
		t.Errorf("tampered key: %v, want ErrCorrupt naming the tenant", err)
	}

	// A tampered policy file fails every key under it, as corrupt.
	pdir := filepath.Join(f.dir, "policies")
	entries, err := os.ReadDir(pdir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("policies: %v %v", entries, err)
	}
	pfile := filepath.Join(pdir, entries[0].Name())
	pdata, err := os.ReadFile(pfile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pfile, []byte(strings.Replace(string(pdata), `"region: eu"`, `"region: us"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu")})
	if err := openKey(fresh, "tamper.example.com"); !errors.Is(err, keystore.ErrCorrupt) {
		t.Errorf("tampered policy file: %v, want ErrCorrupt", err)
	}
}

func TestSetGeoParamsOnce(t *testing.T) {
	_, w := geoFixture(t)
	if err := w.SetGeoParams(context.Background(), &geoMaster().Params); err != nil {
		t.Errorf("same parameters again: %v", err)
	}
	other, err := geo.GenerateMasterKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetGeoParams(context.Background(), &other.Params); err == nil {
		t.Error("SetGeoParams replaced the parameters of another master key")
	}
}

// counterSum gathers reg and sums the counter name over its labels.
func counterSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
