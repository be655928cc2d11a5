// Package benchtest starts what edgebench's tests drive load at, on
// 127.0.0.1 in the test's process: an origin, an edge over a keystore of
// generated tenants, and a key server holding one ECDSA and one RSA key,
// with the PEM files the edgebench command reads. The world around the
// edge comes from internal/testworld; benchtest adds the edge, its
// metrics and the benchmark's view. Package bench's tests and
// cmd/edgebench's end-to-end test share it.
package benchtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/keyedge/keyedge/edge"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Tenants is how many ECDSA tenants the edge serves, named
// t0…t<Tenants-1>.keyedge.test; RSATenants more are RSA-2048, named
// t0…t<RSATenants-1>.rsa.keyedge.test.
const (
	Tenants    = 20
	RSATenants = 2
)

// World is an edge, its origin and a key server on 127.0.0.1, stopped
// when the test ends. Its files are in the test's temp dir.
type World struct {
	Addr       string         // the edge's TLS listener
	H3Addr     string         // the edge's HTTP/3 listener (UDP)
	MetricsURL string         // the edge's /metrics
	Roots      *x509.CertPool // the CA of the tenants' certificates
	CAFile     string         // the same CA, PEM
	Names      []string       // the ECDSA tenants' names
	RSANames   []string       // the RSA tenants' names

	// The key server, and what a client needs to sign through it: an
	// mTLS identity, the key server's CA, and the certificates of the
	// two keys it holds.
	KeyServer      string
	IdentityCert   string
	IdentityKey    string
	KeyServerCA    string
	ECDSAKeyCert   string
	RSAKeyCert     string
	KeyServerTLS   *tls.Config // the identity and CA above, loaded
	KeyServerNames []string    // the names in ECDSAKeyCert and RSAKeyCert
}

// Start starts a World; the origin answers 200 "ok\n" but for /missing,
// a 404.
func Start(t testing.TB, origin http.Handler) *World {
	t.Helper()
	ctx := context.Background()
	mux := http.NewServeMux()
	mux.Handle("/", origin)
	mux.Handle("/missing", http.NotFoundHandler())
	tw := testworld.ForTest(t, testworld.Options{Name: "bench test", Origin: mux})
	w := &World{Roots: tw.Roots, CAFile: tw.Path(testworld.CAFile)}

	check(t, tw.GenerateTenants(ctx, testpki.TenantSpec{Count: Tenants}))
	check(t, tw.GenerateTenants(ctx, testpki.TenantSpec{Count: RSATenants, Domain: "rsa.keyedge.test", RSAEvery: 1}))
	for i := range Tenants {
		w.Names = append(w.Names, testpki.TenantName(i, "keyedge.test"))
	}
	for i := range RSATenants {
		w.RSANames = append(w.RSANames, testpki.TenantName(i, "rsa.keyedge.test"))
	}

	store, err := tw.OpenStore(ctx, keystore.Options{})
	check(t, err)
	reg := prometheus.NewRegistry()
	srv, err := edge.NewServer(edge.Options{Store: store, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	check(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	check(t, err)
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	go func() { served <- srv.ServeHTTP3(pc) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		for range 2 {
			if err := <-served; err != http.ErrServerClosed {
				t.Errorf("edge: Serve or ServeHTTP3 returned %v", err)
			}
		}
	})
	w.H3Addr = pc.LocalAddr().String()
	w.Addr = ln.Addr().String()
	w.MetricsURL = "http://" + serveHTTP(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})) + "/metrics"

	w.startKeyServer(t, tw)
	return w
}

// startKeyServer writes the benchmark's identity and the keys and runs a
// key server over them.
func (w *World) startKeyServer(t testing.TB, tw *testworld.World) {
	client, err := tw.ClientIdentity("edgebench.test")
	check(t, err)
	w.IdentityCert, w.IdentityKey = tw.Path("edgebench.pem"), tw.Path("edgebench.key")
	check(t, client.WritePEM(w.IdentityCert, w.IdentityKey))
	w.KeyServerCA = tw.Path(testworld.IdentityCAFile)
	w.KeyServerTLS = tw.ClientTLS(client)
	for _, k := range []struct {
		name string
		typ  testpki.KeyType
		file *string
	}{
		{"ecdsa.keyless.test", testpki.ECDSAP256, &w.ECDSAKeyCert},
		{"rsa.keyless.test", testpki.RSA2048, &w.RSAKeyCert},
	} {
		leaf, err := tw.CA.Issue(testpki.LeafSpec{Names: []string{k.name}, KeyType: k.typ})
		check(t, err)
		*k.file, err = tw.HoldKey(k.name, leaf)
		check(t, err)
		w.KeyServerNames = append(w.KeyServerNames, k.name)
	}
	w.KeyServer, err = tw.StartKeyServer(testworld.KeyServer{
		Name: "keyserver.test",
		Rule: keyserver.Rule{Clients: []string{"dns:edgebench.test"}, Keys: []string{"*"}},
	})
	check(t, err)
}

// serveHTTP serves h over plain HTTP on 127.0.0.1 until the test ends
// and returns its address.
func serveHTTP(t testing.TB, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("benchtest: %v", err)
	}
}
