package keystore_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testmetrics"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
)

func TestLookup(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	exact := put(t, s, f.bundle(t, "", "shop.example.com", "www.shop.example.com"))[0]
	wild := put(t, s, f.bundle(t, "", "*.apps.example.com"))[0]
	uni := put(t, s, f.bundle(t, "", "xn--bcher-kva.example"))[0]

	tests := []struct {
		sni      string
		wantID   string
		wantName string
		err      error
	}{
		{"shop.example.com", exact, "shop.example.com", nil},
		{"WWW.Shop.Example.com.", exact, "www.shop.example.com", nil},
		{"a.apps.example.com", wild, "*.apps.example.com", nil},
		{"bücher.example", uni, "xn--bcher-kva.example", nil},
		{"b.a.apps.example.com", "", "", keystore.ErrNotFound}, // one label only
		{"apps.example.com", "", "", keystore.ErrNotFound},
		{"unknown.example.com", "", "", keystore.ErrNotFound},
		{"*.apps.example.com", "", "", keystore.ErrBadName},
		{"../../etc/passwd", "", "", keystore.ErrBadName},
		{"names/00/x", "", "", keystore.ErrBadName},
		{"shop.example.com\x00", "", "", keystore.ErrBadName},
		{strings.Repeat("a.", 200) + "com", "", "", keystore.ErrBadName},
	}
	for _, tt := range tests {
		e, err := s.Lookup(context.Background(), tt.sni)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Lookup(%q) error = %v, want %v", tt.sni, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Lookup(%q): %v", tt.sni, err)
			continue
		}
		if e.Name != tt.wantName || len(e.Certs) != 1 || e.Certs[0].ID != tt.wantID {
			t.Errorf("Lookup(%q) = %s %v, want %s %s", tt.sni, e.Name, e.Certs, tt.wantName, tt.wantID)
		}
	}
}

func TestPrivateKeySigns(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	for _, kt := range []testpki.KeyType{testpki.ECDSAP256, testpki.RSA2048, testpki.Ed25519} {
		name := strings.ReplaceAll(string(kt), "-", "") + ".example.com"
		put(t, s, f.bundle(t, kt, name))
		e, err := s.Lookup(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		key, err := e.Certs[0].PrivateKey(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		msg := sha256.Sum256([]byte("hello"))
		var opts crypto.SignerOpts = crypto.SHA256
		digest := msg[:]
		if kt == testpki.Ed25519 {
			opts, digest = crypto.Hash(0), []byte("hello")
		}
		sig, err := key.Sign(rand.Reader, digest, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Certs[0].Leaf.CheckSignature(sigAlg(kt), []byte("hello"), sig); err != nil {
			t.Errorf("%s: signature does not verify with the certificate: %v", kt, err)
		}
	}
}

func TestECDSAAndRSAForOneName(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	put(t, s, f.bundle(t, testpki.ECDSAP256, "dual.example.com"))
	put(t, s, f.bundle(t, testpki.RSA2048, "dual.example.com"))
	e, err := s.Lookup(context.Background(), "dual.example.com")
	if err != nil {
		t.Fatal(err)
	}
	algs := map[string]bool{}
	for _, c := range e.Certs {
		algs[c.Leaf.PublicKeyAlgorithm.String()] = true
	}
	if len(e.Certs) != 2 || !algs["ECDSA"] || !algs["RSA"] {
		t.Fatalf("got %d certs %v, want one ECDSA and one RSA", len(e.Certs), algs)
	}
}

func TestPutRefusesBadBundles(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	good := f.bundle(t, "", "good.example.com")
	other := f.bundle(t, "", "other.example.com")
	keyless := f.bundle(t, "", "keyless.example.com")
	keyless.Key = nil
	keyless.Meta.Route = keystore.RouteKeyless
	keyless.Meta.KeyServers = []string{"127.0.0.1:2407"}

	tests := map[string]*keystore.Bundle{
		"key mismatch":     {Chain: good.Chain, Key: other.Key},
		"no key":           {Chain: good.Chain},
		"keyless with key": {Meta: keystore.Meta{Route: keystore.RouteKeyless}, Chain: good.Chain, Key: good.Key},
		"bad route":        {Meta: keystore.Meta{Route: "elsewhere"}, Chain: good.Chain, Key: good.Key},
		"empty chain":      {Key: good.Key},
		"garbage leaf":     {Chain: [][]byte{[]byte("not DER")}, Key: good.Key},
	}
	for name, b := range tests {
		if _, err := s.Put(context.Background(), keyless, b); err == nil {
			t.Errorf("%s: Put succeeded", name)
		}
	}
	// A failed batch writes nothing, not even its good members.
	if _, err := s.Lookup(context.Background(), "keyless.example.com"); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("after failed batches, keyless.example.com: %v, want ErrNotFound", err)
	}
	// A policy is checked, and needs the keystore's geo parameters.
	badPolicy := f.bundle(t, "", "x.example.com")
	badPolicy.Meta.Policy = "region: eu &&"
	if _, err := s.Put(context.Background(), badPolicy); !errors.Is(err, geo.ErrSyntax) {
		t.Errorf("bad policy: Put error = %v, want geo.ErrSyntax", err)
	}
	badPolicy.Meta.Policy = "region: eu"
	if _, err := s.Put(context.Background(), badPolicy); !errors.Is(err, keystore.ErrNoGeo) {
		t.Errorf("policy without geo parameters: Put error = %v, want ErrNoGeo", err)
	}
}

func TestKeylessHasNoKey(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	b := f.bundle(t, "", "keyless.example.com")
	b.Key = nil
	b.Meta.Route = keystore.RouteKeyless
	b.Meta.KeyServers = []string{"127.0.0.1:2407"}
	id := put(t, s, b)[0]
	if _, err := os.Stat(filepath.Join(f.dir, "certs", id[:2], id, "key.sealed")); !os.IsNotExist(err) {
		t.Errorf("keyless certificate has a key file: %v", err)
	}
	e, err := s.Lookup(context.Background(), "keyless.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Certs[0].PrivateKey(context.Background()); !errors.Is(err, keystore.ErrCannotOpen) {
		t.Errorf("PrivateKey of keyless cert: %v, want ErrCannotOpen", err)
	}
}

func TestFilesAreSealedAndPrivate(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	b := f.bundle(t, "", "sealed.example.com")
	id := put(t, s, b)[0]
	keyFile := filepath.Join(f.dir, "certs", id[:2], id, "record") // which holds the sealed key
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	scalar, err := b.Key.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := os.ReadFile(keyFile)
	if strings.Contains(string(sealed), string(scalar)) {
		t.Error("sealed key file contains the private key bytes")
	}
}

func TestLazyOpenAndColdLookup(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	var bs []*keystore.Bundle
	for i := range 50 {
		bs = append(bs, f.bundle(t, "", fmt.Sprintf("t%d.example.com", i)))
	}
	put(t, w, bs...)

	cs := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
	s := f.open(t, keystore.Options{Storage: cs})
	if n := cs.count("names") + cs.count("certs") + cs.count("key"); n != 0 {
		t.Fatalf("Open read %d per-tenant files, want 0", n)
	}
	e, err := s.Lookup(context.Background(), "t7.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if cs.count("names") != 1 || cs.count("certs") != 1 || cs.count("key") != 0 {
		t.Fatalf("cold lookup read names=%d records=%d keys=%d, want 1 1 0", cs.count("names"), cs.count("certs"), cs.count("key"))
	}
	if _, err := s.Lookup(context.Background(), "t7.example.com"); err != nil {
		t.Fatal(err)
	}
	if cs.count("names") != 1 || cs.count("certs") != 1 {
		t.Fatal("warm lookup read storage")
	}
	for range 3 {
		if _, err := e.Certs[0].PrivateKey(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The record brought the key: opening it reads nothing more.
	if cs.count("key") != 0 || cs.count("certs") != 1 {
		t.Fatalf("key open read keys=%d records=%d, want 0 1", cs.count("key"), cs.count("certs"))
	}

	// A keystore of the layout before keeps the key in key.sealed, read
	// once on the first open.
	splitKeys(t, f)
	e, err = s.Lookup(context.Background(), "t8.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.Certs[0].PrivateKey(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if cs.count("key") != 1 {
		t.Fatalf("key.sealed read %d times, want once", cs.count("key"))
	}
}

// TestSingleflight: concurrent cold lookups of one name read its files
// once, and their first PrivateKey calls open the key once (the first
// caller opens it on its own goroutine, the record having brought it;
// the others wait for that open) and all get the same key.
func TestSingleflight(t *testing.T) {
	f := newFixture(t)
	put(t, f.open(t, keystore.Options{}), f.bundle(t, "", "busy.example.com"))
	cs := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}, delay: 50 * time.Millisecond}
	reg := prometheus.NewRegistry()
	s := f.open(t, keystore.Options{Storage: cs, Registerer: reg})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		keys = map[crypto.Signer]bool{}
	)
	for range 64 {
		wg.Go(func() {
			e, err := s.Lookup(context.Background(), "busy.example.com")
			if err != nil {
				t.Error(err)
				return
			}
			key, err := e.Certs[0].PrivateKey(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			keys[key] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if cs.count("names") != 1 || cs.count("certs") != 1 || cs.count("key") != 0 {
		t.Fatalf("64 concurrent cold lookups read names=%d records=%d keys=%d, want 1 1 0 (the record holds the key)", cs.count("names"), cs.count("certs"), cs.count("key"))
	}
	if opens := testmetrics.Sum(t, reg, "keyedge_keystore_sealed_key_opens_total", map[string]string{"format": "envelope"}); opens != 1 || len(keys) != 1 {
		t.Fatalf("64 concurrent first PrivateKey calls opened the sealed key %v times and got %d distinct keys, want 1 and 1", opens, len(keys))
	}
}

// TestNegativeCache: without a name filter to answer (here a keystore
// written before it existed), an unknown name is read once per
// NegativeTTL.
func TestNegativeCache(t *testing.T) {
	f := newFixture(t)
	put(t, f.open(t, keystore.Options{}), f.bundle(t, "", "known.example.com"))
	if err := os.Remove(filepath.Join(f.dir, filterFile)); err != nil {
		t.Fatal(err)
	}
	cs := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
	s := f.open(t, keystore.Options{Storage: cs, NegativeTTL: time.Hour})
	for range 100 {
		if _, err := s.Lookup(context.Background(), "nobody.example.com"); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatal(err)
		}
	}
	// The exact name and its wildcard: one read each.
	if n := cs.count("names"); n != 2 {
		t.Fatalf("100 lookups of an unknown name read %d name files, want 2", n)
	}
}

func TestEvictionUnderByteBound(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	var bs []*keystore.Bundle
	for i := range 200 {
		bs = append(bs, f.bundle(t, "", fmt.Sprintf("e%d.example.com", i)))
	}
	put(t, w, bs...)

	reg := prometheus.NewRegistry()
	const maxBytes = 64 << 10
	s := f.open(t, keystore.Options{MaxBytes: maxBytes, Registerer: reg})
	for i := range 200 {
		if _, err := s.Lookup(context.Background(), fmt.Sprintf("e%d.example.com", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Every lookup still works after eviction: a re-read, not a failure.
	if _, err := s.Lookup(context.Background(), "e0.example.com"); err != nil {
		t.Fatal(err)
	}
	metrics := gather(t, reg)
	if b := metrics["keyedge_keystore_cache_bytes"]; b <= 0 || b > maxBytes {
		t.Errorf("cache bytes = %v, want in (0, %d]", b, maxBytes)
	}
	if ev := metrics[`keyedge_keystore_cache_evictions_total{cache="certs"}`]; ev == 0 {
		t.Error("no evictions counted under a 64 KiB bound with 200 certificates")
	}
}

func TestEntryBound(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	var bs []*keystore.Bundle
	for i := range 100 {
		bs = append(bs, f.bundle(t, "", fmt.Sprintf("n%d.example.com", i)))
	}
	put(t, w, bs...)
	reg := prometheus.NewRegistry()
	s := f.open(t, keystore.Options{MaxEntries: 10, Registerer: reg})
	for i := range 100 {
		if _, err := s.Lookup(context.Background(), fmt.Sprintf("n%d.example.com", i)); err != nil {
			t.Fatal(err)
		}
	}
	m := gather(t, reg)
	if n := m[`keyedge_keystore_cache_entries{cache="certs"}`]; n > 10 {
		t.Errorf("%v cached certs, want ≤ 10", n)
	}
}

// TestInvalidation: one node serves while another process writes; the
// node sees renewals, removals and additions through the journal within
// the default bound, without restart.
func TestInvalidation(t *testing.T) {
	f := newFixture(t)
	writer := f.open(t, keystore.Options{DeleteGrace: time.Millisecond})
	node := f.open(t, keystore.Options{}) // defaults: 500ms poll, 1s negative TTL
	ctx := context.Background()

	old := put(t, writer, f.bundle(t, "", "renew.example.com"))[0]
	put(t, writer, f.bundle(t, "", "gone.example.com"))
	for _, n := range []string{"renew.example.com", "gone.example.com"} {
		if _, err := node.Lookup(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := node.Lookup(ctx, "new.example.com"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatal(err)
	}

	renewed := put(t, writer, f.bundle(t, "", "renew.example.com"))[0]
	if err := writer.Remove(ctx, "gone.example.com"); err != nil {
		t.Fatal(err)
	}
	put(t, writer, f.bundle(t, "", "new.example.com"))

	const bound = 2 * time.Second
	eventually(t, bound+500*time.Millisecond, "renewed certificate served", func() bool {
		e, err := node.Lookup(ctx, "renew.example.com")
		return err == nil && len(e.Certs) == 1 && e.Certs[0].ID == renewed
	})
	eventually(t, bound, "removed name refused", func() bool {
		_, err := node.Lookup(ctx, "gone.example.com")
		return errors.Is(err, keystore.ErrNotFound)
	})
	eventually(t, bound, "new name served", func() bool {
		_, err := node.Lookup(ctx, "new.example.com")
		return err == nil
	})
	// The replaced certificate had no other name: after its grace, the
	// next write (the Remove and Put above) deleted it from disk.
	if _, err := os.Stat(filepath.Join(f.dir, "certs", old[:2], old)); !os.IsNotExist(err) {
		t.Errorf("replaced certificate %s still on disk: %v", old, err)
	}
}

func TestRemoveByID(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	ctx := context.Background()
	id := put(t, s, f.bundle(t, "", "a.example.com", "b.example.com"))[0]
	keep := put(t, s, f.bundle(t, testpki.RSA2048, "b.example.com"))[0]
	if err := s.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "a.example.com"); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("a.example.com after removing its only cert: %v", err)
	}
	e, err := s.Lookup(ctx, "b.example.com")
	if err != nil || len(e.Certs) != 1 || e.Certs[0].ID != keep {
		t.Errorf("b.example.com should keep its RSA certificate: %v %v", e, err)
	}
	if err := s.Remove(ctx, id); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("second remove: %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, "../x"); !errors.Is(err, keystore.ErrBadName) {
		t.Errorf("remove of a hostile name: %v, want ErrBadName", err)
	}
}

func TestNames(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	want := map[string]bool{}
	var bs []*keystore.Bundle
	for i := range 40 {
		n := fmt.Sprintf("l%d.example.com", i)
		want[n] = true
		bs = append(bs, f.bundle(t, "", n))
	}
	put(t, s, bs...)
	got := map[string]bool{}
	for n, err := range s.Names(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		got[n] = true
	}
	if len(got) != len(want) {
		t.Fatalf("Names yielded %d names, want %d", len(got), len(want))
	}
	for n := range want {
		if !got[n] {
			t.Errorf("Names missed %s", n)
		}
	}
}

func TestConcurrentLookupsAndWrites(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{PollInterval: 10 * time.Millisecond, MaxEntries: 8})
	var bs []*keystore.Bundle
	for i := range 16 {
		bs = append(bs, f.bundle(t, "", fmt.Sprintf("c%d.example.com", i)))
	}
	put(t, s, bs...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && i < 2000; i++ {
				e, err := s.Lookup(ctx, fmt.Sprintf("c%d.example.com", (g+i)%16))
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				if _, err := e.Certs[0].PrivateKey(ctx); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 5 {
		put(t, s, f.bundle(t, "", fmt.Sprintf("c%d.example.com", i)))
	}
	wg.Wait()
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				name += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[name] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[name] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

func sigAlg(kt testpki.KeyType) x509.SignatureAlgorithm {
	switch kt {
	case testpki.RSA2048:
		return x509.SHA256WithRSA
	case testpki.Ed25519:
		return x509.PureEd25519
	}
	return x509.ECDSAWithSHA256
}

func TestCertByID(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	id := put(t, s, f.bundle(t, "", "byid.example.com"))[0]
	c, err := s.CertByID(context.Background(), id)
	if err != nil || c.ID != id || c.Leaf.DNSNames[0] != "byid.example.com" {
		t.Fatalf("CertByID = %v, %v", c, err)
	}
	for _, bad := range []string{strings.Repeat("0", 64), "../../etc/passwd", "", strings.ToUpper(id)} {
		if _, err := s.CertByID(context.Background(), bad); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("CertByID(%q) = %v, want ErrNotFound", bad, err)
		}
	}
}

func TestSetRoute(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	ctx := context.Background()
	id := put(t, s, f.bundle(t, "", "route.example.com"))[0]
	keyFile := filepath.Join(f.dir, "certs", id[:2], id, "key.sealed")

	if err := s.SetRoute(ctx, "route.example.com", keystore.RouteKeyless, []string{"ks1:2407"}, false); err == nil {
		t.Fatal("switched to keyless while the keystore holds the key, without confirmation")
	}
	if err := s.SetRoute(ctx, "route.example.com", keystore.RouteKeyless, nil, true); err == nil {
		t.Fatal("switched to keyless without key servers")
	}
	if err := s.SetRoute(ctx, "route.example.com", keystore.RouteKeyless, []string{"ks1:2407", "ks2:2407"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("key file still present after moving to keyless: %v", err)
	}
	if sealed, err := keystore.SealedKey(filepath.Join(f.dir, "certs", id[:2], id, "record")); sealed != nil || err != nil {
		t.Errorf("record still holds the key after moving to keyless (%d bytes): %v", len(sealed), err)
	}
	e, err := s.Lookup(ctx, "route.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if m := e.Certs[0].Meta; m.Route != keystore.RouteKeyless || len(m.KeyServers) != 2 || m.Version != 2 {
		t.Errorf("meta after SetRoute: %+v", m)
	}
	if err := s.SetRoute(ctx, "route.example.com", keystore.RouteLocal, nil, false); err == nil {
		t.Error("switched back to local with no key in the keystore")
	}
}

// Removing a tenant by a name in any case journals its normalised name,
// so a follower drops just that name, not every cache.
func TestRemoveJournalsNormalisedName(t *testing.T) {
	f := newFixture(t)
	writer := f.open(t, keystore.Options{})
	put(t, writer, f.bundle(t, "", "shop.example.com"), f.bundle(t, "", "other.example.com"))
	reg := prometheus.NewRegistry()
	node := f.open(t, keystore.Options{Registerer: reg, PollInterval: 10 * time.Millisecond})
	ctx := context.Background()
	for _, n := range []string{"shop.example.com", "other.example.com"} {
		if _, err := node.Lookup(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := writer.Remove(ctx, "Shop.Example.COM"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "follower read the journal entry", func() bool {
		m := gather(t, reg)
		return m[`keyedge_keystore_journal_events_total{event="applied"}`]+m[`keyedge_keystore_journal_events_total{event="reset"}`] > 0
	})
	m := gather(t, reg)
	if n := m[`keyedge_keystore_journal_events_total{event="reset"}`]; n != 0 {
		t.Errorf("the follower cleared its caches %v times: the entry named something it rejected", n)
	}
	hits := m[`keyedge_keystore_lookups_total{result="hit"}`]
	if _, err := node.Lookup(ctx, "other.example.com"); err != nil {
		t.Fatal(err)
	}
	if got := gather(t, reg)[`keyedge_keystore_lookups_total{result="hit"}`]; got != hits+1 {
		t.Errorf("other.example.com was not served from the follower's cache after removing another tenant")
	}
	eventually(t, 10*time.Second, "removed name refused", func() bool {
		_, err := node.Lookup(ctx, "shop.example.com")
		return errors.Is(err, keystore.ErrNotFound)
	})
}
