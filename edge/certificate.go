package edge

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"

	"github.com/keyedge/keyedge/keystore"
)

// getCertificate is the tls.Config hook: it finds the client's server
// name in the keystore and picks, among the name's certificates, the
// first the client supports in the order ECDSA, Ed25519, RSA. An unknown
// or invalid name gets the fallback certificate, or, with none, a nil
// certificate, which crypto/tls answers with an unrecognized_name alert.
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := s.settings.Load()
	if hello.ServerName == "" {
		s.metrics.fallbackSelected(st.fallback)
		return st.fallback, nil
	}
	entry, err := s.store.Lookup(handshakeContext(hello), hello.ServerName)
	if errors.Is(err, keystore.ErrNotFound) && s.acme.Obtain != nil {
		entry, err = s.obtainOnDemand(hello)
	}
	if errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrBadName) {
		s.metrics.fallbackSelected(st.fallback)
		return st.fallback, nil
	}
	if err != nil {
		s.metrics.selectionErrors.Inc()
		return nil, err
	}
	s.metrics.tenantSelections.Inc()
	if len(entry.Certs) == 1 {
		// No choice to make: whether or not the client supports it, this
		// is the certificate offered (as below), so the check, a hostname
		// verification and a signature scheme search, is skipped.
		return served(s.tlsCertificate(hello, entry.Certs[0])), nil
	}
	var first *tls.Certificate
	for _, alg := range []x509.PublicKeyAlgorithm{x509.ECDSA, x509.Ed25519, x509.RSA} {
		for _, c := range entry.Certs {
			if c.Leaf.PublicKeyAlgorithm != alg {
				continue
			}
			tc := s.tlsCertificate(hello, c)
			if hello.SupportsCertificate(tc) == nil {
				return served(tc), nil
			}
			if first == nil {
				first = tc
			}
		}
	}
	// Nothing fits the client: offer one anyway, and let the handshake
	// fail with the alert crypto/tls chooses.
	return served(first), nil
}

// served records tc, a tenant's certificate from tlsCertificate, as the
// one its handshake is served with, for the access log, and returns it.
func served(tc *tls.Certificate) *tls.Certificate {
	if tc == nil {
		return nil
	}
	if h := tc.PrivateKey.(*handshakeSigner); h.conn != nil {
		h.conn.tenant, h.conn.cert = h.cert.Meta.Tenant, h.cert.ID
	}
	return tc
}

// obtainOnDemand asks ACME for a certificate for a name the keystore has
// none for, within the handshake's deadline, and looks the name up again.
// The hook refuses names that are not known tenants' (silently: that is
// what random SNIs get) and rate-limits the rest, before storage, the
// allow service or the CA is asked. Other failures are logged at most
// every 10s.
func (s *Server) obtainOnDemand(hello *tls.ClientHelloInfo) (*keystore.Entry, error) {
	if err := s.acme.Obtain(handshakeContext(hello), hello.ServerName); err != nil {
		if !errors.Is(err, s.acme.NotAllowed) {
			s.logs.Log(handshakeContext(hello), s.log, slog.LevelWarn, "on_demand", "edge: on-demand certificate not obtained (logged at most every 10s)", "err", err)
		}
		return nil, keystore.ErrNotFound
	}
	return s.store.Lookup(handshakeContext(hello), hello.ServerName)
}

// tlsCertificate wraps a stored certificate for one handshake. Its
// private key is a handshakeSigner, so choosing among certificates never
// opens a key: only the signature that the handshake finally makes does.
func (s *Server) tlsCertificate(hello *tls.ClientHelloInfo, c *keystore.Cert) *tls.Certificate {
	signer := &handshakeSigner{ctx: handshakeContext(hello), cert: c, router: s.settings.Load().router}
	if tc, ok := hello.Conn.(*trackedConn); ok {
		signer.conn = &tc.facts
	} else if qc := quicConnOf(hello.Context()); qc != nil {
		signer.conn = &qc.facts
	}
	return &tls.Certificate{
		Certificate: c.Chain,
		Leaf:        c.Leaf,
		OCSPStaple:  c.OCSP,
		PrivateKey:  signer,
	}
}

// handshakeSigner is the crypto.Signer of one handshake: it reports the
// certificate's public key, and resolves the real signer through the
// router only when asked to sign, bounded by the handshake's context.
type handshakeSigner struct {
	ctx    context.Context
	cert   *keystore.Cert
	router *router
	conn   *connFacts // the handshake's connection's; nil outside a Server's listener
}

func (h *handshakeSigner) Public() crypto.PublicKey { return h.cert.Leaf.PublicKey }

func (h *handshakeSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	signer, route, err := h.router.signer(h.ctx, h.cert)
	if err != nil {
		return nil, err
	}
	sig, err := signer.Sign(rand, digest, opts)
	if err == nil {
		h.conn.signedBy(route, signer)
	}
	return sig, err
}
