package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(proctest.M(m), map[string]func(){
		"keyedge": main,
	})
}

// TestScript runs the keyedge binary end to end: testdata/script/*.txtar.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkworld": mkworld,
			"fetch":   fetch,
		},
	})
}

// mkworld N builds the shared test world (internal/testworld) in the
// work dir with a keystore of N tenants (t<i>.keyedge.test), and adds
// fallback.pem/.key and an edge.yaml listening on a free port (recorded
// in $EDGE); its origin lives as long as the script.
func mkworld(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkworld N")
	}
	var n int
	if _, err := fmt.Sscan(args[0], &n); err != nil {
		ts.Fatalf("mkworld: %v", err)
	}
	w, err := testworld.New(context.Background(), testworld.Options{
		Dir:  ts.Getenv("WORK"),
		Name: "script",
		Origin: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(rw, "origin %s", r.Header.Get("X-Forwarded-Host"))
		}),
	})
	ts.Check(err)
	ts.Defer(func() { w.Close() })
	fallback, err := w.CA.Issue(testpki.LeafSpec{Names: []string{"fallback.invalid"}})
	ts.Check(err)
	ts.Check(fallback.WritePEM(w.Path("fallback.pem"), w.Path("fallback.key")))
	ts.Check(w.GenerateTenants(context.Background(), testpki.TenantSpec{Count: n}))

	addr, err := proctest.PickFreeAddr()
	ts.Check(err)
	ts.Setenv("EDGE", addr)
	cfg := fmt.Sprintf("listen: %s\nmetrics_listen: \"off\"\nkeystore: keystore\nfleet_key_file: fleet.key\nlimits:\n  drain_timeout: 5s\n", addr)
	ts.Check(os.WriteFile(w.Path("edge.yaml"), []byte(cfg), 0o600))
}

// fetch SNI [HOST] GETs https://HOST/ from the edge at $EDGE with SNI
// (empty: none), retrying for a few seconds while the edge starts, and
// writes the status, the served certificate's name and the body to
// stdout. With !, it expects every attempt to fail.
func fetch(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: fetch SNI [HOST]")
	}
	sni, host := args[0], args[0]
	if len(args) == 2 {
		host = args[1]
	}
	pemBytes, err := os.ReadFile(ts.MkAbs("testca.pem"))
	ts.Check(err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	edgeAddr := ts.Getenv("EDGE")
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: sni, RootCAs: roots, InsecureSkipVerify: sni == ""},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, edgeAddr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var lastErr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get("https://" + cmp.Or(host, "127.0.0.1") + "/")
		if err != nil {
			lastErr = err
			if neg && !strings.Contains(err.Error(), "connection refused") {
				break // the edge is up and refused us: that is the expected failure
			}
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if neg {
			ts.Fatalf("fetch %s: succeeded with %s", sni, resp.Status)
		}
		fmt.Fprintf(ts.Stdout(), "%d %s %s\n", resp.StatusCode, resp.TLS.PeerCertificates[0].Subject.CommonName, body)
		return
	}
	if !neg {
		ts.Fatalf("fetch %s: %v", sni, lastErr)
	}
	fmt.Fprintf(ts.Stdout(), "refused: %v\n", lastErr)
}
