package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/rsasigner"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keystore"
)

// TestRSATenantSignedByOpenSSL: an edge whose keystore wraps RSA keys
// with rsasigner's OpenSSL backend (as rsa_signer: auto does where
// libcrypto loads) serves an RSA tenant over TLS 1.3 (RSA-PSS) and TLS
// 1.2 (ECDHE-RSA) to Go's client and to openssl s_client, which verify
// the handshake signatures, and the tenant's key signs through OpenSSL.
func TestRSATenantSignedByOpenSSL(t *testing.T) {
	signers, err := rsasigner.New(rsasigner.Options{Backend: rsasigner.OpenSSL, Logger: slog.New(slog.DiscardHandler)})
	if errors.Is(err, rsasigner.ErrUnavailable) && os.Getenv("KEYEDGE_REQUIRE_OPENSSL") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	w := openWorld(t, 0)
	ctx := context.Background()
	if w.store, err = w.OpenStore(ctx, keystore.Options{PollInterval: 50 * time.Millisecond, Signer: signers.Wrap}); err != nil {
		t.Fatal(err)
	}
	w.startEdge(t, Options{})
	const host = "rsa.example.com"
	w.put(t, testpki.RSA2048, w.OriginURL, host)

	tls12 := func(c *tls.Config) {
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	}
	for _, tt := range []struct {
		name    string
		cfg     func(*tls.Config)
		version uint16
	}{
		{"TLS 1.3", func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }, tls.VersionTLS13},
		{"TLS 1.2", tls12, tls.VersionTLS12},
	} {
		cfg := w.tlsConfig(host)
		tt.cfg(cfg)
		conn, err := w.handshake(cfg)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if v := conn.ConnectionState().Version; v != tt.version {
			t.Errorf("%s: negotiated %x", tt.name, v)
		}
		conn.Close()
	}

	e, err := w.store.Lookup(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := e.Certs[0].Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := signer.(*rsasigner.Signer); !ok {
		t.Errorf("the tenant's key signs with a %T, not OpenSSL", signer)
	}

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl command here")
	}
	for _, version := range []string{"-tls1_3", "-tls1_2"} {
		cmd := exec.Command(openssl, "s_client", "-connect", w.addr, "-servername", host, version,
			"-CAfile", filepath.Join(w.Dir, testworld.CAFile), "-verify_return_error", "-brief")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verification: OK") {
			t.Errorf("openssl s_client %s: %v\n%s", version, err, out)
		}
	}
}
