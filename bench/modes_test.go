package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/internal/testpki"
)

// In resumed mode a name's first handshake is full and the rest resume
// the edge's tickets.
func TestRunResumed(t *testing.T) {
	e := startEdge(t)
	names := e.Names[:2]
	r, err := Run(context.Background(), Options{
		Addr: e.Addr, Mode: ModeResumed, Names: names, Dist: DistSequential, RootCAs: e.Roots,
		Concurrency: 2, Requests: 40,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r, 40)
	// Sequential names over 2 workers: a name's second handshake can start
	// before its first has the ticket, so 2 to 4 full handshakes.
	if full := r.Handshakes - r.Resumed; full < 2 || full > 4 || r.Resumed != r.ResumeOffered {
		t.Errorf("%d handshakes, %d resumed, %d offered; want 2–4 full and every offered session resumed", r.Handshakes, r.Resumed, r.ResumeOffered)
	}
	if r.ResumedShare < 0.9 {
		t.Errorf("resumed share %.2f", r.ResumedShare)
	}
}

// In resumed mode the workers share one session cache, as the tabs of
// one returning browser do: a session one worker was given is offered by
// whichever worker draws the name next. (With a cache per worker, a name
// drawn again by another worker got a full handshake, and whether a run
// resumed at all depended on how the scheduler spread the names.)
func TestResumedWorkersShareSessions(t *testing.T) {
	sh := &shared{opts: &Options{Mode: ModeResumed, Names: []string{"a.test", "b.test"}, Dist: DistSequential, Concurrency: 2}}
	w := sh.newWorkers()
	w[0].base.ClientSessionCache.Put("a.test", &tls.ClientSessionState{})
	if _, ok := w[1].base.ClientSessionCache.Get("a.test"); !ok {
		t.Fatal("worker 1 does not offer the session worker 0 was given")
	}
	if w[0].offered.hits != 0 || w[1].offered.hits != 1 {
		t.Errorf("offers counted %d and %d, want 0 and 1", w[0].offered.hits, w[1].offered.hits)
	}
}

// A server that never resumes fails a resumed run with ErrNotResumed.
func TestRunResumedNeverResumes(t *testing.T) {
	leaf, roots := selfSigned(t, "plain.test")
	ln := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{leaf}, SessionTicketsDisabled: true})
	r, err := Run(context.Background(), Options{
		Addr: ln, Mode: ModeResumed, Names: []string{"plain.test"}, RootCAs: roots, Requests: 5,
	})
	if !errors.Is(err, ErrNotResumed) || r == nil || r.Resumed != 0 || r.Handshakes != 5 {
		t.Fatalf("Run = %+v, %v; want 5 full handshakes and ErrNotResumed", r, err)
	}
}

// Over HTTP/2 and HTTP/3 each mode makes its requests over the protocol
// asked for: HTTP/3 on QUIC connections to the edge's UDP port (no TCP
// listener there to fall back to), every connection negotiating it, and
// the edge counts the requests by that protocol (and QUIC handshakes).
func TestRunHTTP2And3(t *testing.T) {
	e := startEdge(t)
	cases := []struct {
		proto      string // ALPN
		mode       string
		handshakes int64 // for 24 requests over 3 workers
		resumed    bool
	}{
		{"h3", ModeHandshake, 24, false},
		{"h3", ModeKeepAlive, 3, false},
		{"h3", ModeResumed, 24, true},
		{"h2", ModeHandshake, 24, false},
		{"h2", ModeResumed, 24, true},
	}
	for _, c := range cases {
		t.Run(c.proto+"/"+c.mode, func(t *testing.T) {
			o := Options{
				Addr: e.Addr, Mode: c.mode, HTTP2: true, Names: e.Names[:2], Dist: DistSequential, RootCAs: e.Roots,
				Concurrency: 3, Requests: 24, MetricsURL: e.MetricsURL,
			}
			if c.proto == "h3" {
				o.Addr, o.HTTP2, o.HTTP3 = e.H3Addr, false, true
			}
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			checkCounts(t, r, 24)
			if r.Handshakes != c.handshakes || r.Protocols[c.proto] != c.handshakes || r.Versions["TLS 1.3"] != c.handshakes {
				t.Errorf("%d handshakes, protocols %v, versions %v; want %d, all %s over TLS 1.3", r.Handshakes, r.Protocols, r.Versions, c.handshakes, c.proto)
			}
			if c.resumed != (r.Resumed > 0) {
				t.Errorf("%d of %d handshakes resumed", r.Resumed, r.Handshakes)
			}
			if got := r.Metrics[`keyedge_proxy_protocol_requests_total{proto="`+c.proto+`"}`]; got != 24 {
				t.Errorf("the edge counted %v %s requests, want 24; metrics %v", got, c.proto, r.Metrics)
			}
			quic := r.Metrics[`keyedge_edge_quic_handshakes_total{group="X25519MLKEM768",result="ok"}`]
			if want := map[string]int64{"h2": 0, "h3": c.handshakes}[c.proto]; quic != float64(want) {
				t.Errorf("the edge counted %v QUIC handshakes, want %d; metrics %v", quic, want, r.Metrics)
			}
			var text bytes.Buffer
			WriteText(&text, r)
			if want := map[string]string{"h2": "(HTTP/2)", "h3": "(HTTP/3)"}[c.proto]; !strings.Contains(text.String(), want) {
				t.Errorf("text report does not say %s:\n%s", want, text.String())
			}
		})
	}
}

func TestRunCertKeys(t *testing.T) {
	e := startEdge(t)
	cases := []struct {
		name    string
		names   []string
		keys    string
		version uint16
		want    string // the certificate key type of every handshake, or "" for handshake errors
	}{
		{"ecdsa", e.Names, "ecdsa", 0, "ECDSA P-256"},
		{"rsa", e.RSANames, "rsa", 0, "RSA-2048"},
		{"rsa over TLS 1.2", e.RSANames, "rsa", tls.VersionTLS12, "RSA-2048"},
		{"rsa wanted, ecdsa served", e.Names, "rsa", 0, ""},
		{"rsa suites only, ecdsa tenant", e.Names, "rsa", tls.VersionTLS12, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keys, err := ParseCertKeys(c.keys)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Run(context.Background(), Options{
				Addr: e.Addr, Names: c.names, RootCAs: e.Roots, CertKeys: keys, TLSVersion: c.version,
				Concurrency: 2, Requests: 6,
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				if r.Errors[ErrHandshake] != 6 {
					t.Errorf("errors %v; want 6 handshake errors", r.Errors)
				}
				return
			}
			checkCounts(t, r, 6)
			if r.CertKeys[c.want] != 6 {
				t.Errorf("certificate keys %v, want %s for all 6", r.CertKeys, c.want)
			}
			if c.version == tls.VersionTLS12 && r.Versions["TLS 1.2"] != 6 {
				t.Errorf("versions %v, want TLS 1.2", r.Versions)
			}
		})
	}
}

func TestRunKeyless(t *testing.T) {
	e := startEdge(t)
	for _, certFile := range []string{e.ECDSAKeyCert, e.RSAKeyCert} {
		t.Run(filepath.Base(certFile), func(t *testing.T) {
			k, err := LoadKeyless(e.KeyServer, e.IdentityCert, e.IdentityKey, e.KeyServerCA, certFile)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Run(context.Background(), Options{Mode: ModeKeyless, Keyless: k, Concurrency: 4, Requests: 50})
			if err != nil {
				t.Fatal(err)
			}
			checkCounts(t, r, 50)
			if r.Handshakes != 0 || r.Addr != e.KeyServer || r.SignKey == "" {
				t.Errorf("handshakes %d, addr %s, key %q", r.Handshakes, r.Addr, r.SignKey)
			}
		})
	}
}

// A key the key server does not hold is a sign error per request.
func TestRunKeylessUnknownKey(t *testing.T) {
	e := startEdge(t)
	k, err := LoadKeyless(e.KeyServer, e.IdentityCert, e.IdentityKey, e.KeyServerCA, e.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), Options{Mode: ModeKeyless, Keyless: k, Requests: 3})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors[ErrSign] != 3 || r.Requests != 0 {
		t.Errorf("errors %v, %d ok; want 3 sign errors", r.Errors, r.Requests)
	}
}

func TestRunModeConfigErrors(t *testing.T) {
	for _, cfg := range []Options{
		{Mode: ModeKeyless},
		{Mode: ModeKeyless, Keyless: &Keyless{Addr: "127.0.0.1:1"}},
		{Addr: "127.0.0.1:1", Names: []string{"a"}, Mode: ModeResumed, HTTP2: true, HTTP3: true},
		{Mode: ModeKeyless, Keyless: &Keyless{Addr: "127.0.0.1:1"}, HTTP2: true},
		{Mode: ModeKeyless, Keyless: &Keyless{Addr: "127.0.0.1:1"}, HTTP3: true},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

func TestParseCertKeysAndVersion(t *testing.T) {
	if k, err := ParseCertKeys("ECDSA, rsa"); err != nil || len(k) != 2 || k[0] != x509.ECDSA || k[1] != x509.RSA {
		t.Errorf("ParseCertKeys = %v, %v", k, err)
	}
	if _, err := ParseCertKeys("dsa"); err == nil {
		t.Error("dsa accepted")
	}
	for in, want := range map[string]uint16{"": 0, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13} {
		if v, err := ParseTLSVersion(in); err != nil || v != want {
			t.Errorf("ParseTLSVersion(%q) = %v, %v", in, v, err)
		}
	}
	if _, err := ParseTLSVersion("1.1"); err == nil {
		t.Error("TLS 1.1 accepted")
	}
}

func TestWritePlot(t *testing.T) {
	mk := func(label string, rate, p50 float64) *Result {
		return &Result{Label: label, Scenario: "handshake", Mode: ModeHandshake, Rate: rate, HandshakesPerServerCPU: 2 * rate,
			Latency: Percentiles{P50: p50, P90: 2 * p50, P99: 4 * p50, P999: 8 * p50}}
	}
	results := []*Result{mk("a", 100, 1), mk("a", 120, 2), mk("b", 50, 0)}
	dir := t.TempDir()
	for _, name := range []string{"p.svg", "p.png"} {
		path := filepath.Join(dir, name)
		if err := WritePlot(path, results); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".svg") && !strings.Contains(string(data), "<svg") ||
			strings.HasSuffix(name, ".png") && !strings.HasPrefix(string(data), "\x89PNG") {
			t.Errorf("%s is not what its name says (%d bytes)", name, len(data))
		}
	}
	if err := WritePlot(filepath.Join(dir, "p.pdf"), results); err == nil {
		t.Error("a .pdf plot was written")
	}
	if err := WritePlot(filepath.Join(dir, "none.svg"), nil); err == nil {
		t.Error("a plot of nothing was written")
	}
}

// selfSigned is a certificate for name and a pool trusting its CA.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca, err := testpki.NewCA("plain test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	return tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key}, roots
}

// serveTLS serves OriginHandler over TLS with cfg on 127.0.0.1 until the
// test ends and returns its address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: OriginHandler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// LoadKeyless refuses an identity key file other users can read.
func TestLoadKeylessExposedKey(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("bench test CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.Write(caFile, filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	id, err := ca.Issue(testpki.LeafSpec{Names: []string{"edgebench.test"}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "id.pem"), filepath.Join(dir, "id.key")
	if err := id.WritePEM(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mode os.FileMode
		want error
	}{{0o644, secretfile.ErrExposed}, {0o600, nil}} {
		if err := os.Chmod(keyFile, tt.mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeyless("127.0.0.1:1", certFile, keyFile, caFile, certFile); !errors.Is(err, tt.want) {
			t.Errorf("identity key mode %v: %v, want %v", tt.mode, err, tt.want)
		}
	}
}
