package keyserver_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testlog"
	"github.com/keyedge/keyedge/internal/testmetrics"

	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// TestNilAuthorizerDenies: a Server given no Authorizer lets no client
// use any key (fail closed), over a real mutual TLS connection.
func TestNilAuthorizerDenies(t *testing.T) {
	k := keys(t)
	p := newPKI(t)
	src, _ := dirSource(t)
	reg := prometheus.NewPedanticRegistry()
	srv, err := keyserver.NewServer(keyserver.ServerOptions{Keys: src, TLSConfig: p.serverTLS(), Logger: quietLogger(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c, err := dialRaw(ln.Addr().String(), p, clientCert(t, p.clientCA, "edge.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	req := &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: digest(crypto.SHA256, []byte("x")), SKI: ski(t, k.ecdsa.Public())}
	wantError(t, mustDo(t, c, req), wire.ErrKeyNotFound)
	if got := testmetrics.Sum(t, reg, "keyedge_keyserver_denials_total", nil); got != 1 {
		t.Errorf("denials_total = %v, want 1", got)
	}
}

// TestRSADecryptOffByDefault: the raw RSA decryption opcode is answered
// "bad opcode", as the reference server answers an operation it does
// not serve, and counted, unless ServerOptions.AllowRSADecrypt is set.
func TestRSADecryptOffByDefault(t *testing.T) {
	k := keys(t)
	ts := startServer(t, keyserver.ServerOptions{})
	c := ts.client(t)
	//lint:ignore SA1019 tests the Keyless SSL protocol's PKCS#1 v1.5 RSA-decrypt operation
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, &k.rsa.PublicKey, []byte("premaster"))
	if err != nil {
		t.Fatal(err)
	}
	req := func() *wire.Message {
		return &wire.Message{Opcode: wire.OpRSADecrypt, Payload: ct, SKI: ski(t, k.rsa.Public())}
	}
	wantError(t, mustDo(t, c, req()), wire.ErrBadOpcode)
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_requests_total", map[string]string{"op": "rsa-decrypt", "result": "disabled"}); got != 1 {
		t.Errorf("requests_total{op=rsa-decrypt,result=disabled} = %v, want 1", got)
	}
	// Signing is unaffected.
	if err := mustDo(t, c, &wire.Message{Opcode: wire.OpRSASignSHA256, Payload: digest(crypto.SHA256, []byte("x")), SKI: ski(t, k.rsa.Public())}).ResponseError(); err != nil {
		t.Errorf("RSA signature with decryption off: %v", err)
	}
	on := startServer(t, keyserver.ServerOptions{AllowRSADecrypt: true})
	if err := mustDo(t, on.client(t), req()).ResponseError(); err != nil {
		t.Errorf("with AllowRSADecrypt: %v", err)
	}
}

// TestDenialLogsRateLimited: a burst of denials is counted in full but
// logged once, not once per request.
func TestDenialLogsRateLimited(t *testing.T) {
	k := keys(t)
	none, err := keyserver.NewAuthorizer(nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	// An hour between lines, so the burst fits in one interval however
	// slow the machine.
	ts := startServer(t, keyserver.ServerOptions{Authorizer: none, LogInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c := ts.client(t)
	for range 100 {
		req := &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: digest(crypto.SHA256, []byte("x")), SKI: ski(t, k.ecdsa.Public())}
		wantError(t, mustDo(t, c, req), wire.ErrKeyNotFound)
	}
	if got := testmetrics.Sum(t, ts.reg, "keyedge_keyserver_denials_total", nil); got != 100 {
		t.Errorf("denials_total = %v, want 100", got)
	}
	if got := logs.Lines("not authorized"); len(got) == 0 || len(got) > 2 {
		t.Errorf("100 denials logged in %d lines, want 1 or 2:\n%s", len(got), strings.Join(got, "\n"))
	}
}
