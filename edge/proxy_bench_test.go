package edge

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

// benchWriter is a ResponseWriter that discards the response, reusing
// its header map, so that BenchmarkProxyFast counts the proxy's work.
type benchWriter struct {
	h    http.Header
	code int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) Flush()                      {}

// BenchmarkProxyFast measures a GET on the fast path, ServeHTTP called
// directly, against a plain-HTTP origin on 127.0.0.1 sending 3 bytes.
// Its allocations include the origin server's.
func BenchmarkProxyFast(b *testing.B) { benchmarkProxyFast(b, nil) }

// BenchmarkProxyAccessLog is BenchmarkProxyFast without and with an
// access log (to a file, each format), reporting the process's CPU time
// per request (the origin's and the log writer's included) and requests
// per CPU-second. -count interleaves the sub-benchmarks:
//
//	go test -run '^$' -bench ProxyAccessLog -benchtime 20000x -count 6 ./edge
func BenchmarkProxyAccessLog(b *testing.B) {
	for _, format := range []accesslog.Format{"", accesslog.JSON, accesslog.Text} {
		name := "off"
		if format != "" {
			name = string(format)
		}
		b.Run(name, func(b *testing.B) {
			var l *accesslog.Logger
			if format != "" {
				var err error
				l, err = accesslog.New(accesslog.Options{Path: filepath.Join(b.TempDir(), "access.log"), Format: format})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
			}
			benchmarkProxyFast(b, l)
		})
	}
}

func benchmarkProxyFast(b *testing.B, log *accesslog.Logger) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer origin.Close()
	u, _ := url.Parse(origin.URL)
	p := NewProxy(ProxyOptions{Logger: slog.New(slog.DiscardHandler)}, func(*http.Request) (*url.URL, error) { return u, nil })
	p.accessLog = log
	defer p.Close()
	benchServe(b, p.ServeHTTP, nil)
}

// benchServe serves a GET of https://proxyTestHost/ with serve until
// the benchmark ends, on a connection with the TLS state tlsState, and
// reports the process's CPU time per request and requests per
// CPU-second.
func benchServe(b *testing.B, serve func(http.ResponseWriter, *http.Request), tlsState *tls.ConnectionState) {
	r := httptest.NewRequest(http.MethodGet, "https://"+proxyTestHost+"/", nil)
	r.TLS = tlsState
	r.Header.Set("User-Agent", "h2load nghttp2/1.52.0")
	r.Header.Set("Accept", "*/*")
	w := &benchWriter{h: make(http.Header)}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		clear(w.h)
		w.code = 0
		serve(w, r)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "req/cpu-s")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProxyTenant is BenchmarkProxyFast through a Server: the
// origin is found from the request's SNI in a keystore holding one
// tenant with a single origin, as every request of a running edge finds
// it (keystore cache hit), and the request is proxied on the fast path.
// Run it against the commit before origin pools to compare:
//
//	go test -run '^$' -bench ProxyTenant -benchtime 20000x -count 1 ./edge
func BenchmarkProxyTenant(b *testing.B) {
	srv := benchTenantServer(b)
	benchServe(b, srv.serveProxy, &tls.ConnectionState{ServerName: proxyTestHost})
}

// BenchmarkProxyTenantH2 is BenchmarkProxyTenant for a request that came
// over HTTP/2, whose writes the server watches for send_timeout
// (streamwatch.go):
//
//	go test -run '^$' -bench ProxyTenantH2 -benchtime 20000x -count 6 ./edge
func BenchmarkProxyTenantH2(b *testing.B) {
	srv := benchTenantServer(b)
	benchServe(b, func(w http.ResponseWriter, r *http.Request) {
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
		srv.serveProxy(w, r)
	}, &tls.ConnectionState{ServerName: proxyTestHost, NegotiatedProtocol: "h2"})
}

// benchTenantServer returns a Server whose keystore holds one tenant,
// proxyTestHost, with a single origin answering "ok\n", all closed when
// the benchmark ends.
func benchTenantServer(b *testing.B) *Server {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	b.Cleanup(origin.Close)
	store, _ := tempStore(b)
	ca, err := testpki.NewCA("bench CA")
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{proxyTestHost}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Put(context.Background(), &keystore.Bundle{Meta: keystore.Meta{Tenant: "bench", Origin: origin.URL}, Chain: leaf.Chain, Key: leaf.Key}); err != nil {
		b.Fatal(err)
	}
	srv, err := NewServer(Options{Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}
