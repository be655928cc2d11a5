package keystore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
)

// keyFile is the path of certificate id's sealed key in f, once moved
// out of its record into key.sealed (the layout before, which edges
// read as ever), where these tests read and damage it as a file.
func keyFile(t *testing.T, f *fixture, id string) string {
	t.Helper()
	if err := keystore.SplitKeys(f.dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(f.dir, "certs", id[:2], id, "key.sealed")
}

// checkEnvelope fails unless the sealed key file at path is in the
// envelope format (KES2) and sealed to recipient.
func checkEnvelope(t *testing.T, path, recipient string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "KES2"+string([]byte{byte(len(recipient))})+recipient) {
		t.Fatalf("%s starts %q, want KES2 sealed to %q", path, b[:min(len(b), 40)], recipient)
	}
}

// TestEnvelopeSharesOneDataKey: keys one Store seals to one recipient
// share a data key, so a node opening many of them decapsulates once,
// and every key still opens to its own certificate's key.
func TestEnvelopeSharesOneDataKey(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	names := []string{"a.example.com", "b.example.com", "c.example.com"}
	var ids []string
	for _, n := range names {
		ids = append(ids, put(t, w, f.bundle(t, "", n))...)
	}
	for _, id := range ids {
		checkEnvelope(t, keyFile(t, f, id), keystore.FleetRecipient)
	}
	reg := prometheus.NewRegistry()
	s := f.open(t, keystore.Options{Registerer: reg})
	for _, n := range names {
		if err := openKey(s, n); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	m := gather(t, reg)
	if got := m[`keyedge_keystore_data_key_opens_total{result="ok"}`]; got != 1 {
		t.Errorf("data key opens for 3 keys sealed by one Store: %v, want 1", got)
	}
	if got := m[`keyedge_keystore_sealed_key_opens_total{format="envelope"}`]; got != 3 {
		t.Errorf("envelope opens: %v, want 3", got)
	}
}

// TestEnvelopeSwappedKeysRefused: a tenant's sealed key copied over
// another's, though both share one data key that the node holds open,
// fails for that tenant with an error saying so; neither is served the
// other's key, and a third tenant is unaffected.
func TestEnvelopeSwappedKeysRefused(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	ids := put(t, w, f.bundle(t, "", "one.example.com"), f.bundle(t, "", "two.example.com"), f.bundle(t, "", "three.example.com"))
	s := f.open(t, keystore.Options{})
	if err := openKey(s, "three.example.com"); err != nil { // the data key is now open
		t.Fatal(err)
	}
	one, err := os.ReadFile(keyFile(t, f, ids[0]))
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, keyFile(t, f, ids[1]), keyFile(t, f, ids[0]))
	write(t, keyFile(t, f, ids[1]), string(one))
	for _, n := range []string{"one.example.com", "two.example.com"} {
		err := openKey(s, n)
		if !errors.Is(err, keystore.ErrCorrupt) || !strings.Contains(err.Error(), "sealed for another certificate") {
			t.Errorf("%s with the other's sealed key: %v, want ErrCorrupt saying it was sealed for another certificate", n, err)
		}
	}
	if err := openKey(s, "three.example.com"); err != nil {
		t.Errorf("bystander: %v", err)
	}
}

// TestEnvelopePolicyDataKey: a key sealed under a policy is wrapped to
// that policy's key, not the fleet's: a node outside the policy opens
// neither the data key nor the tenant key, even with the fleet key and
// with the file relabelled as sealed to the fleet.
func TestEnvelopePolicyDataKey(t *testing.T) {
	f, w := geoFixture(t)
	b := f.bundle(t, "", "eu.example.com")
	b.Meta.Policy = "region: eu"
	id := put(t, w, b)[0]
	eu := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu")})
	if err := openKey(eu, "eu.example.com"); err != nil {
		t.Fatalf("node inside the policy: %v", err)
	}
	sealed, err := os.ReadFile(keyFile(t, f, id))
	if err != nil {
		t.Fatal(err)
	}
	checkEnvelope(t, keyFile(t, f, id), "policy:"+geoPolicyID(t, "region: eu"))

	reg := prometheus.NewRegistry()
	us := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: us"), Registerer: reg})
	if err := openKey(us, "eu.example.com"); !errors.Is(err, keystore.ErrCannotOpen) {
		t.Errorf("node outside the policy: %v, want ErrCannotOpen", err)
	}
	if got := gather(t, reg)[`keyedge_keystore_data_key_opens_total{result="ok"}`]; got != 0 {
		t.Errorf("node outside the policy opened %v data keys", got)
	}

	// The same file claiming to be sealed to the fleet key: the wrap is
	// bound to its recipient, so the fleet key does not open it.
	recipient := "policy:" + geoPolicyID(t, "region: eu")
	relabelled := "KES2" + string([]byte{byte(len(keystore.FleetRecipient))}) + keystore.FleetRecipient + string(sealed[5+len(recipient):])
	write(t, keyFile(t, f, id), relabelled)
	fleetOnly := f.open(t, keystore.Options{})
	if err := openKey(fleetOnly, "eu.example.com"); !errors.Is(err, keystore.ErrCorrupt) || !strings.Contains(err.Error(), "data key does not open") {
		t.Errorf("policy-sealed key relabelled as the fleet's: %v, want ErrCorrupt: data key does not open", err)
	}
}

// geoPolicyID is the ID of a policy.
func geoPolicyID(t *testing.T, policy string) string {
	t.Helper()
	p, err := geo.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	return p.ID()
}

// TestSetPolicyReseals: keyctl policy set re-seals keys in the envelope
// format, moving them between the fleet and policies both ways, with
// the node side following; and geo master key, as DESIGN says, is all an
// admin needs to move a restricted key.
func TestSetPolicyReseals(t *testing.T) {
	f, w := geoFixture(t)
	ctx := context.Background()
	id := put(t, w, f.bundle(t, "", "move.example.com"))[0]
	admin := f.open(t, keystore.Options{OneShot: true})
	for _, step := range []struct{ policy, attrs, recipient string }{
		{"region: eu", "region: eu", "policy:" + geoPolicyID(t, "region: eu")},
		{"region: us", "region: us", "policy:" + geoPolicyID(t, "region: us")},
		{"", "", keystore.FleetRecipient},
	} {
		if err := admin.SetPolicy(ctx, "move.example.com", step.policy, geoMaster()); err != nil {
			t.Fatalf("SetPolicy(%q): %v", step.policy, err)
		}
		checkEnvelope(t, keyFile(t, f, id), step.recipient)
		opts := keystore.Options{}
		if step.attrs != "" {
			opts.NodeKey = nodeKey(t, step.attrs)
		}
		if err := openKey(f.open(t, opts), "move.example.com"); err != nil {
			t.Errorf("after SetPolicy(%q): %v", step.policy, err)
		}
	}
}
