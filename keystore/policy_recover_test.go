package keystore_test

import (
	"cmp"
	"context"
	"crypto"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"
	"github.com/cloudflare/circl/abe/cpabe/tkn20"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"golang.org/x/crypto/cryptobyte"
)

// TestSetPolicyRecoversUnparseablePolicy stores a tenant whose stored
// policy today's parser refuses, and checks that edges fail for that
// tenant only and that the geo master key can still move its key to a
// new policy, or to none: no state only deletion escapes.
func TestSetPolicyRecoversUnparseablePolicy(t *testing.T) {
	// What a keyedge whose length limit applied to the input, not to
	// the canonical form, accepted: 1,025 bytes once canonical.
	long := "region: eu or pad: " + strings.Repeat("0", 1025-len("region: eu or pad: "))
	damages := []struct {
		name   string
		damage func(t *testing.T, f *fixture, id string, key crypto.Signer)
	}{
		{"canonical form over the limit", func(t *testing.T, f *fixture, id string, key crypto.Signer) {
			writeLegacyPolicy(t, f, id, key, long)
		}},
		{"policy file's text damaged", func(t *testing.T, f *fixture, id string, _ crypto.Signer) {
			setJSONField(t, policyFilePath(t, f, "region: eu"), "policy", "region: eu &&")
		}},
		{"record's policy damaged", func(t *testing.T, f *fixture, id string, _ crypto.Signer) {
			splitKeys(t, f) // a JSON record
			setJSONField(t, filepath.Join(f.dir, "certs", id[:2], id, "record"), "policy", "region: eu &&")
		}},
	}
	for _, d := range damages {
		for _, to := range []struct{ policy, attrs string }{{"", ""}, {"region: us", "region: us"}} {
			t.Run(d.name+"/to "+cmp.Or(to.policy, "none"), func(t *testing.T) {
				f, w := geoFixture(t)
				ctx := context.Background()
				victim := f.bundle(t, "", "victim.example.com")
				victim.Meta.Policy = "region: eu"
				bystander := f.bundle(t, "", "bystander.example.com")
				bystander.Meta.Policy = "region: eu or dc: fra1" // a policy file of its own
				ids := put(t, w, victim, bystander)
				d.damage(t, f, ids[0], victim.Key)

				// Edges refuse the victim cleanly and serve everyone else.
				eu := f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu")})
				if _, err := signerOf(eu, "victim.example.com"); !errors.Is(err, keystore.ErrCorrupt) && !errors.Is(err, keystore.ErrCannotOpen) {
					t.Errorf("edge opening the damaged tenant: %v, want ErrCorrupt or ErrCannotOpen", err)
				}
				if err := openKey(eu, "bystander.example.com"); err != nil {
					t.Errorf("bystander: %v", err)
				}

				// The admin key moves the key all the same (keyctl's Store,
				// like this one, has nothing cached), and it is the same key.
				admin := f.open(t, keystore.Options{})
				if err := admin.SetPolicy(ctx, "victim.example.com", to.policy, geoMaster()); err != nil {
					t.Fatalf("SetPolicy(%q) on the damaged tenant: %v", to.policy, err)
				}
				opts := keystore.Options{}
				if to.attrs != "" {
					opts.NodeKey = nodeKey(t, to.attrs)
				}
				after := f.open(t, opts)
				signer, err := signerOf(after, "victim.example.com")
				if err != nil {
					t.Fatalf("after SetPolicy(%q): %v", to.policy, err)
				}
				if !certs.SamePublicKey(signer.Public(), victim.Key.Public()) {
					t.Error("after SetPolicy the tenant has another key")
				}
				e, err := after.Lookup(ctx, "victim.example.com")
				if err != nil {
					t.Fatal(err)
				}
				if got := e.Certs[0].Meta.Policy; got != to.policy {
					t.Errorf("record policy after SetPolicy = %q, want %q", got, to.policy)
				}
				if err := openKey(f.open(t, keystore.Options{NodeKey: nodeKey(t, "region: eu")}), "bystander.example.com"); err != nil {
					t.Errorf("bystander after SetPolicy: %v", err)
				}
			})
		}
	}
}

// writeLegacyPolicy stores certificate id's key as an older keyedge
// would have under policy text, which today's parser may refuse: a
// policy file with a real policy key whose seed is sealed under text
// (CP-ABE, and the admin layer to geoMaster), the key sealed to that
// policy key, and the record naming text.
func writeLegacyPolicy(t *testing.T, f *fixture, id string, key crypto.Signer, text string) {
	t.Helper()
	splitKeys(t, f) // the layout of that keyedge: the key in key.sealed, a JSON record
	sum := sha256.Sum256([]byte(text))
	pid := hex.EncodeToString(sum[:16])
	pub, seed, err := keystore.NewPolicyKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	pfile, err := keystore.MarshalPolicyFile(text, pub, legacyGeoSeal(t, &geoMaster().Params, text, seed))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := keystore.SealToPolicyKey(pub, pid, id, der)
	if err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(f.dir, "certs", id[:2], id)
	write(t, filepath.Join(f.dir, "policies", pid), string(pfile))
	write(t, filepath.Join(certDir, "key.sealed"), string(sealed))
	setJSONField(t, filepath.Join(certDir, "record"), "policy", text)
}

// legacyGeoSeal seals secret under policy text as geo.Params.Seal lays
// it out (magic, CP-ABE layer, admin HPKE layer), with no check of the
// text: what a keyedge with weaker policy checks wrote.
func legacyGeoSeal(t *testing.T, params *geo.Params, text string, secret []byte) []byte {
	t.Helper()
	raw, err := params.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	s := cryptobyte.String(raw)
	var abeBytes, adminBytes cryptobyte.String
	if !s.Skip(4) || !s.ReadUint24LengthPrefixed(&abeBytes) || !s.ReadUint16LengthPrefixed(&adminBytes) {
		t.Fatal("geo parameters: unexpected layout")
	}
	var abePub tkn20.PublicKey
	if err := abePub.UnmarshalBinary(abeBytes); err != nil {
		t.Fatal(err)
	}
	var pol tkn20.Policy
	if err := pol.FromString(text); err != nil {
		t.Fatal(err)
	}
	abeCT, err := abePub.Encrypt(rand.Reader, pol, secret)
	if err != nil {
		t.Fatal(err)
	}
	adminPub, err := hpke.MLKEM768X25519().NewPublicKey(adminBytes)
	if err != nil {
		t.Fatal(err)
	}
	adminCT, err := hpke.Seal(adminPub, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte("keyedge geo seal v1\x00"+text), secret)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte("KGS1"))
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(abeCT) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(adminCT) })
	return b.BytesOrPanic()
}

// policyFilePath returns the path of the policy file of policy, which
// must parse.
func policyFilePath(t *testing.T, f *fixture, policy string) string {
	t.Helper()
	pol, err := geo.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(f.dir, "policies", pol.ID())
}

// setJSONField rewrites one string field of a stored JSON file.
func setJSONField(t *testing.T, path, field, value string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m[field] = value
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	write(t, path, string(data))
}

// signerOf looks name up in s and opens its key.
func signerOf(s *keystore.Store, name string) (crypto.Signer, error) {
	e, err := s.Lookup(context.Background(), name)
	if err != nil {
		return nil, err
	}
	return e.Certs[0].PrivateKey(context.Background())
}

// TestSetPolicyChangesNothingOnFailure checks that SetPolicy validates
// every certificate of a name before it writes anything, and that a
// write failing half-way puts back what it had written: a failed call
// leaves every key, record and policy file as it was.
func TestSetPolicyChangesNothingOnFailure(t *testing.T) {
	const name = "pair.example.com"
	tests := []struct {
		name     string
		second   func(b *keystore.Bundle) // the Ed25519 certificate of the name
		noGeo    bool
		policy   string
		master   bool
		failOn   func(ids []string) string // the storage key whose Store fails
		wantErr  error
		journals bool // a write was undone: followers are told to reload
	}{
		{name: "second certificate keyless", policy: "region: eu", master: true,
			second: func(b *keystore.Bundle) {
				b.Key, b.Meta.Route, b.Meta.KeyServers = nil, keystore.RouteKeyless, []string{"127.0.0.1:9"}
			}},
		{name: "second key needs the master key", policy: "", master: false, wantErr: keystore.ErrCannotOpen,
			second: func(b *keystore.Bundle) { b.Meta.Policy = "region: us" }},
		{name: "no geo parameters", noGeo: true, policy: "region: eu", master: true, wantErr: keystore.ErrNoGeo},
		// The key is written with its record (recordfile.go): the first
		// record write is the first write.
		{name: "first record write fails", policy: "region: eu", master: true, journals: true,
			failOn: func(ids []string) string { return "certs/" + ids[0][:2] + "/" + ids[0] + "/record" }},
		{name: "second record write fails", policy: "region: eu", master: true, journals: true,
			failOn: func(ids []string) string { return "certs/" + ids[1][:2] + "/" + ids[1] + "/record" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			w := f.open(t, keystore.Options{})
			if !tt.noGeo {
				if err := w.SetGeoParams(context.Background(), &geoMaster().Params); err != nil {
					t.Fatal(err)
				}
			}
			second := f.bundle(t, "ed25519", name)
			if tt.second != nil {
				tt.second(second)
			}
			ids := put(t, w, f.bundle(t, "", name), second)
			before := snapshot(t, f.dir, tt.journals)

			storage := &failingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
			if tt.failOn != nil {
				storage.key = tt.failOn(ids)
			}
			admin := f.open(t, keystore.Options{Storage: storage})
			var master *geo.MasterKey
			if tt.master {
				master = geoMaster()
			}
			err := admin.SetPolicy(context.Background(), name, tt.policy, master)
			switch {
			case err == nil:
				t.Fatal("SetPolicy succeeded")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("SetPolicy: %v, want %v", err, tt.wantErr)
			case tt.failOn != nil && !errors.Is(err, errInjected):
				t.Errorf("SetPolicy: %v, want the injected failure", err)
			}
			if after := snapshot(t, f.dir, tt.journals); after != before {
				t.Errorf("a failed SetPolicy changed the keystore:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			// The name is served as before, by a node that never saw it.
			if err := openKey(f.open(t, keystore.Options{}), name); err != nil {
				t.Errorf("after a failed SetPolicy: %v", err)
			}
		})
	}
}

var errInjected = errors.New("injected storage failure")

// failingStorage is a real FileStorage on which storing key fails.
type failingStorage struct {
	keystore.Storage
	key string
}

func (s *failingStorage) Store(ctx context.Context, key string, value []byte) error {
	if key == s.key {
		return errInjected
	}
	return s.Storage.Store(ctx, key, value)
}

// snapshot names every file under dir with the SHA-256 of its content,
// leaving out lock files, and the change journal if skipJournal.
func snapshot(t *testing.T, dir string, skipJournal bool) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if strings.HasPrefix(rel, "locks"+string(filepath.Separator)) || skipJournal && strings.HasPrefix(rel, "changes"+string(filepath.Separator)) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %x\n", rel, sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
