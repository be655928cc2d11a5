package ops

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "keyedge_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	var ready atomic.Bool
	var checkErr atomic.Pointer[error] // what the readiness check returns
	srv := httptest.NewServer(Handler(reg, &ready, func() error { return *checkErr.Load() }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	tests := []struct {
		path   string
		ready  bool
		check  error
		status int
		body   string
	}{
		{"/healthz", false, nil, 200, "ok"},
		{"/readyz", false, nil, 503, "not ready"},
		{"/readyz", true, nil, 200, "ready"},
		{"/readyz", true, errors.New("keystore: storage unavailable"), 503, "not ready: keystore: storage unavailable"},
		{"/healthz", true, errors.New("keystore: storage unavailable"), 200, "ok"},
		{"/metrics", true, nil, 200, "keyedge_test_total 1"},
		{"/other", true, nil, 404, ""},
	}
	for _, tt := range tests {
		ready.Store(tt.ready)
		checkErr.Store(&tt.check)
		status, body := get(tt.path)
		if status != tt.status || !strings.Contains(body, tt.body) {
			t.Errorf("GET %s (ready %v) = %d %q, want %d containing %q", tt.path, tt.ready, status, body, tt.status, tt.body)
		}
	}
}

// TestWithPprof checks that Handler serves no profiles and WithPprof
// adds them without hiding Handler's paths.
func TestWithPprof(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	h := Handler(prometheus.NewRegistry(), &ready)
	for _, tt := range []struct {
		name    string
		h       http.Handler
		path    string
		status  int
		contain string
	}{
		{"off", h, "/debug/pprof/", 404, ""},
		{"off", h, "/debug/pprof/heap", 404, ""},
		{"on", WithPprof(h), "/debug/pprof/", 200, "goroutine"},
		{"on", WithPprof(h), "/debug/pprof/heap?debug=1", 200, "heap profile"},
		{"on", WithPprof(h), "/debug/pprof/cmdline", 200, ""},
		{"on", WithPprof(h), "/readyz", 200, "ready"},
		{"on", WithPprof(h), "/other", 404, ""},
	} {
		srv := httptest.NewServer(tt.h)
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.contain) {
			t.Errorf("pprof %s: GET %s = %d, want %d containing %q", tt.name, tt.path, resp.StatusCode, tt.status, tt.contain)
		}
	}
}
