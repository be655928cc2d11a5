package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keyserver"
)

// Keyless is the key server and the key that ModeKeyless signs with.
type Keyless struct {
	Addr string // host:port of the key server (required)
	// TLSConfig holds the client's mTLS identity (Certificates) and the
	// key server's CA (RootCAs). Required.
	TLSConfig *tls.Config
	// Public is the public key of the key to sign with; the key server
	// finds the private key by its SKI. Required.
	Public crypto.PublicKey
	SNI    string // sent with every request, for servers that index keys by name
	Conns  int    // connections to the key server [keyserver.ClientOptions's default]
}

// LoadKeyless reads a Keyless's files: the client identity's
// certificate chain and key, the key server's CA, and a PEM file whose
// first certificate is that of the key to sign with (other blocks, such
// as the key itself in a combined file, are skipped); the certificate's
// first name is sent as the SNI.
func LoadKeyless(addr, certFile, keyFile, caFile, keyCertFile string) (*Keyless, error) {
	id, err := secretfile.KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("bench: keyless identity: %w", err)
	}
	roots, err := certs.ReadCertPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("bench: key server CA: %w", err)
	}
	leaf, err := firstCertificate(keyCertFile)
	if err != nil {
		return nil, fmt.Errorf("bench: keyless key %s: %w", keyCertFile, err)
	}
	k := &Keyless{Addr: addr, TLSConfig: &tls.Config{Certificates: []tls.Certificate{id}, RootCAs: roots}, Public: leaf.PublicKey}
	if len(leaf.DNSNames) > 0 {
		k.SNI = leaf.DNSNames[0]
	}
	return k, nil
}

// firstCertificate parses the first CERTIFICATE block of a PEM file.
func firstCertificate(path string) (*x509.Certificate, error) {
	rest, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// signer is a run's handle on the remote key, shared by its workers.
type signer struct {
	client  *keyserver.Client
	key     crypto.Signer
	opts    crypto.SignerOpts // what a TLS 1.3 handshake would ask for
	keyType string
}

// open connects to the key server (a ping, so a run that cannot reach
// it does not start) and returns the remote key. k has passed
// Options.Check.
func (k *Keyless) open(ctx context.Context, timeout time.Duration) (*signer, error) {
	var opts crypto.SignerOpts
	switch k.Public.(type) {
	case *ecdsa.PublicKey:
		opts = crypto.SHA256
	case *rsa.PublicKey:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	case ed25519.PublicKey:
		opts = crypto.Hash(0)
	default:
		return nil, fmt.Errorf("bench: keyless: unsupported key type %T", k.Public)
	}
	client, err := keyserver.NewClient(keyserver.ClientOptions{
		TLSConfig:      k.TLSConfig,
		Timeout:        timeout,
		ConnsPerServer: k.Conns,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, fmt.Errorf("bench: keyless: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := client.Ping(pctx, k.Addr); err != nil {
		client.Close()
		return nil, fmt.Errorf("bench: key server %s: %w", k.Addr, err)
	}
	key, err := client.Key(ctx, k.Public, keyserver.KeyRef{SNI: k.SNI}, []keyserver.Endpoint{{Addr: k.Addr}})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("bench: keyless: %w", err)
	}
	return &signer{client: client, key: key, opts: opts, keyType: keyName(k.Public)}, nil
}

func (s *signer) close() { s.client.Close() }

// sign asks for one signature of a message derived from n. The first
// signature a worker gets is verified, so a key server answering with
// the wrong key fails the run rather than flattering it.
func (s *signer) sign(n uint64, verify bool) error {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], n)
	digest := sha256.Sum256(msg[:])
	signed := digest[:]
	if s.opts.HashFunc() == 0 {
		signed = msg[:] // Ed25519 signs the message itself
	}
	sig, err := s.key.Sign(nil, signed, s.opts)
	if err != nil {
		return &stageError{ErrSign, err}
	}
	if !verify {
		return nil
	}
	ok := false
	switch pub := s.key.Public().(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, signed, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPSS(pub, crypto.SHA256, signed, sig, s.opts.(*rsa.PSSOptions)) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, signed, sig)
	}
	if !ok {
		return &stageError{ErrSign, errors.New("the key server's signature does not verify")}
	}
	return nil
}

// runKeyless: one signature at a time, back to back.
func (w *worker) runKeyless() {
	var n uint64
	for w.sh.take() {
		start := time.Now()
		err := w.sh.signer.sign(n, n == 0)
		n++
		w.finish(start, err)
	}
}
