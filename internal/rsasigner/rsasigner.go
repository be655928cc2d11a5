package rsasigner

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/keyedge/keyedge/internal/ops"
	"github.com/prometheus/client_golang/prometheus"
)

// Backend names who computes RSA signatures.
type Backend string

const (
	Auto    Backend = "auto"    // OpenSSL when libcrypto loads, else Go
	OpenSSL Backend = "openssl" // OpenSSL's libcrypto.so.3; a process that cannot load it does not start
	Go      Backend = "go"      // crypto/rsa
)

// ParseBackend parses a configured backend; "" is Auto.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case "":
		return Auto, nil
	case Auto, OpenSSL, Go:
		return b, nil
	}
	return "", fmt.Errorf("rsasigner: %q is not auto, openssl or go", s)
}

// ErrUnavailable is returned by New for Backend OpenSSL when libcrypto
// cannot be loaded; the error says why.
var ErrUnavailable = errors.New("rsasigner: OpenSSL is not available")

// ErrUnsupported is returned by Signer.Sign for options it does not
// serve (see Signer.Sign); nothing is signed.
var ErrUnsupported = errors.New("rsasigner: unsupported signature options")

// libraryEnv names the environment variable that overrides
// defaultLibrary.
const (
	libraryEnv     = "KEYEDGE_LIBCRYPTO"
	defaultLibrary = "libcrypto.so.3"
)

// Options configures New. The zero value picks Auto, logs to
// slog.Default() and registers no metric.
type Options struct {
	Backend    Backend               // [Auto]
	Logger     *slog.Logger          // [slog.Default()]
	Registerer prometheus.Registerer // receives keyedge_rsa_signer_backend if set
}

// Signers wraps the RSA keys of one process for the backend New chose.
// It is safe for concurrent use.
type Signers struct {
	backend Backend // OpenSSL or Go, never Auto
	log     *slog.Logger
}

// New resolves opts.Backend: Auto becomes OpenSSL when libcrypto loads
// and Go otherwise, logging why at warn level; OpenSSL that cannot load
// is an error wrapping ErrUnavailable. It logs the backend in use, and
// sets keyedge_rsa_signer_backend{backend} to 1 for it.
func New(opts Options) (*Signers, error) {
	return newWith(opts, loadDefault)
}

// loadDefault opens the process's libcrypto once: KEYEDGE_LIBCRYPTO, or
// libcrypto.so.3.
var loadDefault = sync.OnceValues(func() (string, error) {
	lib := os.Getenv(libraryEnv)
	if lib == "" {
		lib = defaultLibrary
	}
	return loadLibrary(lib)
})

// newWith is New with the function that loads libcrypto and returns its
// version.
func newWith(opts Options, load func() (string, error)) (*Signers, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	want := opts.Backend
	if want == "" {
		want = Auto
	}
	if _, err := ParseBackend(string(want)); err != nil {
		return nil, err
	}
	s := &Signers{backend: Go, log: log}
	if want != Go {
		version, err := load()
		switch {
		case err == nil:
			s.backend = OpenSSL
			log.Info("rsasigner: RSA signatures by OpenSSL", "version", version)
		case want == OpenSSL:
			return nil, fmt.Errorf("%w (rsa_signer: openssl): %w", ErrUnavailable, err)
		default:
			log.Warn("rsasigner: RSA signatures by Go's crypto/rsa, slower than OpenSSL: libcrypto did not load", "err", err)
		}
	}
	if s.backend == Go && want == Go {
		log.Info("rsasigner: RSA signatures by Go's crypto/rsa (rsa_signer: go)")
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyedge_rsa_signer_backend",
		Help: "Who computes this process's RSA signatures: 1 for the backend in use (openssl or go).",
	}, []string{"backend"})
	g.WithLabelValues(string(s.backend)).Set(1)
	if err := ops.Register(opts.Registerer, g); err != nil {
		return nil, fmt.Errorf("rsasigner: registering metrics: %w", err)
	}
	return s, nil
}

// Backend is the backend in use: OpenSSL or Go.
func (s *Signers) Backend() Backend { return s.backend }

// Wrap returns the signer to sign with key: under OpenSSL, a *Signer for
// an *rsa.PrivateKey; key itself for other keys, for every key under Go,
// and for a key OpenSSL refuses (logged, without the key). A nil
// *Signers wraps nothing, so Wrap can be a hook left unset.
func (s *Signers) Wrap(key crypto.Signer) crypto.Signer {
	priv, ok := key.(*rsa.PrivateKey)
	if s == nil || !ok || s.backend != OpenSSL {
		return key
	}
	signer, err := newSigner(priv)
	if err != nil {
		s.log.Warn("rsasigner: OpenSSL refused an RSA key; it signs with Go", "bits", priv.N.BitLen(), "err", err)
		return key
	}
	return signer
}

// Signer signs with an RSA private key held by OpenSSL (an EVP_PKEY,
// freed when the Signer is collected). It is safe for concurrent use.
type Signer struct {
	priv *rsa.PrivateKey // the key as Go holds it: Public, PrivateKey
	pkey *pkey           // the same key in libcrypto's memory
}

var _ crypto.Signer = (*Signer)(nil)

// newSigner copies priv into libcrypto. The DER copy is zeroed before
// it returns.
func newSigner(priv *rsa.PrivateKey) (*Signer, error) {
	der := x509.MarshalPKCS1PrivateKey(priv)
	defer clear(der)
	k, err := loadKey(der)
	if err != nil {
		return nil, err
	}
	if k.size() != priv.Size() {
		return nil, fmt.Errorf("rsasigner: OpenSSL reads a %d-byte key as %d bytes", priv.Size(), k.size())
	}
	return &Signer{priv: priv, pkey: k}, nil
}

// Public returns the public half of the key.
func (s *Signer) Public() crypto.PublicKey { return &s.priv.PublicKey }

// PrivateKey returns the key as crypto/rsa holds it, for what OpenSSL
// does not do here (a key server's raw RSA decryption).
func (s *Signer) PrivateKey() *rsa.PrivateKey { return s.priv }

// digests are the hashes Sign serves: those TLS 1.0 to 1.3 and the
// Keyless SSL opcodes sign with.
var digests = map[crypto.Hash]digest{
	crypto.MD5SHA1: mdMD5SHA1,
	crypto.SHA1:    mdSHA1,
	crypto.SHA224:  mdSHA224,
	crypto.SHA256:  mdSHA256,
	crypto.SHA384:  mdSHA384,
	crypto.SHA512:  mdSHA512,
}

// Sign signs digest as (*rsa.PrivateKey).Sign does, with OpenSSL: RSA-PSS
// for *rsa.PSSOptions (salt of the hash's length for
// rsa.PSSSaltLengthEqualsHash, as TLS 1.3 signs; the largest for
// rsa.PSSSaltLengthAuto; or the length given), PKCS #1 v1.5 otherwise.
// The hash must be MD5SHA1 (PKCS #1 v1.5 only), SHA-1, SHA-224, SHA-256,
// SHA-384 or SHA-512; other options fail with ErrUnsupported, and a
// digest of the wrong length with an error. OpenSSL draws its own
// randomness for PSS salts and blinding, so rand is unused.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		return nil, fmt.Errorf("%w: no options (hash)", ErrUnsupported)
	}
	h := opts.HashFunc()
	md, ok := digests[h]
	if !ok {
		return nil, fmt.Errorf("%w: hash %v", ErrUnsupported, h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("rsasigner: %d-byte digest for %v, which is %d bytes", len(digest), h, h.Size())
	}
	pad, salt := padPKCS1, 0
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		pad = padPSS
		switch {
		case h == crypto.MD5SHA1:
			return nil, fmt.Errorf("%w: RSA-PSS with MD5SHA1", ErrUnsupported)
		case pss.SaltLength == rsa.PSSSaltLengthEqualsHash:
			salt = saltDigest
		case pss.SaltLength == rsa.PSSSaltLengthAuto:
			salt = saltMax
		case pss.SaltLength > 0:
			salt = pss.SaltLength
		default:
			return nil, fmt.Errorf("%w: PSS salt length %d", ErrUnsupported, pss.SaltLength)
		}
	}
	return s.pkey.sign(pad, md, salt, digest, s.priv.Size())
}
