package keyserver

import (
	"crypto/tls"
	"fmt"

	"github.com/keyedge/keyedge/internal/ops"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Request results, the result label of requests_total.
const (
	resultOK          = "ok"
	resultKeyNotFound = "key_not_found"
	resultDenied      = "denied"
	resultDisabled    = "disabled" // an opcode this server is configured not to serve
	resultBadRequest  = "bad_request"
	resultCryptoError = "crypto_error"
	resultInternal    = "internal"
)

// serverMetrics are the keyedge_keyserver_* series. Label values come
// from bounded sets: opcode names of this protocol version (else
// "unknown"), the results above, and the signature families.
type serverMetrics struct {
	requests    *prometheus.CounterVec   // op, result
	signSeconds *prometheus.HistogramVec // family
	conns       prometheus.Gauge
	connsTotal  *prometheus.CounterVec // result: ok, handshake_error
	denials     prometheus.Counter
	expiry      prometheus.GaugeFunc // the server identity's NotAfter
}

// newServerMetrics makes the server's metrics; tlsConfig is the one it
// serves, whose certificate the expiry gauge reads at each scrape.
func newServerMetrics(tlsConfig *tls.Config) *serverMetrics {
	return &serverMetrics{
		expiry: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyedge_keyserver_identity_expiry_timestamp_seconds",
			Help: "When the certificate this key server presents to edges expires (Unix time; 0 if unknown). Alert well before: renew it with keyctl identity, and the server picks it up without a restart.",
		}, func() float64 { return identityExpiry(tlsConfig) }),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keyserver_requests_total",
			Help: "Requests answered, by opcode and result (ok, key_not_found, denied, disabled, bad_request, crypto_error, internal).",
		}, []string{"op", "result"}),
		signSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyedge_keyserver_sign_seconds",
			Help:    "Time to compute a signature or decryption, key lookup excluded, by family (rsa, rsa-pss, ecdsa, ed25519, rsa-decrypt).",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 14),
		}, []string{"family"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyedge_keyserver_connections",
			Help: "Open client connections past the TLS handshake.",
		}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_keyserver_connections_total",
			Help: "Accepted connections by handshake result (ok, handshake_error).",
		}, []string{"result"}),
		denials: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyedge_keyserver_denials_total",
			Help: "Requests for a key the client is not authorized to use (answered as key not found).",
		}),
	}
}

func (m *serverMetrics) register(r prometheus.Registerer) error {
	if err := ops.Register(r, m.requests, m.signSeconds, m.conns, m.connsTotal, m.denials, m.expiry); err != nil {
		return fmt.Errorf("keyserver: failed to register metrics: %w", err)
	}
	return nil
}

// opLabel is the op label of an opcode: its name if this protocol
// version knows it, else "unknown", so a peer cannot grow the series.
func opLabel(op wire.Op) string {
	if op.Known() {
		return op.String()
	}
	return "unknown"
}

// family is the sign_seconds label of a signing or decryption opcode.
func family(op wire.Op) string {
	switch {
	case op == wire.OpRSADecrypt:
		return "rsa-decrypt"
	case op == wire.OpEd25519Sign:
		return "ed25519"
	case op.IsPSS():
		return "rsa-pss"
	case op >= wire.OpECDSASignMD5SHA1 && op <= wire.OpECDSASignSHA512:
		return "ecdsa"
	}
	return "rsa"
}
