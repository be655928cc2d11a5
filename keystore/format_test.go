package keystore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/keystore/geo"
)

// goldenKeystore holds every file a small keystore writes, each under a
// "-- <storage key> --" line: text files as they are, binary ones in hex.
// A change to any on-disk format is a visible diff to it.
var goldenKeystore = filepath.Join("testdata", "keystore.golden")

// goldenBinary reports whether a storage key holds a binary file, kept
// in hex in the golden file.
// text is the file's content, or a line of it in the golden file: a
// record is binary (recordfile.go) unless it is a JSON record as written
// before.
func goldenBinary(key, text string) bool {
	if strings.HasSuffix(key, "/record") {
		return !strings.HasPrefix(text, "{")
	}
	return strings.HasSuffix(key, "/key.sealed") || key == geoParamsKey || key == filterKey
}

// TestOnDiskFormats pins the bytes of every file a keystore writes: the
// journal head and entries, name files (a wildcard among them), records
// (local, geo-restricted and keyless), sealed keys (to the fleet key and
// to a policy key), the policy file, the geo parameters and the name
// filter. The keystore is written with a deterministic random source
// (cryptotest.SetGlobalRandom) and fixed certificates, so the output is
// the same on every run: regenerate it with go test -update only for a
// deliberate format change. The pinned files are then read back with
// today's parsers, sealed keys opened, so files written by an older
// build stay readable.
func TestOnDiskFormats(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 13)
	w := writeGoldenKeystore(t)
	got := w.dump(t)
	if *updateGolden {
		if err := os.WriteFile(goldenKeystore, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenKeystore)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the files a keystore writes changed (%s); run go test -update only for a deliberate format change, and review the diff of %s", firstDiff(got, want), goldenKeystore)
	}

	checkGolden(t, w, want)
	// The same keystore as written before the key moved into the record
	// (JSON records, the keys in key.sealed): still read. Never
	// regenerated.
	v2, err := os.ReadFile(filepath.Join("testdata", "keystore-v2.golden"))
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, w, v2)
}

// checkGolden reads back every file of a golden keystore of w's with
// today's parsers, and opens its sealed keys.
func checkGolden(t *testing.T, w *goldenWorld, golden []byte) {
	t.Helper()
	files := parseGolden(t, golden)
	for key, data := range files {
		var err error
		switch {
		case key == headKey:
			if seq, perr := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); perr != nil || seq != 3 {
				err = fmt.Errorf("head %q, want 3 (one entry per Put): %v", data, perr)
			}
		case strings.HasPrefix(key, "changes/"):
			_, err = parseChange(data)
		case strings.HasPrefix(key, "names/"):
			_, err = parseNameFile(data)
		case strings.HasSuffix(key, "/record"):
			id := filepath.Base(filepath.Dir(key))
			r, _, perr := parseRecord(id, data)
			if err = perr; err != nil {
				break
			}
			if r.Sealed != nil {
				if err = w.open(id, r.Sealed, files); err != nil {
					break
				}
			}
			if r.Sealed = nil; !reflect.DeepEqual(r, w.records[id]) {
				err = fmt.Errorf("parsed %+v, want %+v", r.Meta, w.records[id].Meta)
			}
		case strings.HasSuffix(key, "/key.sealed"):
			err = w.open(filepath.Base(filepath.Dir(key)), data, files)
		case strings.HasPrefix(key, policiesPrefix+"/"):
			err = new(policyKey).parse(filepath.Base(key), data)
		case key == geoParamsKey:
			_, err = geo.ParseParams(data)
		case key == filterKey:
			_, err = parseNameFilter(data)
		default:
			err = fmt.Errorf("no parser checks this file")
		}
		if err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
}

// goldenWorld is the keystore TestOnDiskFormats writes.
type goldenWorld struct {
	dir     string
	fleet   *FleetKey
	master  *geo.MasterKey
	keys    map[string][]byte  // certificate ID → PKCS #8 key
	records map[string]*record // certificate ID → record as written
}

func writeGoldenKeystore(t *testing.T) *goldenWorld {
	ctx := context.Background()
	w := &goldenWorld{dir: t.TempDir(), keys: map[string][]byte{}, records: map[string]*record{}}
	var err error
	if w.fleet, err = GenerateFleetKey(); err != nil {
		t.Fatal(err)
	}
	if w.master, err = geo.GenerateMasterKey(nil); err != nil {
		t.Fatal(err)
	}
	storage := &certmagic.FileStorage{Path: w.dir}
	if err := Init(ctx, storage); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, Options{Storage: storage, FleetKey: w.fleet, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetGeoParams(ctx, &w.master.Params); err != nil {
		t.Fatal(err)
	}
	ca, caKey := goldenCert(t, nil, nil, "golden CA")
	for _, b := range []struct {
		meta  Meta
		names []string
	}{
		{Meta{Tenant: "shop", Origin: "https://origin.shop.example:8443"}, []string{"shop.example.com", "*.shop.example.com"}},
		{Meta{Tenant: "eu", Origin: "http://10.0.0.1", Policy: "region: eu and not country: ru"}, []string{"eu.example.net"}},
		{Meta{Tenant: "vault", Origin: "http://10.0.0.2", Route: RouteKeyless, KeyServers: []string{"ks1.vault.example:2407", "ks2.vault.example:2407"}}, []string{"vault.example.org"}},
	} {
		leaf, key := goldenCert(t, ca, caKey, b.names...)
		bundle := &Bundle{Meta: b.meta, Chain: [][]byte{leaf.Raw, ca.Raw}, OCSP: []byte("a staple")}
		if b.meta.Route != RouteKeyless {
			bundle.Key = key
		}
		ids, err := s.Put(ctx, bundle)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		w.keys[ids[0]] = der
		meta := b.meta
		meta.NotAfter, meta.Version = leaf.NotAfter, 1
		w.records[ids[0]] = &record{Meta: meta, Chain: bundle.Chain, OCSP: bundle.OCSP}
	}
	return w
}

// goldenCert makes a certificate with fixed dates and serial and a key
// from the (deterministic) random source: a self-signed Ed25519 CA when
// parent is nil, else an ECDSA leaf for names signed by parent.
func goldenCert(t *testing.T, parent *x509.Certificate, parentKey crypto.Signer, names ...string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(13),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	var key crypto.Signer
	var err error
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		_, key, err = ed25519.GenerateKey(rand.Reader)
		parent, parentKey = tmpl, key
	} else {
		tmpl.DNSNames = names
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// dump is the golden text of every file in the keystore but its locks.
func (w *goldenWorld) dump(t *testing.T) []byte {
	var b bytes.Buffer
	err := filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		key, err := filepath.Rel(w.dir, p)
		if err != nil || strings.HasPrefix(key, "locks/") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "-- %s --\n", key)
		if !goldenBinary(key, string(data)) {
			b.Write(data)
			if !bytes.HasSuffix(data, []byte("\n")) {
				b.WriteString("\n-- (no final newline) --\n")
			}
			return nil
		}
		for chunk := range slices.Chunk(data, 32) {
			b.WriteString(hex.EncodeToString(chunk) + "\n")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// parseGolden splits a golden file back into its files.
func parseGolden(t testing.TB, golden []byte) map[string][]byte {
	files := map[string][]byte{}
	var key string
	for line := range strings.Lines(string(golden)) {
		switch {
		case line == "-- (no final newline) --\n":
			files[key] = bytes.TrimSuffix(files[key], []byte("\n"))
		case strings.HasPrefix(line, "-- ") && strings.HasSuffix(line, " --\n"):
			key = strings.TrimSuffix(strings.TrimPrefix(line, "-- "), " --\n")
			files[key] = []byte{}
		case key == "":
			t.Fatalf("golden file starts with %q", line)
		case goldenBinary(key, line):
			b, err := hex.DecodeString(strings.TrimSpace(line))
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			files[key] = append(files[key], b...)
		default:
			files[key] = append(files[key], line...)
		}
	}
	return files
}

// open opens a pinned sealed key, through the pinned policy file when
// the key is policy-sealed, and checks it is the key that was sealed.
func (w *goldenWorld) open(id string, sealed []byte, files map[string][]byte) error {
	f, err := parseSealed(sealed)
	if err != nil {
		return err
	}
	priv := w.fleet.priv
	if policyID, ok := strings.CutPrefix(f.recipient, policyRecipient); ok {
		var pk policyKey
		if err := pk.parse(policyID, files[policyFileKey(policyID)]); err != nil {
			return fmt.Errorf("its policy file: %w", err)
		}
		seed, err := w.master.Open(pk.policy, pk.sealed)
		if err != nil {
			return fmt.Errorf("its policy key: %w", err)
		}
		if priv, err = sealKEM.NewPrivateKey(seed); err != nil {
			return err
		}
	}
	key, err := newOpener().open(priv, f, id)
	if err != nil {
		return err
	}
	if !bytes.Equal(key, w.keys[id]) {
		return fmt.Errorf("opened to another key")
	}
	return nil
}

// firstDiff names the first line where got and want differ.
func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(g), len(w)) {
		gl, wl := "(end)", "(end)"
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d: got %.120q, want %.120q", i+1, gl, wl)
		}
	}
	return "no line differs"
}
