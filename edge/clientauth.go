package edge

import (
	"crypto/tls"

	"github.com/keyedge/keyedge/keystore"
)

// Client certificates (keystore.ClientAuth), per tenant. The handshake
// asks for one only for a tenant that wants it: GetConfigForClient
// returns, for such a ClientHello, a copy of the server's configuration
// with the tenant's CAs and mode; every other handshake runs as before.
//
// Resumption needs nothing more: crypto/tls (Go 1.26) resumes a session
// under a configuration asking for certificates only if the session
// carries one when one is required, and only if its chain is rooted in
// the configuration's current ClientCAs; a session carrying one under a
// configuration asking for none gets a full handshake too. So a session
// from before client authentication was turned on, or from before the
// CAs changed, gets a full handshake, which asks for a certificate
// again (TestTenantClientCertificatesResumption).
//
// Requests: a connection outlives settings (a change propagates while it
// is open) and HTTP/2 carries requests for every name its certificate
// covers, so each request of a tenant with client authentication is
// checked too (verifiedSubject): its connection must hold a chain ending
// at one of the tenant's current CAs, or, for a required certificate,
// the request gets a 421 and the client a new connection, whose
// handshake asks for one.

// configForClient is tls.Config.GetConfigForClient: the ACME challenge
// configuration for a CA's TLS-ALPN-01 validation, the tenant's client
// authentication for a tenant that has it, else nil (the server's
// configuration).
func (s *Server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if s.acme.ChallengeConfig != nil {
		if cfg, err := s.acme.ChallengeConfig(hello); cfg != nil || err != nil {
			return cfg, err
		}
	}
	return s.clientAuthConfig(hello, s.tlsConfig.Load()), nil
}

// clientAuthConfig returns, for a ClientHello naming a tenant with client
// authentication, a copy of base (the TCP or the QUIC configuration)
// asking for the tenant's certificates; else nil.
func (s *Server) clientAuthConfig(hello *tls.ClientHelloInfo, base *tls.Config) *tls.Config {
	if hello.ServerName == "" {
		return nil
	}
	entry, err := s.store.Lookup(handshakeContext(hello), hello.ServerName)
	if err != nil {
		return nil // getCertificate answers it: the fallback, or the error
	}
	a := clientAuthOf(entry.Certs[0])
	if a == nil {
		return nil
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = nil
	cfg.ClientCAs = a.Pool()
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	if a.Mode == keystore.ClientAuthRequired {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

// clientAuthOf returns c's client authentication, or nil.
func clientAuthOf(c *keystore.Cert) *keystore.ClientAuth {
	if c.Meta.HTTP == nil {
		return nil
	}
	return c.Meta.HTTP.ClientAuth
}

// verifiedSubject returns the subject of the client certificate of cs
// that one of a's CAs verified, and whether there is one. Its chain's
// last certificate, the CA crypto/tls verified it against, must be one
// of a's: a chain verified under other CAs (before a change, or in a
// handshake for another name on a coalesced HTTP/2 connection) does not
// count.
func verifiedSubject(cs *tls.ConnectionState, a *keystore.ClientAuth) (string, bool) {
	if cs == nil {
		return "", false
	}
	for _, chain := range cs.VerifiedChains {
		if len(chain) > 0 && a.HasCA(chain[len(chain)-1]) {
			return chain[0].Subject.String(), true
		}
	}
	return "", false
}
