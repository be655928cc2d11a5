package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/keyedge/keyedge/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsPprof checks that the metrics listener serves
// /debug/pprof/ only when edge.yaml sets pprof: true.
func TestMetricsPprof(t *testing.T) {
	for _, tt := range []struct {
		yaml   string
		status int
	}{
		{"", http.StatusNotFound},
		{"pprof: false\n", http.StatusNotFound},
		{"pprof: true\n", http.StatusOK},
	} {
		path := filepath.Join(t.TempDir(), "edge.yaml")
		if err := os.WriteFile(path, []byte("keystore: keystore\nfleet_key_file: fleet.key\n"+tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.LoadEdge(path)
		if err != nil {
			t.Fatal(err)
		}
		var ready atomic.Bool
		srv := httptest.NewServer(metricsHandler(cfg, prometheus.NewRegistry(), &ready))
		resp, err := http.Get(srv.URL + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("edge.yaml %q: /debug/pprof/goroutine = %d, want %d", tt.yaml, resp.StatusCode, tt.status)
		}
	}
}
