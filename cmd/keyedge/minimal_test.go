package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
)

// TestMinimalConfig runs edge/testdata/edge-minimal.yaml as its comment
// says, after keyctl init and keyctl import, with only its two addresses
// moved to free ports: check-config passes, keyedge serve starts, and a
// request through a real handshake reaches the tenant's origin.
func TestMinimalConfig(t *testing.T) {
	keyctl := proctest.Build(t, "cmd/keyctl")[0]
	dir := t.TempDir()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "origin of ", r.Header.Get("X-Forwarded-Host"))
	}))
	defer origin.Close()
	ca, err := testpki.NewCA("minimal test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"shop.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.WritePEM(filepath.Join(dir, "chain.pem"), filepath.Join(dir, "key.pem")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init"},
		{"import", "--cert", "chain.pem", "--key", "key.pem", "--tenant", "shop", "--origin", origin.URL},
	} {
		cmd := exec.Command(keyctl, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("keyctl %s: %v\n%s", args[0], err, out)
		}
	}

	data, err := os.ReadFile("../../edge/testdata/edge-minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	addr := proctest.FreeAddr(t)
	cfg := strings.NewReplacer("127.0.0.1:8443", addr, "127.0.0.1:9090", proctest.FreeAddr(t)).Replace(string(data))
	if cfg == string(data) {
		t.Fatal("edge-minimal.yaml no longer listens on 127.0.0.1:8443 and 127.0.0.1:9090: update this test")
	}
	// The plain-HTTP listener, without ACME: it redirects to https.
	plain := proctest.FreeAddr(t)
	cfg += "\nhttp_listen: " + plain + "\n"
	path := filepath.Join(dir, "edge-minimal.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	bin, err := exec.LookPath("keyedge")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check-config", "--config", path).CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("keyedge check-config: %v\n%s", err, out)
	}
	proctest.Start(t, "keyedge", dir, bin, "serve", "--config", path)
	proctest.WaitListening(t, addr, 20*time.Second)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	resp, err := client.Get("https://shop.example/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "origin of shop.example" {
		t.Fatalf("GET https://shop.example/ = %d %q, want 200 from its origin", resp.StatusCode, body)
	}

	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest(http.MethodGet, "http://"+plain+"/cart?id=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.example"
	resp, err = noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "https://shop.example/cart?id=1" {
		t.Errorf("GET http://shop.example/cart?id=1 on http_listen = %d, Location %q; want 301 to https://shop.example/cart?id=1", resp.StatusCode, loc)
	}
}
