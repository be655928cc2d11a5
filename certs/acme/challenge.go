package acme

import (
	"crypto/tls"
	"net/http"

	"github.com/keyedge/keyedge/keystore"
	"github.com/mholt/acmez/v3"
)

// HTTPHandler wraps the handler of the edge's port-80 listener. It
// answers the CA's HTTP-01 requests for orders of any node sharing the
// storage (from this process's memory, else from the challenge tokens in
// storage) and passes every other request to next (the edge passes its
// redirect to https); nil next answers them 404 Not Found.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	return m.issuer.HTTPChallengeHandler(next)
}

// IsTLSALPNChallenge reports whether hello is a CA's TLS-ALPN-01
// validation: a server name and acme-tls/1 as the only ALPN protocol
// (RFC 8737).
func IsTLSALPNChallenge(hello *tls.ClientHelloInfo) bool {
	return hello.ServerName != "" && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol
}

// GetChallengeConfig has the signature of tls.Config.GetConfigForClient.
// For a TLS-ALPN-01 validation it returns a config that negotiates
// acme-tls/1 and presents the challenge certificate of an order by any
// node sharing the storage; for every other ClientHello it returns nil,
// nil, so the edge's own config goes on. A validation for a name with no
// pending challenge fails the handshake.
func (m *Manager) GetChallengeConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if !IsTLSALPNChallenge(hello) || m.issuer.DisableTLSALPNChallenge {
		return nil, nil
	}
	if _, err := keystore.NormalizeName(hello.ServerName); err != nil {
		return nil, err // never let a hostile name near storage
	}
	cert, err := m.magic.GetCertificate(hello)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{acmez.ACMETLS1Protocol},
		MinVersion:   tls.VersionTLS12,
		// A validation connection never resumes a tenant's session, nor
		// leaves a ticket behind.
		SessionTicketsDisabled: true,
	}, nil
}
