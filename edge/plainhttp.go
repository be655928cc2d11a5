package edge

import (
	"cmp"
	"log/slog"
	"net/http"
	"time"

	"github.com/keyedge/keyedge/keystore"
)

// NewHTTPServer returns the server for the edge's plain-HTTP listener
// (port 80): it redirects every request to the same URL over https
// (301 for GET and HEAD, 308 otherwise), except those a.HTTPHandler, when
// set, answers (ACME HTTP-01 validations), and those for a name whose
// tenant opted out (keystore.TenantHTTP.NoRedirect), which get a 403:
// nothing is proxied in clear text. A name store has no tenant for is
// redirected too: with ACME on demand, its https handshake may obtain
// its certificate. A nil store redirects every name. Bind its listener
// before the ACME manager's renewal loop starts, so certmagic finds the
// port taken and does not open one of its own.
func NewHTTPServer(store *keystore.Store, a ACME, limits Limits, log *slog.Logger) *http.Server {
	limits = limits.WithDefaults()
	log = cmp.Or(log, slog.Default())
	var h http.Handler = http.HandlerFunc(redirectToHTTPS)
	if store != nil {
		h = plainHTTP{store}
	}
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

// plainHTTP is the port-80 handler: redirectToHTTPS, but for tenants
// that opted out.
type plainHTTP struct{ store *keystore.Store }

func (p plainHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := hostOf(r)
	if entry, err := p.store.Lookup(r.Context(), host); err == nil {
		if h := entry.Certs[0].Meta.HTTP; h != nil && h.NoRedirect {
			http.Error(w, "403 Forbidden: this site is served over https only", http.StatusForbidden)
			return
		}
	}
	redirectToHTTPS(w, r)
}

// redirectToHTTPS answers a plain-HTTP request with a permanent redirect
// to the same host, path and query over https, the host's port dropped
// (the edge serves TLS on 443): 301 for GET and HEAD, 308 otherwise so
// clients keep the method and body.
func redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	host := hostOf(r)
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
