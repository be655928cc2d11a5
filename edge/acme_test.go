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
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs/acme"
	"github.com/keyedge/keyedge/internal/pebbletest"
	"github.com/keyedge/keyedge/keystore"
	acmeproto "github.com/mholt/acmez/v3/acme"
)

// acmeHooks gives the edge m's methods, as cmd/keyedge does.
func acmeHooks(m *acme.Manager) ACME {
	return ACME{ChallengeConfig: m.GetChallengeConfig, Obtain: m.OnDemand, NotAllowed: acme.ErrNotAllowed, HTTPHandler: m.HTTPHandler}
}

// TestRedirectToHTTPS: the port-80 server's answer to everything that
// is not an ACME validation, an unknown challenge token included.
func TestRedirectToHTTPS(t *testing.T) {
	for _, tc := range []struct {
		method, host, path string
		status             int
		location           string
	}{
		{"GET", "shop.example.test", "/shop?x=1", http.StatusMovedPermanently, "https://shop.example.test/shop?x=1"},
		{"HEAD", "shop.example.test:80", "/", http.StatusMovedPermanently, "https://shop.example.test/"},
		{"POST", "shop.example.test", "/form", http.StatusPermanentRedirect, "https://shop.example.test/form"},
		{"GET", "shop.example.test", "/.well-known/acme-challenge/unknown-token", http.StatusMovedPermanently, "https://shop.example.test/.well-known/acme-challenge/unknown-token"},
		{"GET", "", "/", http.StatusBadRequest, ""},
	} {
		req := httptest.NewRequest(tc.method, "http://placeholder"+tc.path, nil)
		req.Host = tc.host
		rec := httptest.NewRecorder()
		redirectToHTTPS(rec, req)
		if rec.Code != tc.status || rec.Header().Get("Location") != tc.location {
			t.Errorf("%s %s%s: %d %q, want %d %q", tc.method, tc.host, tc.path, rec.Code, rec.Header().Get("Location"), tc.status, tc.location)
		}
	}
}

// TestHTTPServerACME checks the port-80 server: an HTTP-01 challenge
// placed by another node (its token only in the shared storage, in
// certmagic's layout) is answered, anything else is redirected to https.
// Issuance end to end against Pebble is tested in package acme.
func TestHTTPServerACME(t *testing.T) {
	store, storage := tempStore(t)
	m, err := acme.NewManager(acme.Options{Store: store, Storage: storage, CA: "https://ca.keyedge.test/dir", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	chal := acmeproto.Challenge{
		Type:             acmeproto.ChallengeTypeHTTP01,
		Token:            "tok3n_-A",
		KeyAuthorization: "tok3n_-A.thumbprint",
		Identifier:       acmeproto.Identifier{Type: "dns", Value: "shop.example.test"},
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
		a          ACME
		host, path string
		status     int
		want       string // body or Location
	}{
		{"challenge", acmeHooks(m), "shop.example.test", "/.well-known/acme-challenge/tok3n_-A", http.StatusOK, "tok3n_-A.thumbprint"},
		{"challenge for another host", acmeHooks(m), "other.example.test", "/.well-known/acme-challenge/tok3n_-A", http.StatusMovedPermanently, "https://other.example.test/.well-known/acme-challenge/tok3n_-A"},
		{"page", acmeHooks(m), "shop.example.test:80", "/a?b=c", http.StatusMovedPermanently, "https://shop.example.test/a?b=c"},
		{"no ACME", ACME{}, "shop.example.test", "/.well-known/acme-challenge/tok3n_-A", http.StatusMovedPermanently, "https://shop.example.test/.well-known/acme-challenge/tok3n_-A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := NewHTTPServer(nil, tc.a, Limits{}, slog.New(slog.DiscardHandler))
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
	m      *acme.Manager
	pebble *pebbletest.Pebble
	addr   string
}

func newACMEEdge(t *testing.T, opts acme.Options) *acmeEdge {
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
	e := &acmeEdge{pebble: pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: tlsPort})}
	e.store, opts.Storage = tempStore(t)
	opts.Store, opts.CA, opts.TrustedRoots = e.store, e.pebble.URL, e.pebble.Roots
	opts.ChallengeHost, opts.HTTPPort, opts.TLSPort = "127.0.0.1", httpPort, tlsPort
	opts.Logger = slog.New(slog.DiscardHandler)
	if e.m, err = acme.NewManager(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.m.Close() })
	srv, err := NewServer(Options{Store: e.store, ACME: acmeHooks(e.m), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tlsLn) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		<-done
	})
	hs := NewHTTPServer(e.store, acmeHooks(e.m), Limits{}, slog.New(slog.DiscardHandler))
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
		opts acme.Options
	}{
		{"tls-alpn-01 on the edge's TLS listener", acme.Options{DisableHTTP01: true}},
		{"http-01 on the edge's port-80 server", acme.Options{DisableTLSALPN01: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newACMEEdge(t, tc.opts)
			id, err := e.m.Obtain(ctx, acme.Request{Names: []string{"shop.example.test", "www.shop.example.test"}, Tenant: "shop", Origin: "http://127.0.0.1:9"})
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
		e := newACMEEdge(t, acme.Options{OnDemand: &acme.OnDemandPolicy{}})
		if _, err := e.handshake("random.example.test"); err == nil {
			t.Error("handshake for an unknown name succeeded")
		}
		if n := e.pebble.NewOrders.Load(); n != 0 {
			t.Fatalf("%d orders placed for an unknown name, want 0", n)
		}
		if err := e.m.Declare(ctx, acme.Request{Names: []string{"known.example.test"}, Tenant: "known", Origin: "http://127.0.0.1:9"}); err != nil {
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
	m, err := acme.NewManager(acme.Options{
		Store: store, Storage: storage, CA: "https://127.0.0.1:1/directory",
		Logger: slog.New(slog.DiscardHandler), OnDemand: &acme.OnDemandPolicy{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Declare(context.Background(), acme.Request{Names: []string{"declared.example.test"}, Tenant: "declared"}); err != nil {
		t.Fatal(err)
	}
	warns := &warnCounter{}
	srv, err := NewServer(Options{Store: store, ACME: acmeHooks(m), Logger: slog.New(warns)})
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
