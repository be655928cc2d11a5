package edge

import (
	"cmp"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"
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

// NewHTTPServer returns the server for the edge's plain-HTTP listener
// (port 80): it redirects every request to the same URL over https
// (301 for GET and HEAD, 308 otherwise), except those a.HTTPHandler, when
// set, answers (ACME HTTP-01 validations). Bind its listener before the
// ACME manager's renewal loop starts, so certmagic finds the port taken
// and does not open one of its own.
func NewHTTPServer(a ACME, limits Limits, log *slog.Logger) *http.Server {
	limits = limits.WithDefaults()
	log = cmp.Or(log, slog.Default())
	var h http.Handler = http.HandlerFunc(redirectToHTTPS)
	if a.HTTPHandler != nil {
		h = a.HTTPHandler(h)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// redirectToHTTPS answers a plain-HTTP request with a permanent redirect
// to the same host, path and query over https, the host's port dropped
// (the edge serves TLS on 443): 301 for GET and HEAD, 308 otherwise so
// clients keep the method and body.
func redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		http.Error(w, "missing Host", http.StatusBadRequest)
		return
	}
	u := *r.URL
	u.Scheme, u.Host = "https", host
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		http.Redirect(w, r, u.String(), http.StatusMovedPermanently)
		return
	}
	http.Redirect(w, r, u.String(), http.StatusPermanentRedirect)
}
