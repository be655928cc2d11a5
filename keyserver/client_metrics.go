package keyserver

import (
	"crypto/tls"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// clientMetrics are the keyedge_keyless_client_* series. No label names
// a server: addresses stay in logs.
type clientMetrics struct {
	requests  *prometheus.CounterVec // result
	seconds   prometheus.Histogram
	failovers *prometheus.CounterVec // reason
	expiry    prometheus.GaugeFunc   // the client identity's NotAfter

	// identity is the TLS configuration of the newest Client counting
	// here (see Client.Reconfigured), whose identity expiry reports.
	identity atomic.Pointer[tls.Config]
}

func newClientMetrics(tlsConfig *tls.Config) *clientMetrics {
	m := &clientMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keyless_client_requests_total",
			Help: "Remote key operations by result: ok, key_not_found, error_response, timeout, unavailable (no server answered).",
		}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_keyless_client_request_seconds",
			Help:    "Time for a remote key operation, failovers included.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keyless_client_failovers_total",
			Help: "Requests retried on the next key server, by reason: timeout (no answer within the attempt timeout), unavailable (no connection, or it failed), error_response (key not found, read or internal error).",
		}, []string{"reason"}),
	}
	m.identity.Store(tlsConfig)
	m.expiry = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyedge_keyless_client_identity_expiry_timestamp_seconds",
		Help: "When the certificate this node presents to key servers expires (Unix time; 0 if unknown). Alert well before: renew it with keyctl identity, and the node picks it up without a restart.",
	}, func() float64 { return identityExpiry(m.identity.Load()) })
	for _, reason := range []string{failoverTimeout, failoverUnavailable, failoverError} {
		m.failovers.WithLabelValues(reason) // exported at 0 from the start
	}
	return m
}

func (m *clientMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.seconds, m.failovers, m.expiry}
}

func (m *clientMetrics) observe(result string, d time.Duration) {
	m.requests.WithLabelValues(result).Inc()
	m.seconds.Observe(d.Seconds())
}
