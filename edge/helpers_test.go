package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// world is the shared test world (a test CA, a keystore on disk with a
// writer, an origin; internal/testworld) and a running edge on
// 127.0.0.1.
type world struct {
	*testworld.World
	store *keystore.Store // the edge's store
	srv   *Server
	addr  string
	reg   *prometheus.Registry

	slow        chan struct{} // the origin's /slow answers when this closes
	slowOnce    sync.Once
	slowArrived chan struct{} // a request reached /slow
}

// release lets the origin's /slow requests answer.
func (w *world) release() { w.slowOnce.Do(func() { close(w.slow) }) }

// newWorld starts an edge with opts (Store, Logger, Registerer filled in)
// over a keystore holding tenants t0…t<n-1>.keyedge.test, every 10th with
// a wildcard, whose origin answers "origin <X-Forwarded-Host>" with the
// X-Forwarded-For and X-Request-ID it saw in the X-Seen-For and
// X-Seen-Request-Id headers; its /slow waits for release.
func newWorld(t testing.TB, n int, opts Options) *world {
	t.Helper()
	w := openWorld(t, n)
	w.startEdge(t, opts)
	return w
}

// openWorld is newWorld up to starting the edge.
func openWorld(t testing.TB, n int) *world {
	t.Helper()
	w := &world{reg: prometheus.NewRegistry(), slow: make(chan struct{}), slowArrived: make(chan struct{}, 16)}
	w.World = testworld.ForTest(t, testworld.Options{Name: "edge test", Origin: http.HandlerFunc(w.serveOrigin)})
	t.Cleanup(w.release)
	w.store = w.openStore(t)
	if n > 0 {
		if err := w.GenerateTenants(context.Background(), testpki.TenantSpec{Count: n, WildcardEvery: 10}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// serveOrigin is the origin of the world's tenants.
func (w *world) serveOrigin(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/slow" {
		w.slowArrived <- struct{}{}
		select {
		case <-w.slow:
		case <-r.Context().Done():
			return
		}
	}
	rw.Header().Set("X-Seen-For", r.Header.Get("X-Forwarded-For"))
	rw.Header().Set("X-Seen-Request-Id", r.Header.Get("X-Request-Id"))
	fmt.Fprintf(rw, "origin %s", r.Header.Get("X-Forwarded-Host"))
}

// startEdge starts the world's edge with opts (Store, Registerer and,
// unless set, Logger filled in).
func (w *world) startEdge(t testing.TB, opts Options) {
	t.Helper()
	opts.Store = w.store
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Registerer = w.reg
	var err error
	if w.srv, err = NewServer(opts); err != nil {
		t.Fatal(err)
	}
	w.addr = serve(t, w.srv)
}

// openStore opens another store over the world's keystore, as an edge
// node would.
func (w *world) openStore(t testing.TB) *keystore.Store {
	t.Helper()
	s, err := w.OpenStore(context.Background(), keystore.Options{PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve runs srv on a fresh 127.0.0.1 port until the test ends.
func serve(t testing.TB, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ln.Addr().String()
}

// tlsConfig is a client config trusting the test CA.
func (w *world) tlsConfig(serverName string) *tls.Config {
	return &tls.Config{ServerName: serverName, RootCAs: w.Roots}
}

// handshake dials the edge and completes a TLS handshake.
func (w *world) handshake(cfg *tls.Config) (*tls.Conn, error) {
	return w.handshakeTo(w.addr, cfg)
}

// handshakeTo dials an edge at addr and completes a TLS handshake.
func (w *world) handshakeTo(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return tls.DialWithDialer(d, "tcp", addr, cfg)
}

// client is an HTTP client that sends every request to the edge.
func (w *world) client(t testing.TB, h2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   w.tlsConfig(""),
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, w.addr)
		},
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get fetches https://host/path through the edge and returns the body.
func (w *world) get(t testing.TB, c *http.Client, host, path string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get("https://" + host + path)
	if err != nil {
		t.Fatalf("GET https://%s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// leafFor issues a certificate from the world's CA.
func (w *world) leafFor(t testing.TB, kt testpki.KeyType, names ...string) *testpki.Leaf {
	t.Helper()
	leaf, err := w.CA.Issue(testpki.LeafSpec{Names: names, KeyType: kt})
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// put stores a certificate for names through the writer store.
func (w *world) put(t testing.TB, kt testpki.KeyType, origin string, names ...string) string {
	t.Helper()
	leaf := w.leafFor(t, kt, names...)
	ids, err := w.Writer.Put(context.Background(), &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: names[0], Origin: origin},
		Chain: leaf.Chain,
		Key:   leaf.Key,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

// eventually polls cond until it holds or the deadline passes.
var eventually = proctest.Eventually

// tempStore opens a keystore with a new fleet key in a temporary
// directory, closed when the test ends, and returns it with its storage.
func tempStore(t testing.TB) (*keystore.Store, certmagic.Storage) {
	t.Helper()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(context.Background(), keystore.Options{Storage: storage, FleetKey: fleet, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store, storage
}

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// tenantWorld starts an edge whose one tenant, name, has origin (a URL),
// once the edge's keystore has it.
func tenantWorld(t testing.TB, origin, name string) *world {
	t.Helper()
	w := openWorld(t, 0)
	w.put(t, testpki.ECDSAP256, origin, name)
	w.startEdge(t, Options{})
	eventually(t, 10*time.Second, name+" in the edge's keystore", func() bool {
		_, err := w.srv.store.Lookup(context.Background(), name)
		return err == nil
	})
	return w
}

// rawOrigin is a plain-HTTP origin on 127.0.0.1 that reads request heads
// (no bodies) on each of its connections and answers each with the bytes
// respond returns for its request line, written at once, until the test
// ends; it returns its address.
func rawOrigin(t testing.TB, respond func(requestLine string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				requestLine := ""
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					// Bytes, not strings, so that BenchmarkH1Loop's
					// origin allocates once per request.
					switch text := bytes.TrimRight(line, "\r\n"); {
					case requestLine == "":
						requestLine = string(text)
					case len(text) == 0:
						if _, err := io.WriteString(conn, respond(requestLine)); err != nil {
							return
						}
						requestLine = ""
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
