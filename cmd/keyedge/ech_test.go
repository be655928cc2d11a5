package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keystore"
)

// TestECHPublishedConfig: what `keyctl ech` prints for an edge.yaml is
// what a keyedge serve process with that file accepts. A client with the
// printed current config, or the next one, reaches the tenant it asked
// for with ECH accepted.
func TestECHPublishedConfig(t *testing.T) {
	w := testworld.ForTest(t, testworld.Options{})
	ctx := context.Background()
	if err := w.GenerateTenants(ctx, testpki.TenantSpec{Count: 1}); err != nil {
		t.Fatal(err)
	}
	leaf, err := w.CA.Issue(testpki.LeafSpec{Names: []string{"ech.keyedge.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Writer.Put(ctx, &keystore.Bundle{Meta: keystore.Meta{Tenant: "ech", Origin: w.OriginURL}, Chain: leaf.Chain, Key: leaf.Key}); err != nil {
		t.Fatal(err)
	}
	keyctl := proctest.Build(t, "cmd/keyctl")[0]
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(keyctl, args...)
		cmd.Dir = w.Dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("keyctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("ticket-secret", "--out", "ticket.secret")
	e := startReloadEdge(t, w, "session_tickets:\n  secret_file: ticket.secret\nech:\n  public_name: ech.keyedge.test\n")

	printed := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(run("ech", "--config", e.config)))
	for sc.Scan() {
		if key, value, ok := strings.Cut(sc.Text(), ": "); ok && (key == "current" || key == "next") {
			list, err := base64.StdEncoding.DecodeString(value)
			if err != nil {
				t.Fatalf("keyctl ech printed %s %q: %v", key, value, err)
			}
			printed[key] = list
		}
	}
	for _, which := range []string{"current", "next"} {
		if printed[which] == nil {
			t.Fatalf("keyctl ech printed no %s config", which)
		}
		d := tls.Dialer{Config: &tls.Config{
			ServerName:                     "t0.keyedge.test",
			RootCAs:                        w.Roots,
			MinVersion:                     tls.VersionTLS13,
			EncryptedClientHelloConfigList: printed[which],
		}}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := d.DialContext(ctx, "tcp", e.addr)
		cancel()
		if err != nil {
			t.Fatalf("handshake with the %s config: %v", which, err)
		}
		cs := c.(*tls.Conn).ConnectionState()
		c.Close()
		if !cs.ECHAccepted || cs.PeerCertificates[0].Subject.CommonName != "t0.keyedge.test" {
			t.Errorf("with the %s config: ECH accepted %v, served %q; want ECH and the tenant's certificate", which, cs.ECHAccepted, cs.PeerCertificates[0].Subject.CommonName)
		}
	}
}
