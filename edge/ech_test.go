package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const echPublicName = "ech.keyedge.test"

// echWorld is a world with tenants t0…t3.keyedge.test and a certificate
// for the public name, served by an edge with ECH keys from secretA on
// the returned clock.
func echWorld(t *testing.T) (*world, *ECHKeys, *testclock.Clock) {
	t.Helper()
	clock := testclock.New(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	ech := &ECHKeys{PublicName: echPublicName, Secret: secretA, Now: clock.Now}
	w := openWorld(t, 4)
	w.put(t, testpki.ECDSAP256, w.OriginURL, echPublicName)
	w.startEdge(t, Options{ECH: ech})
	return w, ech, clock
}

// publication is ech's Publication at t, or the test fails.
func publication(t *testing.T, ech *ECHKeys, at time.Time) ECHPublication {
	t.Helper()
	p, err := ech.Publication(at)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// recordingConn keeps a copy of every byte written to its connection:
// what went on the wire from the client.
type recordingConn struct {
	net.Conn
	sent bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.sent.Write(p)
	return c.Conn.Write(p)
}

// echDial makes a TLS handshake with the edge at addr for serverName,
// offering ECH with configList (none if nil), and returns the
// connection (nil on error) and the bytes the client sent.
func (w *world) echDial(t *testing.T, addr, serverName string, configList []byte) (*tls.Conn, []byte, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingConn{Conn: raw}
	cfg := w.tlsConfig(serverName)
	cfg.NextProtos = []string{"http/1.1"}
	if configList != nil {
		cfg.EncryptedClientHelloConfigList = configList
		cfg.MinVersion = tls.VersionTLS13
	}
	conn := tls.Client(rec, cfg)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		conn.Close()
		return nil, rec.sent.Bytes(), err
	}
	return conn, rec.sent.Bytes(), nil
}

// outerServerName reads the server name of the ClientHello at the start
// of sent, the bytes a client put on the wire, with crypto/tls's own
// parser: a server without ECH keys sees the outer ClientHello.
func outerServerName(t *testing.T, sent []byte) string {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		client.Write(sent)
		client.Close()
	}()
	var name string
	errSeen := errors.New("seen")
	err := tls.Server(server, &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		name = hello.ServerName
		return nil, errSeen
	}}).Handshake()
	if !errors.Is(err, errSeen) {
		t.Fatalf("the bytes sent do not start with a ClientHello: %v", err)
	}
	return name
}

// getOverConn sends a GET for host on conn and returns the response body.
func getOverConn(t *testing.T, conn *tls.Conn, host string) string {
	t.Helper()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// wantECHCount waits for the edge's count of handshakes with the ECH
// result to reach n (the server counts a handshake when it has read the
// client's Finished, which may be after the client returns), and fails
// if it goes past.
func (w *world) wantECHCount(t *testing.T, result string, n float64) {
	t.Helper()
	count := func() float64 { return testutil.ToFloat64(w.srv.metrics.ech.WithLabelValues(result)) }
	eventually(t, 10*time.Second, fmt.Sprintf("%v handshakes counted with ECH %s", n, result), func() bool { return count() >= n })
	if got := count(); got != n {
		t.Errorf("handshakes with ECH %s: %v, want %v", result, got, n)
	}
}

// TestECHReachesTenant: a client with the published config reaches the
// tenant it asked for, whose name is nowhere in what it sent: the outer
// ClientHello names the public name.
func TestECHReachesTenant(t *testing.T) {
	w, ech, clock := echWorld(t)
	p := publication(t, ech, clock.Now())
	const tenant = "t2.keyedge.test"
	conn, sent, err := w.echDial(t, w.addr, tenant, p.Current)
	if err != nil {
		t.Fatalf("handshake with the published config: %v", err)
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	if !cs.ECHAccepted {
		t.Error("ECH not accepted")
	}
	if leaf := cs.PeerCertificates[0]; leaf.Subject.CommonName != tenant {
		t.Errorf("served the certificate of %q, want the tenant's", leaf.Subject.CommonName)
	}
	if got := outerServerName(t, sent); got != echPublicName {
		t.Errorf("outer SNI %q, want the public name %q", got, echPublicName)
	}
	if bytes.Contains(sent, []byte(tenant)) || bytes.Contains(sent, []byte("t2.")) {
		t.Error("the tenant's name is in the clear in what the client sent")
	}
	if body := getOverConn(t, conn, tenant); body != "origin "+tenant {
		t.Errorf("response %q, want the tenant's origin", body)
	}
	w.wantECHCount(t, "accepted", 1)
}

// TestECHWithoutConfig: a client without ECH is served as before; the
// public name is served like a tenant.
func TestECHWithoutConfig(t *testing.T) {
	w, _, _ := echWorld(t)
	for _, name := range []string{"t1.keyedge.test", echPublicName} {
		conn, sent, err := w.echDial(t, w.addr, name, nil)
		if err != nil {
			t.Fatalf("%s without ECH: %v", name, err)
		}
		cs := conn.ConnectionState()
		if cs.ECHAccepted || cs.PeerCertificates[0].Subject.CommonName != name {
			t.Errorf("%s without ECH: ECHAccepted %v, served %q", name, cs.ECHAccepted, cs.PeerCertificates[0].Subject.CommonName)
		}
		if got := outerServerName(t, sent); got != name {
			t.Errorf("SNI %q, want %q", got, name)
		}
		conn.Close()
	}
	w.wantECHCount(t, "none", 2)
}

// TestECHUnknownInnerName: an inner name no tenant has is refused as it
// is without ECH, and the public name's certificate is not served for it.
func TestECHUnknownInnerName(t *testing.T) {
	w, ech, clock := echWorld(t)
	_, _, err := w.echDial(t, w.addr, "nobody.keyedge.test", publication(t, ech, clock.Now()).Current)
	if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Fatalf("handshake for an unknown inner name: %v, want unrecognized name", err)
	}
}

// TestECHRotation: a config is accepted from the epoch before its own
// through the epoch after (Accept 1), on every node of the fleet; an
// older or newer one is rejected with the current config as retry
// config, and the client succeeds with that.
func TestECHRotation(t *testing.T) {
	w, ech, clock := echWorld(t)
	// A second node of the fleet: the same secret, its own ECHKeys.
	other, err := NewServer(Options{Store: w.openStore(t), ECH: &ECHKeys{PublicName: echPublicName, Secret: secretA, Now: clock.Now}})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]string{"node A": w.addr, "node B": serve(t, other)}
	now := clock.Now()
	current := publication(t, ech, now).Current
	const tenant = "t3.keyedge.test"
	for _, tc := range []struct {
		epochs int // of the client's config, from now
		want   bool
	}{{-2, false}, {-1, true}, {0, true}, {1, true}, {2, false}} {
		stale := publication(t, ech, now.Add(time.Duration(tc.epochs)*24*time.Hour)).Current
		for node, addr := range nodes {
			conn, _, err := w.echDial(t, addr, tenant, stale)
			if tc.want {
				if err != nil || !conn.ConnectionState().ECHAccepted {
					t.Errorf("%s, config of epoch %+d: %v, want accepted", node, tc.epochs, err)
				}
				if conn != nil {
					conn.Close()
				}
				continue
			}
			var rejected *tls.ECHRejectionError
			if !errors.As(err, &rejected) {
				t.Fatalf("%s, config of epoch %+d: %v, want ECH rejected", node, tc.epochs, err)
			}
			if !bytes.Equal(rejected.RetryConfigList, current) {
				t.Errorf("%s, config of epoch %+d: retry configs %x, want the current config list %x", node, tc.epochs, rejected.RetryConfigList, current)
			}
			conn, _, err = w.echDial(t, addr, tenant, rejected.RetryConfigList)
			if err != nil || !conn.ConnectionState().ECHAccepted {
				t.Fatalf("%s, retry with the retry configs: %v", node, err)
			}
			conn.Close()
		}
	}
	w.wantECHCount(t, "rejected", 2)
}

// TestECHSecretRotation: a node given a new secret with the old one as
// Previous still accepts the old secret's configs, and sends the new
// secret's for retry.
func TestECHSecretRotation(t *testing.T) {
	w, ech, clock := echWorld(t)
	rotated := &ECHKeys{PublicName: echPublicName, Secret: secretB, Previous: secretA, Now: clock.Now}
	if err := w.srv.Reload(Options{ECH: rotated}); err != nil {
		t.Fatal(err)
	}
	conn, _, err := w.echDial(t, w.addr, "t1.keyedge.test", publication(t, ech, clock.Now()).Current)
	if err != nil || !conn.ConnectionState().ECHAccepted {
		t.Fatalf("the old secret's config after the rotation: %v, want accepted", err)
	}
	conn.Close()
	// Drop the old secret: its config is rejected, the new one retried.
	if err := w.srv.Reload(Options{ECH: &ECHKeys{PublicName: echPublicName, Secret: secretB, Now: clock.Now}}); err != nil {
		t.Fatal(err)
	}
	_, _, err = w.echDial(t, w.addr, "t1.keyedge.test", publication(t, ech, clock.Now()).Current)
	var rejected *tls.ECHRejectionError
	if !errors.As(err, &rejected) || !bytes.Equal(rejected.RetryConfigList, publication(t, rotated, clock.Now()).Current) {
		t.Fatalf("the old secret's config once dropped: %v, want rejected with the new secret's config", err)
	}
}

// TestECHReloadOnOff: ECH turns on and off with Reload. A client whose
// config the edge cannot use completes its handshake for the public
// name and is told ECH is off (no retry configs).
func TestECHReloadOnOff(t *testing.T) {
	w, ech, clock := echWorld(t)
	list := publication(t, ech, clock.Now()).Current
	if err := w.srv.Reload(Options{}); err != nil {
		t.Fatal(err)
	}
	_, _, err := w.echDial(t, w.addr, "t0.keyedge.test", list)
	var rejected *tls.ECHRejectionError
	if !errors.As(err, &rejected) || rejected.RetryConfigList != nil {
		t.Fatalf("ECH off: %v, want rejected without retry configs", err)
	}
	if err := w.srv.Reload(Options{ECH: ech}); err != nil {
		t.Fatal(err)
	}
	conn, _, err := w.echDial(t, w.addr, "t0.keyedge.test", list)
	if err != nil || !conn.ConnectionState().ECHAccepted {
		t.Fatalf("ECH on again: %v", err)
	}
	conn.Close()
}

// TestECHConfigPinned: the configs derived from a secret do not change
// between builds, or DNS would publish configs a newer node cannot
// decrypt. Regenerate only with a new key label.
func TestECHConfigPinned(t *testing.T) {
	ech := &ECHKeys{PublicName: echPublicName, Secret: secretA}
	p := publication(t, ech, time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	const want = "AEf+DQBDNAAgACDiiQkmvYfE+RCQEqxbHELN/31EmWyw1syrwtHydkIJEgAIAAEAAQABAANAEGVjaC5rZXllZGdlLnRlc3QAAA=="
	if got := base64.StdEncoding.EncodeToString(p.Current); got != want {
		t.Errorf("ECHConfigList %s, want %s", got, want)
	}
	if !p.NextFrom.Equal(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)) || !p.CurrentUntil.Equal(time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("next from %v, current until %v; want Dec 2 and Dec 3 at 00:00 UTC", p.NextFrom, p.CurrentUntil)
	}
}

func TestECHKeysCheck(t *testing.T) {
	store, _ := tempStore(t)
	for name, k := range map[string]*ECHKeys{
		"no public name":       {Secret: secretA},
		"upper case":           {PublicName: "ECH.example.net", Secret: secretA},
		"trailing dot":         {PublicName: "ech.example.net.", Secret: secretA},
		"wildcard":             {PublicName: "*.example.net", Secret: secretA},
		"IP address":           {PublicName: "192.0.2.1", Secret: secretA},
		"short secret":         {PublicName: "ech.example.net", Secret: secretA[:31]},
		"short previous":       {PublicName: "ech.example.net", Secret: secretA, Previous: []byte("x")},
		"period under 1 min":   {PublicName: "ech.example.net", Secret: secretA, Period: time.Second},
		"negative accept":      {PublicName: "ech.example.net", Secret: secretA, Accept: -1},
		"name over 253 bytes":  {PublicName: strings.Repeat("a.", 127) + "net", Secret: secretA},
		"slash in public name": {PublicName: "a/b.example.net", Secret: secretA},
	} {
		if err := k.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := NewServer(Options{Store: store, ECH: k}); err == nil {
			t.Errorf("%s: NewServer accepted it", name)
		}
	}
	if err := (&ECHKeys{PublicName: "ech.example.net", Secret: secretA}).check(); err != nil {
		t.Errorf("a good config: %v", err)
	}
}

// TestECHPublicNameWithoutCertificate: an edge whose public name has no
// certificate in the keystore says so at start, naming the setting's
// value: clients with a stale config could not retry.
func TestECHPublicNameWithoutCertificate(t *testing.T) {
	w := openWorld(t, 0)
	for _, tc := range []struct {
		name string
		want bool
	}{{"missing.keyedge.test", true}, {echPublicName, false}} {
		if !tc.want {
			w.put(t, testpki.ECDSAP256, w.OriginURL, tc.name)
		}
		var logs bytes.Buffer
		srv, err := NewServer(Options{Store: w.openStore(t), ECH: &ECHKeys{PublicName: tc.name, Secret: secretA}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		warned := strings.Contains(logs.String(), "public_name="+tc.name) && strings.Contains(logs.String(), "no certificate")
		if warned != tc.want {
			t.Errorf("public name %s: warned %v, want %v; logged %q", tc.name, warned, tc.want, logs.String())
		}
	}
}
