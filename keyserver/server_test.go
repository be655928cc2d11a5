package keyserver_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testmetrics"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// pki is a test PKI: a CA for the key server's certificate and another
// for the clients (edges), as a customer would set up.
type pki struct {
	serverCA, clientCA *testpki.CA
	server             tls.Certificate
}

var testPKI = sync.OnceValues(func() (*pki, error) {
	serverCA, err := testpki.NewCA("keyserver test server CA")
	if err != nil {
		return nil, err
	}
	clientCA, err := testpki.NewCA("keyserver test client CA")
	if err != nil {
		return nil, err
	}
	leaf, err := serverCA.Issue(testpki.LeafSpec{Names: []string{"keyserver.test"}})
	if err != nil {
		return nil, err
	}
	return &pki{serverCA: serverCA, clientCA: clientCA, server: tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key}}, nil
})

func newPKI(t testing.TB) *pki {
	t.Helper()
	p, err := testPKI()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// clientCert issues a client certificate for name from ca.
func clientCert(t testing.TB, ca *testpki.CA, name string) tls.Certificate {
	t.Helper()
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{name}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key, Leaf: leaf.Cert}
}

func (p *pki) serverTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(p.clientCA.Certificate())
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: pool}
}

// testKeys are the signing keys of the tests, one of each type,
// generated once per test binary.
type testKeys struct {
	rsa     *rsa.PrivateKey
	ecdsa   *ecdsa.PrivateKey
	ed25519 ed25519.PrivateKey
}

var sharedKeys = sync.OnceValues(func() (*testKeys, error) {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	e, err := ecdsa.GenerateKey(ecdsaCurve, rand.Reader)
	if err != nil {
		return nil, err
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &testKeys{rsa: r, ecdsa: e, ed25519: ed}, nil
})

func keys(t testing.TB) *testKeys {
	t.Helper()
	k, err := sharedKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var ecdsaCurve = elliptic.P256()

// writeKey writes key to dir/name as PKCS#8 PEM with mode 0600.
func writeKey(t testing.TB, dir, name string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeFile writes a file atomically (a temporary file renamed into
// place), as a deployment tool would.
func writeFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, perm); err != nil { // WriteFile's perm is masked by umask
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func ski(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	s, err := keyserver.SKI(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s[:]
}

// dirSource returns a DirSource over a new directory holding the shared
// keys, polling every 10ms.
func dirSource(t testing.TB) (*keyserver.DirSource, string) {
	t.Helper()
	return dirSourceSigning(t, nil)
}

// dirSourceSigning is dirSource with DirOptions.Signer set to wrap.
func dirSourceSigning(t testing.TB, wrap func(crypto.Signer) crypto.Signer) (*keyserver.DirSource, string) {
	t.Helper()
	k := keys(t)
	dir := t.TempDir()
	writeKey(t, dir, "rsa.key", k.rsa)
	writeKey(t, dir, "ecdsa.key", k.ecdsa)
	writeKey(t, dir, "ed25519.key", k.ed25519)
	src, err := keyserver.NewDirSource(dir, keyserver.DirOptions{PollInterval: 10 * time.Millisecond, Logger: quietLogger(), Signer: wrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, dir
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testServer is a Server listening on 127.0.0.1.
type testServer struct {
	*keyserver.Server
	addr   string
	reg    *prometheus.Registry
	served chan error // Serve's result
	pki    *pki
}

// startServer starts a server with cfg; zero fields get the shared
// keys in a DirSource, the test PKI, a fresh registry and an Authorizer
// allowing every client (a nil Authorizer denies all: see
// TestNilAuthorizerDenies).
func startServer(t testing.TB, cfg keyserver.ServerOptions) *testServer {
	t.Helper()
	p := newPKI(t)
	if cfg.Keys == nil {
		cfg.Keys, _ = dirSource(t)
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = keyserver.AllowAll()
	}
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = p.serverTLS()
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	reg := prometheus.NewPedanticRegistry()
	if cfg.Registerer == nil {
		cfg.Registerer = reg
	}
	srv, err := keyserver.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: srv, addr: ln.Addr().String(), reg: reg, served: make(chan error, 1), pki: p}
	go func() { ts.served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return ts
}

// client dials the server with a client certificate for "edge.test".
func (ts *testServer) client(t testing.TB) *rawClient {
	t.Helper()
	c, err := dialRaw(ts.addr, ts.pki, clientCert(t, ts.pki.clientCA, "edge.test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

// mustDo is do that fails the test on a transport error.
func mustDo(t testing.TB, c *rawClient, m *wire.Message) *wire.Message {
	t.Helper()
	resp, err := c.do(m)
	if err != nil {
		t.Fatalf("%v request: %v", m.Opcode, err)
	}
	return resp
}

// wantError checks that resp is an error response carrying want.
func wantError(t testing.TB, resp *wire.Message, want wire.Error) {
	t.Helper()
	if err := resp.ResponseError(); err != want {
		t.Errorf("%v response: error %v, want %v", resp.Opcode, err, want)
	}
}

// digest hashes msg with h; MD5SHA1 is MD5 then SHA-1, as TLS 1.0 signs.
func digest(h crypto.Hash, msg []byte) []byte {
	if h == crypto.MD5SHA1 {
		m, s := md5.Sum(msg), sha1.Sum(msg)
		return append(m[:], s[:]...)
	}
	hh := h.New()
	hh.Write(msg)
	return hh.Sum(nil)
}

// eventually polls cond until it holds or the deadline passes.
var eventually = proctest.Eventually

// TestSign asks for a signature with every signing opcode and verifies
// it with the public key.
// TestSign: every signing opcode, answered by each RSA signer backend
// (rsasigner), verifies.
func TestSign(t *testing.T) {
	for _, b := range signerBackends(t) {
		t.Run(string(b.name), func(t *testing.T) { testSign(t, b.wrap) })
	}
}

func testSign(t *testing.T, wrap func(crypto.Signer) crypto.Signer) {
	k := keys(t)
	src, _ := dirSourceSigning(t, wrap)
	ts := startServer(t, keyserver.ServerOptions{Keys: src})
	c := ts.client(t)
	msg := []byte("the handshake transcript")
	type signCase struct {
		op  wire.Op
		key crypto.Signer
	}
	var cases []signCase
	for op := wire.OpRSASignMD5SHA1; op <= wire.OpRSASignSHA512; op++ {
		cases = append(cases, signCase{op, k.rsa})
	}
	for op := wire.OpRSAPSSSignSHA256; op <= wire.OpRSAPSSSignSHA512; op++ {
		cases = append(cases, signCase{op, k.rsa})
	}
	for op := wire.OpECDSASignMD5SHA1; op <= wire.OpECDSASignSHA512; op++ {
		cases = append(cases, signCase{op, k.ecdsa})
	}
	cases = append(cases, signCase{wire.OpEd25519Sign, k.ed25519})
	for _, tc := range cases {
		t.Run(tc.op.String(), func(t *testing.T) {
			h := tc.op.Hash()
			payload := msg
			if h != 0 {
				payload = digest(h, msg)
			}
			resp := mustDo(t, c, &wire.Message{Opcode: tc.op, Payload: payload, SKI: ski(t, tc.key.Public())})
			if err := resp.ResponseError(); err != nil {
				t.Fatalf("response error: %v", err)
			}
			sig := resp.Payload
			var err error
			switch pub := tc.key.Public().(type) {
			case *rsa.PublicKey:
				if tc.op.IsPSS() {
					err = rsa.VerifyPSS(pub, h, payload, sig, &rsa.PSSOptions{SaltLength: h.Size()})
				} else {
					err = rsa.VerifyPKCS1v15(pub, h, payload, sig)
				}
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(pub, payload, sig) {
					err = errors.New("ECDSA signature does not verify")
				}
			case ed25519.PublicKey:
				if !ed25519.Verify(pub, payload, sig) {
					err = errors.New("Ed25519 signature does not verify")
				}
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_requests_total", map[string]string{"op": "rsa-md5sha1", "result": "ok"}); got != 1 {
		t.Errorf("requests_total{op=rsa-md5sha1,result=ok} = %v, want 1", got)
	}
	for _, fam := range []string{"rsa", "rsa-pss", "ecdsa", "ed25519"} {
		if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_sign_seconds", map[string]string{"family": fam}); got == 0 {
			t.Errorf("sign_seconds{family=%s} has no samples", fam)
		}
	}
}

// TestRSADecrypt decrypts a PKCS#1 v1.5 ciphertext raw and unpads it
// as a TLS client of the key server would, whichever backend signs
// (rsasigner).
func TestRSADecrypt(t *testing.T) {
	for _, b := range signerBackends(t) {
		t.Run(string(b.name), func(t *testing.T) { testRSADecrypt(t, b.wrap) })
	}
}

func testRSADecrypt(t *testing.T, wrap func(crypto.Signer) crypto.Signer) {
	k := keys(t)
	src, _ := dirSourceSigning(t, wrap)
	ts := startServer(t, keyserver.ServerOptions{Keys: src, AllowRSADecrypt: true})
	c := ts.client(t)
	secret := []byte("48 bytes of TLS 1.2 premaster secret, say......")
	//lint:ignore SA1019 tests the Keyless SSL protocol's PKCS#1 v1.5 RSA-decrypt operation
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, &k.rsa.PublicKey, secret)
	if err != nil {
		t.Fatal(err)
	}
	resp := mustDo(t, c, &wire.Message{Opcode: wire.OpRSADecrypt, Payload: ct, SKI: ski(t, k.rsa.Public())})
	if err := resp.ResponseError(); err != nil {
		t.Fatalf("response error: %v", err)
	}
	em := resp.Payload
	if len(em) != k.rsa.Size() {
		t.Fatalf("decryption is %d bytes, want the modulus size %d", len(em), k.rsa.Size())
	}
	// EM = 0x00 0x02 PS (nonzero) 0x00 M
	sep := -1
	for i := 2; i < len(em); i++ {
		if em[i] == 0 {
			sep = i
			break
		}
	}
	if em[0] != 0 || em[1] != 2 || sep < 10 || string(em[sep+1:]) != string(secret) {
		t.Fatalf("decryption does not unpad to the plaintext: %x", em)
	}

	// A ciphertext not less than the modulus is refused.
	big := make([]byte, k.rsa.Size())
	for i := range big {
		big[i] = 0xff
	}
	wantError(t, mustDo(t, c, &wire.Message{Opcode: wire.OpRSADecrypt, Payload: big, SKI: ski(t, k.rsa.Public())}), wire.ErrCrypto)
	// Decryption with a non-RSA key is a crypto error.
	wantError(t, mustDo(t, c, &wire.Message{Opcode: wire.OpRSADecrypt, Payload: ct, SKI: ski(t, k.ecdsa.Public())}), wire.ErrCrypto)
}

func TestPing(t *testing.T) {
	ts := startServer(t, keyserver.ServerOptions{})
	c := ts.client(t)
	resp := mustDo(t, c, &wire.Message{Opcode: wire.OpPing, Payload: []byte("are you there")})
	if resp.Opcode != wire.OpPong || string(resp.Payload) != "are you there" {
		t.Fatalf("ping answered with %v %q, want pong with the same payload", resp.Opcode, resp.Payload)
	}
}

// TestBadRequests checks the error answered for each kind of bad
// request, and that the connection keeps working after each.
func TestBadRequests(t *testing.T) {
	k := keys(t)
	ts := startServer(t, keyserver.ServerOptions{})
	c := ts.client(t)
	sha256Digest := digest(crypto.SHA256, []byte("x"))
	for _, tc := range []struct {
		name   string
		req    *wire.Message
		want   wire.Error
		result string
	}{
		{"bad opcode", &wire.Message{Opcode: 0x50, Payload: sha256Digest}, wire.ErrBadOpcode, "bad_request"},
		{"response opcode", &wire.Message{Opcode: wire.OpResponse}, wire.ErrUnexpectedOpcode, "bad_request"},
		{"pong opcode", &wire.Message{Opcode: wire.OpPong}, wire.ErrUnexpectedOpcode, "bad_request"},
		{"error opcode", &wire.Message{Opcode: wire.OpError, Payload: []byte{1}}, wire.ErrUnexpectedOpcode, "bad_request"},
		{"short digest", &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: sha256Digest[:31], SKI: ski(t, k.ecdsa.Public())}, wire.ErrFormat, "bad_request"},
		{"long digest", &wire.Message{Opcode: wire.OpRSASignSHA1, Payload: sha256Digest, SKI: ski(t, k.rsa.Public())}, wire.ErrFormat, "bad_request"},
		{"no payload", &wire.Message{Opcode: wire.OpRSAPSSSignSHA256, SKI: ski(t, k.rsa.Public())}, wire.ErrFormat, "bad_request"},
		{"ECDSA op on RSA key", &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: sha256Digest, SKI: ski(t, k.rsa.Public())}, wire.ErrCrypto, "crypto_error"},
		{"RSA op on ECDSA key", &wire.Message{Opcode: wire.OpRSASignSHA256, Payload: sha256Digest, SKI: ski(t, k.ecdsa.Public())}, wire.ErrCrypto, "crypto_error"},
		{"Ed25519 op on ECDSA key", &wire.Message{Opcode: wire.OpEd25519Sign, Payload: []byte("m"), SKI: ski(t, k.ecdsa.Public())}, wire.ErrCrypto, "crypto_error"},
		{"unknown SKI", &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: sha256Digest, SKI: make([]byte, 20)}, wire.ErrKeyNotFound, "key_not_found"},
		{"no key named", &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: sha256Digest}, wire.ErrKeyNotFound, "key_not_found"},
		{"unknown SNI", &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: sha256Digest, SNI: "nowhere.example"}, wire.ErrKeyNotFound, "key_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, mustDo(t, c, tc.req), tc.want)
		})
	}
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_requests_total", map[string]string{"op": "unknown", "result": "bad_request"}); got != 1 {
		t.Errorf("requests_total{op=unknown,result=bad_request} = %v, want 1 (opcode 0x50)", got)
	}
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_requests_total", map[string]string{"result": "key_not_found"}); got != 3 {
		t.Errorf("requests_total{result=key_not_found} = %v, want 3", got)
	}

	// Malformed bodies with intact framing are answered under their ID,
	// and the connection goes on.
	valid, err := (&wire.Message{ID: 7001, Opcode: wire.OpPing}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  wire.Error
	}{
		{"version mismatch", append([]byte{2}, valid[1:]...), wire.ErrVersionMismatch},
		{"repeated opcode", frame(7001, []byte{0x11, 0, 1, 0xF1, 0x11, 0, 1, 0xF1}), wire.ErrFormat},
		{"no opcode", frame(7001, []byte{0x12, 0, 1, 'x'}), wire.ErrFormat},
		{"item past body", frame(7001, []byte{0x11, 0, 9, 0xF1}), wire.ErrFormat},
		{"empty body", frame(7001, nil), wire.ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan *wire.Message, 1)
			c.mu.Lock()
			c.waiting[7001] = ch
			c.mu.Unlock()
			if err := c.write(tc.frame); err != nil {
				t.Fatal(err)
			}
			resp, err := c.wait(ch)
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, resp, tc.want)
			if resp := mustDo(t, c, &wire.Message{Opcode: wire.OpPing}); resp.Opcode != wire.OpPong {
				t.Fatalf("ping after a malformed message answered %v", resp.Opcode)
			}
		})
	}
}

// frame builds a message with a raw body.
func frame(id uint32, body []byte) []byte {
	b := []byte{wire.VersionMajor, wire.VersionMinor, byte(len(body) >> 8), byte(len(body)), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	return append(b, body...)
}

// TestAuthorization checks that a client is refused the keys its rules
// do not give it, with "key not found" on the wire, a denial counted,
// and that SetAuthorizer changes the rules of open connections.
func TestAuthorization(t *testing.T) {
	k := keys(t)
	auth, err := keyserver.NewAuthorizer([]keyserver.Rule{
		{Clients: []string{"dns:edge-a.test"}, Keys: []string{"ski:" + fmt.Sprintf("%x", ski(t, k.ecdsa.Public()))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, keyserver.ServerOptions{Authorizer: auth})
	a, err := dialRaw(ts.addr, ts.pki, clientCert(t, ts.pki.clientCA, "edge-a.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	b, err := dialRaw(ts.addr, ts.pki, clientCert(t, ts.pki.clientCA, "edge-b.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	req := func() *wire.Message {
		return &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: digest(crypto.SHA256, []byte("x")), SKI: ski(t, k.ecdsa.Public())}
	}
	if err := mustDo(t, a, req()).ResponseError(); err != nil {
		t.Errorf("allowed client: %v", err)
	}
	wantError(t, mustDo(t, b, req()), wire.ErrKeyNotFound)
	wantError(t, mustDo(t, a, &wire.Message{Opcode: wire.OpEd25519Sign, Payload: []byte("m"), SKI: ski(t, k.ed25519.Public())}), wire.ErrKeyNotFound)
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_denials_total", nil); got != 2 {
		t.Errorf("denials_total = %v, want 2", got)
	}
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_requests_total", map[string]string{"result": "denied"}); got != 2 {
		t.Errorf("requests_total{result=denied} = %v, want 2", got)
	}

	ts.SetAuthorizer(keyserver.AllowAll())
	if err := mustDo(t, b, req()).ResponseError(); err != nil {
		t.Errorf("after SetAuthorizer: %v", err)
	}
}

// TestHandshakeRefused checks that clients without a certificate from
// the client CA never get to send a request.
func TestHandshakeRefused(t *testing.T) {
	ts := startServer(t, keyserver.ServerOptions{})
	otherCA, err := testpki.NewCA("some other CA")
	if err != nil {
		t.Fatal(err)
	}
	serverOnly, err := ts.pki.clientCA.Issue(testpki.LeafSpec{Names: []string{"edge.test"}}) // no client auth usage
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"no certificate", tls.Certificate{}},
		{"wrong CA", clientCert(t, otherCA, "edge.test")},
		{"server-only certificate", tls.Certificate{Certificate: serverOnly.Chain, PrivateKey: serverOnly.Key}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialRaw(ts.addr, ts.pki, tc.cert)
			if err != nil {
				return // refused during the handshake (TLS 1.2 behaviour)
			}
			defer c.close()
			// In TLS 1.3 the client learns of the refusal on its first read.
			if _, err := c.do(&wire.Message{Opcode: wire.OpPing}); err == nil {
				t.Fatal("request answered without a valid client certificate")
			}
		})
	}
	eventually(t, 5*time.Second, "3 handshake errors counted", func() bool {
		return testmetrics.Sum(t, ts.reg, "keyedge_keyserver_connections_total", map[string]string{"result": "handshake_error"}) == 3
	})
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_connections_total", map[string]string{"result": "ok"}); got != 0 {
		t.Errorf("connections_total{result=ok} = %v, want 0", got)
	}
}

func TestNewServerErrors(t *testing.T) {
	p := newPKI(t)
	src, _ := dirSource(t)
	for _, tc := range []struct {
		name string
		cfg  keyserver.ServerOptions
	}{
		{"no keys", keyserver.ServerOptions{TLSConfig: p.serverTLS()}},
		{"no TLS", keyserver.ServerOptions{Keys: src}},
		{"no client CAs", keyserver.ServerOptions{Keys: src, TLSConfig: &tls.Config{Certificates: []tls.Certificate{p.server}}}},
		{"no certificate", keyserver.ServerOptions{Keys: src, TLSConfig: &tls.Config{ClientCAs: x509.NewCertPool()}}},
	} {
		if _, err := keyserver.NewServer(tc.cfg); err == nil {
			t.Errorf("%s: NewServer succeeded", tc.name)
		}
	}
}

// mapSource serves fixed keys by SKI.
type mapSource map[[20]byte]crypto.Signer

func (m mapSource) Key(_ context.Context, r keyserver.KeyRef) (*keyserver.Key, error) {
	if len(r.SKI) == 20 {
		if s, ok := m[[20]byte(r.SKI)]; ok {
			return &keyserver.Key{Signer: s, SKI: [20]byte(r.SKI)}, nil
		}
	}
	return nil, keyserver.ErrKeyNotFound
}

// TestRSADecryptWithoutPrecomputation decrypts with a key that has no
// CRT values, which takes the plain c^d mod n path.
func TestRSADecryptWithoutPrecomputation(t *testing.T) {
	k := keys(t)
	bare := &rsa.PrivateKey{PublicKey: k.rsa.PublicKey, D: k.rsa.D, Primes: k.rsa.Primes}
	s := ski(t, bare.Public())
	ts := startServer(t, keyserver.ServerOptions{Keys: mapSource{[20]byte(s): bare}, AllowRSADecrypt: true})
	c := ts.client(t)
	secret := []byte("premaster")
	//lint:ignore SA1019 tests the Keyless SSL protocol's PKCS#1 v1.5 RSA-decrypt operation
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, &k.rsa.PublicKey, secret)
	if err != nil {
		t.Fatal(err)
	}
	resp := mustDo(t, c, &wire.Message{Opcode: wire.OpRSADecrypt, Payload: ct, SKI: s})
	if err := resp.ResponseError(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(resp.Payload), "\x00premaster") || len(resp.Payload) != k.rsa.Size() {
		t.Fatalf("decryption does not end with the plaintext: %x", resp.Payload)
	}
}
