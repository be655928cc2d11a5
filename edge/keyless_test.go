package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// keylessWorld is a world whose keyless tenants' keys live only with key
// server processes the test starts, each in Dir/<name>.
type keylessWorld struct {
	*world
	edgeID  *testpki.Leaf                     // edges' mTLS identity to key servers
	tenants map[testpki.KeyType]*testpki.Leaf // tenant certificates and keys, by key type
}

func newKeylessWorld(t testing.TB, opts Options) *keylessWorld {
	t.Helper()
	kw := &keylessWorld{world: openWorld(t, 0), tenants: map[testpki.KeyType]*testpki.Leaf{}}
	var err error
	if kw.edgeID, err = kw.ClientIdentity("edge.test"); err != nil {
		t.Fatal(err)
	}
	opts.Keyless = kw.keylessClient(t)
	kw.startEdge(t, opts)
	for _, kt := range []testpki.KeyType{testpki.ECDSAP256, testpki.RSA2048, testpki.Ed25519} {
		kw.tenants[kt] = kw.leafFor(t, kt, string(kt)+".keyless.example")
	}
	return kw
}

// keylessClient is a key server client with the edges' identity.
func (kw *keylessWorld) keylessClient(t testing.TB) *keyserver.Client {
	t.Helper()
	client, err := keyserver.NewClient(keyserver.ClientOptions{
		TLSConfig:    kw.ClientTLS(kw.edgeID),
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
	return kw.startKeyServerWith(t, name, kw.tenantKeys(t, name))
}

// tenantKeys writes every tenant key into the keys directory of key
// server name and returns the config line naming it.
func (kw *keylessWorld) tenantKeys(t testing.TB, name string) string {
	t.Helper()
	keys := kw.Path(name, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	for kt, leaf := range kw.tenants {
		if err := leaf.WritePEM(filepath.Join(keys, string(kt)+".pem"), filepath.Join(keys, string(kt)+".key")); err != nil {
			t.Fatal(err)
		}
	}
	return "keys_dir: keys\n"
}

// startKeyServerWith runs a key server process whose keys come from
// source, the config lines naming them (keys_dir, or keystore and its
// keys), and returns its address and process.
func (kw *keylessWorld) startKeyServerWith(t testing.TB, name, source string) (string, *os.Process) {
	t.Helper()
	dir := kw.Path(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	id, err := kw.ServerIdentity(name + ".test")
	if err != nil {
		t.Fatal(err)
	}
	if err := id.WritePEM(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")); err != nil {
		t.Fatal(err)
	}
	addr := proctest.FreeAddr(t)
	cfg := fmt.Sprintf("listen: %s\ncert_file: server.pem\nkey_file: server.key\nclient_ca_file: %s\n%slog_level: warn\nauthorize:\n  - clients: [\"dns:edge.test\"]\n    keys: [\"*\"]\n",
		addr, kw.Path(testworld.IdentityCAFile), source)
	if err := os.WriteFile(filepath.Join(dir, "keyserver.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := proctest.Build(t, "cmd/keyserver")[0]
	p := proctest.Start(t, name, dir, bin, "--config", filepath.Join(dir, "keyserver.yaml"))
	proctest.WaitListening(t, addr, 10*time.Second)
	return addr, p.Cmd.Process
}

// putKeyless stores every tenant's certificate, without its key, as
// signed by the key servers at addrs.
func (kw *keylessWorld) putKeyless(t testing.TB, addrs ...string) {
	t.Helper()
	for _, leaf := range kw.tenants {
		if err := kw.PutKeyless(context.Background(), leaf.Cert.DNSNames[0], leaf, addrs...); err != nil {
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
	cfg := kw.tlsConfig(kw.tenants[testpki.RSA2048].Cert.DNSNames[0])
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
	host := kw.tenants[testpki.ECDSAP256].Cert.DNSNames[0]
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
	if metricValue(t, kw.reg, "keyedge_keyless_client_failovers_total", "unavailable") == 0 {
		t.Error("no failover counted: the kill did not land mid-load")
	}
}

// TestKeylessFailoverOnStop SIGSTOPs the preferred key server process
// under load: it still accepts connections, but answers nothing. Every
// handshake succeeds, signed by the second server after at most the
// keyless client's attempt timeout (1s by default), well inside the
// handshake deadline (10s by default, as here); after SIGCONT the
// preferred server signs again once its health check passes.
func TestKeylessFailoverOnStop(t *testing.T) {
	kw := newKeylessWorld(t, Options{})
	firstMetrics, secondMetrics := proctest.FreeAddr(t), proctest.FreeAddr(t)
	first, firstProc := kw.startKeyServerWith(t, "ks1", kw.tenantKeys(t, "ks1")+"metrics_listen: "+firstMetrics+"\n")
	second, _ := kw.startKeyServerWith(t, "ks2", kw.tenantKeys(t, "ks2")+"metrics_listen: "+secondMetrics+"\n")
	kw.putKeyless(t, first, second)
	host := kw.tenants[testpki.ECDSAP256].Cert.DNSNames[0]
	handshake := func() error {
		conn, err := kw.handshake(kw.tlsConfig(host)) // a full handshake: one signature
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := handshake(); err != nil {
		t.Fatal(err)
	}
	if n := keyServerSignatures(t, secondMetrics); n != 0 {
		t.Fatalf("second key server signed %v times before the preferred one stopped", n)
	}

	stopProcess(t, firstProc)
	// Never leave a stopped process behind (startKeyServerWith's cleanup
	// continues it too, before killing it).
	t.Cleanup(func() { firstProc.Signal(syscall.SIGCONT) })
	const workers, each = 5, 10
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if err := handshake(); err != nil {
					failed.Add(1)
					t.Log(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d handshakes failed with the preferred key server stopped", n)
	}
	if n := keyServerSignatures(t, secondMetrics); n < workers*each {
		t.Errorf("second key server signed %v times for %d handshakes", n, workers*each)
	}
	t.Logf("failovers on timeout: %v", metricValue(t, kw.reg, "keyedge_keyless_client_failovers_total", "timeout"))

	if err := firstProc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "preferred key server signing again", func() bool {
		before := keyServerSignatures(t, secondMetrics)
		return handshake() == nil && keyServerSignatures(t, secondMetrics) == before
	})
}

// keyServerSignatures is the number of requests other than pings a key
// server process answered successfully, read from its /metrics at addr.
func keyServerSignatures(t testing.TB, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, "keyedge_keyserver_requests_total{") || !strings.Contains(line, `result="ok"`) || strings.Contains(line, `op="ping"`) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' '):]), 64)
		if err != nil {
			t.Fatalf("key server metrics: %q: %v", line, err)
		}
		n += v
	}
	return n
}

// TestKeylessSlowKeyServer: a key server that stops answering fails the
// handshake at the handshake deadline, with an alert the client sees
// (internal_error), and nothing else. The deadline (500ms) is shorter
// than the keyless client's attempt timeout (1s), so the signature
// waits for all of it.
func TestKeylessSlowKeyServer(t *testing.T) {
	kw := newKeylessWorld(t, Options{Limits: Limits{HandshakeTimeout: 500 * time.Millisecond}})
	addr, proc := kw.startKeyServer(t, "ks1")
	kw.putKeyless(t, addr)
	kw.put(t, testpki.ECDSAP256, kw.OriginURL, "local.example.com")
	host := kw.tenants[testpki.ECDSAP256].Cert.DNSNames[0]

	stopProcess(t, proc)
	start := time.Now()
	conn, err := kw.handshake(kw.tlsConfig(host))
	if err == nil {
		conn.Close()
		t.Fatal("handshake succeeded with the key server stopped")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("handshake failed only after %v, past the 500ms handshake deadline", d)
	}
	if !strings.Contains(err.Error(), "tls: internal error") {
		t.Errorf("handshake failed with %q, want the edge's internal_error alert", err)
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

// stopProcess sends p SIGSTOP and returns once every thread of p has
// stopped. kill(2) returns before that: a thread running on another CPU
// stops when it next enters the kernel, and could first answer a request
// sent just after the signal.
func stopProcess(t testing.TB, p *os.Process) {
	t.Helper()
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "key server process stopped", func() bool {
		stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", p.Pid))
		if err != nil || len(stats) == 0 {
			return false
		}
		for _, path := range stats {
			stat, err := os.ReadFile(path)
			// The state follows the command name in parentheses.
			i := bytes.LastIndexByte(stat, ')')
			if err != nil || i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
				return false
			}
		}
		return true
	})
}
