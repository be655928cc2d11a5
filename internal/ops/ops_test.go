package ops

import (
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
	srv := httptest.NewServer(Handler(reg, &ready))
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
		status int
		body   string
	}{
		{"/healthz", false, 200, "ok"},
		{"/readyz", false, 503, "not ready"},
		{"/readyz", true, 200, "ready"},
		{"/metrics", true, 200, "keyedge_test_total 1"},
		{"/other", true, 404, ""},
	}
	for _, tt := range tests {
		ready.Store(tt.ready)
		status, body := get(tt.path)
		if status != tt.status || !strings.Contains(body, tt.body) {
			t.Errorf("GET %s (ready %v) = %d %q, want %d containing %q", tt.path, tt.ready, status, body, tt.status, tt.body)
		}
	}
}
