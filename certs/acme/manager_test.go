package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/pebbletest"
	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ocsp"
	"golang.org/x/time/rate"
)

// testEdge does in miniature what edge.Server does for ACME: a port-80
// listener serving Manager.HTTPHandler, and a TLS listener whose
// handshakes answer TLS-ALPN-01 through GetChallengeConfig and otherwise
// serve the keystore's certificate for the SNI, obtaining one on demand
// when the keystore has none.
type testEdge struct {
	httpLn, tlsLn net.Listener

	mgr   atomic.Pointer[Manager]
	store atomic.Pointer[keystore.Store]

	httpChallenges atomic.Int64 // requests under /.well-known/acme-challenge/
	alpnChallenges atomic.Int64 // acme-tls/1 ClientHellos
}

func newTestEdge(t *testing.T) *testEdge {
	t.Helper()
	e := &testEdge{}
	var err error
	if e.httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if e.tlsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			e.httpChallenges.Add(1)
		}
		if m := e.mgr.Load(); m != nil {
			m.HTTPHandler(nil).ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(e.httpLn)
	t.Cleanup(func() { srv.Close() })

	cfg := &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if IsTLSALPNChallenge(hello) {
				e.alpnChallenges.Add(1)
			}
			if m := e.mgr.Load(); m != nil {
				return m.GetChallengeConfig(hello)
			}
			return nil, nil
		},
		GetCertificate: e.getCertificate,
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := e.tlsLn.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				tls.Server(conn, cfg).HandshakeContext(ctx)
			})
		}
	})
	t.Cleanup(func() {
		e.tlsLn.Close()
		wg.Wait()
	})
	return e
}

func (e *testEdge) ports() (httpPort, tlsPort int) {
	return e.httpLn.Addr().(*net.TCPAddr).Port, e.tlsLn.Addr().(*net.TCPAddr).Port
}

// getCertificate serves the keystore's certificate, as edge's
// getCertificate does, with the on-demand step the edge adds.
func (e *testEdge) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	store := e.store.Load()
	entry, err := store.Lookup(hello.Context(), hello.ServerName)
	if errors.Is(err, keystore.ErrNotFound) {
		if err := e.mgr.Load().OnDemand(hello.Context(), hello.ServerName); err != nil {
			return nil, err
		}
		entry, err = store.Lookup(hello.Context(), hello.ServerName)
	}
	if err != nil {
		return nil, err
	}
	c := entry.Certs[0]
	key, err := c.PrivateKey(hello.Context())
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: c.Chain, Leaf: c.Leaf, PrivateKey: key, OCSPStaple: c.OCSP}, nil
}

// handshake connects to the edge as a browser would, verifying the chain
// against roots, and returns the connection state.
func (e *testEdge) handshake(t *testing.T, name string, roots *x509.CertPool) (tls.ConnectionState, error) {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", e.tlsLn.Addr().String())
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState(), nil
}

// servedID returns the keystore ID of the certificate the edge serves
// for name, failing the test if the handshake fails.
func (e *testEdge) servedID(t *testing.T, name string, roots *x509.CertPool) string {
	t.Helper()
	cs, err := e.handshake(t, name, roots)
	if err != nil {
		t.Fatalf("handshake for %s: %v", name, err)
	}
	return keystore.CertID(cs.PeerCertificates[0])
}

// acmeFixture is a Pebble CA, an edge answering its challenges, and a
// keystore directory that nodes (Store + Manager pairs) share.
type acmeFixture struct {
	pebble *pebbletest.Pebble
	edge   *testEdge
	dir    string
	fleet  *keystore.FleetKey
}

func newACMEFixture(t *testing.T, pc pebbletest.Options) *acmeFixture {
	t.Helper()
	f := &acmeFixture{edge: newTestEdge(t), dir: t.TempDir()}
	pc.HTTPPort, pc.TLSPort = f.edge.ports()
	f.pebble = pebbletest.Start(t, pc)
	var err error
	if f.fleet, err = keystore.GenerateFleetKey(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *acmeFixture) storage() certmagic.Storage { return &certmagic.FileStorage{Path: f.dir} }

// node opens a Store and a Manager on the shared directory; opts fields
// left zero get the fixture's values and short test timings.
func (f *acmeFixture) node(t *testing.T, opts Options) (*keystore.Store, *Manager) {
	t.Helper()
	discard := slog.New(slog.DiscardHandler)
	store, err := keystore.Open(context.Background(), keystore.Options{
		Storage: f.storage(), FleetKey: f.fleet, Logger: discard, PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	httpPort, tlsPort := f.edge.ports()
	opts.Store, opts.Storage, opts.CA, opts.TrustedRoots = store, f.storage(), f.pebble.URL, f.pebble.Roots
	opts.ChallengeHost, opts.HTTPPort, opts.TLSPort = "127.0.0.1", httpPort, tlsPort
	if opts.RetryBase == 0 {
		opts.RetryBase = 300 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = discard
	}
	m, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return store, m
}

// serve makes the fixture's edge answer with this node.
func (f *acmeFixture) serve(store *keystore.Store, m *Manager) {
	f.edge.store.Store(store)
	f.edge.mgr.Store(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestObtainChallenges(t *testing.T) {
	for _, tc := range []struct {
		challenge string
		opts      Options
	}{
		{"http-01", Options{DisableTLSALPN01: true}},
		{"tls-alpn-01", Options{DisableHTTP01: true}},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			f := newACMEFixture(t, pebbletest.Options{})
			store, m := f.node(t, tc.opts)
			f.serve(store, m)
			ctx := testContext(t)
			names := []string{"shop.example.test", "www.shop.example.test"}
			id, err := m.Obtain(ctx, Request{Names: names, Tenant: "shop", Origin: "http://127.0.0.1:9"})
			if err != nil {
				t.Fatal(err)
			}
			httpN, alpnN := f.edge.httpChallenges.Load(), f.edge.alpnChallenges.Load()
			if tc.challenge == "http-01" && (httpN == 0 || alpnN != 0) || tc.challenge == "tls-alpn-01" && (alpnN == 0 || httpN != 0) {
				t.Errorf("challenges answered: %d http-01 requests, %d acme-tls/1 handshakes; want only %s", httpN, alpnN, tc.challenge)
			}
			// Served in a real handshake, verified against Pebble's root,
			// for every name of the certificate.
			for _, n := range names {
				if got := f.edge.servedID(t, n, f.pebble.Root); got != id {
					t.Errorf("%s: served %s, want the obtained %s", n, got, id)
				}
			}
			c, err := store.CertByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if c.Meta.Tenant != "shop" || c.Meta.Origin != "http://127.0.0.1:9" || c.Meta.ACMECA != f.pebble.URL {
				t.Errorf("stored meta = %+v", c.Meta)
			}
			if c.Leaf.PublicKeyAlgorithm != x509.ECDSA {
				t.Errorf("key algorithm %v, want ECDSA", c.Leaf.PublicKeyAlgorithm)
			}
			assertNoPlainTenantKey(t, f.dir)
			if got := testutil.ToFloat64(m.metrics.certificates.WithLabelValues("obtained")); got != 1 {
				t.Errorf("obtained counter = %v, want 1", got)
			}
			// A second Obtain finds the current certificate: no order.
			orders := f.pebble.NewOrders.Load()
			if id2, err := m.Obtain(ctx, Request{Names: names, Tenant: "shop", Origin: "http://127.0.0.1:9"}); err != nil || id2 != id {
				t.Errorf("second Obtain = %s, %v; want %s", id2, err, id)
			}
			if n := f.pebble.NewOrders.Load(); n != orders {
				t.Errorf("second Obtain placed %d orders, want 0", n-orders)
			}
		})
	}
}

// assertNoPlainTenantKey fails if any stored file holds an unsealed
// private key: tenant keys and certmagic's ACME account key alike.
func assertNoPlainTenantKey(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), "PRIVATE KEY") {
			t.Errorf("%s holds an unsealed private key", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTwoNodesObtainOnce(t *testing.T) {
	f := newACMEFixture(t, pebbletest.Options{})
	storeA, mA := f.node(t, Options{})
	storeB, mB := f.node(t, Options{})
	f.serve(storeA, mA)
	ctx := testContext(t)
	req := Request{Names: []string{"both.example.test"}, Tenant: "both"}
	var ids [2]string
	var errs [2]error
	var wg sync.WaitGroup
	for i, m := range []*Manager{mA, mB} {
		wg.Go(func() { ids[i], errs[i] = m.Obtain(ctx, req) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	if ids[0] != ids[1] {
		t.Errorf("nodes obtained different certificates %s and %s", ids[0], ids[1])
	}
	if n := f.pebble.NewOrders.Load(); n != 1 {
		t.Errorf("Pebble got %d orders, want 1", n)
	}
	for i, s := range []*keystore.Store{storeA, storeB} {
		e, err := s.Lookup(ctx, "both.example.test")
		if err != nil || e.Certs[0].ID != ids[0] {
			t.Errorf("node %d: Lookup = %v, %v", i, e, err)
		}
	}
	// Both nodes share one ACME account, registered once in storage.
	users, err := f.storage().List(ctx, "acme", true)
	if err != nil {
		t.Fatal(err)
	}
	var accounts int
	for _, k := range users {
		if strings.Contains(k, "/users/") && strings.HasSuffix(k, ".json") {
			accounts++
		}
	}
	if accounts != 1 {
		t.Errorf("%d ACME accounts in storage, want 1", accounts)
	}
}

func TestRenewalLoop(t *testing.T) {
	// 20s certificates renewed in their last 85%: due 3s after issuance.
	f := newACMEFixture(t, pebbletest.Options{Validity: 20 * time.Second})
	store, m := f.node(t, Options{RenewalWindow: 0.85, CheckInterval: 200 * time.Millisecond})
	f.serve(store, m)
	ctx := testContext(t)
	first, err := m.Obtain(ctx, Request{Names: []string{"short.example.test"}, Tenant: "short"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	// The old certificate serves until the renewed one is stored.
	deadline := time.Now().Add(15 * time.Second)
	for {
		id := f.edge.servedID(t, "short.example.test", f.pebble.Root)
		if id != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("certificate not renewed within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.metrics.certificates.WithLabelValues("renewed")); got < 1 {
		t.Errorf("renewed counter = %v, want ≥ 1", got)
	}
	if got := testutil.ToFloat64(m.metrics.minDaysToExpiry); got <= 0 || got > 1 {
		t.Errorf("min days to expiry = %v, want in (0, 1] for 20s certificates", got)
	}
	if got := testutil.ToFloat64(m.metrics.managed); got != 1 {
		t.Errorf("managed gauge = %v, want 1", got)
	}
}

// TestCADownBacksOffAndOldCertificateServes: with the CA down, a renewal
// fails and is retried only after a backoff (RetryBase, doubling, ±25%)
// that passes on the Manager's clock, not the wall's; the old
// certificate serves meanwhile.
func TestCADownBacksOffAndOldCertificateServes(t *testing.T) {
	clock := testclock.New(time.Now())
	// Certificates are due for renewal almost at once (window 99.9%).
	f := newACMEFixture(t, pebbletest.Options{Validity: time.Minute})
	store, m := f.node(t, Options{RenewalWindow: 0.999, RetryBase: 4 * time.Second, Now: clock.Now})
	f.serve(store, m)
	ctx := testContext(t)
	const name = "outage.example.test"
	old, err := m.Obtain(ctx, Request{Names: []string{name}, Tenant: "outage"})
	if err != nil {
		t.Fatal(err)
	}
	f.pebble.Down.Store(true)
	clock.Advance(time.Second) // into the renewal window

	var waits []time.Duration
	for attempt := 1; attempt <= 2; attempt++ {
		before := clock.Now()
		if err := m.Check(ctx); err == nil {
			t.Fatalf("attempt %d: Check succeeded with the CA down", attempt)
		}
		e, err := m.loadEntry(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if e.Failures != attempt || e.CertID != old {
			t.Fatalf("attempt %d: entry has %d failures, cert %s", attempt, e.Failures, e.CertID)
		}
		waits = append(waits, e.RetryAt.Sub(before))
		// Within the backoff, a pass does not touch the CA, up to its
		// last instant.
		clock.Advance(e.RetryAt.Sub(clock.Now()) - time.Nanosecond)
		orders := f.pebble.NewOrders.Load()
		if err := m.Check(ctx); err != nil {
			t.Errorf("pass during backoff: %v", err)
		}
		if e2, _ := m.loadEntry(ctx, name); e2.Failures != attempt || f.pebble.NewOrders.Load() != orders {
			t.Errorf("pass during backoff retried the order")
		}
		// The old certificate keeps serving.
		if got := f.edge.servedID(t, name, f.pebble.Root); got != old {
			t.Fatalf("served %s during the outage, want the old %s", got, old)
		}
		clock.Advance(time.Nanosecond)
	}
	// 4s ±25%, then 8s ±25%, on the Manager's clock.
	if waits[0] < 3*time.Second || waits[0] > 5*time.Second || waits[1] < 6*time.Second || waits[1] > 10*time.Second {
		t.Errorf("backoff waits %v, want 4s then 8s, ±25%%", waits)
	}
	if got := testutil.ToFloat64(m.metrics.certificates.WithLabelValues("failed")); got != 2 {
		t.Errorf("failed counter = %v, want 2", got)
	}

	f.pebble.Down.Store(false)
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	e, err := m.loadEntry(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if e.CertID == old || e.Failures != 0 {
		t.Fatalf("after recovery: cert %s (old %s), %d failures", e.CertID, old, e.Failures)
	}
	// The local Store dropped its cache entry on Put: served at once.
	if got := f.edge.servedID(t, name, f.pebble.Root); got != e.CertID {
		t.Errorf("served %s after renewal, want %s", got, e.CertID)
	}
}

func TestOnDemand(t *testing.T) {
	f := newACMEFixture(t, pebbletest.Options{})
	store, m := f.node(t, Options{OnDemand: &OnDemandPolicy{Rate: rate.Every(time.Hour), Burst: 1}})
	f.serve(store, m)
	ctx := testContext(t)

	// An unknown name: the handshake fails and nothing reaches the CA.
	if _, err := f.edge.handshake(t, "random-flood.example.test", f.pebble.Root); err == nil {
		t.Fatal("handshake for an unknown name succeeded")
	}
	if err := m.OnDemand(ctx, "random-flood.example.test"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("OnDemand(unknown) = %v, want ErrNotAllowed", err)
	}
	if n := f.pebble.NewOrders.Load(); n != 0 {
		t.Fatalf("unknown names placed %d orders", n)
	}

	// A declared tenant's name is obtained during its first handshake.
	for _, n := range []string{"known.example.test", "second.example.test"} {
		if err := m.Declare(ctx, Request{Names: []string{n}, Tenant: n}); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := f.edge.handshake(t, "known.example.test", f.pebble.Root)
	if err != nil {
		t.Fatalf("on-demand handshake: %v", err)
	}
	if got := cs.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "known.example.test" {
		t.Errorf("served names %v", got)
	}
	// The burst of one is spent: the next declared name is refused.
	if err := m.OnDemand(ctx, "second.example.test"); !errors.Is(err, ErrRateLimited) {
		t.Errorf("OnDemand past the rate = %v, want ErrRateLimited", err)
	}
	if n := f.pebble.NewOrders.Load(); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	if got := testutil.ToFloat64(m.metrics.onDemand.WithLabelValues("refused")); got < 2 {
		t.Errorf("refused counter = %v, want ≥ 2", got)
	}
}

func TestOCSPStapleAndRevocation(t *testing.T) {
	f := newACMEFixture(t, pebbletest.Options{OCSP: true})
	store, m := f.node(t, Options{})
	f.serve(store, m)
	ctx := testContext(t)
	const name = "stapled.example.test"
	old, err := m.Obtain(ctx, Request{Names: []string{name}, Tenant: "stapled"})
	if err != nil {
		t.Fatal(err)
	}
	// The staple is stored with the certificate and sent in handshakes.
	cs, err := f.edge.handshake(t, name, f.pebble.Root)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.VerifiedChains) == 0 || len(cs.OCSPResponse) == 0 {
		t.Fatal("no OCSP staple in the handshake")
	}
	resp, err := ocsp.ParseResponseForCert(cs.OCSPResponse, cs.PeerCertificates[0], cs.VerifiedChains[0][1])
	if err != nil || resp.Status != ocsp.Good {
		t.Fatalf("staple: %v, status %v", err, resp)
	}

	// A due refresh stores a new staple, bumping the record's version.
	c, err := store.CertByID(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	forceOCSPDue(t, m, name)
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.metrics.ocsp.WithLabelValues("good")); got != 1 {
		t.Errorf("good OCSP refreshes = %v, want 1", got)
	}
	if c2, err := store.CertByID(ctx, old); err != nil || c2.Meta.Version <= c.Meta.Version {
		t.Errorf("after refresh: version %d → %v (%v)", c.Meta.Version, c2, err)
	}

	// Revoked through ACME: the next pass learns it by OCSP and replaces it.
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Chain[0]})
	if err := m.issuer.Revoke(ctx, certmagic.CertificateResource{CertificatePEM: leafPEM}, 0); err != nil {
		t.Fatal(err)
	}
	forceOCSPDue(t, m, name)
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.metrics.ocsp.WithLabelValues("revoked")); got != 1 {
		t.Errorf("revoked OCSP results = %v, want 1", got)
	}
	if got := f.edge.servedID(t, name, f.pebble.Root); got == old {
		t.Error("revoked certificate still served")
	}
}

// forceOCSPDue moves name's staple refresh time to now, as if half the
// staple's validity had passed.
func forceOCSPDue(t *testing.T, m *Manager, name string) {
	t.Helper()
	ctx := context.Background()
	e, err := m.loadEntry(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	e.OCSPNext = time.Now()
	if err := m.storeEntry(ctx, e); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPHandlerPassesOn: a request that is not the CA's validation of
// a pending HTTP-01 challenge, an unknown token included, goes to the
// next handler (on the edge, its redirect to https), or gets 404 when
// there is none. The redirect itself is the edge's, tested there.
func TestHTTPHandlerPassesOn(t *testing.T) {
	f := newACMEFixture(t, pebbletest.Options{})
	_, m := f.node(t, Options{})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://"+r.Host+r.URL.RequestURI())
		w.WriteHeader(http.StatusTeapot)
	})
	for _, tc := range []struct {
		method, path string
		next         http.Handler
		status       int
		location     string
	}{
		{"GET", "/shop?x=1", next, http.StatusTeapot, "https://shop.example.test/shop?x=1"},
		{"POST", "/form", next, http.StatusTeapot, "https://shop.example.test/form"},
		{"GET", "/.well-known/acme-challenge/unknown-token", next, http.StatusTeapot, "https://shop.example.test/.well-known/acme-challenge/unknown-token"},
		{"GET", "/.well-known/acme-challenge/unknown-token", nil, http.StatusNotFound, ""},
	} {
		req := httptest.NewRequest(tc.method, "http://shop.example.test"+tc.path, nil)
		rec := httptest.NewRecorder()
		m.HTTPHandler(tc.next).ServeHTTP(rec, req)
		if rec.Code != tc.status || rec.Header().Get("Location") != tc.location {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, rec.Code, rec.Header().Get("Location"), tc.status, tc.location)
		}
	}
}

func TestRequestValidation(t *testing.T) {
	f := newACMEFixture(t, pebbletest.Options{})
	_, m := f.node(t, Options{})
	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		req  Request
		want error
	}{
		{"wildcard", Request{Names: []string{"*.example.test"}, Tenant: "t"}, ErrWildcard},
		{"path in name", Request{Names: []string{"../etc/passwd"}, Tenant: "t"}, keystore.ErrBadName},
		{"no names", Request{Tenant: "t"}, nil},
		{"no tenant", Request{Names: []string{"a.example.test"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Obtain(ctx, tc.req)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Obtain = %v, want %v", err, tc.want)
			}
		})
	}
	if n := f.pebble.NewOrders.Load(); n != 0 {
		t.Errorf("invalid requests placed %d orders", n)
	}
}

// TestFleetAnswersFromStorage has another process, a node of the same
// fleet that the CA cannot reach, obtain a certificate: the CA's
// validation requests reach this process's edge, which has only the
// challenge tokens in the shared storage to answer with (certmagic's
// in-memory challenge map is per process).
func TestFleetAnswersFromStorage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	for _, tc := range []struct {
		challenge string
		opts      Options
	}{
		{"http-01", Options{DisableTLSALPN01: true}},
		{"tls-alpn-01", Options{DisableHTTP01: true}},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			f := newACMEFixture(t, pebbletest.Options{})
			store, m := f.node(t, tc.opts)
			f.serve(store, m)
			fleetFile := filepath.Join(t.TempDir(), "fleet.key")
			rootFile := filepath.Join(t.TempDir(), "ca-root.pem")
			if err := keystore.WriteFleetKeyFile(fleetFile, f.fleet); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.pebble.TLSCert.Raw}), 0o644); err != nil {
				t.Fatal(err)
			}
			const name = "remote.example.test"
			cmd := exec.Command(os.Args[0], "-test.run=^TestACMEOtherNode$", "-test.v")
			cmd.Env = append(os.Environ(), "KEYEDGE_ACME_NODE="+strings.Join([]string{
				f.dir, fleetFile, f.pebble.URL, rootFile, name, tc.challenge}, "|"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("other node: %v\n%s", err, out)
			}
			_, after, ok := strings.Cut(string(out), "obtained ")
			if !ok {
				t.Fatalf("other node did not report an ID:\n%s", out)
			}
			id, _, _ := strings.Cut(after, "\n")
			if got := f.edge.servedID(t, name, f.pebble.Root); got != id {
				t.Errorf("served %s, want %s obtained by the other node", got, id)
			}
			if f.edge.httpChallenges.Load()+f.edge.alpnChallenges.Load() == 0 {
				t.Error("this process answered no challenge")
			}
		})
	}
}

// TestACMEOtherNode is the other process of TestFleetAnswersFromStorage.
// Its challenge address is a loopback listener nobody but certmagic's
// in-use check connects to, as keyctl issue does in fleet mode.
func TestACMEOtherNode(t *testing.T) {
	spec := os.Getenv("KEYEDGE_ACME_NODE")
	if spec == "" {
		t.Skip("only run by TestFleetAnswersFromStorage")
	}
	p := strings.Split(spec, "|")
	dir, fleetFile, caURL, rootFile, name, challenge := p[0], p[1], p[2], p[3], p[4], p[5]
	fleet, err := keystore.ReadFleetKeyFile(fleetFile)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx := testContext(t)
	storage := &certmagic.FileStorage{Path: dir}
	store, err := keystore.Open(ctx, keystore.Options{Storage: storage, FleetKey: fleet, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	port := sink.Addr().(*net.TCPAddr).Port
	m, err := NewManager(Options{
		Store: store, Storage: storage, CA: caURL, TrustedRoots: roots,
		ChallengeHost: "127.0.0.1", HTTPPort: port, TLSPort: port,
		DisableHTTP01: challenge != "http-01", DisableTLSALPN01: challenge != "tls-alpn-01",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	id, err := m.Obtain(ctx, Request{Names: []string{name}, Tenant: "remote"})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("obtained %s\n", id)
}
