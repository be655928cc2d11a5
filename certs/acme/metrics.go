package acme

import (
	"fmt"

	"github.com/keyedge/keyedge/internal/ops"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the keyedge_acme_* series. No label names a host.
type metrics struct {
	certificates    *prometheus.CounterVec // result: obtained, renewed, failed
	ocsp            *prometheus.CounterVec // result: good, revoked, error
	onDemand        *prometheus.CounterVec // result: obtained, refused, rate_limited, error
	managed         prometheus.Gauge
	minDaysToExpiry prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		certificates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_acme_certificates_total",
			Help: "ACME orders by result: obtained (a name's first certificate), renewed (a later one: renewal, revocation, changed names), failed.",
		}, []string{"result"}),
		ocsp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_acme_ocsp_refreshes_total",
			Help: "OCSP staple refreshes of managed certificates by result: good (stored), revoked (certificate replaced), error.",
		}, []string{"result"}),
		onDemand: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_acme_on_demand_total",
			Help: "Handshake-time issuance requests by result: obtained, refused (name not allowed), rate_limited, error.",
		}, []string{"result"}),
		managed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyedge_acme_managed_certificates",
			Help: "Names in the ACME managed index at the last maintenance pass.",
		}),
		minDaysToExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyedge_acme_min_days_to_expiry",
			Help: "Days until the soonest expiry among managed certificates at the last maintenance pass (+Inf with none); alert when it nears the renewal window's end.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	if err := ops.Register(r, m.certificates, m.ocsp, m.onDemand, m.managed, m.minDaysToExpiry); err != nil {
		return fmt.Errorf("acme: failed to register ACME metrics: %w", err)
	}
	return nil
}
