package certs_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"testing"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/testpki"
)

// encodePKCS8 is testpki.KeyPEM, failing the test on error.
func encodePKCS8(t testing.TB, key any) []byte {
	t.Helper()
	b, err := testpki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestCA(t testing.TB) *testpki.CA {
	t.Helper()
	ca, err := testpki.NewCA("certs test root")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestParseChainPEM(t *testing.T) {
	ca := newTestCA(t)
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"tenant.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	chainPEM := testpki.ChainPEM(leaf.Chain)
	leafPEM, caPEM := testpki.ChainPEM(leaf.Chain[:1]), ca.CertPEM()
	keyPEM := encodePKCS8(t, leaf.Key)
	garbage := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	// A block whose base64 is corrupt, which pem.Decode would skip.
	corrupt := bytes.Replace(leafPEM, []byte("\n"), []byte("\n!!!!\n"), 2)

	tests := []struct {
		name string
		in   []byte
		want [][]byte // nil means an error is expected
	}{
		{name: "chain", in: chainPEM, want: leaf.Chain},
		{name: "single", in: caPEM, want: leaf.Chain[1:]},
		{name: "surrounding text", in: slices.Concat([]byte("subject=tenant\n"), leafPEM, []byte("\nissuer=root\n"), caPEM, []byte("trailer")), want: leaf.Chain},
		{name: "empty", in: nil},
		{name: "no PEM", in: []byte("hello")},
		{name: "key block", in: keyPEM},
		{name: "certificate then key", in: slices.Concat(leafPEM, keyPEM)},
		{name: "not DER", in: garbage},
		{name: "corrupt middle block", in: slices.Concat(leafPEM, corrupt, caPEM)},
		{name: "corrupt last block", in: slices.Concat(leafPEM, corrupt)},
		{name: "truncated", in: chainPEM[:len(chainPEM)-10]},
	}
	for _, tt := range tests {
		got, err := certs.ParseChainPEM(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("%s: ParseChainPEM succeeded with %d certificates", tt.name, len(got))
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !slices.EqualFunc(got, tt.want, bytes.Equal) {
			t.Errorf("%s: got %d certificates, not the expected %d", tt.name, len(got), len(tt.want))
		}
	}
}

func FuzzParseChainPEM(f *testing.F) {
	ca := newTestCA(f)
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"tenant.example.com"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(testpki.ChainPEM(leaf.Chain))
	f.Add(encodePKCS8(f, leaf.Key))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN -----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		chain, err := certs.ParseChainPEM(in)
		if err != nil {
			return
		}
		if len(chain) == 0 {
			t.Fatal("no error and no certificates")
		}
		for _, der := range chain {
			if _, err := x509.ParseCertificate(der); err != nil {
				t.Fatalf("returned DER does not parse: %v", err)
			}
		}
	})
}

func TestParseKeyPEM(t *testing.T) {
	ca := newTestCA(t)
	leaves := make(map[testpki.KeyType]*testpki.Leaf)
	for _, kt := range []testpki.KeyType{testpki.ECDSAP256, testpki.RSA2048, testpki.Ed25519} {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"tenant.example.com"}, KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		leaves[kt] = leaf
	}
	ecKey := leaves[testpki.ECDSAP256].Key.(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(leaves[testpki.RSA2048].Key.(*rsa.PrivateKey))})
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		in   []byte
		leaf *testpki.Leaf // nil means an error is expected
	}{
		{name: "PKCS#8 ECDSA", in: encodePKCS8(t, ecKey), leaf: leaves[testpki.ECDSAP256]},
		{name: "PKCS#8 RSA", in: encodePKCS8(t, leaves[testpki.RSA2048].Key), leaf: leaves[testpki.RSA2048]},
		{name: "PKCS#8 Ed25519", in: encodePKCS8(t, leaves[testpki.Ed25519].Key), leaf: leaves[testpki.Ed25519]},
		{name: "SEC 1", in: sec1PEM, leaf: leaves[testpki.ECDSAP256]},
		{name: "SEC 1 after EC PARAMETERS", in: slices.Concat(ecParams, sec1PEM), leaf: leaves[testpki.ECDSAP256]},
		{name: "PKCS#1", in: pkcs1PEM, leaf: leaves[testpki.RSA2048]},
		{name: "PKCS#8 X25519", in: encodePKCS8(t, x25519)},
		{name: "certificate", in: ca.CertPEM()},
		{name: "mislabelled SEC 1", in: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: sec1})},
		{name: "only EC PARAMETERS", in: ecParams},
		{name: "empty", in: nil},
	}
	for _, tt := range tests {
		key, err := certs.ParseKeyPEM(tt.in)
		if tt.leaf == nil {
			if err == nil {
				t.Errorf("%s: ParseKeyPEM succeeded with %T", tt.name, key)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if err := certs.KeyMatchesCert(key, tt.leaf.Cert); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestKeyMatchesCert(t *testing.T) {
	ca := newTestCA(t)
	issue := func(kt testpki.KeyType) *testpki.Leaf {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"tenant.example.com"}, KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	ec1, ec2, ed := issue(testpki.ECDSAP256), issue(testpki.ECDSAP256), issue(testpki.Ed25519)

	tests := []struct {
		name string
		key  crypto.Signer
		cert *x509.Certificate
		ok   bool
	}{
		{name: "match", key: ec1.Key, cert: ec1.Cert, ok: true},
		{name: "same type", key: ec2.Key, cert: ec1.Cert},
		{name: "other type", key: ed.Key, cert: ec1.Cert},
		{name: "nil key", key: nil, cert: ec1.Cert},
		{name: "nil certificate", key: ec1.Key, cert: nil},
	}
	for _, tt := range tests {
		err := certs.KeyMatchesCert(tt.key, tt.cert)
		if tt.ok {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, certs.ErrKeyMismatch) {
			t.Errorf("%s: error %v is not ErrKeyMismatch", tt.name, err)
		}
	}
}

func TestSamePublicKey(t *testing.T) {
	ca := newTestCA(t)
	issue := func(kt testpki.KeyType) *testpki.Leaf {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"tenant.example.com"}, KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	ec1, ec2, ed := issue(testpki.ECDSAP256), issue(testpki.ECDSAP256), issue(testpki.Ed25519)

	tests := []struct {
		name string
		a, b crypto.PublicKey
		want bool
	}{
		{name: "same", a: ec1.Key.Public(), b: ec1.Cert.PublicKey, want: true},
		{name: "same Ed25519", a: ed.Key.Public(), b: ed.Cert.PublicKey, want: true},
		{name: "same type", a: ec2.Key.Public(), b: ec1.Cert.PublicKey},
		{name: "other type", a: ed.Key.Public(), b: ec1.Cert.PublicKey},
		{name: "nil a", a: nil, b: ec1.Cert.PublicKey},
		{name: "nil b", a: ec1.Key.Public(), b: nil},
		{name: "no Equal method", a: struct{}{}, b: struct{}{}},
	}
	for _, tt := range tests {
		if got := certs.SamePublicKey(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: SamePublicKey = %v, want %v", tt.name, got, tt.want)
		}
	}
}
