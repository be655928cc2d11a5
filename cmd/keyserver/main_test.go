package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testlog"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/keyedge/keyedge/keystore"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"keyserver": main,
	})
}

// TestScript runs the keyserver binary end to end: each
// testdata/script/*.txtar is a session with expected output.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkworld": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 0 {
					ts.Fatalf("usage: mkworld")
				}
				addr, err := mkworld(ts.Getenv("WORK"))
				ts.Check(err)
				ts.Setenv("ADDR", addr)
			},
			"subst": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: subst FILE")
				}
				data, err := os.ReadFile(ts.MkAbs(args[0]))
				ts.Check(err)
				ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(os.Expand(string(data), ts.Getenv)), 0o600))
			},
			"sign": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: sign CLIENT")
				}
				res, err := sign(ts.Getenv("WORK"), ts.Getenv("ADDR"), args[0])
				ts.Check(err)
				fmt.Fprintln(ts.Stdout(), res)
			},
		},
	})
}

// mkworld writes a key server's world into dir: server.pem/.key and
// server-ca.pem (its identity and CA), edge-ca.pem and the client
// identities edge-a.pem/.key and edge-b.pem/.key, keys/shop.key and
// keys/shop.crt (a key and its certificate for shop.example), and the
// same certificate in a keystore (keystore/, fleet.key). It returns a
// free address on 127.0.0.1 to listen on.
func mkworld(dir string) (string, error) {
	serverCA, err := testpki.NewCA("test key server CA")
	if err != nil {
		return "", err
	}
	edgeCA, err := testpki.NewCA("test edge CA")
	if err != nil {
		return "", err
	}
	leaf := func(ca *testpki.CA, name string, client bool, base string) (*testpki.Leaf, error) {
		l, err := ca.Issue(testpki.LeafSpec{Names: []string{name}, ClientAuth: client})
		if err != nil {
			return nil, err
		}
		if base == "" {
			return l, nil
		}
		return l, writePEM(dir, base, l)
	}
	if _, err := leaf(serverCA, "keyserver.test", false, "server"); err != nil {
		return "", err
	}
	for _, e := range []string{"edge-a", "edge-b"} {
		if _, err := leaf(edgeCA, e+".test", true, e); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "server-ca.pem"), serverCA.CertPEM(), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "edge-ca.pem"), edgeCA.CertPEM(), 0o644); err != nil {
		return "", err
	}
	shop, err := leaf(serverCA, "shop.example", false, "")
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		return "", err
	}
	if err := writePEM(filepath.Join(dir, "keys"), "shop", shop); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(dir, "keys", "shop.pem"), filepath.Join(dir, "keys", "shop.crt")); err != nil {
		return "", err
	}

	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		return "", err
	}
	if err := keystore.WriteFleetKeyFile(filepath.Join(dir, "fleet.key"), fleet); err != nil {
		return "", err
	}
	ctx := context.Background()
	store, err := keystore.Open(ctx, keystore.Options{Storage: &certmagic.FileStorage{Path: filepath.Join(dir, "keystore")}, FleetKey: fleet})
	if err != nil {
		return "", err
	}
	defer store.Close()
	if _, err := store.Put(ctx, &keystore.Bundle{Meta: keystore.Meta{Tenant: "shop"}, Chain: shop.Chain, Key: shop.Key}); err != nil {
		return "", err
	}

	return proctest.PickFreeAddr()
}

// writePEM writes dir/base.pem (the chain) and dir/base.key (0600).
func writePEM(dir, base string, l *testpki.Leaf) error {
	return l.WritePEM(filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key"))
}

// sign connects to addr as client (dir/<client>.pem/.key), retrying
// for up to 10s while the server starts, asks for an ECDSA signature
// with the key serving shop.example, and returns "ok" if it verifies
// or the error the server answered.
func sign(dir, addr, client string) (string, error) {
	return request(dir, addr, client, wire.OpECDSASignSHA256)
}

// request is sign with the opcode op; an answer to an opcode other than
// an ECDSA signature is "ok" if it is not an error.
func request(dir, addr, client string, op wire.Op) (string, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, client+".pem"), filepath.Join(dir, client+".key"))
	if err != nil {
		return "", err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "server-ca.pem"))
	if err != nil {
		return "", err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	var conn *tls.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err = tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "keyserver.test"})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	digest := sha256.Sum256([]byte("end to end"))
	req, err := (&wire.Message{ID: 1, Opcode: op, Payload: digest[:], SNI: "shop.example"}).MarshalBinary()
	if err != nil {
		return "", err
	}
	if _, err := conn.Write(req); err != nil {
		return "", err
	}
	var buf []byte
	resp, _, err := wire.ReadMessage(conn, &buf)
	if err != nil {
		return "", err
	}
	if err := resp.ResponseError(); err != nil {
		return err.Error(), nil
	}
	if op != wire.OpECDSASignSHA256 {
		return "ok", nil
	}
	shop, err := tls.LoadX509KeyPair(filepath.Join(dir, "keys", "shop.crt"), filepath.Join(dir, "keys", "shop.key"))
	if err != nil {
		return "", err
	}
	if !ecdsa.VerifyASN1(shop.PrivateKey.(crypto.Signer).Public().(*ecdsa.PublicKey), digest[:], resp.Payload) {
		return "", fmt.Errorf("signature does not verify")
	}
	return "ok", nil
}

// TestReload runs the server in process and changes its rules with a
// reload (SIGHUP in main).
func TestReload(t *testing.T) {
	dir := t.TempDir()
	addr, err := mkworld(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keyserver.yaml")
	write := func(clients string, extra ...string) {
		cfg := fmt.Sprintf("listen: %s\ncert_file: server.pem\nkey_file: server.key\nclient_ca_file: edge-ca.pem\nkeys_dir: keys\nlog_level: debug\n"+
			"authorize:\n  - clients: [%s]\n    keys: [\"name:shop.example\"]\n", addr, clients) + strings.Join(extra, "")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`"dns:edge-a.test"`)
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan os.Signal, 1)
	logs := &testlog.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", path}, io.Discard, logs, reload) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("run exited %d; log:\n%s", code, logs)
		}
	}()
	check := func(client, want string) {
		t.Helper()
		got, err := sign(dir, addr, client)
		if err != nil || got != want {
			t.Fatalf("sign as %s: %q, %v; want %q; log:\n%s", client, got, err, want, logs)
		}
	}
	check("edge-a", "ok")
	check("edge-b", "keyless: key not found")

	reloads := func() int {
		return len(regexp.MustCompile("config reloaded").FindAllString(logs.String(), -1))
	}
	write(`"dns:edge-a.test", "dns:edge-b.test"`)
	reload <- syscall.SIGHUP
	waitFor(t, func() bool { return reloads() == 1 }, logs)
	check("edge-b", "ok")

	// A file that also changes a setting SIGHUP cannot apply is refused
	// whole, naming it: the rules stay.
	write(`"dns:edge-a.test"`, "max_in_flight: 8\n")
	reload <- syscall.SIGHUP
	waitFor(t, func() bool { return regexp.MustCompile(`reload refused.*max_in_flight`).MatchString(logs.String()) }, logs)
	check("edge-b", "ok")

	// A bad file changes nothing.
	write(`"edge-b.test"`)
	reload <- syscall.SIGHUP
	waitFor(t, func() bool { return regexp.MustCompile("reload failed").MatchString(logs.String()) }, logs)
	check("edge-b", "ok")
	if !regexp.MustCompile(`level=WARN msg="keyserver: client not authorized for key" client=cn:edge-b.test`).MatchString(logs.String()) {
		t.Errorf("denial not logged with the client identity; log:\n%s", logs)
	}
}

func waitFor(t *testing.T, cond func() bool, logs fmt.Stringer) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out; log:\n%s", logs)
		}
	}
}

// TestKeyServerDefaults runs the server in process from configurations
// that differ in what it allows, over real mutual TLS: without an
// authorize section it denies every client, authorize_all (named, and
// warned about at start) allows them all, and raw RSA decryption is off
// unless allow_rsa_decrypt is set (then the request reaches the key,
// which is not RSA: a crypto error).
func TestKeyServerDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, settings string
		op             wire.Op
		want, log      string
	}{
		{"no authorize", "", wire.OpECDSASignSHA256, "keyless: key not found",
			`level=WARN msg="keyserver: no authorize rules: every request is denied`},
		{"empty authorize", "authorize: []\n", wire.OpECDSASignSHA256, "keyless: key not found",
			`level=WARN msg="keyserver: no authorize rules: every request is denied`},
		{"authorize_all", "authorize_all: true\n", wire.OpECDSASignSHA256, "ok",
			`level=WARN msg="keyserver: authorize_all: every client with a certificate from client_ca_file may use every key"`},
		{"rsa decrypt off", "authorize_all: true\n", wire.OpRSADecrypt, "keyless: bad opcode",
			`level=WARN msg="keyserver: raw RSA decryption refused: not enabled" client=cn:edge-a.test`},
		{"rsa decrypt on", "authorize_all: true\nallow_rsa_decrypt: true\n", wire.OpRSADecrypt, "keyless: cryptography failure",
			`level=WARN msg="keyserver: allow_rsa_decrypt: raw RSA decryption (a variable-time private key operation) is served"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr, err := mkworld(dir)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "keyserver.yaml")
			cfg := fmt.Sprintf("listen: %s\ncert_file: server.pem\nkey_file: server.key\nclient_ca_file: edge-ca.pem\nkeys_dir: keys\n%s", addr, tc.settings)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			logs := &testlog.Buffer{}
			done := make(chan int, 1)
			go func() { done <- run(ctx, []string{"--config", path}, io.Discard, logs, nil) }()
			got, err := request(dir, addr, "edge-a", tc.op)
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("run exited %d", code)
			}
			if err != nil || got != tc.want {
				t.Errorf("request: %q, %v; want %q", got, err, tc.want)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %s", tc.log)
			}
			if t.Failed() {
				t.Logf("log:\n%s", logs)
			}
		})
	}
}
