package edge

import (
	"cmp"
	"log/slog"
	"net"
	"net/http"
	"time"
)

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
