package keystore

import (
	"fmt"

	"github.com/keyedge/keyedge/internal/ops"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the keyedge_keystore_* series. Labels are bounded: never a
// name or an ID.
type metrics struct {
	lookups        *prometheus.CounterVec // result: hit, miss, negative, error
	loadSeconds    prometheus.Histogram   // lookups that read storage
	keyOpenSeconds prometheus.Histogram   // PrivateKey reads and unseals
	loadErrors     *prometheus.CounterVec // file: name, record, key
	evictions      *prometheus.CounterVec // cache: names, certs
	journal        *prometheus.CounterVec // event: applied, reset, error

	policyOpens       *prometheus.CounterVec // result: ok, not_admitted, error
	policyOpenSeconds prometheus.Histogram   // CP-ABE opens of policy keys

	keyOpens           *prometheus.CounterVec // format: envelope (KES2), legacy (KES1)
	dataKeyOpens       *prometheus.CounterVec // result: ok, error
	dataKeyOpenSeconds prometheus.Histogram   // HPKE opens of data keys

	// The lookups children, resolved once: the hot path does not hash labels.
	hits, misses, negative, errors prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keystore_lookups_total",
			Help: "Keystore lookups by result: hit (cached), miss (loaded from storage), negative (no such name), error.",
		}, []string{"result"}),
		loadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_keystore_load_seconds",
			Help:    "Time taken by lookups that read storage.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14),
		}),
		keyOpenSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_keystore_key_open_seconds",
			Help:    "Time taken to read and unseal a private key.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14),
		}),
		loadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keystore_load_errors_total",
			Help: "Stored files that failed to load, by file kind (name, record, key).",
		}, []string{"file"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keystore_cache_evictions_total",
			Help: "Cache entries evicted for size or age, by cache (names, certs).",
		}, []string{"cache"}),
		journal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keystore_journal_events_total",
			Help: "Change journal events: applied (an entry invalidated its names), reset (a gap cleared the cache), error.",
		}, []string{"event"}),
		policyOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keystore_policy_key_opens_total",
			Help: "Attempts to open a geo policy key with this node's attribute key, by result: ok, not_admitted (the policy excludes this node), error.",
		}, []string{"result"}),
		policyOpenSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_keystore_policy_key_open_seconds",
			Help:    "Time taken by successful CP-ABE opens of geo policy keys (once per policy per node).",
			Buckets: prometheus.ExponentialBuckets(1e-3, 2, 12),
		}),
		keyOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keystore_sealed_key_opens_total",
			Help: "Sealed keys and secrets opened, by format: envelope (under a data key), legacy (one HPKE decapsulation each; keyctl reseal rewrites them).",
		}, []string{"format"}),
		dataKeyOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keystore_data_key_opens_total",
			Help: "HPKE opens of the data keys that envelope-sealed keys share (once per data key per node), by result: ok, error.",
		}, []string{"result"}),
		dataKeyOpenSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_keystore_data_key_open_seconds",
			Help:    "Time taken by successful HPKE opens of data keys.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14),
		}),
	}
	m.hits, m.misses = m.lookups.WithLabelValues("hit"), m.lookups.WithLabelValues("miss")
	m.negative, m.errors = m.lookups.WithLabelValues("negative"), m.lookups.WithLabelValues("error")
	return m
}

// countEvictions returns an otter OnDeletion hook counting evictions
// (size or expiry, not invalidation or replacement) into c.
func countEvictions[V any](c prometheus.Counter) func(otter.DeletionEvent[string, V]) {
	return func(e otter.DeletionEvent[string, V]) {
		if e.Cause.IsEviction() {
			c.Inc()
		}
	}
}

// register adds the metrics and the cache gauges of s to r; nil r
// registers nothing.
func (m *metrics) register(r prometheus.Registerer, s *Store) error {
	if r == nil {
		return nil
	}
	// The gauges run pending cache maintenance first, so a scrape reports
	// sizes after eviction rather than before it.
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "keyedge_keystore_cache_entries",
			Help:        "Entries in the keystore caches.",
			ConstLabels: prometheus.Labels{"cache": "certs"},
		}, func() float64 { s.certs.CleanUp(); return float64(s.certs.EstimatedSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "keyedge_keystore_cache_entries",
			Help:        "Entries in the keystore caches.",
			ConstLabels: prometheus.Labels{"cache": "names"},
		}, func() float64 { s.names.CleanUp(); return float64(s.names.EstimatedSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyedge_keystore_cache_bytes",
			Help: "Estimated heap bytes held by cached certificates (the weight bounded by MaxBytes).",
		}, func() float64 { s.certs.CleanUp(); return float64(s.certs.WeightedSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyedge_keystore_storage_up",
			Help: "1 while the keystore's storage answers, 0 while it is unavailable (directory gone, Redis down): only cached tenants are served.",
		}, func() float64 {
			if s.Err() != nil {
				return 0
			}
			return 1
		}),
	}
	err := ops.Register(r, append(gauges, m.lookups, m.loadSeconds, m.keyOpenSeconds, m.loadErrors, m.evictions, m.journal, m.policyOpens, m.policyOpenSeconds, m.keyOpens, m.dataKeyOpens, m.dataKeyOpenSeconds)...)
	if err != nil {
		return fmt.Errorf("keystore: failed to register metrics (one Store per registry): %w", err)
	}
	return nil
}
