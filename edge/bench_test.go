package edge

import (
	"slices"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
)

// BenchmarkHandshake measures full handshakes (no resumption), one at a
// time from a Go client over loopback, for a tenant signed locally and
// for one signed by a key server process: the difference is what the
// keyless hop adds. It reports the p50 and p99 handshake latency as seen
// by the client (client and edge share the machine).
//
//	go test -run '^$' -bench Handshake -benchtime 2000x ./edge
func BenchmarkHandshake(b *testing.B) {
	kw := newKeylessWorld(b, Options{})
	addr, _ := kw.startKeyServer(b, "ks1")
	kw.putKeyless(b, addr)
	kw.put(b, certs.ECDSAP256, kw.origin.URL, "local.example.com")
	for _, bc := range []struct{ name, host string }{
		{"local-ecdsa", "local.example.com"},
		{"keyless-ecdsa", kw.tenants[certs.ECDSAP256].Cert.DNSNames[0]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := kw.tlsConfig(bc.host)
			// Warm the caches and the key server connections.
			for range 10 {
				conn, err := kw.handshake(cfg)
				if err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				conn, err := kw.handshake(cfg)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				conn.Close()
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
