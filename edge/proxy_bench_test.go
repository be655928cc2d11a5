package edge

import (
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
	benchGET(b, p.ServeHTTP, nil)
}

// benchGET has serve answer a GET for proxyTestHost, over TLS when cs
// is not nil, b.N times, and reports the process's CPU time per request
// and requests per CPU-second.
func benchGET(b *testing.B, serve http.HandlerFunc, cs *tls.ConnectionState) {
	r := httptest.NewRequest(http.MethodGet, "https://"+proxyTestHost+"/", nil)
	r.TLS = cs
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
