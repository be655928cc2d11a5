package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/pebbletest"
	"github.com/keyedge/keyedge/keystore"
	"github.com/mholt/acmez/v3/acme"
)

// TestHTTPServerACME checks the port-80 server: an HTTP-01 challenge
// placed by another node (its token only in the shared storage, in
// certmagic's layout) is answered, anything else is redirected to https.
// Issuance end to end against Pebble is tested in package certs.
func TestHTTPServerACME(t *testing.T) {
	store, storage := tempStore(t)
	m, err := certs.NewManager(certs.ACMEOptions{Store: store, Storage: storage, CA: "https://ca.keyedge.test/dir", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	chal := acme.Challenge{
		Type:             acme.ChallengeTypeHTTP01,
		Token:            "tok3n_-A",
		KeyAuthorization: "tok3n_-A.thumbprint",
		Identifier:       acme.Identifier{Type: "dns", Value: "shop.example.test"},
	}
	data, err := json.Marshal(chal)
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.Store(context.Background(), "acme/ca.keyedge.test-dir/challenge_tokens/shop.example.test.json", data); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		m          *certs.Manager
		host, path string
		status     int
		want       string // body or Location
	}{
		{"challenge", m, "shop.example.test", "/.well-known/acme-challenge/tok3n_-A", http.StatusOK, "tok3n_-A.thumbprint"},
		{"challenge for another host", m, "other.example.test", "/.well-known/acme-challenge/tok3n_-A", http.StatusMovedPermanently, "https://other.example.test/.well-known/acme-challenge/tok3n_-A"},
		{"page", m, "shop.example.test:80", "/a?b=c", http.StatusMovedPermanently, "https://shop.example.test/a?b=c"},
		{"no ACME", nil, "shop.example.test", "/.well-known/acme-challenge/tok3n_-A", http.StatusMovedPermanently, "https://shop.example.test/.well-known/acme-challenge/tok3n_-A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := NewHTTPServer(tc.m, Limits{}, slog.New(slog.DiscardHandler))
			go srv.Serve(l)
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodGet, "http://"+l.Addr().String()+tc.path, nil)
			req.Host = tc.host
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := resp.Header.Get("Location")
			if tc.status == http.StatusOK {
				got = string(body)
			}
			if resp.StatusCode != tc.status || got != tc.want {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, got, tc.status, tc.want)
			}
		})
	}
}

// acmeEdge is an edge.Server with ACME against a real Pebble: its TLS
// listener answers TLS-ALPN-01 and its port-80 server HTTP-01.
type acmeEdge struct {
	store  *keystore.Store
	m      *certs.Manager
	pebble *pebbletest.Pebble
	addr   string
}

func newACMEEdge(t *testing.T, opts certs.ACMEOptions) *acmeEdge {
	t.Helper()
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpPort, tlsPort := httpLn.Addr().(*net.TCPAddr).Port, tlsLn.Addr().(*net.TCPAddr).Port
	e := &acmeEdge{pebble: pebbletest.Start(t, pebbletest.Config{HTTPPort: httpPort, TLSPort: tlsPort})}
	e.store, opts.Storage = tempStore(t)
	opts.Store, opts.CA, opts.TrustedRoots = e.store, e.pebble.URL, e.pebble.Roots
	opts.ChallengeHost, opts.HTTPPort, opts.TLSPort = "127.0.0.1", httpPort, tlsPort
	opts.Logger = slog.New(slog.DiscardHandler)
	if e.m, err = certs.NewManager(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.m.Close() })
	srv, err := NewServer(Options{Store: e.store, ACME: e.m, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tlsLn) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		<-done
	})
	hs := NewHTTPServer(e.m, Limits{}, slog.New(slog.DiscardHandler))
	go hs.Serve(httpLn)
	t.Cleanup(func() { hs.Close() })
	e.addr = tlsLn.Addr().String()
	return e
}

// handshake completes a handshake for name, verifying the edge's
// certificate against Pebble's root, and returns the served leaf.
func (e *acmeEdge) handshake(name string) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", e.addr, &tls.Config{ServerName: name, RootCAs: e.pebble.Root})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// TestEdgeACME: certificates obtained from a real ACME CA, with each
// challenge answered by the edge's own listeners, are served by the edge
// in real handshakes; on-demand issuance obtains a declared name inside
// the handshake and never orders an unknown one.
func TestEdgeACME(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts certs.ACMEOptions
	}{
		{"tls-alpn-01 on the edge's TLS listener", certs.ACMEOptions{DisableHTTP01: true}},
		{"http-01 on the edge's port-80 server", certs.ACMEOptions{DisableTLSALPN01: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newACMEEdge(t, tc.opts)
			id, err := e.m.Obtain(ctx, certs.Request{Names: []string{"shop.example.test", "www.shop.example.test"}, Tenant: "shop", Origin: "http://127.0.0.1:9"})
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"shop.example.test", "www.shop.example.test"} {
				leaf, err := e.handshake(name)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if got := keystore.CertID(leaf); got != id {
					t.Errorf("%s: served %s, want the obtained %s", name, got, id)
				}
			}
		})
	}

	t.Run("on demand", func(t *testing.T) {
		e := newACMEEdge(t, certs.ACMEOptions{OnDemand: &certs.OnDemandPolicy{}})
		if _, err := e.handshake("random.example.test"); err == nil {
			t.Error("handshake for an unknown name succeeded")
		}
		if n := e.pebble.NewOrders.Load(); n != 0 {
			t.Fatalf("%d orders placed for an unknown name, want 0", n)
		}
		if err := e.m.Declare(ctx, certs.Request{Names: []string{"known.example.test"}, Tenant: "known", Origin: "http://127.0.0.1:9"}); err != nil {
			t.Fatal(err)
		}
		leaf, err := e.handshake("known.example.test")
		if err != nil {
			t.Fatalf("declared name: %v", err)
		}
		if leaf.Subject.CommonName != "known.example.test" && (len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "known.example.test") {
			t.Errorf("served %v for known.example.test", leaf.DNSNames)
		}
		if n := e.pebble.NewOrders.Load(); n != 1 {
			t.Errorf("%d orders, want 1", n)
		}
	})
}

// warnCounter is a slog.Handler counting the records at WARN and above.
type warnCounter struct{ n atomic.Int64 }

func (h *warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *warnCounter) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnCounter) WithGroup(string) slog.Handler      { return h }

// TestACMEOnDemandLogsRateLimited: handshakes for a declared name whose
// order failed (the CA is unreachable, so the name backs off) each fail
// on-demand issuance, and the edge logs that a few times, not once per
// handshake. The bound is loose: it fails only if 50 local handshakes
// take minutes.
func TestACMEOnDemandLogsRateLimited(t *testing.T) {
	store, storage := tempStore(t)
	m, err := certs.NewManager(certs.ACMEOptions{
		Store: store, Storage: storage, CA: "https://127.0.0.1:1/directory",
		Logger: slog.New(slog.DiscardHandler), OnDemand: &certs.OnDemandPolicy{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Declare(context.Background(), certs.Request{Names: []string{"declared.example.test"}, Tenant: "declared"}); err != nil {
		t.Fatal(err)
	}
	warns := &warnCounter{}
	srv, err := NewServer(Options{Store: store, ACME: m, Logger: slog.New(warns)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Shutdown(context.Background())
		<-done
	}()
	const handshakes = 50
	for range handshakes {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{ServerName: "declared.example.test", InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Fatal("handshake succeeded without a certificate")
		}
	}
	if n := warns.n.Load(); n == 0 || n >= 10 {
		t.Errorf("%d handshakes logged %d warnings, want a few", handshakes, n)
	}
}
