package keystore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
)

// BenchmarkOpenTenantKey is the open of one sealed ECDSA tenant key once
// its fleet or policy key is open: "legacy" a KES1 file (one HPKE open,
// ML-KEM-768+X25519 and ChaCha20-Poly1305), "envelope" a KES2 file whose
// data key this Store has opened before (one XChaCha20-Poly1305 open).
//
//	go test -run '^$' -bench OpenTenantKey ./keystore
func BenchmarkOpenTenantKey(b *testing.B) {
	k, err := GenerateFleetKey()
	if err != nil {
		b.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	s := newOpener()
	recipient := policyRecipient + "0123"
	legacy, err := sealV1(k.priv.PublicKey(), recipient, "id", der)
	if err != nil {
		b.Fatal(err)
	}
	envelope, err := s.seal(k.priv.PublicKey(), recipient, "id", der)
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct {
		name   string
		sealed []byte
	}{{"legacy", legacy}, {"envelope", envelope}} {
		b.Run("format="+bb.name, func(b *testing.B) {
			for b.Loop() {
				f, err := parseSealed(bb.sealed)
				if err == nil {
					_, err = s.open(k.priv, f, "id")
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
