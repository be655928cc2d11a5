package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keyserver"
)

// reloadEdge is a keyedge serve process over a test world, with the
// helpers the reload tests share.
type reloadEdge struct {
	t      *testing.T
	w      *testworld.World
	addr   string // the edge's TLS address
	config string // its edge.yaml
	p      *proctest.Process
	hups   int // SIGHUPs sent, for waiting on each one's outcome
}

// startReloadEdge writes edge.yaml (the listen, metrics, keystore and
// fleet key lines, then extra) and starts keyedge serve with it.
func startReloadEdge(t *testing.T, w *testworld.World, extra string) *reloadEdge {
	t.Helper()
	bin, err := exec.LookPath("keyedge") // testscript.Main put the test binary there
	if err != nil {
		t.Fatal(err)
	}
	e := &reloadEdge{t: t, w: w, addr: proctest.FreeAddr(t), config: w.Path("edge.yaml")}
	e.write(extra)
	e.p = proctest.Start(t, "keyedge", w.Dir, bin, "serve", "--config", e.config)
	proctest.WaitListening(t, e.addr, 20*time.Second)
	return e
}

// write replaces edge.yaml: the base lines, then extra.
func (e *reloadEdge) write(extra string) {
	e.t.Helper()
	base := fmt.Sprintf("listen: %s\nmetrics_listen: \"off\"\nkeystore: keystore\nfleet_key_file: fleet.key\nlimits:\n  drain_timeout: 5s\n", e.addr)
	if err := os.WriteFile(e.config, []byte(base+extra), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// hup sends SIGHUP and waits for the reload's outcome to be logged;
// it returns the lines logged about it.
func (e *reloadEdge) hup() string {
	e.t.Helper()
	e.hups++
	e.p.Signal(e.t, syscall.SIGHUP)
	var lines []string
	proctest.Eventually(e.t, 20*time.Second, fmt.Sprintf("reload #%d logged", e.hups), func() bool {
		lines = nil
		for _, line := range strings.Split(e.p.Output(e.t), "\n") {
			if strings.Contains(line, "reload") {
				lines = append(lines, line)
			}
		}
		return len(lines) >= e.hups
	})
	return lines[e.hups-1]
}

// handshake makes a TLS handshake with the edge for name, at most at
// version maxVersion (0: any).
func (e *reloadEdge) handshake(name string, maxVersion uint16) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: e.w.Roots, MaxVersion: maxVersion}}
	c, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// TestReloadTLSVersion: SIGHUP applies min_tls_version, checked with real
// handshakes; a change SIGHUP cannot apply (listen) refuses the whole
// reload, naming the setting and SIGUSR2, and the running config keeps
// serving; a file that does not load changes nothing and says why.
func TestReloadTLSVersion(t *testing.T) {
	w := testworld.ForTest(t, testworld.Options{})
	if err := w.GenerateTenants(context.Background(), testpki.TenantSpec{Count: 1}); err != nil {
		t.Fatal(err)
	}
	e := startReloadEdge(t, w, "")
	if err := e.handshake("t0.keyedge.test", tls.VersionTLS12); err != nil {
		t.Fatalf("TLS 1.2 handshake before the reload: %v", err)
	}

	e.write("min_tls_version: \"1.3\"\n")
	if line := e.hup(); !strings.Contains(line, "config reloaded") {
		t.Fatalf("reload to min_tls_version 1.3 logged %q, want config reloaded", line)
	}
	if err := e.handshake("t0.keyedge.test", tls.VersionTLS12); err == nil {
		t.Fatal("TLS 1.2 handshake succeeded after reloading min_tls_version: \"1.3\"")
	}
	if err := e.handshake("t0.keyedge.test", 0); err != nil {
		t.Fatalf("TLS 1.3 handshake after the reload: %v", err)
	}

	// listen cannot change on SIGHUP: nothing of the file is applied,
	// min_tls_version 1.2 included.
	running := e.addr
	e.addr = proctest.FreeAddr(t)
	e.write("min_tls_version: \"1.2\"\n")
	line := e.hup()
	for _, want := range []string{"reload refused", "listen", "SIGUSR2"} {
		if !strings.Contains(line, want) {
			t.Errorf("reload changing listen logged %q, want it to say %q", line, want)
		}
	}
	if strings.Contains(line, "min_tls_version") {
		t.Errorf("reload refusal %q names min_tls_version, which SIGHUP can apply", line)
	}
	e.addr = running
	if err := e.handshake("t0.keyedge.test", tls.VersionTLS12); err == nil {
		t.Error("TLS 1.2 handshake succeeded: the refused reload applied min_tls_version")
	}
	if err := e.handshake("t0.keyedge.test", 0); err != nil {
		t.Errorf("handshake after the refused reload: %v", err)
	}

	// A file that does not load changes nothing and says why.
	e.write("min_tls_version: \"1.2\"\nlimits:\n  max_conns: -1\n")
	line = e.hup()
	for _, want := range []string{"reload failed", "limits"} {
		if !strings.Contains(line, want) {
			t.Errorf("reload of a bad file logged %q, want it to say %q", line, want)
		}
	}
	if err := e.handshake("t0.keyedge.test", tls.VersionTLS12); err == nil {
		t.Error("TLS 1.2 handshake succeeded: the bad file was applied")
	}
}

// TestReloadKeyless: SIGHUP applies the keyless section. The edge starts
// trusting the wrong CA for its key servers, so a keyless tenant's
// handshake fails; once ca_file names the right one and the edge is
// sent SIGHUP, it succeeds.
func TestReloadKeyless(t *testing.T) {
	w := testworld.ForTest(t, testworld.Options{})
	leaf, err := w.CA.Issue(testpki.LeafSpec{Names: []string{"k.keyless.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.HoldKey("k", leaf); err != nil {
		t.Fatal(err)
	}
	ks, err := w.StartKeyServer(testworld.KeyServer{Name: "ks.keyless.test", Rule: keyserver.Rule{Clients: []string{"dns:edge.keyless.test"}, Keys: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutKeyless(context.Background(), "k", leaf, ks); err != nil {
		t.Fatal(err)
	}
	id, err := w.ClientIdentity("edge.keyless.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := id.WritePEM(w.Path("edge-id.pem"), w.Path("edge-id.key")); err != nil {
		t.Fatal(err)
	}
	keyless := func(ca string) string {
		return "keyless:\n  cert_file: edge-id.pem\n  key_file: edge-id.key\n  ca_file: " + ca + "\n"
	}
	e := startReloadEdge(t, w, keyless(testworld.CAFile)) // the tenants' CA, not the key servers'
	if err := e.handshake("k.keyless.test", 0); err == nil {
		t.Fatal("keyless handshake succeeded with the wrong key server CA")
	}
	e.write(keyless(testworld.IdentityCAFile))
	if line := e.hup(); !strings.Contains(line, "config reloaded") {
		t.Fatalf("reload of keyless.ca_file logged %q, want config reloaded", line)
	}
	if err := e.handshake("k.keyless.test", 0); err != nil {
		t.Fatalf("keyless handshake after reloading keyless.ca_file: %v", err)
	}
}
