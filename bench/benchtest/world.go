// Package benchtest starts what edgebench's tests drive load at, on
// 127.0.0.1 in the test's process: an origin, an edge over a keystore of
// generated tenants, and a key server holding one ECDSA and one RSA key,
// with the PEM files the edgebench command reads. Package bench's tests
// and cmd/edgebench's end-to-end test share it.
package benchtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/edge"
	"github.com/keyedge/keyedge/internal/testpki"
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
	dir := t.TempDir()
	w := &World{}

	mux := http.NewServeMux()
	mux.Handle("/", origin)
	mux.Handle("/missing", http.NotFoundHandler())
	originAddr := serveHTTP(t, mux)

	fleet, err := keystore.GenerateFleetKey()
	check(t, err)
	store, err := keystore.Open(ctx, keystore.Options{
		Storage:  &certmagic.FileStorage{Path: filepath.Join(dir, "keystore")},
		FleetKey: fleet,
		Logger:   slog.New(slog.DiscardHandler),
	})
	check(t, err)
	t.Cleanup(func() { store.Close() })
	ca, err := testpki.NewCA("bench test CA")
	check(t, err)
	w.CAFile = filepath.Join(dir, "testca.pem")
	check(t, ca.Write(w.CAFile, filepath.Join(dir, "testca.key")))
	w.Roots = x509.NewCertPool()
	w.Roots.AddCert(ca.Certificate())
	originURL := "http://" + originAddr
	check(t, ca.GenerateTenants(ctx, store, testpki.TenantSpec{Count: Tenants, Origin: originURL}, nil))
	check(t, ca.GenerateTenants(ctx, store, testpki.TenantSpec{Count: RSATenants, Domain: "rsa.keyedge.test", RSAEvery: 1, Origin: originURL}, nil))
	for i := range Tenants {
		w.Names = append(w.Names, testpki.TenantName(i, "keyedge.test"))
	}
	for i := range RSATenants {
		w.RSANames = append(w.RSANames, testpki.TenantName(i, "rsa.keyedge.test"))
	}

	reg := prometheus.NewRegistry()
	srv, err := edge.NewServer(edge.Options{Store: store, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	check(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("edge: Serve returned %v", err)
		}
	})
	w.Addr = ln.Addr().String()
	w.MetricsURL = "http://" + serveHTTP(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})) + "/metrics"

	w.startKeyServer(t, dir, ca)
	return w
}

// startKeyServer writes the identities and the keys and runs a key
// server over the keys' directory.
func (w *World) startKeyServer(t testing.TB, dir string, ca *testpki.CA) {
	idCA, err := testpki.NewCA("bench identity CA")
	check(t, err)
	w.KeyServerCA = filepath.Join(dir, "identity-ca.pem")
	check(t, idCA.Write(w.KeyServerCA, filepath.Join(dir, "identity-ca.key")))
	client, err := idCA.Issue(testpki.LeafSpec{Names: []string{"edgebench.test"}, ClientAuth: true})
	check(t, err)
	w.IdentityCert, w.IdentityKey = filepath.Join(dir, "edgebench.pem"), filepath.Join(dir, "edgebench.key")
	check(t, client.WritePEM(w.IdentityCert, w.IdentityKey))
	server, err := idCA.Issue(testpki.LeafSpec{Names: []string{"keyserver.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	check(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(idCA.Certificate())
	w.KeyServerTLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: client.Chain, PrivateKey: client.Key}},
		RootCAs:      roots,
	}

	keysDir := filepath.Join(dir, "keys")
	check(t, os.Mkdir(keysDir, 0o700))
	for _, k := range []struct {
		name string
		typ  testpki.KeyType
		file *string
	}{
		{"ecdsa.keyless.test", testpki.ECDSAP256, &w.ECDSAKeyCert},
		{"rsa.keyless.test", testpki.RSA2048, &w.RSAKeyCert},
	} {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{k.name}, KeyType: k.typ})
		check(t, err)
		*k.file = filepath.Join(keysDir, k.name+".pem")
		check(t, leaf.WritePEM(*k.file, filepath.Join(keysDir, k.name+".key")))
		w.KeyServerNames = append(w.KeyServerNames, k.name)
	}
	keys, err := keyserver.NewDirSource(keysDir, keyserver.DirOptions{Logger: slog.New(slog.DiscardHandler)})
	check(t, err)
	auth, err := keyserver.NewAuthorizer([]keyserver.Rule{{Clients: []string{"dns:edgebench.test"}, Keys: []string{"*"}}})
	check(t, err)
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(idCA.Certificate())
	ks, err := keyserver.NewServer(keyserver.ServerOptions{
		Keys:       keys,
		Authorizer: auth,
		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{{Certificate: server.Chain, PrivateKey: server.Key}}, ClientCAs: clientCAs},
		Logger:     slog.New(slog.DiscardHandler),
	})
	check(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(t, err)
	go ks.Serve(ln)
	t.Cleanup(func() {
		ks.Shutdown(context.Background())
		keys.Close()
	})
	w.KeyServer = ln.Addr().String()
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
