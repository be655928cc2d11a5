package keystore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
)

// BenchmarkOpenTenantKey is the HPKE open (ML-KEM-768+X25519,
// ChaCha20-Poly1305) of one sealed ECDSA tenant key: the per-key cost
// once its fleet or policy key is open.
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
	sealed, err := sealTo(k.priv.PublicKey(), policyRecipient+"0123", "id", der)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		h, ct, err := parseSealed(sealed)
		if err == nil {
			_, err = openWith(k.priv, h, ct, "id")
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
