// Package ops serves what operators and orchestrators poll on a
// process's metrics listener: Prometheus metrics, liveness and readiness.
package ops

import (
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics from reg, /healthz (200 while the process
// serves HTTP at all: a liveness probe) and /readyz (200 while ready is
// set and every check returns nil, 503 with the first check's error
// otherwise: a readiness probe, which a draining process, or one whose
// keystore is unavailable, fails so load balancers stop sending it
// connections).
func Handler(reg prometheus.Gatherer, ready *atomic.Bool, checks ...func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		for _, check := range checks {
			if err := check(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// WithPprof returns h with Go's profiles (net/http/pprof) added under
// /debug/pprof/: the index, cmdline, profile (CPU), symbol, trace and
// every runtime profile by name (heap, goroutine, allocs, block, mutex,
// threadcreate). Anyone who can reach the listener can read them and
// spend the process's CPU on a profile, so it is for private listeners
// and opt-in.
func WithPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and the named profiles: /debug/pprof/heap, ...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Register registers every collector with r, stopping at the first
// failure (a second Store, Server or Manager on one registry, say). A nil
// r registers nothing: metrics are optional everywhere.
func Register(r prometheus.Registerer, collectors ...prometheus.Collector) error {
	if r == nil {
		return nil
	}
	for _, c := range collectors {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
