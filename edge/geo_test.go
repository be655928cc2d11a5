package edge

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
)

// geoNode is one edge node of a geo test: its own keystore view, node
// key, key server client and metrics, over the shared keystore files.
type geoNode struct {
	attrs string
	store *keystore.Store
	addr  string
	reg   *prometheus.Registry
}

// geoWorld is three edge nodes (EU, US, APAC) and two key server
// processes (EU, US) sharing one keystore, with one geo master key
// (the world's Master).
type geoWorld struct {
	*keylessWorld
	nodes      map[string]*geoNode
	keyServers map[string]*os.Process
	directory  []KeyServer // the key servers, for the nodes' Options.KeyServers
}

func newGeoWorld(t *testing.T) *geoWorld {
	t.Helper()
	gw := &geoWorld{keylessWorld: newKeylessWorld(t, Options{}), nodes: map[string]*geoNode{}, keyServers: map[string]*os.Process{}}
	ctx := context.Background()
	if err := gw.EnableGeo(ctx); err != nil {
		t.Fatal(err)
	}

	// Key servers read the same keystore, each with its own node key.
	for _, ks := range []struct{ name, attrs string }{
		{"ks-eu", "region: eu, country: nl"},
		{"ks-us", "region: us, country: us"},
	} {
		keyFile := gw.Path(ks.name + ".node.key")
		if err := geo.WriteNodeKeyFile(keyFile, gw.nodeKey(t, ks.attrs)); err != nil {
			t.Fatal(err)
		}
		source := "keystore: " + gw.StoreDir + "\nfleet_key_file: " + gw.Path(testworld.FleetKeyFile) + "\nnode_key_file: " + keyFile + "\n"
		addr, proc := gw.startKeyServerWith(t, ks.name, source)
		gw.keyServers[ks.name] = proc
		gw.directory = append(gw.directory, KeyServer{Addr: addr, Attributes: mustAttributes(t, ks.attrs)})
	}

	for name, attrs := range map[string]string{
		"eu":   "region: eu, country: de",
		"us":   "region: us, country: us",
		"apac": "region: apac, country: jp",
	} {
		n := &geoNode{attrs: attrs, reg: prometheus.NewRegistry()}
		var err error
		if n.store, err = gw.OpenStore(ctx, keystore.Options{NodeKey: gw.nodeKey(t, attrs), PollInterval: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		srv, err := NewServer(Options{
			Store:      n.store,
			Keyless:    gw.keylessClient(t),
			KeyServers: gw.directory,
			Logger:     slog.New(slog.DiscardHandler),
			Registerer: n.reg,
		})
		if err != nil {
			t.Fatal(err)
		}
		n.addr = serve(t, srv)
		gw.nodes[name] = n
	}
	return gw
}

// nodeKey issues the node key of a node with attrs.
func (gw *geoWorld) nodeKey(t testing.TB, attrs string) *geo.NodeKey {
	t.Helper()
	k, err := gw.NodeKey(attrs)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustAttributes(t testing.TB, s string) geo.Attributes {
	t.Helper()
	a, err := geo.ParseAttributes(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// putRestricted stores a locally signed tenant under policy.
func (gw *geoWorld) putRestricted(t testing.TB, host, policy string) string {
	t.Helper()
	id, err := gw.PutRestricted(context.Background(), host, policy)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// route completes a handshake for host on node and returns the route the
// node took ("local", "keyless" or "none"), from its route metrics.
func (gw *geoWorld) route(t testing.TB, node, host string) (string, error) {
	t.Helper()
	n := gw.nodes[node]
	before := map[string]float64{}
	for _, r := range []string{"local", "keyless", "none"} {
		before[r] = metricValue(t, n.reg, "keyedge_edge_route_decisions_total", r)
	}
	conn, err := gw.handshakeTo(n.addr, gw.tlsConfig(host))
	if err == nil {
		conn.Close()
	}
	for _, r := range []string{"local", "keyless", "none"} {
		if metricValue(t, n.reg, "keyedge_edge_route_decisions_total", r) > before[r] {
			return r, err
		}
	}
	return "", err
}

// TestGeoRouting: three edge nodes and two key servers; each restricted
// key is signed where its policy allows and nowhere else.
func TestGeoRouting(t *testing.T) {
	gw := newGeoWorld(t)
	gw.putRestricted(t, "eu.geo.test", "region: eu")
	gw.putRestricted(t, "notus.geo.test", "not country: us")
	gw.putRestricted(t, "us.geo.test", "region: us")
	gw.putRestricted(t, "mars.geo.test", "region: mars")
	gw.put(t, testpki.ECDSAP256, gw.OriginURL, "open.geo.test")

	tests := []struct {
		host, node, want string
	}{
		{"eu.geo.test", "eu", "local"},
		{"eu.geo.test", "us", "keyless"}, // via ks-eu
		{"eu.geo.test", "apac", "keyless"},
		{"notus.geo.test", "eu", "local"},
		{"notus.geo.test", "apac", "local"},
		{"notus.geo.test", "us", "keyless"}, // ks-eu, country: nl
		{"us.geo.test", "eu", "keyless"},    // via ks-us
		{"us.geo.test", "us", "local"},
		{"open.geo.test", "us", "local"},
		{"mars.geo.test", "eu", "none"}, // no node, no key server admitted
	}
	for _, tt := range tests {
		got, err := gw.route(t, tt.node, tt.host)
		if got != tt.want {
			t.Errorf("%s on the %s node: route %q (%v), want %q", tt.host, tt.node, got, err, tt.want)
		}
		if (err != nil) != (tt.want == "none") {
			t.Errorf("%s on the %s node: handshake error %v", tt.host, tt.node, err)
		}
	}

	// The US node holds the sealed EU key on disk but cannot open it:
	// its attribute key fails the CP-ABE layer.
	e, err := gw.nodes["us"].store.Lookup(context.Background(), "eu.geo.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Certs[0].PrivateKey(context.Background()); !errors.Is(err, keystore.ErrCannotOpen) || !errors.Is(err, geo.ErrNotAdmitted) {
		t.Errorf("US node opening the EU key: %v, want ErrCannotOpen from geo.ErrNotAdmitted", err)
	}

	// With the EU key server gone, the US node has nowhere to sign the
	// EU key: the US key server reads the same files but is not admitted.
	gw.keyServers["ks-eu"].Kill()
	if _, err := gw.route(t, "us", "eu.geo.test"); err == nil {
		t.Error("EU key signed for the US node with the EU key server down")
	}
	if r, err := gw.route(t, "us", "us.geo.test"); r != "local" || err != nil {
		t.Errorf("US key on the US node after the EU key server died: %q, %v", r, err)
	}
}

// TestGeoPolicyChange: a policy change moves signing between nodes on
// the running fleet, with no restart.
func TestGeoPolicyChange(t *testing.T) {
	gw := newGeoWorld(t)
	gw.putRestricted(t, "move.geo.test", "region: eu")
	if r, err := gw.route(t, "eu", "move.geo.test"); r != "local" || err != nil {
		t.Fatalf("before: EU node route %q, %v", r, err)
	}
	if err := gw.Writer.SetPolicy(context.Background(), "move.geo.test", "region: us", gw.Master); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "EU node signs through the US key server", func() bool {
		r, err := gw.route(t, "eu", "move.geo.test")
		return r == "keyless" && err == nil
	})
	if r, err := gw.route(t, "us", "move.geo.test"); r != "local" || err != nil {
		t.Errorf("after: US node route %q, %v, want local", r, err)
	}
}

// TestGeoTamperedKey: a tampered sealed key fails that tenant's
// handshakes with an error naming it, and no other tenant's.
func TestGeoTamperedKey(t *testing.T) {
	gw := newGeoWorld(t)
	id := gw.putRestricted(t, "tampered.geo.test", "region: eu")
	gw.putRestricted(t, "fine.geo.test", "region: eu")
	keyFile := filepath.Join(gw.StoreDir, "certs", id[:2], id, "record") // which ends with the sealed key
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(keyFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.route(t, "eu", "tampered.geo.test"); err == nil {
		t.Error("handshake with a tampered key succeeded")
	}
	e, err := gw.nodes["eu"].store.Lookup(context.Background(), "tampered.geo.test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Certs[0].PrivateKey(context.Background())
	if !errors.Is(err, keystore.ErrCorrupt) || !strings.Contains(err.Error(), "tampered.geo.test") {
		t.Errorf("tampered key error %v, want ErrCorrupt naming the tenant", err)
	}
	if r, err := gw.route(t, "eu", "fine.geo.test"); r != "local" || err != nil {
		t.Errorf("another tenant under the same policy: route %q, %v", r, err)
	}
}
