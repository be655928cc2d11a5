package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ErrKeyMismatch is returned, wrapped, by [KeyMatchesCert] when a private
// key does not belong to a certificate.
var ErrKeyMismatch = errors.New("certs: private key does not match certificate")

// ReadCertPool reads a PEM file of CA certificates into a pool, for
// verifying peers (key servers, edges, an ACME CA's HTTPS). A file with
// no certificate is an error.
func ReadCertPool(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("certs: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// ParseChainPEM parses a PEM bundle of "CERTIFICATE" blocks, leaf first, and
// returns their DER in the same order.
//
// Text around the blocks is ignored, as in [crypto/tls.X509KeyPair], but it is
// an error if there are no certificates, if any block is not a certificate or
// does not parse as one, or if any block is malformed (rather than silently
// dropping it, which would yield a truncated chain).
func ParseChainPEM(pemBytes []byte) ([][]byte, error) {
	chain, err := parseChain(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return chain, nil
}

// parseChain is ParseChainPEM without the package prefix on errors.
func parseChain(pemBytes []byte) ([][]byte, error) {
	var chain [][]byte
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, not CERTIFICATE", len(chain)+1, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, block.Bytes)
	}
	// pem.Decode skips blocks it cannot decode, so count the BEGIN lines.
	if n := bytes.Count(pemBytes, []byte("-----BEGIN ")); n != len(chain) {
		return nil, fmt.Errorf("malformed PEM: %d BEGIN lines but %d well-formed blocks", n, len(chain))
	}
	if len(chain) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block found")
	}
	return chain, nil
}

// ParseKeyPEM parses a PEM private key: PKCS#8 "PRIVATE KEY", SEC 1 "EC
// PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY". It uses the first key block,
// skipping any "EC PARAMETERS" block in front of it (as written by openssl
// ecparam -genkey). Only ECDSA, RSA and Ed25519 keys are supported.
func ParseKeyPEM(pemBytes []byte) (crypto.Signer, error) {
	key, err := parseKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return key, nil
}

// parseKey is ParseKeyPEM without the package prefix on errors.
func parseKey(pemBytes []byte) (crypto.Signer, error) {
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no private key PEM block found")
		}
		if block.Type == "EC PARAMETERS" {
			continue
		}
		return ParsePrivateKey(block.Type, block.Bytes)
	}
}

// ParsePrivateKey parses the DER of a private key in the encoding a PEM
// block type names: "PRIVATE KEY" (PKCS#8), "EC PRIVATE KEY" (SEC 1) or
// "RSA PRIVATE KEY" (PKCS#1). Only ECDSA, RSA and Ed25519 keys are
// returned. Errors never include key bytes.
func ParsePrivateKey(pemType string, der []byte) (crypto.Signer, error) {
	var key any
	var err error
	switch pemType {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(der)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(der)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(der)
	default:
		return nil, fmt.Errorf("PEM block %q is not a supported private key", pemType)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", pemType, err)
	}
	switch key := key.(type) {
	case *ecdsa.PrivateKey:
		return key, nil
	case *rsa.PrivateKey:
		return key, nil
	case ed25519.PrivateKey:
		return key, nil
	}
	return nil, fmt.Errorf("unsupported private key type %T", key)
}

// KeyMatchesCert returns an error wrapping [ErrKeyMismatch] unless the public
// half of key is the public key of cert, as a TLS server needs.
func KeyMatchesCert(key crypto.Signer, cert *x509.Certificate) error {
	if key == nil || cert == nil {
		return fmt.Errorf("%w: nil key or certificate", ErrKeyMismatch)
	}
	if !SamePublicKey(key.Public(), cert.PublicKey) {
		return fmt.Errorf("%w %q", ErrKeyMismatch, cert.Subject.CommonName)
	}
	return nil
}

// SamePublicKey reports whether a and b are the same public key: false
// when a has no Equal method (every public key type of the standard
// library has one), is nil, or b is not a key of a's type.
func SamePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
