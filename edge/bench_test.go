package edge

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
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
	kw.put(b, testpki.ECDSAP256, kw.origin.URL, "local.example.com")
	for _, bc := range []struct{ name, host string }{
		{"local-ecdsa", "local.example.com"},
		{"keyless-ecdsa", kw.tenants[testpki.ECDSAP256].Cert.DNSNames[0]},
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

// BenchmarkFirstHandshake measures the first full handshake for a tenant
// the edge has not loaded yet: its name, record and key are read from
// disk and the key is unsealed. "fleet" is a key with no geo policy (one
// HPKE open); "policy-warm" a key under a geo policy whose policy key
// this node has already opened (also one HPKE open); "policy-cold" the
// same on a node that has just started, so the handshake also waits for
// the CP-ABE open of the policy key. It reports p50 and p99.
//
//	go test -run '^$' -bench FirstHandshake -benchtime 100x ./edge
func BenchmarkFirstHandshake(b *testing.B) {
	w := newWorld(b, 0, Options{})
	master, err := geo.GenerateMasterKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := w.writer.SetGeoParams(ctx, &master.Params); err != nil {
		b.Fatal(err)
	}
	attrs, err := geo.ParseAttributes("region: eu, country: de")
	if err != nil {
		b.Fatal(err)
	}
	nodeKey, err := master.NodeKey(nil, attrs)
	if err != nil {
		b.Fatal(err)
	}
	// startNode starts an edge node with its own keystore view: nothing
	// loaded, and its policy keys not yet opened.
	startNode := func() string {
		store, err := keystore.Open(ctx, keystore.Options{
			Storage:  &certmagic.FileStorage{Path: w.dir},
			FleetKey: w.fleet,
			NodeKey:  nodeKey,
			Logger:   slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { store.Close() })
		srv, err := NewServer(Options{Store: store, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return serve(b, srv)
	}
	tenants := func(domain, policy string, n int) {
		spec := testpki.TenantSpec{Count: n, Domain: domain, Origin: w.origin.URL, Policy: policy}
		if err := w.ca.GenerateTenants(ctx, w.writer, spec, nil); err != nil {
			b.Fatal(err)
		}
	}
	handshake := func(addr, host string) time.Duration {
		start := time.Now()
		conn, err := w.handshakeTo(addr, w.tlsConfig(host))
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		conn.Close()
		return d
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}

	for _, bc := range []struct{ name, policy string }{{"fleet", ""}, {"policy-warm", "region: eu"}} {
		b.Run(bc.name, func(b *testing.B) {
			domain := bc.name + ".bench"
			tenants(domain, bc.policy, b.N+1)
			addr := startNode()
			handshake(addr, testpki.TenantName(b.N, domain)) // opens the policy key, if any
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				lat = append(lat, handshake(addr, testpki.TenantName(i, domain)))
			}
			b.StopTimer()
			report(b, lat)
		})
	}
	b.Run("policy-cold", func(b *testing.B) {
		tenants("cold.bench", "region: eu and not country: ru", 1)
		lat := make([]time.Duration, 0, b.N)
		for range b.N {
			b.StopTimer()
			addr := startNode()
			b.StartTimer()
			lat = append(lat, handshake(addr, testpki.TenantName(0, "cold.bench")))
		}
		b.StopTimer()
		report(b, lat)
	})
}
