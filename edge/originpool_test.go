package edge

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/internal/testlog"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testOrigin is an origin server on 127.0.0.1 answering its name; its
// /healthz answers health (200 unless set otherwise).
type testOrigin struct {
	name string
	srv  *httptest.Server
	addr string

	mu     sync.Mutex // guards health
	health int
}

func startOrigin(t *testing.T, name, addr string) *testOrigin {
	t.Helper()
	o := &testOrigin{name: name, health: http.StatusOK}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			o.mu.Lock()
			w.WriteHeader(o.health)
			o.mu.Unlock()
			return
		}
		io.WriteString(w, o.name)
	}))
	if addr != "" { // the address of an origin stopped before
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		o.srv.Listener.Close()
		o.srv.Listener = ln
	}
	o.srv.Start()
	o.addr = o.srv.Listener.Addr().String()
	t.Cleanup(o.srv.Close)
	return o
}

func (o *testOrigin) setHealth(code int) {
	o.mu.Lock()
	o.health = code
	o.mu.Unlock()
}

// poolWorld is a world whose edge drives health checks by hand, on a
// test clock, and logs to a buffer.
type poolWorld struct {
	*world
	clock *testclock.Clock
	book  *healthBook
	logs  *testlog.Buffer
}

func newPoolWorld(t *testing.T) *poolWorld {
	t.Helper()
	pw := &poolWorld{world: openWorld(t, 0), clock: testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), logs: new(testlog.Buffer)}
	pw.startEdge(t, Options{Logger: slog.New(slog.NewTextHandler(pw.logs, nil))})
	pw.book = pw.srv.settings.Load().proxy.health
	// Before any request: nothing has read them yet.
	pw.book.manual, pw.book.now = true, pw.clock.Now
	return pw
}

// setOrigins sets name's pool through the keystore writer and waits
// for the edge to serve it, as it follows the journal.
func (pw *poolWorld) setOrigins(t *testing.T, name string, pool keystore.OriginPool, key *testpki.Leaf) {
	t.Helper()
	version := func() uint64 {
		e, err := pw.store.Lookup(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		return e.Certs[0].Meta.Version
	}
	before := version()
	var clientKey crypto.Signer
	if key != nil {
		clientKey = key.Key
	}
	if err := pw.Writer.SetOrigins(context.Background(), name, pool, clientKey); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the edge follows the origin change", func() bool { return version() > before })
}

// fetch GETs path on host through the edge and returns the status and
// body.
func fetch(t *testing.T, c *http.Client, host, path string) (int, string) {
	t.Helper()
	resp, err := c.Get("https://" + host + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestOriginPoolFailover spreads a tenant's requests over two origins,
// kills one, and checks that no request fails (the one that meets the
// dead origin is sent to the other), that the dead origin stays out
// while its health checks fail, and that it is back in once they pass.
// An origin failing its health checks while it still answers requests
// is taken out too. The pool reaches the running edge through the
// journal.
func TestOriginPoolFailover(t *testing.T) {
	pw := newPoolWorld(t)
	c := pw.client(t, false)
	const host = "pool.example"
	pw.put(t, testpki.ECDSAP256, pw.OriginURL, host)
	if code, body := fetch(t, c, host, "/"); code != 200 || !strings.HasPrefix(body, "origin ") {
		t.Fatalf("before the pool: %d %q, want the world's origin", code, body)
	}

	a, b := startOrigin(t, "A", ""), startOrigin(t, "B", "")
	pool := keystore.OriginPool{
		Targets: []keystore.OriginTarget{{URL: "http://" + a.addr, Weight: 1}, {URL: "http://" + b.addr, Weight: 1}},
		Health:  keystore.OriginHealth{Path: "/healthz", Interval: 5 * time.Second, Healthy: 2, Unhealthy: 2},
	}
	pw.setOrigins(t, host, pool, nil)
	served := func(n int, h2 bool) map[string]int {
		t.Helper()
		cl := c
		if h2 {
			cl = pw.client(t, true)
		}
		got := map[string]int{}
		for i := range n {
			path := "/"
			if i%2 == 1 {
				path = "/?q=1" // an HTTP/1.1 request the connection loop does not serve
			}
			code, body := fetch(t, cl, host, path)
			if code != http.StatusOK {
				t.Fatalf("request %d: %d %q", i, code, body)
			}
			got[body]++
		}
		return got
	}
	if got := served(40, false); got["A"] == 0 || got["B"] == 0 {
		t.Fatalf("both origins up: served %v, want both", got)
	}
	pw.book.checkDue()
	if n := testutil.ToFloat64(pw.book.metrics.checks.WithLabelValues("ok")); n != 2 {
		t.Fatalf("%v health checks ok, want 2 (one per origin)", n)
	}

	b.srv.Close()
	for _, h2 := range []bool{false, true} {
		if got := served(40, h2); got["B"] != 0 || got["A"] != 40 {
			t.Fatalf("B dead (h2 %v): served %v, want all 40 by A", h2, got)
		}
	}
	if n := testutil.ToFloat64(pw.book.metrics.retries); n < 1 {
		t.Errorf("%v retries, want at least the request that met B first", n)
	}
	if n := testutil.ToFloat64(pw.book.metrics.ejections.WithLabelValues(ejectCauseConnect)); n != 1 {
		t.Errorf("%v ejections for connection failures, want 1", n)
	}

	// B's checks fail while it is down; it comes back after two passing
	// checks once it is up again.
	for range 3 {
		pw.clock.Advance(5 * time.Second)
		pw.book.checkDue()
	}
	if got := served(10, false); got["B"] != 0 {
		t.Fatalf("B still down: served %v", got)
	}
	startOrigin(t, "B", b.addr) // B up again, on its old address
	pw.clock.Advance(5 * time.Second)
	pw.book.checkDue()
	if got := served(20, false); got["B"] != 0 {
		t.Fatalf("B passed one check of two: served %v, want none by B yet", got)
	}
	pw.clock.Advance(5 * time.Second)
	pw.book.checkDue()
	if got := served(40, false); got["B"] == 0 {
		t.Fatalf("B passed two checks: served %v, want B back", got)
	}
	if !strings.Contains(pw.logs.String(), "origin back in after health checks") {
		t.Errorf("no log line for B coming back:\n%s", pw.logs)
	}

	// A answers requests but fails its health checks: out after two.
	a.setHealth(http.StatusServiceUnavailable)
	for range 2 {
		pw.clock.Advance(5 * time.Second)
		pw.book.checkDue()
	}
	if got := served(20, false); got["A"] != 0 {
		t.Fatalf("A failing health checks: served %v, want all by B", got)
	}
	if n := testutil.ToFloat64(pw.book.metrics.ejections.WithLabelValues(ejectCauseCheck)); n != 1 {
		t.Errorf("%v ejections by health checks, want 1", n)
	}
	if up, out := pw.book.count(true), pw.book.count(false); up != 1 || out != 1 {
		t.Errorf("checked origins: %d up, %d out; want 1 and 1", up, out)
	}

	// Without traffic the pool stops being checked.
	pw.clock.Advance(2 * minIdleAfter)
	before := testutil.ToFloat64(pw.book.metrics.checks.WithLabelValues("fail"))
	pw.book.checkDue()
	pw.clock.Advance(5 * time.Second)
	pw.book.checkDue()
	if after := testutil.ToFloat64(pw.book.metrics.checks.WithLabelValues("fail")); after != before || pw.book.targets.Load() != 0 {
		t.Errorf("idle pool still checked: %v failed checks after idling, was %v; %d origins tracked", after, before, pw.book.targets.Load())
	}
}

// TestOriginPoolNonIdempotentNotRetried checks that a POST meeting a
// dead origin is not sent again: it fails with a 502, and the dead
// origin is out for the next requests.
func TestOriginPoolNonIdempotentNotRetried(t *testing.T) {
	pw := newPoolWorld(t)
	c := pw.client(t, false)
	const host = "post.example"
	pw.put(t, testpki.ECDSAP256, pw.OriginURL, host)
	a, b := startOrigin(t, "A", ""), startOrigin(t, "B", "")
	b.srv.Close()
	pw.setOrigins(t, host, keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: "http://" + a.addr, Weight: 1}, {URL: "http://" + b.addr, Weight: 1000}}}, nil)
	resp, err := c.Post("https://"+host+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// B has nearly all the weight: the POST went there, unless it drew A.
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusOK {
		t.Fatalf("POST: %d, want 502 (B dead, not retried) or 200 (A)", resp.StatusCode)
	}
	for range 10 {
		if code, body := fetch(t, c, host, "/"); code != 200 || body != "A" {
			t.Fatalf("after the POST: %d %q, want A", code, body)
		}
	}
}

// TestOriginTLS proxies to https origins with a private CA: verified
// with the tenant's CA bundle and server name; refused (a 502 and a log
// line saying why) with a server name the certificate does not have, or
// without the bundle; and with a client certificate for an origin that
// requires one.
func TestOriginTLS(t *testing.T) {
	pw := newPoolWorld(t)
	c := pw.client(t, false)
	const host = "tls.example"
	pw.put(t, testpki.ECDSAP256, pw.OriginURL, host)

	originCA, err := testpki.NewCA("origin CA")
	if err != nil {
		t.Fatal(err)
	}
	serverLeaf, err := originCA.Issue(testpki.LeafSpec{Names: []string{"origin.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	clientLeaf, err := originCA.Issue(testpki.LeafSpec{Names: []string{"edge.client"}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(originCA.Certificate())
	start := func(clientAuth tls.ClientAuthType) string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			who := "anonymous"
			if len(r.TLS.PeerCertificates) > 0 {
				who = r.TLS.PeerCertificates[0].Subject.CommonName
			}
			fmt.Fprintf(w, "tls origin, client %s", who)
		}))
		srv.TLS = &tls.Config{
			Certificates: []tls.Certificate{{Certificate: serverLeaf.Chain, PrivateKey: serverLeaf.Key}},
			ClientAuth:   clientAuth,
			ClientCAs:    clientCAs,
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return "https://" + srv.Listener.Addr().String()
	}
	plain, mutual := start(tls.NoClientCert), start(tls.RequireAndVerifyClientCert)
	bundle := originCA.CertPEM()

	for _, tt := range []struct {
		name   string
		pool   keystore.OriginPool
		client *testpki.Leaf
		code   int
		body   string // in the body
		log    string // in the logs
	}{
		{"private CA", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: plain, Weight: 1}}, TLS: &keystore.OriginTLS{CA: bundle, ServerName: "origin.internal"}}, nil, 200, "client anonymous", ""},
		{"wrong server name", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: plain, Weight: 1}}, TLS: &keystore.OriginTLS{CA: bundle, ServerName: "wrong.example"}}, nil, 502, "", "x509: certificate is valid for origin.internal, not wrong.example"},
		{"system roots", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: plain, Weight: 1}}, TLS: &keystore.OriginTLS{ServerName: "origin.internal"}}, nil, 502, "", "certificate signed by unknown authority"},
		{"mTLS without a client certificate", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: mutual, Weight: 1}}, TLS: &keystore.OriginTLS{CA: bundle, ServerName: "origin.internal"}}, nil, 502, "", "certificate required"},
		{"mTLS", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: mutual, Weight: 1}}, TLS: &keystore.OriginTLS{CA: bundle, ServerName: "origin.internal", ClientCert: testpki.ChainPEM(clientLeaf.Chain)}}, clientLeaf, 200, "client edge.client", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pw.setOrigins(t, host, tt.pool, tt.client)
			eventually(t, 10*time.Second, "the edge uses the new TLS settings", func() bool {
				code, body := fetch(t, c, host, "/")
				return code == tt.code && strings.Contains(body, tt.body)
			})
			if tt.log != "" && !strings.Contains(pw.logs.String(), tt.log) {
				t.Errorf("no log line saying %q:\n%s", tt.log, pw.logs)
			}
		})
	}
	if strings.Contains(pw.logs.String(), "PRIVATE KEY") {
		t.Error("a key in the logs")
	}
}

// TestOriginPool5xxBurst takes an origin answering only 5xx out of its
// pool after ejectAfter5xx of them in a row, with no health check to
// notice: the requests after go to the healthy origin.
func TestOriginPool5xxBurst(t *testing.T) {
	pw := newPoolWorld(t)
	c := pw.client(t, false)
	const host = "burst.example"
	pw.put(t, testpki.ECDSAP256, pw.OriginURL, host)
	a := startOrigin(t, "A", "")
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	pw.setOrigins(t, host, keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: "http://" + a.addr, Weight: 1}, {URL: failing.URL, Weight: 1}}}, nil)
	failed := 0
	for range 100 {
		if code, _ := fetch(t, c, host, "/"); code != http.StatusOK {
			failed++
		}
	}
	if failed != ejectAfter5xx {
		t.Errorf("%d requests failed, want %d: the burst that takes the origin out", failed, ejectAfter5xx)
	}
	if n := testutil.ToFloat64(pw.book.metrics.ejections.WithLabelValues(ejectCause5xx)); n != 1 {
		t.Errorf("%v ejections for 5xx bursts, want 1", n)
	}
}
