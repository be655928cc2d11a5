package edge

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
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
func BenchmarkProxyFast(b *testing.B) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer origin.Close()
	u, _ := url.Parse(origin.URL)
	p := NewProxy(ProxyOptions{Logger: slog.New(slog.DiscardHandler)}, func(*http.Request) (*url.URL, error) { return u, nil })
	defer p.Close()
	r := httptest.NewRequest(http.MethodGet, "https://"+proxyTestHost+"/", nil)
	r.Header.Set("User-Agent", "h2load nghttp2/1.52.0")
	r.Header.Set("Accept", "*/*")
	w := &benchWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		w.code = 0
		p.ServeHTTP(w, r)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
}
