package edge

import (
	"crypto/tls"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the keyedge_edge_* series. Labels are bounded sets: never
// a name, an address or an error string.
type metrics struct {
	handshakes       *prometheus.CounterVec // result, version, group
	handshakeSeconds prometheus.Histogram   // successful handshakes
	selections       *prometheus.CounterVec // result: tenant, fallback, unknown, error
	openConns        prometheus.Gauge
	refused          *prometheus.CounterVec // reason: refusedMaxConns, refusedPerIP
	routes           *prometheus.CounterVec
	resumptions      *prometheus.CounterVec // result of a ticket offered
	ech              *prometheus.CounterVec // result: accepted, rejected, none
	sendTimeouts     prometheus.Counter

	// QUIC (http3.go).
	quicHandshakes *prometheus.CounterVec // result, group

	// Children resolved once, so a handshake hashes no labels for them.
	tenantSelections, fallbackSelections, unknownSelections, selectionErrors prometheus.Counter
	handshakesOK                                                             sync.Map // handshakeKind → prometheus.Counter
	echResults                                                               echCounters
}

// handshakeKind is what a successful handshake is counted by, besides
// its result.
type handshakeKind struct {
	version uint16
	group   tls.CurveID
}

// Reasons for refusing a connection at accept, the values of
// keyedge_edge_refused_connections_total's reason label.
const (
	refusedMaxConns = "max_conns"
	refusedPerIP    = "per_ip"
)

// routeCounters are the keyedge_edge_route_decisions_total children,
// resolved once so the handshake path hashes no labels.
type routeCounters struct {
	local, keyless, none prometheus.Counter
}

func (m *metrics) routeCounters() routeCounters {
	return routeCounters{m.routes.WithLabelValues("local"), m.routes.WithLabelValues("keyless"), m.routes.WithLabelValues("none")}
}

func newMetrics() *metrics {
	m := &metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_edge_handshakes_total",
			Help: "TLS handshakes by result (ok; timeout; closed by the client; error, including names refused with unrecognized_name), TLS version and key exchange group.",
		}, []string{"result", "version", "group"}),
		handshakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyedge_edge_handshake_seconds",
			Help:    "Time from the first ClientHello byte to a completed handshake.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}),
		selections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_edge_certificate_selections_total",
			Help: "Certificate choices for a ClientHello: tenant, fallback (unknown or no SNI), unknown (refused with unrecognized_name), error (keystore failure).",
		}, []string{"result"}),
		openConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyedge_edge_open_connections",
			Help: "Client connections open, including those in the handshake.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_edge_refused_connections_total",
			Help: "Connections closed at accept, by reason: max_conns (that many open), per_ip (max_conns_per_ip open from the client's address).",
		}, []string{"reason"}),
		routes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_edge_route_decisions_total",
			Help: "Where handshake signatures were routed: local (this node's key), keyless (a key server), none (no key server this node may use; the handshake fails).",
		}, []string{"route"}),
		resumptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_edge_session_resumptions_total",
			Help: "Session tickets offered by clients that decrypted, by result: resumed; or refused (full handshake) because the ticket was for another name (other_name), the name has no tenant now (unknown_name), a certificate it was issued under was removed or replaced (certificate_changed), it carries no tenant binding (unbound), or the keystore failed (error).",
		}, []string{"result"}),
		sendTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyedge_edge_send_timeouts_total",
			Help: "Writes to a client that waited limits.send_timeout for the client to read: with the socket's buffer full, each closes its connection; over HTTP/2, for the client's flow-control window, each resets its stream.",
		}),
		ech: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_edge_ech_handshakes_total",
			Help: "Completed handshakes by what became of Encrypted ClientHello: accepted (the inner ClientHello decrypted with a fleet ECH key), rejected (ECH offered, no key accepted: the client got retry configs; browsers without a config send such GREASE offers too), none (not offered, or ECH off).",
		}, []string{"result"}),
	}
	m.echResults = echCounters{m.ech.WithLabelValues("accepted"), m.ech.WithLabelValues("rejected"), m.ech.WithLabelValues("none")}
	m.quicHandshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyedge_edge_quic_handshakes_total",
		Help: "QUIC (HTTP/3) handshakes by result (ok; timeout; closed by the client or the server; error, including names refused with unrecognized_name) and key exchange group. Always TLS 1.3.",
	}, []string{"result", "group"})
	m.tenantSelections = m.selections.WithLabelValues("tenant")
	m.fallbackSelections = m.selections.WithLabelValues("fallback")
	m.unknownSelections = m.selections.WithLabelValues("unknown")
	m.selectionErrors = m.selections.WithLabelValues("error")
	// Every refusal reason is exported from the start, at zero.
	m.refused.WithLabelValues(refusedMaxConns)
	m.refused.WithLabelValues(refusedPerIP)
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.handshakes, m.handshakeSeconds, m.selections, m.openConns, m.refused, m.routes, m.resumptions, m.ech, m.sendTimeouts, m.quicHandshakes}
}

// fallbackSelected counts a ClientHello answered with the fallback
// certificate, or, with none, refused.
func (m *metrics) fallbackSelected(fallback *tls.Certificate) {
	if fallback != nil {
		m.fallbackSelections.Inc()
	} else {
		m.unknownSelections.Inc()
	}
}

func (m *metrics) observeHandshake(c *tls.Conn, err, ctxErr error, d time.Duration) {
	if err != nil {
		m.handshakes.WithLabelValues(handshakeResult(err, ctxErr), "", "").Inc()
		return
	}
	m.handshakeSeconds.Observe(d.Seconds())
	cs := c.ConnectionState()
	m.observeECH(c, &cs)
	k := handshakeKind{cs.Version, cs.CurveID}
	counter, ok := m.handshakesOK.Load(k)
	if !ok {
		// A handful of versions and groups: the map stays small.
		counter, _ = m.handshakesOK.LoadOrStore(k, m.handshakes.WithLabelValues("ok", tls.VersionName(k.version), k.group.String()))
	}
	counter.(prometheus.Counter).Inc()
}

// observeQUICHandshake counts a QUIC handshake's result; group is the
// key exchange of a successful one.
func (m *metrics) observeQUICHandshake(result string, group tls.CurveID) {
	if result != "ok" {
		m.quicHandshakes.WithLabelValues(result, "").Inc()
		return
	}
	m.quicHandshakes.WithLabelValues(result, group.String()).Inc()
}
