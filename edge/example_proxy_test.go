package edge_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/keyedge/keyedge/edge"
	"github.com/prometheus/client_golang/prometheus"
)

// A Proxy sends each request to the origin of the tenant that serves the
// request's host, and answers 404 for hosts no tenant serves.
func ExampleNewProxy() {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin: %s for %s\n", r.URL.Path, r.Header.Get("X-Forwarded-Host"))
	}))
	defer origin.Close()
	originURL, err := url.Parse(origin.URL + "/app")
	if err != nil {
		log.Fatal(err)
	}
	tenants := map[string]*url.URL{"www.tenant.example": originURL}

	proxy := edge.NewProxy(edge.ProxyOptions{OriginTimeout: 10 * time.Second}, func(r *http.Request) (*url.URL, error) {
		if u, ok := tenants[r.Host]; ok {
			return u, nil
		}
		return nil, fmt.Errorf("%q: %w", r.Host, edge.ErrNoOrigin)
	})
	defer proxy.Close()
	prometheus.NewRegistry().MustRegister(proxy.Collectors()...)

	// At the edge, the proxy is the handler of the TLS-terminating server.
	front := httptest.NewServer(proxy)
	defer front.Close()
	for _, host := range []string{"www.tenant.example", "nobody.example"} {
		req, err := http.NewRequest(http.MethodGet, front.URL+"/hello", nil)
		if err != nil {
			log.Fatal(err)
		}
		req.Host = host
		res, err := front.Client().Do(req)
		if err != nil {
			log.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s", host, body)
	}
	// Output:
	// www.tenant.example: origin: /app/hello for www.tenant.example
	// nobody.example: 404 Not Found: no site is configured for this host
}
