package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testmetrics"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// serveH3 runs ServeHTTP3 for srv on a fresh 127.0.0.1 UDP port until
// the test ends, and returns its address.
func serveH3(t testing.TB, srv *Server) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeHTTP3(pc) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("ServeHTTP3 returned %v", err)
		}
	})
	return pc.LocalAddr().String()
}

// h3Client is quic-go's HTTP/3 client sending every request to the edge
// at addr (UDP), trusting the test CA, with SNI sni (the URL's host
// when empty).
func h3Client(t testing.TB, roots *x509.CertPool, addr, sni string) *http.Client {
	t.Helper()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: sni},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestHTTP3Tenants: HTTP/3 requests through a real edge for local ECDSA
// and RSA tenants and keyless ones signed by a key server process: the
// same certificates as over TCP, the hybrid post-quantum key exchange,
// the origin's answer, an access log line saying h3, and the metrics.
func TestHTTP3Tenants(t *testing.T) {
	log, sink := newAccessLog(t)
	kw := newKeylessWorld(t, Options{AccessLog: log})
	ks, _ := kw.startKeyServer(t, "ks1")
	kw.putKeyless(t, ks)
	ecdsaID := kw.put(t, testpki.ECDSAP256, kw.OriginURL, "ecdsa.example.com")
	rsaID := kw.put(t, testpki.RSA2048, kw.OriginURL, "rsa.example.com")
	addr := serveH3(t, kw.srv)

	tests := []struct {
		name, host string
		alg        x509.PublicKeyAlgorithm
		want       map[string]any // in the access log line
	}{
		{"local ECDSA", "ecdsa.example.com", x509.ECDSA, map[string]any{"route": "local", "cert": ecdsaID}},
		{"local RSA", "rsa.example.com", x509.RSA, map[string]any{"route": "local", "cert": rsaID}},
		{"keyless ECDSA", kw.tenants[testpki.ECDSAP256].Cert.DNSNames[0], x509.ECDSA, map[string]any{"route": "keyless", "key_server": ks}},
		{"keyless RSA", kw.tenants[testpki.RSA2048].Cert.DNSNames[0], x509.RSA, map[string]any{"route": "keyless", "key_server": ks}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := kw.get(t, h3Client(t, kw.Roots, addr, ""), tt.host, "/h3")
			if resp.StatusCode != 200 || body != "origin "+tt.host || resp.ProtoMajor != 3 {
				t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, body)
			}
			if got := resp.TLS.PeerCertificates[0].PublicKeyAlgorithm; got != tt.alg {
				t.Errorf("served a %v certificate, want %v", got, tt.alg)
			}
			if resp.TLS.CurveID != tls.X25519MLKEM768 || resp.TLS.Version != tls.VersionTLS13 {
				t.Errorf("%s with %v, want TLS 1.3 with X25519MLKEM768", tls.VersionName(resp.TLS.Version), resp.TLS.CurveID)
			}
			if resp.Header.Get("Alt-Svc") != "" {
				t.Errorf("an HTTP/3 response advertises HTTP/3: %q", resp.Header.Get("Alt-Svc"))
			}
			rec, _ := sink.next(t)
			want := map[string]any{"proto": "h3", "status": 200.0, "host": tt.host, "sni": tt.host, "tenant": tt.host, "tls": "1.3", "group": "X25519MLKEM768", "resumed": false}
			for k, v := range tt.want {
				want[k] = v
			}
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("access log %s = %v, want %v", k, rec[k], v)
				}
			}
			if d, ok := rec["handshake_duration"].(float64); !ok || d <= 0 {
				t.Errorf("access log handshake_duration = %v", rec["handshake_duration"])
			}
		})
	}
	if got := testmetrics.Sum(t, kw.reg, "keyedge_edge_quic_handshakes_total", map[string]string{"result": "ok"}); got != 4 {
		t.Errorf("%v QUIC handshakes ok counted, want 4", got)
	}
	if got := testmetrics.Sum(t, kw.reg, "keyedge_proxy_protocol_requests_total", map[string]string{"proto": "h3"}); got != 4 {
		t.Errorf("%v h3 requests counted, want 4", got)
	}
	if got := testmetrics.Sum(t, kw.reg, "keyedge_edge_handshakes_total", map[string]string{"result": "ok"}); got != 0 {
		t.Errorf("%v TCP handshakes counted for QUIC ones", got)
	}
	// Every connection closed is uncounted.
	kw.srv.Shutdown(context.Background())
	eventually(t, 10*time.Second, "QUIC connections uncounted", func() bool { return kw.srv.open.Load() == 0 })
}

// TestHTTP3Geo: a key whose policy excludes the node is signed over
// HTTP/3 by the directory's key server the policy admits, as over TCP.
func TestHTTP3Geo(t *testing.T) {
	log, sink := newAccessLog(t)
	gw := newGeoWorld(t)
	gw.putRestricted(t, "us.geo.test", "region: us")
	gw.putRestricted(t, "eu.geo.test", "region: eu")
	store, err := gw.OpenStore(context.Background(), keystore.Options{NodeKey: gw.nodeKey(t, "region: eu, country: de"), PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Options{
		Store:      store,
		Keyless:    gw.keylessClient(t),
		KeyServers: gw.directory,
		AccessLog:  log,
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv)
	addr := serveH3(t, srv)
	for host, route := range map[string]string{"us.geo.test": "geo", "eu.geo.test": "local"} {
		resp, body := gw.get(t, h3Client(t, gw.Roots, addr, ""), host, "/")
		if resp.StatusCode != 200 || body != "origin "+host {
			t.Errorf("%s: %d %q", host, resp.StatusCode, body)
		}
		if rec, _ := sink.next(t); rec["route"] != route || rec["proto"] != "h3" {
			t.Errorf("%s: access log route %v, proto %v, want %s over h3", host, rec["route"], rec["proto"], route)
		}
	}
}

// TestHTTP3UnknownName: a name no tenant has is refused in the QUIC
// handshake with unrecognized_name, as over TCP, and counted.
func TestHTTP3UnknownName(t *testing.T) {
	w := newWorld(t, 1, Options{})
	addr := serveH3(t, w.srv)
	_, err := h3Client(t, w.Roots, addr, "").Get("https://nobody.example.com/")
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.TransportErrorCode(0x100+112) { // crypto error: TLS alert 112
		t.Fatalf("GET for an unknown name: %v, want an unrecognized_name alert", err)
	}
	eventually(t, 10*time.Second, "the failed QUIC handshake counted", func() bool {
		return testmetrics.Sum(t, w.reg, "keyedge_edge_quic_handshakes_total", map[string]string{"result": "error"}) == 1
	})
}

// TestHTTP3Streams: an origin's response reaches the HTTP/3 client as
// the origin sends it: the client reads the first part while the origin
// waits to send the rest.
func TestHTTP3Streams(t *testing.T) {
	w := newWorld(t, 0, Options{})
	more := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(rw, "first")
		rw.(http.Flusher).Flush()
		select {
		case <-more:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintln(rw, "second")
	}))
	t.Cleanup(origin.Close)
	t.Cleanup(func() {
		select {
		case <-more:
		default:
			close(more)
		}
	})
	w.put(t, testpki.ECDSAP256, origin.URL, "stream.example.com")
	addr := serveH3(t, w.srv)
	resp, err := h3Client(t, w.Roots, addr, "").Get("https://stream.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(more)
	if line, err := r.ReadString('\n'); line != "second\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
}

// TestAltSvc: HTTP/1.1 and HTTP/2 responses advertise HTTP/3 on the UDP
// port while ServeHTTP3 serves, and not before.
func TestAltSvc(t *testing.T) {
	w := newWorld(t, 1, Options{HTTP3: HTTP3Options{AltSvcMaxAge: time.Hour}})
	host := testpki.TenantName(0, "keyedge.test")
	for _, h2 := range []bool{false, true} {
		if resp, _ := w.get(t, w.client(t, h2), host, "/"); resp.Header.Get("Alt-Svc") != "" {
			t.Errorf("%s without HTTP/3: Alt-Svc %q", resp.Proto, resp.Header.Get("Alt-Svc"))
		}
	}
	addr := serveH3(t, w.srv)
	_, port, _ := net.SplitHostPort(addr)
	want := `h3=":` + port + `"; ma=3600`
	eventually(t, 10*time.Second, "Alt-Svc advertised", func() bool { return w.srv.h3.altSvc.Load() != nil })
	for _, h2 := range []bool{false, true} {
		resp, body := w.get(t, w.client(t, h2), host, "/")
		if got := resp.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != want || !strings.HasPrefix(body, "origin ") {
			t.Errorf("%s: Alt-Svc %q, want %q", resp.Proto, got, want)
		}
	}
	// What Alt-Svc advertises works.
	if resp, _ := w.get(t, h3Client(t, w.Roots, "127.0.0.1:"+port, ""), host, "/"); resp.ProtoMajor != 3 {
		t.Errorf("advertised port answered %s", resp.Proto)
	}
}

// TestHTTP3Limits: QUIC connections count towards MaxConnsPerIP with the
// TCP ones; past it, a QUIC connection attempt is refused and counted.
func TestHTTP3Limits(t *testing.T) {
	w := newWorld(t, 1, Options{Limits: Limits{MaxConnsPerIP: 1}})
	host := testpki.TenantName(0, "keyedge.test")
	addr := serveH3(t, w.srv)
	tcp, err := w.handshake(w.tlsConfig(host))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h3Client(t, w.Roots, addr, "").Get("https://" + host + "/")
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Errorf("QUIC past max_conns_per_ip: %v, want CONNECTION_REFUSED", err)
	}
	// Each Initial packet of the attempt is refused: one or more.
	if got := testmetrics.Sum(t, w.reg, "keyedge_edge_refused_connections_total", map[string]string{"reason": refusedPerIP}); got < 1 {
		t.Errorf("%v per-IP refusals counted, want at least 1", got)
	}
	tcp.Close()
	eventually(t, 10*time.Second, "the TCP connection uncounted", func() bool { return w.srv.open.Load() == 0 })
	if resp, _ := w.get(t, h3Client(t, w.Roots, addr, ""), host, "/"); resp.StatusCode != 200 {
		t.Errorf("QUIC under the limit: %d", resp.StatusCode)
	}
}

// TestHTTP3Drain: Shutdown lets an HTTP/3 request in flight finish, and
// refuses new QUIC connections.
func TestHTTP3Drain(t *testing.T) {
	w := newWorld(t, 1, Options{})
	host := testpki.TenantName(0, "keyedge.test")
	addr := serveH3(t, w.srv)
	c := h3Client(t, w.Roots, addr, "")
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://" + host + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b), err}
	}()
	<-w.slowArrived
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- w.srv.Shutdown(ctx)
	}()
	eventually(t, 10*time.Second, "Alt-Svc withdrawn", func() bool { return w.srv.h3.altSvc.Load() == nil })
	w.release()
	if r := <-done; r.err != nil || r.status != 200 || r.body != "origin "+host {
		t.Errorf("request in flight at Shutdown: %d %q %v", r.status, r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestHTTP3ClientCertificates: a tenant asking for client certificates
// asks for them over HTTP/3 too: the QUIC handshake offers h3 with the
// tenant's CAs, refuses a client without a certificate, and passes the
// verified subject to the origin.
func TestHTTP3ClientCertificates(t *testing.T) {
	w := newWorld(t, 0, Options{})
	origin := headerOrigin(t)
	good := newClientCA(t, "Client CA")
	w.put(t, testpki.ECDSAP256, origin, "mtls.keyedge.test")
	w.setHTTP(t, "mtls.keyedge.test", func(h *keystore.TenantHTTP) {
		h.ClientAuth = &keystore.ClientAuth{CAs: good.pem, Mode: keystore.ClientAuthRequired, SubjectHeader: "X-Client-Subject"}
	})
	addr := serveH3(t, w.srv)
	request := func(cert *tls.Certificate) (*http.Response, http.Header, error) {
		c := h3Client(t, w.Roots, addr, "")
		if cert != nil {
			c.Transport.(*http3.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		return fetchSeen(c, must(http.NewRequest(http.MethodGet, "https://mtls.keyedge.test/", nil)))
	}
	eventually(t, 10*time.Second, "the edge asks for client certificates", func() bool {
		_, _, err := request(nil)
		return err != nil
	})
	resp, seen, err := request(&good.cert)
	if err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != 3 {
		t.Fatalf("h3 with a good certificate: %v, %v", resp, err)
	}
	if got := seen.Get("X-Client-Subject"); got != "CN=client.client-ca.test" {
		t.Errorf("the origin saw subject %q over h3", got)
	}
}

// TestOriginFailsMidBody: when the origin drops its connection in the
// middle of a response body, the client sees a failed response, never a
// shorter body passed off as complete, over HTTP/1.1, HTTP/2 and
// HTTP/3, on the fast path (a GET without a body) and through
// ReverseProxy (a POST), with a Content-Length and chunked. (Over HTTP/3
// the stream used to end cleanly: a browser kept half a download as
// the whole of it.)
func TestOriginFailsMidBody(t *testing.T) {
	const part = "the first half of the body\n"
	origin := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Query().Get("length") == "1" {
			rw.Header().Set("Content-Length", fmt.Sprint(2*len(part)))
		}
		io.WriteString(rw, part)
		rc := http.NewResponseController(rw)
		rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	}))
	t.Cleanup(origin.Close)
	w := tenantWorld(t, origin.URL, "cut.example.com")
	h3 := h3Client(t, w.Roots, serveH3(t, w.srv), "")
	requests := 0
	for _, proto := range []struct {
		name string
		c    *http.Client
	}{{"h1", w.client(t, false)}, {"h2", w.client(t, true)}, {"h3", h3}} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			for _, length := range []string{"0", "1"} {
				requests++
				t.Run(fmt.Sprintf("%s %s length=%s", proto.name, method, length), func(t *testing.T) {
					var body io.Reader
					if method == http.MethodPost {
						body = strings.NewReader("a request body")
					}
					req, err := http.NewRequest(method, "https://cut.example.com/?length="+length, body)
					if err != nil {
						t.Fatal(err)
					}
					resp, err := proto.c.Do(req)
					if err != nil {
						return // failed before the head (a reset stream can take it along): not complete either
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil {
						t.Errorf("%s: read %d bytes %q and a clean end, from a body the origin cut off", resp.Status, len(got), got)
					}
				})
			}
		}
	}
	// Each is counted as the origin's failure (and logged at Warn).
	eventually(t, 10*time.Second, "every cut-off response counted", func() bool {
		return testmetrics.Sum(t, w.reg, "keyedge_proxy_errors_total", map[string]string{"reason": proxyReasonOther}) == float64(requests)
	})
}
