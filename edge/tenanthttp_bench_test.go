package edge

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/keyedge/keyedge/internal/testpki"
)

// BenchmarkTenantHTTP is BenchmarkProxyFast through a Server, for a
// tenant with no HTTP settings: "proxy" calls the proxy as the server
// did before the per-tenant layer, "layer" as it does now, so the ratio
// is the layer's cost; "lookup" is the layer alone (the lookup and applyTenant), for
// a figure the machine's noise does not drown. Run it with -count:
//
//	go test -run '^$' -bench TenantHTTP -benchtime 20000x -count 6 ./edge
func BenchmarkTenantHTTP(b *testing.B) {
	w := openWorld(b, 0)
	origin := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.Write([]byte("ok\n")) }))
	defer origin.Close()
	w.put(b, testpki.ECDSAP256, origin.URL, proxyTestHost)
	srv, err := NewServer(Options{Store: w.store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	p := srv.settings.Load().proxy
	defer p.Close()
	for _, bc := range []struct {
		name  string
		serve func(http.ResponseWriter, *http.Request)
	}{
		{"proxy", p.ServeHTTP},
		{"layer", srv.serveProxy},
		{"lookup", func(rw http.ResponseWriter, r *http.Request) {
			c, err := srv.tenant(r)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := srv.applyTenant(rw, r, p, c); ok {
				rw.WriteHeader(http.StatusOK)
			}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchServe(b, bc.serve, &tls.ConnectionState{ServerName: proxyTestHost, HandshakeComplete: true})
		})
	}
}
