package bench

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
)

// certKeyNames spells the certificate key types of ParseCertKeys.
var certKeyNames = map[string]x509.PublicKeyAlgorithm{
	"ecdsa":   x509.ECDSA,
	"rsa":     x509.RSA,
	"ed25519": x509.Ed25519,
}

// ParseCertKeys parses a comma-separated list of server certificate key
// types the client accepts: ecdsa, rsa, ed25519. An empty string is nil:
// any.
func ParseCertKeys(list string) ([]x509.PublicKeyAlgorithm, error) {
	var algs []x509.PublicKeyAlgorithm
	for _, n := range strings.Split(list, ",") {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		alg, ok := certKeyNames[n]
		if !ok {
			return nil, fmt.Errorf("bench: unknown certificate key type %q (want ecdsa, rsa or ed25519)", n)
		}
		algs = append(algs, alg)
	}
	return algs, nil
}

// ParseTLSVersion parses "1.2" or "1.3"; "" is 0, both.
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "":
		return 0, nil
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("bench: unknown TLS version %q (want 1.2 or 1.3)", s)
}

// tls12Suites are the TLS 1.2 cipher suites (ECDHE, AEAD, as the edge
// offers) whose certificate type is one of algs. TLS 1.3 suites do not
// name a certificate type and are unaffected.
func tls12Suites(algs []x509.PublicKeyAlgorithm) []uint16 {
	var suites []uint16
	if slices.Contains(algs, x509.ECDSA) {
		suites = append(suites, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
	}
	if slices.Contains(algs, x509.RSA) {
		suites = append(suites, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
	}
	return suites
}

// acceptCertKeys is a VerifyConnection hook failing a handshake whose
// server certificate's key type is not one of algs.
func acceptCertKeys(algs []x509.PublicKeyAlgorithm) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("bench: no server certificate")
		}
		if leaf := cs.PeerCertificates[0]; !slices.Contains(algs, leaf.PublicKeyAlgorithm) {
			return fmt.Errorf("bench: server certificate key is %s, not one of the accepted %v", certKeyName(leaf), algs)
		}
		return nil
	}
}

// certKeyName names a certificate's key type and size, e.g.
// "ECDSA P-256", "RSA-2048".
func certKeyName(c *x509.Certificate) string {
	return keyName(c.PublicKey)
}

func keyName(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
