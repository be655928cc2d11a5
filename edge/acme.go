package edge

import (
	"context"
	"crypto/tls"
	"net/http"
)

// ACME is what the edge calls of an ACME manager (package acme's Manager,
// wired in by the binary), as functions, so the edge depends on no ACME
// implementation. The zero value is no ACME; each nil field turns its
// part off.
type ACME struct {
	// ChallengeConfig has the signature of tls.Config.GetConfigForClient.
	// For a CA's TLS-ALPN-01 validation it returns the config that
	// presents the challenge certificate; for every other ClientHello it
	// must return nil, nil, so the edge's own config goes on. It is
	// called for every handshake.
	ChallengeConfig func(*tls.ClientHelloInfo) (*tls.Config, error)

	// Obtain gets a certificate during a handshake for a server name the
	// keystore has none for, within ctx (the handshake's deadline); on
	// nil the edge looks the name up again. It must refuse names that are
	// not known tenants' before asking anyone, and bound its own rate.
	Obtain func(ctx context.Context, serverName string) error

	// NotAllowed is the error, wrapped by Obtain's, that says a name may
	// not have a certificate: what a random SNI gets, so the edge does
	// not log it (acme.ErrNotAllowed for package acme's Manager). Other
	// Obtain errors, all of them when NotAllowed is nil, are logged at
	// most every 10s. Any Obtain error serves the name as unknown.
	NotAllowed error

	// HTTPHandler wraps the port-80 handler (see NewHTTPServer): it
	// answers the CA's HTTP-01 validations and passes every other request
	// to next.
	HTTPHandler func(next http.Handler) http.Handler
}
