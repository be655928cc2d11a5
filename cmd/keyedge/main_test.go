package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/keystore"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"keyedge": main,
	})
}

// TestScript runs the keyedge binary end to end: testdata/script/*.txtar.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkworld":          mkworld,
			"fetch":            fetch,
			"restartunderload": restartUnderLoad,
		},
	})
}

// mkworld N writes into the work dir a keystore of N tenants
// (t<i>.keyedge.test), fleet.key, testca.pem, fallback.pem/.key and an
// edge.yaml listening on a free port (recorded in $EDGE), and starts an
// origin for them that lives as long as the script.
func mkworld(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkworld N")
	}
	var n int
	if _, err := fmt.Sscan(args[0], &n); err != nil {
		ts.Fatalf("mkworld: %v", err)
	}
	dir := ts.Getenv("WORK")
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin %s", r.Header.Get("X-Forwarded-Host"))
	}))
	ts.Defer(origin.Close)

	fleet, err := keystore.GenerateFleetKey()
	ts.Check(err)
	ts.Check(keystore.WriteFleetKeyFile(filepath.Join(dir, "fleet.key"), fleet))
	ca, err := certs.NewCA("script CA")
	ts.Check(err)
	ts.Check(ca.Write(filepath.Join(dir, "testca.pem"), filepath.Join(dir, "testca.key")))
	fallback, err := ca.Issue(certs.LeafSpec{Names: []string{"fallback.invalid"}})
	ts.Check(err)
	ts.Check(fallback.WritePEM(filepath.Join(dir, "fallback.pem"), filepath.Join(dir, "fallback.key")))

	store, err := keystore.Open(context.Background(), keystore.Options{
		Storage:  &certmagic.FileStorage{Path: filepath.Join(dir, "keystore")},
		FleetKey: fleet, Logger: slog.New(slog.DiscardHandler),
	})
	ts.Check(err)
	defer store.Close()
	ts.Check(ca.GenerateTenants(context.Background(), store, certs.TenantSpec{Count: n, Origin: origin.URL}, nil))

	addr, err := freeAddr("127.0.0.1:0")
	ts.Check(err)
	ts.Setenv("EDGE", addr)
	cfg := fmt.Sprintf("listen: %s\nmetrics_listen: \"off\"\nkeystore: keystore\nfleet_key_file: fleet.key\nlimits:\n  drain_timeout: 5s\n", addr)
	ts.Check(os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(cfg), 0o600))
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

// restartUnderLoad PIDFILE N makes N requests to the edge at $EDGE from
// four clients, two opening a new connection (and TLS handshake) per
// request and two keeping connections alive, and SIGUSR2s the edge (the
// PID in PIDFILE) after the first quarter. It waits for PIDFILE to name
// a new process and for the old one to exit before the last quarter, so
// requests run before, during and after the swap, and fails if any
// request failed. Both processes are killed when the script ends.
//
// The edge must run detached with its output in a file (sh -c '… &'):
// the new process inherits the old one's standard streams, so a pipe
// to testscript would never close.
func restartUnderLoad(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: restartunderload PIDFILE N")
	}
	var n int
	if _, err := fmt.Sscan(args[1], &n); err != nil {
		ts.Fatalf("restartunderload: %v", err)
	}
	pidFile := ts.MkAbs(args[0])
	readPID := func() int {
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		return pid
	}
	oldPID := readPID()
	for deadline := time.Now().Add(10 * time.Second); oldPID == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		oldPID = readPID()
	}
	if oldPID == 0 {
		ts.Fatalf("no PID in %s", pidFile)
	}
	ts.Defer(func() { syscall.Kill(oldPID, syscall.SIGKILL) })
	roots, err := certs.ReadCertPool(ts.MkAbs("testca.pem"))
	ts.Check(err)
	edgeAddr := ts.Getenv("EDGE")
	client := func(keepAlive bool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			DisableKeepAlives: !keepAlive,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, edgeAddr)
			},
		}}
	}
	var next, done, failed atomic.Int64
	var firstErr atomic.Value
	swapped := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		c := client(i%2 == 0)
		wg.Go(func() {
			defer c.CloseIdleConnections()
			for {
				k := next.Add(1)
				if k > int64(n) {
					return
				}
				if k == int64(3*n/4) {
					<-swapped // hold the last quarter until the old process is gone
				}
				host := fmt.Sprintf("t%d.keyedge.test", k%3)
				resp, err := c.Get("https://" + host + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("request %d (keep-alive %v): %w", k, i%2 == 0, err))
				}
				done.Add(1)
			}
		})
	}
	for done.Load() < int64(n/4) {
		time.Sleep(time.Millisecond)
	}
	ts.Check(syscall.Kill(oldPID, syscall.SIGUSR2))
	deadline := time.Now().Add(30 * time.Second)
	newPID := 0
	for ; time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if newPID = readPID(); newPID != oldPID && newPID != 0 && exited(oldPID) {
			break
		}
	}
	close(swapped)
	wg.Wait()
	if newPID == oldPID || !exited(oldPID) {
		ts.Fatalf("no new process took over within 30s (PID file says %d, old %d)", newPID, oldPID)
	}
	ts.Defer(func() { syscall.Kill(newPID, syscall.SIGKILL) })
	fmt.Fprintf(ts.Stdout(), "%d requests, %d failed; PID %d replaced by %d\n", done.Load(), failed.Load(), oldPID, newPID)
	if failed.Load() > 0 {
		ts.Fatalf("%d of %d requests failed during the restart; first: %v", failed.Load(), done.Load(), firstErr.Load())
	}
}

// exited reports whether process pid has exited (or is a zombie its
// parent, the script, has not reaped yet).
func exited(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}
