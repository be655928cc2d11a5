package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestManyTenantsOneListener(t *testing.T) {
	w := newWorld(t, 40, Options{})
	c := w.client(t, true)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			host := testpki.TenantName(i, "keyedge.test")
			resp, body := w.get(t, c, host, "/")
			if resp.StatusCode != 200 || body != "origin "+host {
				t.Errorf("%s: %d %q", host, resp.StatusCode, body)
			}
			if err := resp.TLS.PeerCertificates[0].VerifyHostname(host); err != nil {
				t.Errorf("%s: served the wrong certificate: %v", host, err)
			}
		})
	}
	wg.Wait()
}

func TestServerNames(t *testing.T) {
	w := newWorld(t, 11, Options{})
	tests := []struct {
		sni     string
		wantErr string // client-side handshake error; "" for success
		wantCN  string
	}{
		{sni: "t3.keyedge.test", wantCN: "t3.keyedge.test"},
		{sni: "T3.KEYEDGE.test", wantCN: "t3.keyedge.test"},
		{sni: "www.t10.keyedge.test", wantCN: "t10.keyedge.test"}, // wildcard
		{sni: "a.b.t10.keyedge.test", wantErr: "unrecognized name"},
		{sni: "unknown.keyedge.test", wantErr: "unrecognized name"},
		{sni: "../../etc/passwd", wantErr: "unrecognized name"},
	}
	for _, tt := range tests {
		cfg := w.tlsConfig(tt.sni)
		cfg.InsecureSkipVerify = true // names like ../ cannot verify; we check the leaf ourselves
		conn, err := w.handshake(cfg)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SNI %q: err = %v, want %q", tt.sni, err, tt.wantErr)
			}
			if conn != nil {
				conn.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("SNI %q: %v", tt.sni, err)
			continue
		}
		if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != tt.wantCN {
			t.Errorf("SNI %q: served %q, want %q", tt.sni, cn, tt.wantCN)
		}
		conn.Close()
	}
	if n := testutil.ToFloat64(w.srv.metrics.selections.WithLabelValues("unknown")); n != 3 {
		t.Errorf("unknown selections = %v, want 3", n)
	}
}

func TestFallbackCertificate(t *testing.T) {
	ca, err := testpki.NewCA("fallback CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"fallback.invalid"}})
	if err != nil {
		t.Fatal(err)
	}
	fallback := &tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key}
	w := newWorld(t, 2, Options{Fallback: fallback})
	for _, sni := range []string{"", "unknown.keyedge.test"} {
		conn, err := w.handshake(&tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "fallback.invalid" {
			t.Errorf("SNI %q: served %q, want the fallback", sni, cn)
		}
		conn.Close()
	}
	// Tenants still get their own certificate.
	conn, err := w.handshake(w.tlsConfig("t1.keyedge.test"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

// TestECDSAOrRSAByClient: a name with an ECDSA and an RSA certificate
// serves the one the client supports, ECDSA first; a name with one
// certificate serves it whatever the client supports, so a client that
// cannot use it fails the handshake (handshake_failure), it is not told
// the name is unknown.
func TestECDSAOrRSAByClient(t *testing.T) {
	w := newWorld(t, 0, Options{})
	w.put(t, testpki.ECDSAP256, w.OriginURL, "dual.example.com")
	w.put(t, testpki.RSA2048, w.OriginURL, "dual.example.com")
	w.put(t, testpki.ECDSAP256, w.OriginURL, "ecdsa.example.com")
	w.put(t, testpki.RSA2048, w.OriginURL, "rsa.example.com")
	tls13 := func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }
	ecdsaSuites := func(c *tls.Config) {
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	}
	rsaSuites := func(c *tls.Config) {
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
	}
	tests := []struct {
		name, host string
		cfg        func(*tls.Config)
		want       x509.PublicKeyAlgorithm
		wantErr    string // in the client's handshake error; "" for success
	}{
		{"modern client", "dual.example.com", func(*tls.Config) {}, x509.ECDSA, ""},
		{"TLS 1.3", "dual.example.com", tls13, x509.ECDSA, ""},
		{"TLS 1.2 ECDSA suites", "dual.example.com", ecdsaSuites, x509.ECDSA, ""},
		{"TLS 1.2 RSA-only client", "dual.example.com", rsaSuites, x509.RSA, ""},
		{"one ECDSA certificate, TLS 1.3", "ecdsa.example.com", tls13, x509.ECDSA, ""},
		{"one RSA certificate, TLS 1.3", "rsa.example.com", tls13, x509.RSA, ""},
		{"one RSA certificate, TLS 1.2 RSA-only client", "rsa.example.com", rsaSuites, x509.RSA, ""},
		{"one ECDSA certificate, TLS 1.2 RSA-only client", "ecdsa.example.com", rsaSuites, 0, "handshake failure"},
		{"one RSA certificate, TLS 1.2 ECDSA-only client", "rsa.example.com", ecdsaSuites, 0, "handshake failure"},
	}
	for _, tt := range tests {
		cfg := w.tlsConfig(tt.host)
		tt.cfg(cfg)
		conn, err := w.handshake(cfg)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: handshake error %v, want one with %q", tt.name, err, tt.wantErr)
			}
			if conn != nil {
				conn.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got := conn.ConnectionState().PeerCertificates[0].PublicKeyAlgorithm; got != tt.want {
			t.Errorf("%s: served %v, want %v", tt.name, got, tt.want)
		}
		conn.Close()
	}
}

func TestProtocolsAndGroups(t *testing.T) {
	w := newWorld(t, 2, Options{})
	tests := []struct {
		name      string
		cfg       func(*tls.Config)
		version   uint16
		group     tls.CurveID
		protocol  string
		wantError bool
	}{
		{"go default: hybrid PQ", func(*tls.Config) {}, tls.VersionTLS13, tls.X25519MLKEM768, "h2", false},
		{"X25519 only", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} }, tls.VersionTLS13, tls.X25519, "h2", false},
		{"P-256 only", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP256} }, tls.VersionTLS13, tls.CurveP256, "h2", false},
		{"http/1.1", func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }, tls.VersionTLS13, tls.X25519MLKEM768, "http/1.1", false},
		{"TLS 1.2", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, tls.VersionTLS12, tls.X25519, "h2", false},
		{"TLS 1.1 refused", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, 0, 0, "", true},
		{"CBC suite refused", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		}, 0, 0, "", true},
	}
	for _, tt := range tests {
		cfg := w.tlsConfig("t1.keyedge.test")
		cfg.NextProtos = []string{"h2", "http/1.1"}
		tt.cfg(cfg)
		conn, err := w.handshake(cfg)
		if tt.wantError {
			if err == nil {
				conn.Close()
				t.Errorf("%s: handshake succeeded", tt.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		cs := conn.ConnectionState()
		if cs.Version != tt.version || cs.CurveID != tt.group || cs.NegotiatedProtocol != tt.protocol {
			t.Errorf("%s: got %s %v %q, want %s %v %q", tt.name, tls.VersionName(cs.Version), cs.CurveID, cs.NegotiatedProtocol,
				tls.VersionName(tt.version), tt.group, tt.protocol)
		}
		conn.Close()
	}
	// The server counts a handshake after its side returns, which can be
	// after the client's.
	eventually(t, 10*time.Second, "two hybrid handshakes counted", func() bool {
		return testutil.ToFloat64(w.srv.metrics.handshakes.WithLabelValues("ok", "TLS 1.3", "X25519MLKEM768")) >= 2
	})
}

func TestHTTPVersions(t *testing.T) {
	w := newWorld(t, 2, Options{})
	for _, h2 := range []bool{true, false} {
		resp, body := w.get(t, w.client(t, h2), "t1.keyedge.test", "/")
		want := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]
		if resp.Proto != want || body != "origin t1.keyedge.test" {
			t.Errorf("h2=%v: %s %q", h2, resp.Proto, body)
		}
	}
}

func TestHandshakeTimeout(t *testing.T) {
	w := newWorld(t, 1, Options{Limits: Limits{HandshakeTimeout: 200 * time.Millisecond}})
	conn, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent client: read returned %v, want the edge to close the connection", err)
	}
	eventually(t, time.Second, "timeout counted", func() bool {
		return testutil.ToFloat64(w.srv.metrics.handshakes.WithLabelValues("timeout", "", "")) == 1
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestMaxConns(t *testing.T) {
	w := newWorld(t, 1, Options{Limits: Limits{MaxConns: 2, MaxConnsPerIP: 2, HandshakeTimeout: 10 * time.Second}})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	eventually(t, 2*time.Second, "two connections open", func() bool {
		return testutil.ToFloat64(w.srv.metrics.openConns) == 2
	})
	if _, err := w.handshake(w.tlsConfig("t0.keyedge.test")); err == nil {
		t.Fatal("third connection handshook over max_conns=2")
	}
	if testutil.ToFloat64(w.srv.metrics.refused.WithLabelValues(refusedMaxConns)) != 1 {
		t.Error("refusal not counted")
	}
	held[0].Close()
	eventually(t, 2*time.Second, "a slot frees when a client leaves", func() bool {
		c, err := w.handshake(w.tlsConfig("t0.keyedge.test"))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func TestCertificateUpdateWithoutRestart(t *testing.T) {
	w := newWorld(t, 0, Options{})
	first := w.put(t, testpki.ECDSAP256, w.OriginURL, "renew.example.com")
	served := func() string {
		conn, err := w.handshake(w.tlsConfig("renew.example.com"))
		if err != nil {
			return err.Error()
		}
		defer conn.Close()
		return fmt.Sprintf("%x", conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	}
	before := served()
	second := w.put(t, testpki.ECDSAP256, w.OriginURL, "renew.example.com")
	if first == second {
		t.Fatal("renewal kept the key")
	}
	eventually(t, 2*time.Second, "renewed certificate served", func() bool { return served() != before && !strings.Contains(served(), " ") })
	if err := w.Writer.Remove(context.Background(), "renew.example.com"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "removed certificate refused", func() bool {
		return strings.Contains(served(), "unrecognized name")
	})
}

func TestCorruptTenantFailsCleanly(t *testing.T) {
	w := newWorld(t, 3, Options{})
	e, err := w.Writer.Lookup(context.Background(), "t1.keyedge.test")
	if err != nil {
		t.Fatal(err)
	}
	id := e.Certs[0].ID
	// The record ends with the sealed key: damage its last byte.
	record := filepath.Join(w.StoreDir, "certs", id[:2], id, "record")
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(record, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if conn, err := w.handshake(w.tlsConfig("t1.keyedge.test")); err == nil {
		conn.Close()
		t.Fatal("handshake with a corrupt key succeeded")
	}
	for _, host := range []string{"t0.keyedge.test", "t2.keyedge.test"} {
		conn, err := w.handshake(w.tlsConfig(host))
		if err != nil {
			t.Fatalf("%s affected by another tenant's corrupt key: %v", host, err)
		}
		conn.Close()
	}
}

func TestOCSPStapleFromKeystore(t *testing.T) {
	w := newWorld(t, 0, Options{})
	leaf := w.leafFor(t, testpki.ECDSAP256, "stapled.example.com")
	staple := []byte("an OCSP response stored beside the certificate")
	if _, err := w.Writer.Put(context.Background(), &keystore.Bundle{
		Meta: keystore.Meta{Tenant: "stapled", Origin: w.OriginURL}, Chain: leaf.Chain, Key: leaf.Key, OCSP: staple,
	}); err != nil {
		t.Fatal(err)
	}
	conn, err := w.handshake(w.tlsConfig("stapled.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().OCSPResponse; string(got) != string(staple) {
		t.Errorf("stapled %q, want the keystore's staple", got)
	}
}
