package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/secretfile"
)

// KeyType is a private key algorithm.
type KeyType string

const (
	ECDSAP256 KeyType = "ecdsa-p256" // default when empty
	RSA2048   KeyType = "rsa-2048"
	Ed25519   KeyType = "ed25519"
)

// ParseKeyType parses a key type as spelled on a command line: "ecdsa",
// "ecdsa-p256" or "p256" for [ECDSAP256], "rsa" or "rsa-2048" for [RSA2048],
// and "ed25519" for [Ed25519], ignoring case.
func ParseKeyType(s string) (KeyType, error) {
	switch strings.ToLower(s) {
	case "ecdsa", "ecdsa-p256", "p256":
		return ECDSAP256, nil
	case "rsa", "rsa-2048":
		return RSA2048, nil
	case "ed25519":
		return Ed25519, nil
	}
	return "", fmt.Errorf("testpki: unknown key type %q (want ecdsa, rsa or ed25519)", s)
}

// generateKey returns a new private key of type t, where "" means ECDSAP256.
func generateKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case ECDSAP256, "":
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("testpki: generating ECDSA key: %w", err)
		}
		return key, nil
	case RSA2048:
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("testpki: generating RSA key: %w", err)
		}
		return key, nil
	case Ed25519:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("testpki: generating Ed25519 key: %w", err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("testpki: unknown key type %q", t)
}

// CA is a test certificate authority that issues tenant leaf certificates.
//
// A CA is immutable, so its methods are safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certDER []byte
	key     crypto.Signer
}

// NewCA creates a self-signed ECDSA P-256 root CA with the given common name,
// valid from now-1h for 10 years. The hour of backdating tolerates clock skew
// between the machine that issues and the machines that verify.
//
// The CA may only sign end-entity certificates (path length zero).
func NewCA(commonName string) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("testpki: CA common name is empty")
	}
	key, err := generateKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	notBefore := time.Now().Add(-time.Hour)
	template := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		// SubjectKeyId is derived from the key by x509.CreateCertificate
		// for CA templates.
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("testpki: self-signing CA certificate: %w", err)
	}
	return newCA(der, key)
}

// newCA checks that certDER is a CA certificate for key and returns the CA.
func newCA(certDER []byte, key crypto.Signer) (*CA, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("testpki: parsing CA certificate: %w", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("testpki: certificate %q is not a CA", cert.Subject.CommonName)
	}
	if err := certs.KeyMatchesCert(key, cert); err != nil {
		return nil, fmt.Errorf("testpki: CA key: %w", err)
	}
	return &CA{cert: cert, certDER: certDER, key: key}, nil
}

// LoadCA reads a CA written by [CA.Write]: certPEMFile holds exactly one
// "CERTIFICATE" block, and keyPEMFile holds the CA private key in any form
// [certs.ParseKeyPEM] accepts ([CA.Write] uses PKCS#8 "PRIVATE KEY").
// It fails if the certificate is not a CA or the key does not match it,
// and refuses a key file that other users can read (an error wrapping
// secretfile.ErrExposed): whoever reads a CA key can issue certificates.
func LoadCA(certPEMFile, keyPEMFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certPEMFile)
	if err != nil {
		return nil, fmt.Errorf("testpki: reading CA certificate: %w", err)
	}
	chain, err := certs.ParseChainPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("testpki: CA certificate %s: %w", certPEMFile, err)
	}
	if len(chain) != 1 {
		return nil, fmt.Errorf("testpki: CA certificate %s: holds %d certificates, want 1", certPEMFile, len(chain))
	}
	keyPEM, err := secretfile.Read(keyPEMFile)
	if err != nil {
		return nil, fmt.Errorf("testpki: reading CA key: %w", err)
	}
	defer clear(keyPEM)
	key, err := certs.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("testpki: CA key %s: %w", keyPEMFile, err)
	}
	return newCA(chain[0], key)
}

// Write stores the CA certificate (mode 0644) and private key (PKCS#8, mode
// 0600) as PEM files.
//
// Each file is written to a temporary file in the same directory and renamed
// into place, so readers never see a partial file, and the key is never
// readable by other users, not even briefly or when replacing a file with
// looser permissions.
func (ca *CA) Write(certPEMFile, keyPEMFile string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("testpki: encoding CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(keyPEMFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPEMFile, ca.CertPEM(), 0o644)
}

// writeFileAtomic replaces the file at path with data and mode perm. The data
// goes to a new temporary file in the same directory, which os.CreateTemp
// creates with mode 0600; it is synced and chmodded before being renamed over
// path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("testpki: writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("testpki: writing %s: %w", path, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// WritePEM writes the chain to certFile (0644) and the private key, as
// PKCS#8, to keyFile (0600, never readable by others at any moment),
// each replaced atomically.
func (l *Leaf) WritePEM(certFile, keyFile string) error {
	key, err := KeyPEM(l.Key)
	if err != nil {
		return err
	}
	defer clear(key)
	if err := writeFileAtomic(keyFile, key, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, ChainPEM(l.Chain), 0o644)
}

// ChainPEM encodes DER certificates as consecutive PEM "CERTIFICATE"
// blocks, in order.
func ChainPEM(chain [][]byte) []byte {
	var out []byte
	for _, der := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// KeyPEM encodes a private key of any type x509.MarshalPKCS8PrivateKey
// takes as a PEM "PRIVATE KEY" block.
func KeyPEM(key any) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testpki: encoding key: %w", err)
	}
	defer clear(der)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Certificate returns the CA certificate, for adding to trust pools.
// It is shared, and must not be modified.
func (ca *CA) Certificate() *x509.Certificate {
	return ca.cert
}

// CertPEM returns the CA certificate as a PEM "CERTIFICATE" block.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.certDER})
}

// LeafSpec describes one tenant certificate.
type LeafSpec struct {
	// Names are the DNS subject alternative names; the first is also the
	// subject common name. Must be non-empty. Each name must be a plausible
	// DNS host name (letter-digit-hyphen labels of 1 to 63 bytes, at most
	// 253 bytes in total, not ending in a numeric label) and may start with
	// a "*." wildcard label covering a name of at least two labels, as in
	// "*.example.com".
	Names []string

	// KeyType is the leaf key algorithm; the zero value means ECDSAP256.
	KeyType KeyType

	// NotBefore is the start of validity; the zero value means an hour ago.
	NotBefore time.Time

	// NotAfter is the end of validity; the zero value means NotBefore plus
	// 90 days. It must be after NotBefore.
	NotAfter time.Time

	// ClientAuth adds the TLS client authentication usage, for identities
	// that edges and key servers present to each other in mutual TLS.
	ClientAuth bool

	// IPAddresses are IP subject alternative names, for servers reached
	// by address, such as key servers.
	IPAddresses []net.IP
}

// Leaf is an issued certificate, ready for use as a [crypto/tls.Certificate]
// with Certificate: Chain and PrivateKey: Key.
type Leaf struct {
	// Chain is DER, the leaf first and then the CA certificate. The CA
	// certificate is shared by all leaves of a CA, and must not be modified.
	Chain [][]byte

	// Key is the leaf private key.
	Key crypto.Signer

	// Cert is Chain[0], parsed.
	Cert *x509.Certificate
}

// Issue creates a key of spec.KeyType and a TLS server certificate for
// spec.Names signed by ca.
//
// The certificate has a random 128-bit serial number, a subject key ID, the
// server authentication extended key usage, and the digital signature key
// usage plus, for RSA keys, key encipherment (for RSA key exchange).
//
// Issue is safe for concurrent use and takes no locks. With ECDSA or Ed25519
// keys it takes well under a millisecond; RSA key generation takes tens of
// milliseconds or more.
func (ca *CA) Issue(spec LeafSpec) (*Leaf, error) {
	if err := checkNames(spec.Names); err != nil {
		return nil, err
	}
	notBefore := spec.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	notAfter := spec.NotAfter
	if notAfter.IsZero() {
		notAfter = notBefore.Add(90 * 24 * time.Hour)
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("testpki: NotAfter %v is not after NotBefore %v", notAfter, notBefore)
	}

	key, err := generateKey(spec.KeyType)
	if err != nil {
		return nil, err
	}
	pub := key.Public()
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	extUsage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if spec.ClientAuth {
		extUsage = append(extUsage, x509.ExtKeyUsageClientAuth)
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	template := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: spec.Names[0]},
		DNSNames:              spec.Names,
		IPAddresses:           spec.IPAddresses,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           extUsage,
		BasicConstraintsValid: true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("testpki: signing certificate for %q: %w", spec.Names[0], err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testpki: parsing certificate for %q: %w", spec.Names[0], err)
	}
	return &Leaf{Chain: [][]byte{der, ca.certDER}, Key: key, Cert: cert}, nil
}

// randomSerial returns a random 128-bit serial number. Random serials need no
// coordination between concurrent issuers, and 128 bits exceeds the 64 bits
// of entropy the CA/Browser Forum requires.
func randomSerial() *big.Int {
	var b [16]byte
	rand.Read(b[:]) // never returns an error
	return new(big.Int).SetBytes(b[:])
}

// subjectKeyID returns the key identifier of pub computed like
// x509.CreateCertificate does for CAs: RFC 7093, Section 2, method 1, the
// leftmost 160 bits of the SHA-256 hash of the subjectPublicKey bit string.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	var spk []byte
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		b, err := pub.Bytes()
		if err != nil {
			return nil, fmt.Errorf("testpki: encoding public key: %w", err)
		}
		spk = b
	case *rsa.PublicKey:
		spk = x509.MarshalPKCS1PublicKey(pub)
	case ed25519.PublicKey:
		spk = pub
	default:
		return nil, fmt.Errorf("testpki: unsupported public key type %T", pub)
	}
	h := sha256.Sum256(spk)
	return h[:20], nil
}

// checkNames reports an error unless names is a valid LeafSpec.Names.
func checkNames(names []string) error {
	if len(names) == 0 {
		return errors.New("testpki: no DNS names given")
	}
	for _, name := range names {
		if err := checkName(name); err != nil {
			return fmt.Errorf("testpki: invalid DNS name %q: %w", name, err)
		}
	}
	return nil
}

// checkName reports why name is not a plausible DNS host name or wildcard,
// as described on LeafSpec.Names.
func checkName(name string) error {
	if len(name) > 253 {
		return errors.New("longer than 253 bytes")
	}
	host, wildcard := strings.CutPrefix(name, "*.")
	labels := strings.Split(host, ".")
	if wildcard && len(labels) < 2 {
		return errors.New("wildcard must cover at least two labels")
	}
	for _, label := range labels {
		if err := checkLabel(label); err != nil {
			return err
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("last label is numeric")
	}
	return nil
}

// checkLabel reports why label is not a letter-digit-hyphen DNS label.
func checkLabel(label string) error {
	if label == "" {
		return errors.New("empty label")
	}
	if len(label) > 63 {
		return fmt.Errorf("label %q longer than 63 bytes", label)
	}
	if label[0] == '-' || label[len(label)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}
	for _, c := range []byte(label) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("label %q contains %q", label, c)
		}
	}
	return nil
}
