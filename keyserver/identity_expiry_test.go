package keyserver_test

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/internal/testmetrics"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver"
)

// TestServerIdentityExpiryMetric: the key server exports when its own
// certificate expires, and follows a renewal of the files it serves it
// from, as the renewal job writes them.
func TestServerIdentityExpiryMetric(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	issue := func(notAfter time.Time) {
		t.Helper()
		leaf, err := p.serverCA.Issue(testpki.LeafSpec{Names: []string{"keyserver.test"}, NotAfter: notAfter})
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.WritePEM(certFile, keyFile); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().Truncate(time.Second)
	clock := testclock.New(now)
	first, renewed := now.Add(24*time.Hour), now.Add(40*time.Hour)
	issue(first)
	identity := &certs.KeyPairFile{CertFile: certFile, KeyFile: keyFile, Now: clock.Now}
	clients := x509.NewCertPool()
	clients.AddCert(p.clientCA.Certificate())
	ts := startServer(t, keyserver.ServerOptions{TLSConfig: &tls.Config{GetCertificate: identity.GetCertificate, ClientCAs: clients}})
	expiry := func() float64 {
		return testmetrics.Sum(t, ts.reg, "keyedge_keyserver_identity_expiry_timestamp_seconds", nil)
	}
	if got := expiry(); got != float64(first.Unix()) {
		t.Fatalf("identity expiry = %v, want %v (the certificate served)", got, first.Unix())
	}
	issue(renewed)
	clock.Advance(time.Minute) // past KeyPairFile's recheck of the files
	if got := expiry(); got != float64(renewed.Unix()) {
		t.Errorf("after renewal: identity expiry = %v, want %v", got, renewed.Unix())
	}
}
