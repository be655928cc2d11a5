package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// keyserverBin is cmd/keyserver, built once for this package's tests:
// keyless tests run real key server processes.
var keyserverBin struct {
	once sync.Once
	path string
	err  error
}

func keyserverBinary(t testing.TB) string {
	t.Helper()
	keyserverBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "keyedge-edge-test-")
		if err != nil {
			keyserverBin.err = err
			return
		}
		keyserverBin.path = filepath.Join(dir, "keyserver")
		out, err := exec.Command("go", "build", "-o", keyserverBin.path, "github.com/keyedge/keyedge/cmd/keyserver").CombinedOutput()
		if err != nil {
			keyserverBin.err = fmt.Errorf("go build cmd/keyserver: %v\n%s", err, out)
		}
	})
	if keyserverBin.err != nil {
		t.Fatal(keyserverBin.err)
	}
	return keyserverBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if keyserverBin.path != "" {
		os.RemoveAll(filepath.Dir(keyserverBin.path))
	}
	os.Exit(code)
}

// keylessWorld is a world whose keyless tenants' keys live only with key
// server processes the test starts.
type keylessWorld struct {
	*world
	idCA    *certs.CA
	edgeID  *certs.Leaf // edges' mTLS identity to key servers
	dir     string
	tenants map[certs.KeyType]*certs.Leaf // tenant certificates and keys, by key type
}

func newKeylessWorld(t testing.TB, opts Options) *keylessWorld {
	t.Helper()
	kw := &keylessWorld{dir: t.TempDir(), tenants: map[certs.KeyType]*certs.Leaf{}}
	var err error
	if kw.idCA, err = certs.NewCA("keyless identity CA"); err != nil {
		t.Fatal(err)
	}
	if kw.edgeID, err = kw.idCA.Issue(certs.LeafSpec{Names: []string{"edge.test"}, ClientAuth: true}); err != nil {
		t.Fatal(err)
	}
	opts.Keyless = kw.keylessClient(t)
	kw.world = newWorld(t, 0, opts)
	for _, kt := range []certs.KeyType{certs.ECDSAP256, certs.RSA2048, certs.Ed25519} {
		kw.tenants[kt] = kw.leafFor(t, kt, string(kt)+".keyless.example")
	}
	return kw
}

// keylessClient is a key server client with the edges' identity.
func (kw *keylessWorld) keylessClient(t testing.TB) *keyserver.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(kw.idCA.Certificate())
	client, err := keyserver.NewClient(keyserver.ClientConfig{
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{{Certificate: kw.edgeID.Chain, PrivateKey: kw.edgeID.Key}}, RootCAs: roots},
		PingInterval: 200 * time.Millisecond,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// startKeyServer runs a key server process holding every tenant key and
// returns its address and process.
func (kw *keylessWorld) startKeyServer(t testing.TB, name string) (string, *os.Process) {
	t.Helper()
	keys := filepath.Join(kw.dir, name, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	for kt, leaf := range kw.tenants {
		if err := leaf.WritePEM(filepath.Join(keys, string(kt)+".pem"), filepath.Join(keys, string(kt)+".key")); err != nil {
			t.Fatal(err)
		}
	}
	return kw.startKeyServerWith(t, name, "keys_dir: keys\n")
}

// startKeyServerWith runs a key server process whose keys come from
// source, the config lines naming them (keys_dir, or keystore and its
// keys), and returns its address and process.
func (kw *keylessWorld) startKeyServerWith(t testing.TB, name, source string) (string, *os.Process) {
	t.Helper()
	dir := filepath.Join(kw.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	id, err := kw.idCA.Issue(certs.LeafSpec{Names: []string{name + ".test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := id.WritePEM(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kw.idCA.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("listen: %s\ncert_file: server.pem\nkey_file: server.key\nclient_ca_file: ca.pem\n%slog_level: warn\nauthorize:\n  - clients: [\"dns:edge.test\"]\n    keys: [\"*\"]\n", addr, source)
	if err := os.WriteFile(filepath.Join(dir, "keyserver.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(keyserverBinary(t), "--config", filepath.Join(dir, "keyserver.yaml"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	eventually(t, 10*time.Second, "key server "+name+" listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr, cmd.Process
}

// putKeyless stores every tenant's certificate, without its key, as
// signed by the key servers at addrs.
func (kw *keylessWorld) putKeyless(t testing.TB, addrs ...string) {
	t.Helper()
	for _, leaf := range kw.tenants {
		_, err := kw.writer.Put(context.Background(), &keystore.Bundle{
			Meta:  keystore.Meta{Tenant: leaf.Cert.DNSNames[0], Origin: kw.origin.URL, Route: keystore.RouteKeyless, KeyServers: addrs},
			Chain: leaf.Chain,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestKeylessHandshakes: full handshakes for ECDSA, RSA and Ed25519
// tenants whose keys the edge never sees, signed by a key server process.
func TestKeylessHandshakes(t *testing.T) {
	kw := newKeylessWorld(t, Options{})
	addr, _ := kw.startKeyServer(t, "ks1")
	kw.putKeyless(t, addr)
	c := kw.client(t, true)
	for kt, leaf := range kw.tenants {
		host := leaf.Cert.DNSNames[0]
		resp, body := kw.get(t, c, host, "/")
		if resp.StatusCode != 200 || body != "origin "+host {
			t.Errorf("%s: %d %q", kt, resp.StatusCode, body)
		}
		if got := resp.TLS.PeerCertificates[0].PublicKeyAlgorithm; got != leaf.Cert.PublicKeyAlgorithm {
			t.Errorf("%s: served a %v certificate", kt, got)
		}
	}
	// TLS 1.2 signs with PKCS#1 v1.5 for RSA, TLS 1.3 with PSS: both remote.
	cfg := kw.tlsConfig(kw.tenants[certs.RSA2048].Cert.DNSNames[0])
	cfg.MaxVersion = tls.VersionTLS12
	conn, err := kw.handshake(cfg)
	if err != nil {
		t.Fatalf("TLS 1.2 RSA keyless: %v", err)
	}
	conn.Close()
	if n := metricValue(t, kw.reg, "keyedge_keyless_client_requests_total", "ok"); n < 4 {
		t.Errorf("%v remote signatures counted, want ≥ 4", n)
	}
}

// TestKeylessFailoverOnKill kills the preferred key server process in
// the middle of a load: every handshake still completes, the in-flight
// ones by failing over to the second server.
func TestKeylessFailoverOnKill(t *testing.T) {
	kw := newKeylessWorld(t, Options{})
	first, firstProc := kw.startKeyServer(t, "ks1")
	second, _ := kw.startKeyServer(t, "ks2")
	kw.putKeyless(t, first, second)
	host := kw.tenants[certs.ECDSAP256].Cert.DNSNames[0]
	// Warm up the first server so it is the measured, preferred one.
	if conn, err := kw.handshake(kw.tlsConfig(host)); err != nil {
		t.Fatal(err)
	} else {
		conn.Close()
	}
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 40 {
				conn, err := kw.handshake(kw.tlsConfig(host))
				if err != nil {
					failed.Add(1)
					t.Log(err)
				} else {
					conn.Close()
				}
				if done.Add(1) == 60 {
					firstProc.Kill()
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d handshakes failed when a key server died", n, done.Load())
	}
	if metricValue(t, kw.reg, "keyedge_keyless_client_failovers_total", "") == 0 {
		t.Error("no failover counted: the kill did not land mid-load")
	}
}

// TestKeylessSlowKeyServer: a key server that stops answering fails the
// handshake at the handshake deadline, and nothing else.
func TestKeylessSlowKeyServer(t *testing.T) {
	kw := newKeylessWorld(t, Options{Limits: Limits{HandshakeTimeout: time.Second}})
	addr, proc := kw.startKeyServer(t, "ks1")
	kw.putKeyless(t, addr)
	kw.put(t, certs.ECDSAP256, kw.origin.URL, "local.example.com")
	host := kw.tenants[certs.ECDSAP256].Cert.DNSNames[0]

	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn, err := kw.handshake(kw.tlsConfig(host))
	if err == nil {
		conn.Close()
		t.Fatal("handshake succeeded with the key server stopped")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("handshake failed only after %v, past the 1s handshake deadline", d)
	}
	// A local tenant is unaffected, and the keyless one recovers.
	if conn, err := kw.handshake(kw.tlsConfig("local.example.com")); err != nil {
		t.Fatalf("local tenant during the stall: %v", err)
	} else {
		conn.Close()
	}
	proc.Signal(syscall.SIGCONT)
	eventually(t, 15*time.Second, "keyless tenant served again", func() bool {
		conn, err := kw.handshake(kw.tlsConfig(host))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// metricValue is the value of the counter name (with the given value of
// its one label, or unlabelled) in an edge's registry.
func metricValue(t testing.TB, reg prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if ls := m.GetLabel(); len(ls) == 0 || ls[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
