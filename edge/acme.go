package edge

import (
	"cmp"
	"log/slog"
	"net/http"
	"time"

	"github.com/keyedge/keyedge/certs"
)

// NewHTTPServer returns the server for the edge's plain-HTTP listener
// (port 80). With m set, it answers ACME HTTP-01 challenges for orders
// placed by any node of the fleet (from the challenge tokens in the
// shared storage); every other request is redirected to the same URL
// over https. Bind its listener before m's renewal loop starts, so
// certmagic finds the port taken and does not open one of its own.
func NewHTTPServer(m *certs.Manager, limits Limits, log *slog.Logger) *http.Server {
	limits = limits.WithDefaults()
	log = cmp.Or(log, slog.Default())
	var h http.Handler = http.HandlerFunc(certs.RedirectToHTTPS)
	if m != nil {
		h = m.HTTPHandler(h)
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
