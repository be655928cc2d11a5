package keystore

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/cryptotest"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
)

// legacyKeystore is the golden keystore as keyedge wrote it before
// envelope encryption: its sealed keys are KES1 files, each HPKE-sealed
// straight to the fleet or policy key. It is never regenerated.
var legacyKeystore = filepath.Join("testdata", "keystore-v1.golden")

// TestLegacyKeystoreOpens: a keystore written before envelope encryption
// serves as it did, its KES1 keys opened by an edge through the usual
// path, and Reseal (keyctl reseal) rewrites them in the envelope format,
// after which edges open them that way.
func TestLegacyKeystoreOpens(t *testing.T) {
	// The fleet and geo master keys writeGoldenKeystore made, drawn first
	// from the same deterministic random source.
	cryptotest.SetGlobalRandom(t, 13)
	fleet, err := GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	master, err := geo.GenerateMasterKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := geo.ParseAttributes("region: eu, country: de")
	if err != nil {
		t.Fatal(err)
	}
	node, err := master.NodeKey(nil, attrs)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(legacyKeystore)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for key, b := range parseGolden(t, data) {
		if strings.HasSuffix(key, "/key.sealed") && !strings.HasPrefix(string(b), sealMagicV1) {
			t.Fatalf("%s: not a KES1 file", key)
		}
		p := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	names := []string{"shop.example.com", "www.shop.example.com", "eu.example.net"}
	serve := func(format string, want float64) {
		t.Helper()
		reg := prometheus.NewRegistry()
		s, err := Open(ctx, Options{Storage: &certmagic.FileStorage{Path: dir}, FleetKey: fleet, NodeKey: node, Registerer: reg, RequireInit: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, n := range names {
			e, err := s.Lookup(ctx, n)
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			if _, err := e.Certs[0].PrivateKey(ctx); err != nil { // checked against the leaf
				t.Errorf("%s: %v", n, err)
			}
		}
		if got := counterValue(t, reg, "keyedge_keystore_sealed_key_opens_total", format); got != want {
			t.Errorf("%s sealed key opens: %v, want %v", format, got, want)
		}
		e, err := s.Lookup(ctx, "vault.example.org")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Certs[0].PrivateKey(ctx); !errors.Is(err, ErrCannotOpen) {
			t.Errorf("keyless tenant: %v, want ErrCannotOpen", err)
		}
	}
	serve("legacy", 2) // shop and its wildcard share a certificate

	// keyctl reseal: without the geo master key it re-seals the fleet's
	// keys only; a key that does not parse is counted and left alone.
	bad := strings.Repeat("ab", 32)
	badKey := filepath.Join(dir, "certs", "ab", bad, "key.sealed")
	if err := os.MkdirAll(filepath.Dir(badKey), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badKey, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin, err := Open(ctx, Options{Storage: &certmagic.FileStorage{Path: dir}, FleetKey: fleet, OneShot: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, run := range []struct {
		master *geo.MasterKey
		want   ResealStats
	}{
		{nil, ResealStats{Resealed: 1, Skipped: 1, Failed: 1, Moved: 2}}, // both keys move into their records
		{master, ResealStats{Resealed: 1, Current: 1, Failed: 1}},
		{master, ResealStats{Current: 2, Failed: 1}},
	} {
		st, err := admin.Reseal(ctx, run.master)
		if st != run.want {
			t.Errorf("Reseal(master: %v) = %+v, want %+v", run.master != nil, st, run.want)
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad) {
			t.Errorf("Reseal error %v, want ErrCorrupt naming %s", err, bad)
		}
		if got, _ := os.ReadFile(badKey); string(got) != "garbage" {
			t.Errorf("the bad key was rewritten: %q", got)
		}
	}
	// Every good key moved into its record: a cold tenant is two reads.
	keyFiles, _ := filepath.Glob(filepath.Join(dir, "certs", "*", "*", "key.sealed"))
	if len(keyFiles) != 1 || keyFiles[0] != badKey {
		t.Errorf("key.sealed files left after reseal: %q, want only the bad one", keyFiles)
	}
	serve("envelope", 2)
}

// counterValue is the value of family's sample whose one label has value.
func counterValue(t *testing.T, reg *prometheus.Registry, family, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == family && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
