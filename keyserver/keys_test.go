package keyserver_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/keyedge/keyedge/keystore"
)

// TestSKI checks SKI against the SHA-1 of each key type's public key
// bits, computed independently.
func TestSKI(t *testing.T) {
	k := keys(t)
	ecBits, err := k.ecdsa.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pub  crypto.PublicKey
		bits []byte
	}{
		{"rsa", k.rsa.Public(), x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)},
		{"ecdsa", k.ecdsa.Public(), ecBits},
		{"ed25519", k.ed25519.Public(), k.ed25519.Public().(ed25519.PublicKey)},
	} {
		want := sha1.Sum(tc.bits)
		if got, err := keyserver.SKI(tc.pub); err != nil || got != want {
			t.Errorf("%s: SKI = %x, %v; want %x", tc.name, got, err, want)
		}
	}
	if _, err := keyserver.SKI(struct{}{}); err == nil {
		t.Error("SKI of an unsupported key type succeeded")
	}
}

// logRecorder is a slog handler keeping the messages and "file"
// attributes of records at Error level.
type logRecorder struct {
	mu     sync.Mutex
	errors []string // "message file"
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		return nil
	}
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "file" {
			line += " " + filepath.Base(a.Value.String())
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors = append(l.errors, line)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(file string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.errors {
		if strings.HasSuffix(e, " "+file) {
			n++
		}
	}
	return n
}

// TestDirSourceReload checks through a running server that keys added
// to the directory are served without a restart, and that changed and
// removed files stop being served.
func TestDirSourceReload(t *testing.T) {
	src, dir := dirSource(t)
	ts := startServer(t, keyserver.ServerOptions{Keys: src})
	c := ts.client(t)
	d := digest(crypto.SHA256, []byte("reload"))
	sign := func(key *ecdsa.PrivateKey) error {
		resp := mustDo(t, c, &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: d, SKI: ski(t, key.Public())})
		if err := resp.ResponseError(); err != nil {
			return err
		}
		if !ecdsa.VerifyASN1(&key.PublicKey, d, resp.Payload) {
			t.Fatal("signature does not verify")
		}
		return nil
	}
	first, second := newECDSAKey(t), newECDSAKey(t)
	if err := sign(first); err != wire.ErrKeyNotFound {
		t.Fatalf("key not yet in the directory: %v, want key not found", err)
	}

	writeKey(t, dir, "new.key", first)
	eventually(t, 5*time.Second, "added key served", func() bool { return sign(first) == nil })

	writeKey(t, dir, "new.key", second)
	eventually(t, 5*time.Second, "replaced key served", func() bool { return sign(second) == nil })
	if err := sign(first); err != wire.ErrKeyNotFound {
		t.Errorf("key of a replaced file: %v, want key not found", err)
	}

	if err := os.Remove(filepath.Join(dir, "new.key")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "removed key no longer served", func() bool { return sign(second) == wire.ErrKeyNotFound })
}

func newECDSAKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(ecdsaCurve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDirSourceBadFiles checks that files that cannot be served are
// logged once each and skipped, and the others are still served.
func TestDirSourceBadFiles(t *testing.T) {
	k := keys(t)
	dir := t.TempDir()
	writeKey(t, dir, "good.key", k.ecdsa)
	writeFile(t, filepath.Join(dir, "garbage.key"), []byte("not a key"), 0o600)
	writeFile(t, filepath.Join(dir, "truncated.pem"), []byte("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"), 0o600)
	writeKey(t, dir, "readable.key", k.ed25519)
	if err := os.Chmod(filepath.Join(dir, "readable.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "dangling.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ".hidden"), []byte("ignored"), 0o600)

	logs := &logRecorder{}
	src, err := keyserver.NewDirSource(dir, keyserver.DirOptions{PollInterval: 5 * time.Millisecond, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	if key, err := src.Key(ctx, keyserver.KeyRef{SKI: ski(t, k.ecdsa.Public())}); err != nil || !key.Signer.Public().(*ecdsa.PublicKey).Equal(k.ecdsa.Public()) {
		t.Fatalf("good key beside bad files: %v", err)
	}
	if _, err := src.Key(ctx, keyserver.KeyRef{SKI: ski(t, k.ed25519.Public())}); !errors.Is(err, keyserver.ErrKeyNotFound) {
		t.Errorf("key in a file readable by others: %v, want ErrKeyNotFound", err)
	}
	time.Sleep(50 * time.Millisecond) // ten polls
	for _, f := range []string{"garbage.key", "truncated.pem", "readable.key", "dangling.key"} {
		if n := logs.count(f); n != 1 {
			t.Errorf("%s logged %d times, want once", f, n)
		}
	}
	for _, f := range []string{"good.key", "subdir", ".hidden"} {
		if n := logs.count(f); n != 0 {
			t.Errorf("%s logged %d times, want never", f, n)
		}
	}

	// Fixing a file gets it served.
	if err := os.Chmod(filepath.Join(dir, "readable.key"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "key served once its mode is fixed", func() bool {
		_, err := src.Key(ctx, keyserver.KeyRef{SKI: ski(t, k.ed25519.Public())})
		return err == nil
	})

	if _, err := keyserver.NewDirSource(filepath.Join(dir, "absent"), keyserver.DirOptions{}); err == nil {
		t.Error("NewDirSource of a missing directory succeeded")
	}
}

// TestDirSourceFormats checks every key encoding, and that
// certificates beside keys make them findable by certificate ID and
// SNI and give them names.
func TestDirSourceFormats(t *testing.T) {
	k := keys(t)
	ca, err := testpki.NewCA("dir source test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pemFile := func(name, typ string, der []byte, more ...*pem.Block) {
		data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
		for _, b := range more {
			data = append(pem.EncodeToMemory(b), data...)
		}
		writeFile(t, filepath.Join(dir, name), data, 0o600)
	}
	ecSEC1, err := x509.MarshalECPrivateKey(k.ecdsa)
	if err != nil {
		t.Fatal(err)
	}
	pemFile("rsa-pkcs1.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k.rsa))
	pemFile("ec-sec1.pem", "EC PRIVATE KEY", ecSEC1, &pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	edDER, err := x509.MarshalPKCS8PrivateKey(k.ed25519)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ed.der"), edDER, 0o600)

	// shop: key and certificate in separate files (DER SEC 1 key).
	shop, err := ca.Issue(testpki.LeafSpec{Names: []string{"shop.example", "*.shop.example"}})
	if err != nil {
		t.Fatal(err)
	}
	shopKey, err := x509.MarshalECPrivateKey(shop.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "shop.key"), shopKey, 0o600)
	pemFile("shop.crt", "CERTIFICATE", shop.Chain[0], &pem.Block{Type: "CERTIFICATE", Bytes: shop.Chain[0]})
	// blog: certificate chain and key in one PEM file (DER PKCS#1 RSA would also do).
	blog, err := ca.Issue(testpki.LeafSpec{Names: []string{"blog.example"}, KeyType: testpki.Ed25519})
	if err != nil {
		t.Fatal(err)
	}
	blogKey, err := x509.MarshalPKCS8PrivateKey(blog.Key)
	if err != nil {
		t.Fatal(err)
	}
	pemFile("blog.pem", "PRIVATE KEY", blogKey, &pem.Block{Type: "CERTIFICATE", Bytes: blog.Chain[0]}, &pem.Block{Type: "CERTIFICATE", Bytes: blog.Chain[1]})
	// A certificate whose key is not here names nothing.
	other, err := ca.Issue(testpki.LeafSpec{Names: []string{"other.example"}})
	if err != nil {
		t.Fatal(err)
	}
	pemFile("other.crt", "CERTIFICATE", other.Chain[0])
	if err := os.Chmod(filepath.Join(dir, "other.crt"), 0o644); err != nil { // certificates may be readable
		t.Fatal(err)
	}

	logs := &logRecorder{}
	src, err := keyserver.NewDirSource(dir, keyserver.DirOptions{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if len(logs.errors) != 0 {
		t.Errorf("errors logged: %q", logs.errors)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		req   keyserver.KeyRef
		want  crypto.PublicKey // nil: not found
		names []string
	}{
		{"PKCS#1 PEM", keyserver.KeyRef{SKI: ski(t, k.rsa.Public())}, k.rsa.Public(), nil},
		{"SEC 1 PEM", keyserver.KeyRef{SKI: ski(t, k.ecdsa.Public())}, k.ecdsa.Public(), nil},
		{"PKCS#8 DER", keyserver.KeyRef{SKI: ski(t, k.ed25519.Public())}, k.ed25519.Public(), nil},
		{"SEC 1 DER by SKI", keyserver.KeyRef{SKI: ski(t, shop.Key.Public())}, shop.Key.Public(), []string{"shop.example", "*.shop.example"}},
		{"by certificate ID", keyserver.KeyRef{CertID: keystore.CertID(shop.Cert)}, shop.Key.Public(), []string{"shop.example", "*.shop.example"}},
		{"by SNI", keyserver.KeyRef{SNI: "Shop.Example."}, shop.Key.Public(), nil},
		{"by wildcard SNI", keyserver.KeyRef{SNI: "www.shop.example"}, shop.Key.Public(), nil},
		{"not deeper than one label", keyserver.KeyRef{SNI: "a.b.shop.example"}, nil, nil},
		{"combined PEM by SNI", keyserver.KeyRef{SNI: "blog.example"}, blog.Key.Public(), []string{"blog.example"}},
		{"SKI wins over SNI", keyserver.KeyRef{SKI: ski(t, k.rsa.Public()), SNI: "blog.example"}, k.rsa.Public(), nil},
		{"certificate without key", keyserver.KeyRef{SNI: "other.example"}, nil, nil},
		{"unknown certificate ID", keyserver.KeyRef{CertID: keystore.CertID(other.Cert)}, nil, nil},
		{"hostile SNI", keyserver.KeyRef{SNI: "../../etc/passwd"}, nil, nil},
		{"nothing", keyserver.KeyRef{}, nil, nil},
	} {
		key, err := src.Key(ctx, tc.req)
		if tc.want == nil {
			if !errors.Is(err, keyserver.ErrKeyNotFound) {
				t.Errorf("%s: %v, want ErrKeyNotFound", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !key.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want) {
			t.Errorf("%s: wrong key", tc.name)
		}
		if want, _ := keyserver.SKI(tc.want); key.SKI != want {
			t.Errorf("%s: Key.SKI = %x, want %x", tc.name, key.SKI, want)
		}
		if tc.names != nil && !slices.Equal(key.Names, tc.names) {
			t.Errorf("%s: Names = %q, want %q", tc.name, key.Names, tc.names)
		}
	}
}

// TestDirSourceLazyLoad checks that a private key is read on first use,
// not when indexed: a file replaced between the two (and not yet
// re-indexed) is not used for the old key.
func TestDirSourceLazyLoad(t *testing.T) {
	dir := t.TempDir()
	first, second := newECDSAKey(t), newECDSAKey(t)
	writeKey(t, dir, "a.key", first)
	src, err := keyserver.NewDirSource(dir, keyserver.DirOptions{PollInterval: time.Hour, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	writeKey(t, dir, "a.key", second)
	if _, err := src.Key(context.Background(), keyserver.KeyRef{SKI: ski(t, first.Public())}); !errors.Is(err, keyserver.ErrKeyNotFound) {
		t.Fatalf("indexed key whose file changed: %v, want ErrKeyNotFound", err)
	}
}

// TestKeystoreSource serves keys from a real keystore through a server.
func TestKeystoreSource(t *testing.T) {
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testpki.NewCA("keystore source test CA")
	if err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(context.Background(), keystore.Options{
		Storage:  &certmagic.FileStorage{Path: t.TempDir()},
		FleetKey: fleet,
		Logger:   quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	issue := func(kt testpki.KeyType, names ...string) *testpki.Leaf {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: names, KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	ec, rs := issue(testpki.ECDSAP256, "shop.example", "www.shop.example"), issue(testpki.RSA2048, "shop.example")
	keyless := issue(testpki.ECDSAP256, "keyless.example")
	ctx := context.Background()
	_, err = store.Put(ctx,
		&keystore.Bundle{Meta: keystore.Meta{Tenant: "shop"}, Chain: ec.Chain, Key: ec.Key},
		&keystore.Bundle{Meta: keystore.Meta{Tenant: "shop"}, Chain: rs.Chain, Key: rs.Key},
		&keystore.Bundle{Meta: keystore.Meta{Tenant: "kl", Route: keystore.RouteKeyless, KeyServers: []string{"127.0.0.1:1"}}, Chain: keyless.Chain},
	)
	if err != nil {
		t.Fatal(err)
	}
	src := keyserver.NewKeystoreSource(store)
	for _, tc := range []struct {
		name string
		req  keyserver.KeyRef
		want *testpki.Leaf // nil: not found
	}{
		{"SNI and SKI", keyserver.KeyRef{SNI: "shop.example", SKI: ski(t, rs.Key.Public())}, rs},
		{"SNI and other SKI", keyserver.KeyRef{SNI: "www.shop.example", SKI: ski(t, ec.Key.Public())}, ec},
		{"certificate ID", keyserver.KeyRef{CertID: keystore.CertID(rs.Cert)}, rs},
		{"certificate ID and SKI", keyserver.KeyRef{CertID: keystore.CertID(ec.Cert), SKI: ski(t, ec.Key.Public())}, ec},
		{"certificate ID and wrong SKI", keyserver.KeyRef{CertID: keystore.CertID(ec.Cert), SKI: ski(t, rs.Key.Public())}, nil},
		{"SNI and unknown SKI", keyserver.KeyRef{SNI: "www.shop.example", SKI: ski(t, rs.Key.Public())}, nil},
		{"unknown SNI", keyserver.KeyRef{SNI: "nowhere.example"}, nil},
		{"hostile SNI", keyserver.KeyRef{SNI: "../names"}, nil},
		{"malformed certificate ID", keyserver.KeyRef{CertID: "../../x"}, nil},
		{"SKI only", keyserver.KeyRef{SKI: ski(t, ec.Key.Public())}, nil},
		{"keyless certificate", keyserver.KeyRef{SNI: "keyless.example"}, nil},
	} {
		key, err := src.Key(ctx, tc.req)
		if tc.want == nil {
			if !errors.Is(err, keyserver.ErrKeyNotFound) {
				t.Errorf("%s: %v, want ErrKeyNotFound", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !key.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want.Key.Public()) {
			t.Errorf("%s: wrong key", tc.name)
		}
		if !slices.Equal(key.Names, tc.want.Cert.DNSNames) {
			t.Errorf("%s: Names = %q, want %q", tc.name, key.Names, tc.want.Cert.DNSNames)
		}
	}
	if key, err := src.Key(ctx, keyserver.KeyRef{SNI: "shop.example"}); err != nil || key == nil {
		t.Errorf("SNI without SKI: %v", err)
	}

	// End to end, with a rule by name.
	auth, err := keyserver.NewAuthorizer([]keyserver.Rule{{Clients: []string{"*"}, Keys: []string{"name:*.shop.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, keyserver.ServerOptions{Keys: src, Authorizer: auth})
	c := ts.client(t)
	d := digest(crypto.SHA384, []byte("keystore"))
	resp := mustDo(t, c, &wire.Message{Opcode: wire.OpRSAPSSSignSHA384, Payload: d, SNI: "shop.example", SKI: ski(t, rs.Key.Public())})
	wantError(t, resp, wire.ErrKeyNotFound) // the RSA certificate has no www name
	resp = mustDo(t, c, &wire.Message{Opcode: wire.OpECDSASignSHA384, Payload: d, SNI: "www.shop.example", CertID: keystore.CertID(ec.Cert)})
	if err := resp.ResponseError(); err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(ec.Key.Public().(*ecdsa.PublicKey), d, resp.Payload) {
		t.Fatal("signature does not verify")
	}
}
