package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/pires/go-proxyproto"
)

func TestGracefulDrain(t *testing.T) {
	w := newWorld(t, 2, Options{})
	c := w.client(t, false)
	type result struct {
		status int
		body   string
		err    error
	}
	inFlight := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://t1.keyedge.test/slow")
		if err != nil {
			inFlight <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 64)
		n, _ := resp.Body.Read(b)
		inFlight <- result{status: resp.StatusCode, body: string(b[:n])}
	}()
	select {
	case <-w.slowArrived:
	case r := <-inFlight:
		t.Fatalf("request failed before reaching the origin: %+v", r)
	}

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- w.srv.Shutdown(ctx)
	}()
	eventually(t, 5*time.Second, "new connections refused while draining", func() bool {
		conn, err := w.handshake(w.tlsConfig("t0.keyedge.test"))
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case r := <-inFlight:
		t.Fatalf("in-flight request ended before its origin answered: %+v", r)
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	w.release()
	r := <-inFlight
	if r.err != nil || r.status != 200 || r.body != "origin t1.keyedge.test" {
		t.Fatalf("in-flight request: %+v", r)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// proxyTestNetworks are the PROXY protocol tests' trusted networks:
// loopback, where the tests connect from, and elsewhere, which they do
// not; and the client a PROXY header names.
func proxyTestNetworks() (loopback, elsewhere []netip.Prefix, client netip.AddrPort) {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		netip.MustParseAddrPort("203.0.113.7:40000")
}

func TestProxyProtocol(t *testing.T) {
	loopback, elsewhere, client := proxyTestNetworks()
	tests := []struct {
		name    string
		trusted []netip.Prefix
		version byte // PROXY header version to send; 0 for none
		wantFor string
		wantErr bool
	}{
		{"trusted v1", loopback, 1, "203.0.113.7", false},
		{"trusted v2", loopback, 2, "203.0.113.7", false},
		{"trusted source must send a header", loopback, 0, "", true},
		{"untrusted header refused", elsewhere, 2, "", true},
		{"untrusted without header", elsewhere, 0, "127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 1, Options{TrustedProxies: tt.trusted})
			tr := &http.Transport{
				TLSClientConfig: w.tlsConfig(""),
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return dialProxied(ctx, w.addr, tt.version, client)
				},
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://t0.keyedge.test/")
			if tt.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatal("request succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Seen-For"); got != tt.wantFor {
				t.Errorf("origin saw X-Forwarded-For %q, want %q", got, tt.wantFor)
			}
		})
	}
}

// dialProxied connects to addr and, unless version is 0, sends a PROXY
// protocol header of that version naming client.
func dialProxied(ctx context.Context, addr string, version byte, client netip.AddrPort) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil || version == 0 {
		return conn, err
	}
	dst := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(dst))
	if _, err := h.WriteTo(conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func TestOriginErrorsThroughEdge(t *testing.T) {
	w := newWorld(t, 0, Options{Proxy: ProxyOptions{OriginTimeout: 300 * time.Millisecond}})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	w.put(t, testpki.ECDSAP256, closedURL, "down.example.com")
	w.put(t, testpki.ECDSAP256, w.OriginURL, "slow.example.com")
	w.put(t, testpki.ECDSAP256, w.OriginURL, "a.example.com", "b.example.com")
	w.put(t, testpki.ECDSAP256, w.OriginURL, "c.example.com")
	c := w.client(t, true)

	tests := []struct {
		host, path string
		status     int
	}{
		{"down.example.com", "/", http.StatusBadGateway},
		{"slow.example.com", "/slow", http.StatusGatewayTimeout},
		{"slow.example.com", "/", http.StatusOK},
	}
	for _, tt := range tests {
		resp, body := w.get(t, c, tt.host, tt.path)
		if resp.StatusCode != tt.status {
			t.Errorf("%s%s: %d %q, want %d", tt.host, tt.path, resp.StatusCode, body, tt.status)
		}
		if strings.Contains(body, "127.0.0.1") {
			t.Errorf("%s%s: error body reveals the origin: %q", tt.host, tt.path, body)
		}
	}
}

// TestMisdirected: a request may use a connection's certificate for any
// name it covers (HTTP/2 coalescing), and no other.
func TestMisdirected(t *testing.T) {
	w := newWorld(t, 0, Options{})
	w.put(t, testpki.ECDSAP256, w.OriginURL, "a.example.com", "b.example.com")
	w.put(t, testpki.ECDSAP256, w.OriginURL, "c.example.com")
	tr := &http.Transport{
		TLSClientConfig: w.tlsConfig("a.example.com"),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, w.addr)
		},
	}
	defer tr.CloseIdleConnections()
	for host, want := range map[string]int{"a.example.com": 200, "b.example.com": 200, "c.example.com": 421} {
		req, _ := http.NewRequest("GET", "https://a.example.com/", nil)
		req.Host = host
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s on a connection for a.example.com: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestReload(t *testing.T) {
	w := newWorld(t, 1, Options{})
	if conn, err := w.handshake(&tls.Config{InsecureSkipVerify: true}); err == nil {
		conn.Close()
		t.Fatal("no-SNI client served without a fallback")
	}
	leaf := w.leafFor(t, testpki.ECDSAP256, "fallback.invalid")
	w.srv.Reload(Options{Fallback: &tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key}})
	conn, err := w.handshake(&tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("after reload with a fallback: %v", err)
	}
	conn.Close()
}

// loadCounter is a storage that counts reads of name files.
type loadCounter struct {
	certmagic.Storage
	names atomic.Int64
}

func (l *loadCounter) Load(ctx context.Context, key string) ([]byte, error) {
	if strings.HasPrefix(key, "names/") {
		l.names.Add(1)
	}
	return l.Storage.Load(ctx, key)
}

// TestMisdirectedHostsReadNothing: made-up Hosts on one keep-alive
// connection are answered 421 from the connection's own certificate,
// without reading the keystore for each, even on a keystore with no name
// filter to refuse them.
func TestMisdirectedHostsReadNothing(t *testing.T) {
	w := newWorld(t, 0, Options{})
	w.put(t, testpki.ECDSAP256, w.OriginURL, "a.example.com", "b.example.com")
	if err := os.Remove(filepath.Join(w.StoreDir, "namefilter")); err != nil {
		t.Fatal(err)
	}
	storage := &loadCounter{Storage: &certmagic.FileStorage{Path: w.StoreDir}}
	store, err := keystore.Open(context.Background(), keystore.Options{Storage: storage, FleetKey: w.Fleet, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv, err := NewServer(Options{Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	tr := &http.Transport{
		TLSClientConfig: w.tlsConfig("a.example.com"),
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	defer tr.CloseIdleConnections()
	const n = 500
	for i := range n {
		req, _ := http.NewRequest("GET", "https://a.example.com/", nil)
		req.Host = fmt.Sprintf("made-up-%d.example.com", i)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("Host %s on a connection for a.example.com: %d, want 421", req.Host, resp.StatusCode)
		}
	}
	if reads := storage.names.Load(); reads > 4 {
		t.Errorf("%d made-up Hosts on one connection read %d name files, want the SNI's only", n, reads)
	}
}

// TestBadLimits: a negative limit is refused by NewServer and by Reload,
// which then keeps the running settings, so handshakes go on.
func TestBadLimits(t *testing.T) {
	bad := []Limits{
		{HandshakeTimeout: -5 * time.Second},
		{MaxConns: -1},
		{MaxConnsPerIP: -1},
		{ReadHeaderTimeout: -1},
		{IdleTimeout: -1},
		{MaxHeaderBytes: -1},
	}
	store, _ := tempStore(t)
	for _, l := range bad {
		if _, err := NewServer(Options{Store: store, Limits: l}); err == nil {
			t.Errorf("NewServer accepted %+v", l)
		}
	}
	w := newWorld(t, 1, Options{})
	if err := w.srv.Reload(Options{Limits: Limits{HandshakeTimeout: -5 * time.Second}}); err == nil || !strings.Contains(err.Error(), "HandshakeTimeout") {
		t.Errorf("Reload with a negative handshake timeout: %v, want an error naming it", err)
	}
	conn, err := w.handshake(w.tlsConfig("t0.keyedge.test"))
	if err != nil {
		t.Fatalf("handshake after a refused reload: %v", err)
	}
	conn.Close()
}
