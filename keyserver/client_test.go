package keyserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clientWorld is an identity CA, a directory of keys, and key servers
// on 127.0.0.1 serving them, for testing the Client against real
// servers over mutual TLS.
type clientWorld struct {
	ca      *testpki.CA
	keysDir string
	keys    map[testpki.KeyType]*testpki.Leaf

	requestTimeout time.Duration // the servers' ServerOptions.RequestTimeout
}

func newClientWorld(t testing.TB) *clientWorld {
	t.Helper()
	ca, err := testpki.NewCA("keyless identity CA")
	if err != nil {
		t.Fatal(err)
	}
	w := &clientWorld{ca: ca, keysDir: t.TempDir(), keys: map[testpki.KeyType]*testpki.Leaf{}}
	for _, kt := range []testpki.KeyType{testpki.ECDSAP256, testpki.RSA2048, testpki.Ed25519} {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{string(kt) + ".tenant.example"}, KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.WritePEM(filepath.Join(w.keysDir, string(kt)+".pem"), filepath.Join(w.keysDir, string(kt)+".key")); err != nil {
			t.Fatal(err)
		}
		w.keys[kt] = leaf
	}
	return w
}

// identity issues an mTLS certificate from the world's CA.
func (w *clientWorld) identity(t testing.TB, name string) tls.Certificate {
	t.Helper()
	leaf, err := w.ca.Issue(testpki.LeafSpec{Names: []string{name}, ClientAuth: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key}
}

func (w *clientWorld) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(w.ca.Certificate())
	return p
}

// startServer runs a key server over the world's keys; keys wraps the
// source (nil: as is). It returns the address and a stop function that
// closes the server abruptly.
func (w *clientWorld) startServer(t testing.TB, wrap func(KeySource) KeySource) (string, func()) {
	t.Helper()
	src, err := NewDirSource(w.keysDir, DirOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	var keys KeySource = src
	if wrap != nil {
		keys = wrap(src)
	}
	srv, err := NewServer(ServerOptions{
		Keys:            keys,
		Authorizer:      AllowAll(),
		AllowRSADecrypt: true, // RemoteRSAKey.Decrypt is tested through it
		RequestTimeout:  w.requestTimeout,
		TLSConfig:       &tls.Config{Certificates: []tls.Certificate{w.identity(t, "keyserver.test")}, ClientCAs: w.pool()},
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // no grace: connections close now
			srv.Shutdown(ctx)
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func (w *clientWorld) client(t testing.TB, cfg ClientOptions) *Client {
	t.Helper()
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{w.identity(t, "edge.test")}, RootCAs: w.pool()}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// key is kt's key held by the servers at addrs, most preferred first.
func (w *clientWorld) key(t testing.TB, c *Client, ctx context.Context, kt testpki.KeyType, addrs ...string) crypto.Signer {
	t.Helper()
	var eps []Endpoint
	for i, a := range addrs {
		eps = append(eps, Endpoint{Addr: a, Preference: i})
	}
	k, err := c.Key(ctx, w.keys[kt].Key.Public(), KeyRef{SNI: w.keys[kt].Cert.DNSNames[0]}, eps)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestClientSignsEveryKind(t *testing.T) {
	w := newClientWorld(t)
	addr, _ := w.startServer(t, nil)
	c := w.client(t, ClientOptions{})
	msg := []byte("the handshake transcript")
	sum256, sum384 := sha256.Sum256(msg), sha512.Sum384(msg)
	tests := []struct {
		kt     testpki.KeyType
		digest []byte
		opts   crypto.SignerOpts
		verify func(pub crypto.PublicKey, sig []byte) bool
	}{
		{testpki.ECDSAP256, sum256[:], crypto.SHA256, func(p crypto.PublicKey, s []byte) bool {
			return ecdsa.VerifyASN1(p.(*ecdsa.PublicKey), sum256[:], s)
		}},
		{testpki.ECDSAP256, sum384[:], crypto.SHA384, func(p crypto.PublicKey, s []byte) bool {
			return ecdsa.VerifyASN1(p.(*ecdsa.PublicKey), sum384[:], s)
		}},
		{testpki.RSA2048, sum256[:], crypto.SHA256, func(p crypto.PublicKey, s []byte) bool {
			return rsa.VerifyPKCS1v15(p.(*rsa.PublicKey), crypto.SHA256, sum256[:], s) == nil
		}},
		{testpki.RSA2048, sum256[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}, func(p crypto.PublicKey, s []byte) bool {
			return rsa.VerifyPSS(p.(*rsa.PublicKey), crypto.SHA256, sum256[:], s, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}},
		{testpki.Ed25519, msg, crypto.Hash(0), func(p crypto.PublicKey, s []byte) bool {
			return ed25519.Verify(p.(ed25519.PublicKey), msg, s)
		}},
	}
	for _, tt := range tests {
		k := w.key(t, c, context.Background(), tt.kt, addr)
		sig, err := k.Sign(rand.Reader, tt.digest, tt.opts)
		if err != nil {
			t.Errorf("%s %v: %v", tt.kt, tt.opts.HashFunc(), err)
			continue
		}
		if !tt.verify(k.Public(), sig) {
			t.Errorf("%s %v: signature does not verify", tt.kt, tt.opts.HashFunc())
		}
	}

	// RSA keys also decrypt (PKCS#1 v1.5), checking the padding locally.
	k := w.key(t, c, context.Background(), testpki.RSA2048, addr)
	dec, ok := k.(crypto.Decrypter)
	if !ok {
		t.Fatal("remote RSA key is not a crypto.Decrypter")
	}
	//lint:ignore SA1019 tests the Keyless SSL protocol's PKCS#1 v1.5 RSA-decrypt operation
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, k.Public().(*rsa.PublicKey), []byte("premaster secret"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := dec.Decrypt(rand.Reader, ct, nil)
	if err != nil || string(pt) != "premaster secret" {
		t.Errorf("Decrypt = %q, %v", pt, err)
	}
	garbage := make([]byte, len(ct))
	garbage[len(garbage)-1] = 7
	if _, err := dec.Decrypt(rand.Reader, garbage, nil); err == nil {
		t.Error("Decrypt of a ciphertext without valid padding succeeded")
	}
	if _, ok := w.key(t, c, context.Background(), testpki.ECDSAP256, addr).(crypto.Decrypter); ok {
		t.Error("a remote ECDSA key claims to decrypt")
	}
}

// TestClientManyInFlightOnOneConnection: a thousand signatures in
// flight at once share one connection, and all succeed. How long they
// take is not the point: the request timeout is far beyond what a busy
// machine needs, so only a broken multiplexer fails them.
func TestClientManyInFlightOnOneConnection(t *testing.T) {
	w := newClientWorld(t)
	addr, _ := w.startServer(t, nil)
	c := w.client(t, ClientOptions{ConnsPerServer: 1, MaxInFlight: 1000, Timeout: time.Minute})
	k := w.key(t, c, context.Background(), testpki.ECDSAP256, addr)
	digest := sha256.Sum256([]byte("x"))
	sign := func() error {
		sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err == nil && !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
			err = errors.New("signature does not verify")
		}
		return err
	}
	// The first signature dials the one connection all others must share.
	if err := sign(); err != nil {
		t.Fatal(err)
	}
	conn := c.servers[addr].conns[0]
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr sync.Once
	for range 1000 {
		wg.Go(func() {
			if err := sign(); err != nil {
				failed.Add(1)
				firstErr.Do(func() { t.Errorf("first failure: %v", err) })
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of 1000 concurrent signatures failed", n)
	}
	if got := c.servers[addr].conns[0]; got != conn || got.dead() {
		t.Error("the connection was replaced or died: the signatures did not all share it")
	}
}

// TestClientFailover: the preferred server dies under load; every
// signature still succeeds, the in-flight ones by retrying on the other.
// Nothing here depends on speed: the deadlines are far beyond what a busy
// machine needs (a slow but live server is TestClientFailoverFromHungServer's
// case, not this one's), and the clock of the dead server's backoff
// stands still, so it stays marked down however long the test takes.
func TestClientFailover(t *testing.T) {
	w := newClientWorld(t)
	first, stopFirst := w.startServer(t, nil)
	second, _ := w.startServer(t, nil)
	stopped := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	c := w.client(t, ClientOptions{Timeout: time.Minute, AttemptTimeout: time.Minute, Time: func() time.Time { return stopped }})
	digest := sha256.Sum256([]byte("x"))
	// Warm up so the first server is healthy and measured.
	if _, err := w.key(t, c, context.Background(), testpki.ECDSAP256, first, second).Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var done, failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 150 {
				k := w.key(t, c, context.Background(), testpki.ECDSAP256, first, second)
				if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					failed.Add(1)
					t.Log(err)
				}
				if done.Add(1) == 300 {
					stopFirst()
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d signatures failed across the failover", n, done.Load())
	}
	if testutil.ToFloat64(c.metrics.failovers.WithLabelValues(failoverUnavailable)) == 0 {
		t.Error("no failover counted although the first server died")
	}
	if up, _ := c.servers[first].health(); up {
		t.Error("dead server still marked up")
	}
}

// blockingSource holds every request until release closes.
type blockingSource struct {
	KeySource
	release chan struct{}
}

func (b *blockingSource) Key(ctx context.Context, r KeyRef) (*Key, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.KeySource.Key(ctx, r)
}

func TestClientDeadline(t *testing.T) {
	w := newClientWorld(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	addr, _ := w.startServer(t, func(k KeySource) KeySource { return &blockingSource{k, release} })
	c := w.client(t, ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	k := w.key(t, c, ctx, testpki.ECDSAP256, addr)
	digest := sha256.Sum256([]byte("x"))
	_, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow key server: %v, want a deadline error", err)
	}
}

// TestServerRequestTimeout: a key lookup that hangs is answered with an
// internal error at the server's request timeout, not left waiting.
func TestServerRequestTimeout(t *testing.T) {
	w := newClientWorld(t)
	w.requestTimeout = 200 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	addr, _ := w.startServer(t, func(k KeySource) KeySource { return &blockingSource{k, release} })
	c := w.client(t, ClientOptions{Timeout: 10 * time.Second})
	digest := sha256.Sum256([]byte("x"))
	_, err := w.key(t, c, context.Background(), testpki.ECDSAP256, addr).Sign(rand.Reader, digest[:], crypto.SHA256)
	if !errors.Is(err, wire.ErrInternal) {
		t.Fatalf("hung key lookup: %v, want the server's ErrInternal", err)
	}
}

func TestClientRefusedIdentities(t *testing.T) {
	w := newClientWorld(t)
	addr, _ := w.startServer(t, nil)
	other, err := testpki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Issue(testpki.LeafSpec{Names: []string{"edge.test"}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	otherPool := x509.NewCertPool()
	otherPool.AddCert(other.Certificate())
	tests := map[string]*tls.Config{
		"client cert from the wrong CA": {Certificates: []tls.Certificate{{Certificate: stranger.Chain, PrivateKey: stranger.Key}}, RootCAs: w.pool()},
		"no client cert":                {RootCAs: w.pool()},
		"server from an untrusted CA":   {Certificates: []tls.Certificate{w.identity(t, "edge.test")}, RootCAs: otherPool},
	}
	digest := sha256.Sum256([]byte("x"))
	for name, cfg := range tests {
		c := w.client(t, ClientOptions{TLSConfig: cfg, Timeout: 2 * time.Second})
		if _, err := w.key(t, c, context.Background(), testpki.ECDSAP256, addr).Sign(rand.Reader, digest[:], crypto.SHA256); err == nil {
			t.Errorf("%s: signature made", name)
		}
	}
}

func TestClientPing(t *testing.T) {
	w := newClientWorld(t)
	addr, stop := w.startServer(t, nil)
	c := w.client(t, ClientOptions{})
	if rtt, err := c.Ping(context.Background(), addr); err != nil || rtt <= 0 {
		t.Fatalf("Ping = %v, %v", rtt, err)
	}
	stop()
	if _, err := c.Ping(context.Background(), addr); err == nil {
		t.Fatal("ping of a stopped server succeeded")
	}
}

func TestClientIdentityExpiryMetric(t *testing.T) {
	w := newClientWorld(t)
	id := w.identity(t, "edge.test")
	c := w.client(t, ClientOptions{TLSConfig: &tls.Config{Certificates: []tls.Certificate{id}, RootCAs: w.pool()}})
	leaf, err := x509.ParseCertificate(id.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(c.metrics.expiry); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("identity expiry gauge = %v, want %v", got, leaf.NotAfter.Unix())
	}
}

// BenchmarkClientSign measures the product client against a key server
// in the same process, on one connection and on several, with 64
// signatures in flight: compare with BenchmarkInProcessECDSA.
//
//	go test -run '^$' -bench ClientSign -benchtime 2s ./keyserver
func BenchmarkClientSign(b *testing.B) {
	w := newClientWorld(b)
	addr, _ := w.startServer(b, nil)
	digest := sha256.Sum256([]byte("bench"))
	for _, conns := range []int{1, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			c := w.client(b, ClientOptions{ConnsPerServer: conns})
			k := w.key(b, c, context.Background(), testpki.ECDSAP256, addr)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range 64 {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
		})
	}
}
