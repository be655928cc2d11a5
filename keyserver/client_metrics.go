package keyserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// clientMetrics are the keyedge_keyless_client_* series. No label names
// a server: addresses stay in logs.
type clientMetrics struct {
	requests  *prometheus.CounterVec // result
	seconds   prometheus.Histogram
	failovers prometheus.Counter
}

func newClientMetrics() *clientMetrics {
	return &clientMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keyless_client_requests_total",
			Help: "Remote key operations by result: ok, key_not_found, error_response, timeout, unavailable (no server answered).",
		}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_keyless_client_request_seconds",
			Help:    "Time for a remote key operation, failovers included.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyedge_keyless_client_failovers_total",
			Help: "Requests retried on another key server after one failed.",
		}),
	}
}

func (m *clientMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.seconds, m.failovers}
}

func (m *clientMetrics) observe(result string, d time.Duration) {
	m.requests.WithLabelValues(result).Inc()
	m.seconds.Observe(d.Seconds())
}
