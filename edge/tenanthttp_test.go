package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// headerOrigin is an origin on 127.0.0.1 that answers with the request
// headers it got, as JSON, and a Server and an X-Origin header.
func headerOrigin(t *testing.T) string {
	t.Helper()
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "origin")
		w.Header().Set("X-Origin", "yes")
		json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(o.Close)
	return o.URL
}

// tenantClient is an HTTP client for the edge at addr with client TLS
// config cfg (RootCAs filled in), over HTTP/2 when h2, from local
// address local ("" for any).
func tenantClient(t *testing.T, w *world, cfg *tls.Config, h2 bool, local string) *http.Client {
	t.Helper()
	cfg.RootCAs = w.Roots
	if !h2 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	tr := &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, w.addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// fetchSeen sends req and returns the response with its body read, and the
// request headers the origin reported, if it answered.
func fetchSeen(c *http.Client, req *http.Request) (*http.Response, http.Header, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	var seen http.Header
	if resp.Header.Get("X-Origin") == "yes" {
		if err := json.Unmarshal(body, &seen); err != nil {
			return nil, nil, err
		}
	}
	return resp, seen, nil
}

// setHTTP changes name's settings through the world's writer.
func (w *world) setHTTP(t *testing.T, name string, change func(*keystore.TenantHTTP)) {
	t.Helper()
	err := w.Writer.UpdateHTTP(context.Background(), name, func(h *keystore.TenantHTTP) error { change(h); return nil })
	if err != nil {
		t.Fatal(err)
	}
}

// TestTenantHeaderRulesAndHSTS: a change to a running edge's tenant
// takes effect (through the journal) on HTTP/1.1, served by the
// connection loop, and HTTP/2: HSTS on responses, request rules before
// the origin and response rules before the client, while the edge's own
// forwarding headers stay the edge's. Another tenant is unaffected.
func TestTenantHeaderRulesAndHSTS(t *testing.T) {
	w := newWorld(t, 0, Options{})
	origin := headerOrigin(t)
	w.put(t, testpki.ECDSAP256, origin, "rules.keyedge.test")
	w.put(t, testpki.ECDSAP256, origin, "plain.keyedge.test")
	get := func(c *http.Client, host string) (*http.Response, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/", nil)
		req.Header.Set("Cookie", "session=1")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Add("X-Multi", "client")
		resp, seen, err := fetchSeen(c, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || seen == nil {
			t.Fatalf("GET %s: %s", host, resp.Status)
		}
		return resp, seen
	}

	for _, h2 := range []bool{false, true} {
		c := tenantClient(t, w, &tls.Config{}, h2, "")
		if resp, seen := get(c, "rules.keyedge.test"); resp.Header.Get("Strict-Transport-Security") != "" || seen.Get("Cookie") == "" {
			t.Fatalf("h2=%v: settings before any were set: %v, origin saw %v", h2, resp.Header, seen)
		}
	}
	w.setHTTP(t, "rules.keyedge.test", func(h *keystore.TenantHTTP) {
		h.HSTS = &keystore.HSTS{MaxAge: 365 * 24 * time.Hour, IncludeSubDomains: true}
		h.RequestHeaders = []keystore.HeaderRule{
			{Op: keystore.HeaderSet, Name: "X-Tenant", Value: "rules"},
			{Op: keystore.HeaderRemove, Name: "Cookie"},
			{Op: keystore.HeaderAdd, Name: "X-Multi", Value: "edge"},
		}
		h.ResponseHeaders = []keystore.HeaderRule{
			{Op: keystore.HeaderSet, Name: "X-Frame-Options", Value: "DENY"},
			{Op: keystore.HeaderRemove, Name: "Server"},
		}
	})
	for _, h2 := range []bool{false, true} {
		c := tenantClient(t, w, &tls.Config{}, h2, "")
		eventually(t, 10*time.Second, "the edge applies the new settings", func() bool {
			resp, _ := get(c, "rules.keyedge.test")
			return resp.Header.Get("Strict-Transport-Security") != ""
		})
		resp, seen := get(c, "rules.keyedge.test")
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000; includeSubDomains" {
			t.Errorf("h2=%v: HSTS %q", h2, got)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Server") != "" {
			t.Errorf("h2=%v: response rules not applied: %v", h2, resp.Header)
		}
		if seen.Get("X-Tenant") != "rules" || seen.Get("Cookie") != "" || strings.Join(seen["X-Multi"], ",") != "client,edge" {
			t.Errorf("h2=%v: request rules not applied: origin saw %v", h2, seen)
		}
		if seen.Get("X-Forwarded-For") != "127.0.0.1" || seen.Get("X-Request-Id") == "" || !strings.HasPrefix(seen.Get("Forwarded"), "for=127.0.0.1;") {
			t.Errorf("h2=%v: the edge's forwarding headers: origin saw %v", h2, seen)
		}
		// The other tenant: as before.
		resp, seen = get(c, "plain.keyedge.test")
		if resp.Header.Get("Strict-Transport-Security") != "" || resp.Header.Get("Server") != "origin" || seen.Get("Cookie") == "" || seen.Get("X-Tenant") != "" {
			t.Errorf("h2=%v: a tenant without settings got another's: %v, origin saw %v", h2, resp.Header, seen)
		}
	}
}

// TestTenantRateLimit: past its burst a client gets 429 with
// Retry-After, counted in the metric and logged with status 429, while
// another client address keeps its own bucket; time (the limiter's
// clock, pinned) refills it.
func TestTenantRateLimit(t *testing.T) {
	log, sink := newAccessLog(t)
	w := openWorld(t, 0)
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv, err := NewServer(Options{Store: w.store, AccessLog: log, Logger: slog.New(slog.DiscardHandler), Registerer: w.reg})
	if err != nil {
		t.Fatal(err)
	}
	srv.limiter = newRateLimiter(clock.Now) // before it serves
	w.srv, w.addr = srv, serve(t, srv)
	origin := headerOrigin(t)
	w.put(t, testpki.ECDSAP256, origin, "limited.keyedge.test")
	// One a minute, two at once: the buckets' refill (by the wall
	// clock, which drops full buckets) outlasts the test.
	w.setHTTP(t, "limited.keyedge.test", func(h *keystore.TenantHTTP) { h.RateLimit = &keystore.RateLimit{PerSecond: 1.0 / 60, Burst: 2} })

	status := func(c *http.Client) *http.Response {
		t.Helper()
		resp, _, err := fetchSeen(c, must(http.NewRequest(http.MethodGet, "https://limited.keyedge.test/", nil)))
		if err != nil {
			t.Fatal(err)
		}
		sink.next(t)
		return resp
	}
	for _, h2 := range []bool{false, true} {
		clock.Advance(time.Hour) // full buckets
		c := tenantClient(t, w, &tls.Config{}, h2, "127.0.0.1")
		eventually(t, 10*time.Second, "the edge applies the limit", func() bool {
			return status(c).StatusCode == http.StatusTooManyRequests
		})
		clock.Advance(time.Hour)
		for i := range 2 {
			if resp := status(c); resp.StatusCode != http.StatusOK {
				t.Fatalf("h2=%v: request %d within the burst: %s", h2, i, resp.Status)
			}
		}
		before := testutil.ToFloat64(srv.limiter.limited)
		resp := status(c)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
			t.Fatalf("h2=%v: past the burst: %s, Retry-After %q; want 429, 60", h2, resp.Status, resp.Header.Get("Retry-After"))
		}
		if n := testutil.ToFloat64(srv.limiter.limited) - before; n != 1 {
			t.Errorf("h2=%v: keyedge_edge_rate_limited_total rose by %v, want 1", h2, n)
		}
		// Another client address has its own bucket.
		if resp := status(tenantClient(t, w, &tls.Config{}, h2, "127.0.0.2")); resp.StatusCode != http.StatusOK {
			t.Errorf("h2=%v: another client: %s", h2, resp.Status)
		}
		clock.Advance(59 * time.Second)
		if resp := status(c); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("h2=%v: a second early: %s, Retry-After %q", h2, resp.Status, resp.Header.Get("Retry-After"))
		}
		clock.Advance(time.Second)
		if resp := status(c); resp.StatusCode != http.StatusOK {
			t.Errorf("h2=%v: after Retry-After: %s", h2, resp.Status)
		}
	}
	// The access log: the 429 with its reason.
	resp, _, err := fetchSeen(tenantClient(t, w, &tls.Config{}, false, "127.0.0.1"), must(http.NewRequest(http.MethodGet, "https://limited.keyedge.test/", nil)))
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%v, %v", resp, err)
	}
	rec, line := sink.next(t)
	if rec["status"] != float64(429) || rec["error"] != proxyReasonRateLimited || rec["host"] != "limited.keyedge.test" {
		t.Errorf("access log line %s", line)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// clientCA is a CA issuing client certificates, with one it issued.
type clientCA struct {
	ca   *testpki.CA
	cert tls.Certificate
	pem  string
}

func newClientCA(t *testing.T, name string) *clientCA {
	t.Helper()
	ca, err := testpki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"client." + strings.ReplaceAll(strings.ToLower(name), " ", "-") + ".test"}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	return &clientCA{ca: ca, cert: tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key}, pem: string(ca.CertPEM())}
}

// TestTenantClientCertificates: a tenant requiring client certificates
// refuses a handshake without one or with one from another CA, and
// passes the verified subject to the origin, never the client's own
// header; optional lets a client without one through.
func TestTenantClientCertificates(t *testing.T) {
	w := newWorld(t, 0, Options{})
	origin := headerOrigin(t)
	good, other := newClientCA(t, "Client CA"), newClientCA(t, "Other CA")
	w.put(t, testpki.ECDSAP256, origin, "mtls.keyedge.test")
	w.put(t, testpki.ECDSAP256, origin, "open.keyedge.test")

	request := func(h2 bool, cert *tls.Certificate, host string) (*http.Response, http.Header, error) {
		cfg := &tls.Config{}
		if cert != nil {
			// Sent whatever CAs the edge names, as a client that does
			// not check them would.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		req := must(http.NewRequest(http.MethodGet, "https://"+host+"/", nil))
		req.Header.Set("X-Client-Subject", "CN=admin")
		return fetchSeen(tenantClient(t, w, cfg, h2, ""), req)
	}
	for _, mode := range []keystore.ClientAuthMode{keystore.ClientAuthRequired, keystore.ClientAuthOptional} {
		w.setHTTP(t, "mtls.keyedge.test", func(h *keystore.TenantHTTP) {
			h.ClientAuth = &keystore.ClientAuth{CAs: good.pem, Mode: mode, SubjectHeader: "X-Client-Subject"}
		})
		// Wait for what tells this mode from the one before (none, then
		// required): a client without a certificate refused, then served.
		eventually(t, 10*time.Second, "the edge applies "+string(mode)+" client auth", func() bool {
			_, _, err := request(false, nil, "mtls.keyedge.test")
			return (err != nil) == (mode == keystore.ClientAuthRequired)
		})
		for _, h2 := range []bool{false, true} {
			resp, seen, err := request(h2, &good.cert, "mtls.keyedge.test")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s, h2=%v, a good certificate: %v, %v", mode, h2, resp, err)
			}
			if got := seen.Get("X-Client-Subject"); got != "CN=client.client-ca.test" {
				t.Errorf("%s, h2=%v: the origin saw subject %q", mode, h2, got)
			}
			if _, _, err := request(h2, &other.cert, "mtls.keyedge.test"); err == nil {
				t.Errorf("%s, h2=%v: a certificate from another CA was accepted", mode, h2)
			}
			resp, seen, err = request(h2, nil, "mtls.keyedge.test")
			switch {
			case mode == keystore.ClientAuthRequired && err == nil:
				t.Errorf("required, h2=%v: no certificate: %s, want the handshake refused", h2, resp.Status)
			case mode == keystore.ClientAuthOptional && (err != nil || resp.StatusCode != http.StatusOK):
				t.Errorf("optional, h2=%v: no certificate: %v, %v", h2, resp, err)
			case mode == keystore.ClientAuthOptional && seen.Get("X-Client-Subject") != "":
				t.Errorf("optional, h2=%v: no certificate, yet the origin saw the client's subject header %q", h2, seen.Get("X-Client-Subject"))
			}
		}
	}
	// Another tenant asks for no certificate.
	if resp, _, err := request(true, nil, "open.keyedge.test"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("a tenant without client auth: %v, %v", resp, err)
	}
}

// TestTenantClientCertificatesResumption: a session does not carry a
// client past a change of the tenant's client authentication: not one
// from before it was required, not one verified under CAs it no longer
// trusts. An unchanged tenant's sessions still resume.
func TestTenantClientCertificatesResumption(t *testing.T) {
	w := newWorld(t, 0, Options{})
	origin := headerOrigin(t)
	first, second := newClientCA(t, "First CA"), newClientCA(t, "Second CA")
	w.put(t, testpki.ECDSAP256, origin, "resume.keyedge.test")

	// handshake connects with the session cache, a certificate from ca
	// (none if nil) and TLS version v, and reports whether it resumed;
	// err is the handshake's, or the first read's (TLS 1.3 clients learn
	// of a refused certificate then).
	handshake := func(cache tls.ClientSessionCache, ca *clientCA, v uint16) (resumed bool, err error) {
		cfg := &tls.Config{ServerName: "resume.keyedge.test", RootCAs: w.Roots, ClientSessionCache: cache, MinVersion: v, MaxVersion: v}
		if ca != nil {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &ca.cert, nil }
		}
		conn, err := w.handshake(cfg)
		if err != nil {
			return false, err
		}
		defer conn.Close()
		// A request, so a TLS 1.3 client reads the server's tickets, or
		// its refusal of the certificate.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: resume.keyedge.test\r\nConnection: close\r\n\r\n")
		_, err = io.ReadAll(conn)
		return conn.ConnectionState().DidResume, err
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		w.setHTTP(t, "resume.keyedge.test", func(h *keystore.TenantHTTP) { h.ClientAuth = nil })
		eventually(t, 10*time.Second, "client auth off", func() bool { _, err := handshake(nil, nil, v); return err == nil })

		// A session from before client certificates were required.
		cache := tls.NewLRUClientSessionCache(4)
		if _, err := handshake(cache, nil, v); err != nil {
			t.Fatal(err)
		}
		if resumed, err := handshake(cache, nil, v); !resumed || err != nil {
			t.Fatalf("%x: no resumption without client auth: %v, %v", v, resumed, err)
		}
		w.setHTTP(t, "resume.keyedge.test", func(h *keystore.TenantHTTP) {
			h.ClientAuth = &keystore.ClientAuth{CAs: first.pem, Mode: keystore.ClientAuthRequired}
		})
		eventually(t, 10*time.Second, "client auth required", func() bool { _, err := handshake(nil, nil, v); return err != nil })
		if resumed, err := handshake(cache, nil, v); resumed || err == nil {
			t.Errorf("%x: a session from before client auth resumed without a certificate: resumed %v, %v", v, resumed, err)
		}

		// A session verified under the first CA, then the second only.
		cache = tls.NewLRUClientSessionCache(4)
		if _, err := handshake(cache, first, v); err != nil {
			t.Fatal(err)
		}
		if resumed, err := handshake(cache, first, v); !resumed || err != nil {
			t.Errorf("%x: an unchanged tenant's session did not resume: %v, %v", v, resumed, err)
		}
		w.setHTTP(t, "resume.keyedge.test", func(h *keystore.TenantHTTP) { h.ClientAuth.CAs = second.pem })
		eventually(t, 10*time.Second, "the second CA", func() bool { _, err := handshake(nil, second, v); return err == nil })
		if resumed, err := handshake(cache, first, v); resumed || err == nil {
			t.Errorf("%x: a session verified under a CA no longer trusted: resumed %v, %v", v, resumed, err)
		}
	}
}

// TestTenantClientCertificatesOpenConnection: a connection opened before
// its tenant required client certificates carries no request past the
// change: each gets a 421, so the client retries on a new connection,
// whose handshake asks for a certificate.
func TestTenantClientCertificatesOpenConnection(t *testing.T) {
	w := newWorld(t, 0, Options{})
	origin := headerOrigin(t)
	ca := newClientCA(t, "Client CA")
	w.put(t, testpki.ECDSAP256, origin, "late.keyedge.test")
	for _, h2 := range []bool{false, true} {
		w.setHTTP(t, "late.keyedge.test", func(h *keystore.TenantHTTP) { h.ClientAuth = nil })
		c := tenantClient(t, w, &tls.Config{}, h2, "")
		eventually(t, 10*time.Second, "client auth off", func() bool {
			resp, _, err := fetchSeen(c, must(http.NewRequest(http.MethodGet, "https://late.keyedge.test/", nil)))
			return err == nil && resp.StatusCode == http.StatusOK
		})
		w.setHTTP(t, "late.keyedge.test", func(h *keystore.TenantHTTP) {
			h.ClientAuth = &keystore.ClientAuth{CAs: ca.pem, Mode: keystore.ClientAuthRequired}
		})
		eventually(t, 10*time.Second, "a 421 on the open connection", func() bool {
			resp, _, err := fetchSeen(c, must(http.NewRequest(http.MethodGet, "https://late.keyedge.test/", nil)))
			if err != nil {
				t.Fatalf("h2=%v: %v", h2, err) // a new connection: the open one was closed
			}
			return resp.StatusCode == http.StatusMisdirectedRequest
		})
	}
}

// TestPlainHTTPRedirect: the port-80 server redirects a tenant's
// requests to https, refuses those of a tenant that opted out (a change
// a running server follows), and redirects a name no tenant has, as
// before.
func TestPlainHTTPRedirect(t *testing.T) {
	w := newWorld(t, 0, Options{})
	w.put(t, testpki.ECDSAP256, w.OriginURL, "shop.keyedge.test")
	w.put(t, testpki.ECDSAP256, w.OriginURL, "api.keyedge.test")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(w.store, ACME{}, Limits{}, slog.New(slog.DiscardHandler))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	get := func(host string) (int, string) {
		t.Helper()
		req := must(http.NewRequest(http.MethodGet, "http://"+l.Addr().String()+"/a?b=c", nil))
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	w.setHTTP(t, "api.keyedge.test", func(h *keystore.TenantHTTP) { h.NoRedirect = true })
	eventually(t, 10*time.Second, "the opt-out applies", func() bool { code, _ := get("api.keyedge.test"); return code == http.StatusForbidden })
	for _, tc := range []struct {
		host     string
		code     int
		location string
	}{
		{"shop.keyedge.test", http.StatusMovedPermanently, "https://shop.keyedge.test/a?b=c"},
		{"shop.keyedge.test:80", http.StatusMovedPermanently, "https://shop.keyedge.test/a?b=c"},
		{"api.keyedge.test", http.StatusForbidden, ""},
		{"unknown.keyedge.test", http.StatusMovedPermanently, "https://unknown.keyedge.test/a?b=c"},
	} {
		if code, loc := get(tc.host); code != tc.code || loc != tc.location {
			t.Errorf("Host %s: %d %q, want %d %q", tc.host, code, loc, tc.code, tc.location)
		}
	}
	w.setHTTP(t, "api.keyedge.test", func(h *keystore.TenantHTTP) { h.NoRedirect = false })
	eventually(t, 10*time.Second, "redirected again", func() bool { code, _ := get("api.keyedge.test"); return code == http.StatusMovedPermanently })
}
