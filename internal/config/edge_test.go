package config

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// exampleEdge is the documented edge.yaml.
const exampleEdge = "../../edge/testdata/edge.yaml"

func TestLoadEdgeExample(t *testing.T) {
	c, err := LoadEdge(exampleEdge)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8443" || c.Limits.HandshakeTimeout != 10*time.Second || c.Cache.PollInterval != 500*time.Millisecond ||
		c.Keyless.AttemptTimeout != time.Second {
		t.Errorf("parsed %+v", c)
	}
	if e := c.ECH; e.PublicName != "ech.example.net" || e.Rotation != 24*time.Hour || e.Accept != 1 {
		t.Errorf("ech parsed %+v", e)
	}
	if od := c.ACME.OnDemand; od.ChecksPerSecond != 10 || od.CheckBurst != 20 || od.RefusedTTL != time.Minute {
		t.Errorf("acme.on_demand parsed %+v", od)
	}
	if got := c.Path(c.Keystore); got != filepath.Join("..", "..", "edge", "testdata", "keystore") {
		t.Errorf("keystore path %q, want it relative to the file", got)
	}
	node, servers, err := c.geo()
	if err != nil {
		t.Fatal(err)
	}
	if node.String() != "country: de, dc: fra1, region: eu" || len(servers) != 2 || servers[1].Attributes.String() != "country: us, dc: iad1, region: us" {
		t.Errorf("geo: node %q, key servers %+v", node, servers)
	}
}

func TestLoadEdgeErrors(t *testing.T) {
	tests := map[string]string{
		"unknown key":              "keystore: k\nfleet_key_file: f\nlisten_adress: x\n",
		"missing keystore":         "fleet_key_file: f\n",
		"bad curve":                "keystore: k\nfleet_key_file: f\ncurves: [X448]\n",
		"bad version":              "keystore: k\nfleet_key_file: f\nmin_tls_version: \"1.1\"\n",
		"bad cidr":                 "keystore: k\nfleet_key_file: f\nproxy_protocol:\n  trusted_cidrs: [10.0.0.0/99]\n",
		"bad level":                "keystore: k\nfleet_key_file: f\nlog_level: loud\n",
		"bad rsa signer":           "keystore: k\nfleet_key_file: f\nrsa_signer: boringssl\n",
		"bad duration":             "keystore: k\nfleet_key_file: f\nlimits:\n  idle_timeout: soon\n",
		"half a fallback":          "keystore: k\nfleet_key_file: f\nfallback:\n  cert_file: c.pem\n",
		"not yaml":                 "{{{",
		"negative check burst":     "keystore: k\nfleet_key_file: f\nacme:\n  ca: https://ca.example/dir\n  on_demand:\n    check_burst: -1\n",
		"bad attributes":           "keystore: k\nfleet_key_file: f\ngeo:\n  attributes: \"region eu\"\n",
		"key, no attrs":            "keystore: k\nfleet_key_file: f\ngeo:\n  node_key_file: n.key\n",
		"acme, no ca":              "keystore: k\nfleet_key_file: f\nacme:\n  email: a@b.c\n",
		"servers, no id":           "keystore: k\nfleet_key_file: f\ngeo:\n  key_servers:\n    - addr: 127.0.0.1:1\n      attributes: \"region: eu\"\n",
		"attempt >= handshake":     "keystore: k\nfleet_key_file: f\nkeyless:\n  attempt_timeout: 10s\n",
		"attempt >= set handshake": "keystore: k\nfleet_key_file: f\nlimits:\n  handshake_timeout: 2s\nkeyless:\n  attempt_timeout: 3s\n",
		"negative attempt":         "keystore: k\nfleet_key_file: f\nkeyless:\n  attempt_timeout: -1s\n",
		"access log, no path":      "keystore: k\nfleet_key_file: f\naccess_log:\n  format: json\n",
		"access log format":        "keystore: k\nfleet_key_file: f\naccess_log:\n  path: stdout\n  format: combined\n",
		"access log sample > 1":    "keystore: k\nfleet_key_file: f\naccess_log:\n  path: stdout\n  sample: 10\n",
		"negative access sample":   "keystore: k\nfleet_key_file: f\naccess_log:\n  path: stdout\n  sample: -0.5\n",
		"negative access buffer":   "keystore: k\nfleet_key_file: f\naccess_log:\n  path: stdout\n  buffer: -1\n",
		"ech, no public name":      "keystore: k\nfleet_key_file: f\nsession_tickets:\n  secret_file: s\nech:\n  rotation: 1h\n",
		"ech, no fleet secret":     "keystore: k\nfleet_key_file: f\nech:\n  public_name: ech.example.net\n",
		"ech public name":          "keystore: k\nfleet_key_file: f\nsession_tickets:\n  secret_file: s\nech:\n  public_name: ECH.example.net.\n",
		"ech public name IP":       "keystore: k\nfleet_key_file: f\nsession_tickets:\n  secret_file: s\nech:\n  public_name: 192.0.2.1\n",
		"ech rotation < 1m":        "keystore: k\nfleet_key_file: f\nsession_tickets:\n  secret_file: s\nech:\n  public_name: ech.example.net\n  rotation: 30s\n",
	}
	for name, text := range tests {
		path := filepath.Join(t.TempDir(), "edge.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadEdge(path); err == nil || !strings.HasPrefix(err.Error(), "config ") {
			t.Errorf("%s: err = %v, want a config PATH error", name, err)
		}
	}
}

func TestEdgeOptions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	text := "keystore: k\nfleet_key_file: f\ncurves: [X25519]\nmin_tls_version: \"1.3\"\nproxy_protocol:\n  trusted_cidrs: [10.1.2.3]\n" +
		"limits:\n  tunnel_idle_timeout: 90s\n  body_read_timeout: 20s\n  max_conns_per_ip: 64\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadEdge(path)
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Curves) != 1 || o.Curves[0] != tls.X25519 || o.MinVersion != tls.VersionTLS13 ||
		len(o.TrustedProxies) != 1 || o.TrustedProxies[0].String() != "10.1.2.3/32" || o.Proxy.TunnelIdleTimeout != 90*time.Second ||
		o.Proxy.BodyReadTimeout != 20*time.Second || o.Limits.MaxConnsPerIP != 64 {
		t.Errorf("options %+v", o)
	}
	if c.Listen != ":443" || c.MetricsListen != "127.0.0.1:9090" || c.ACME.HTTPListen != "" || c.Limits.DrainTimeout != 30*time.Second {
		t.Errorf("defaults: listen %q, metrics_listen %q, acme.http_listen %q, limits.drain_timeout %v",
			c.Listen, c.MetricsListen, c.ACME.HTTPListen, c.Limits.DrainTimeout)
	}
}

// TestEdgeAccessLog opens the access log a file names: relative to the
// file, with its format, or none when off or unset.
func TestEdgeAccessLog(t *testing.T) {
	tests := []struct {
		name, section string
		want          string // a line's start; "" when no access log is opened
	}{
		{"unset", "", ""},
		{"off", "access_log:\n  path: access.log\n  off: true\n", ""},
		{"json", "access_log:\n  path: access.log\n", `{"time":`},
		{"text", "access_log:\n  path: access.log\n  format: text\n  sample: 0.5\n  buffer: 16\n", "time="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "edge.yaml")
			if err := os.WriteFile(path, []byte("keystore: k\nfleet_key_file: f\n"+tt.section), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadEdge(path)
			if err != nil {
				t.Fatal(err)
			}
			l, err := c.OpenAccessLog(slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if l != nil {
					t.Fatal("an access log was opened")
				}
				return
			}
			l.Log(&accesslog.Record{Status: 500, Error: "unreachable"}) // logged whatever the sample
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, "access.log"))
			if err != nil {
				t.Fatalf("the access log is not in the config file's directory: %v", err)
			}
			if !strings.HasPrefix(string(data), tt.want) {
				t.Errorf("line %q, want it to start with %q", data, tt.want)
			}
		})
	}
}

func TestEdgeACMEManager(t *testing.T) {
	c, err := LoadEdge(exampleEdge)
	if err != nil {
		t.Fatal(err)
	}
	store, storage := tempStore(t)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	m, err := c.ACMEManager(store, storage, addr, addr, slog.New(slog.DiscardHandler), nil)
	if err != nil || m == nil {
		t.Fatalf("ACMEManager = %v, %v", m, err)
	}
	m.Close()
	c.ACME.CA = ""
	if m, err := c.ACMEManager(store, storage, addr, addr, nil, nil); m != nil || err != nil {
		t.Errorf("without acme.ca: %v, %v; want ACME off", m, err)
	}
	c.ACME.CA, c.ACME.OnDemand.Enabled, c.ACME.OnDemand.AllowURL = "https://ca.example/dir", true, "ftp://nope"
	if _, err := c.ACMEManager(store, storage, addr, addr, nil, nil); err == nil {
		t.Error("a non-http allow_url was accepted")
	}
}

// TestEdgeKeyFilesExposed: the fallback key and the keyless identity
// key are refused when other users can read them, as the fleet key is.
func TestEdgeKeyFilesExposed(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("config test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{"fallback", "identity"} {
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{base + ".example"}, ClientAuth: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.WritePEM(filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key")); err != nil {
			t.Fatal(err)
		}
	}
	text := "keystore: k\nfleet_key_file: f\n" +
		"fallback:\n  cert_file: fallback.pem\n  key_file: fallback.key\n" +
		"keyless:\n  cert_file: identity.pem\n  key_file: identity.key\n  ca_file: ca.pem\n"
	path := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadEdge(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		read func() error
	}{
		{"fallback.key", func() error { _, err := c.Options(); return err }},
		{"identity.key", func() error {
			client, err := c.KeylessClient(slog.New(slog.DiscardHandler))
			if client != nil {
				client.Close()
			}
			return err
		}},
	} {
		key := filepath.Join(dir, tc.key)
		if err := os.Chmod(key, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := tc.read(); !errors.Is(err, secretfile.ErrExposed) {
			t.Errorf("%s mode 0644: %v, want secretfile.ErrExposed", tc.key, err)
		}
		if err := os.Chmod(key, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := tc.read(); err != nil {
			t.Errorf("%s mode 0600: %v", tc.key, err)
		}
	}
}

// TestLoadEdgeBadNumbers: every duration, count and size is checked,
// and the error names each setting at fault, all of them at once.
func TestLoadEdgeBadNumbers(t *testing.T) {
	const base = "keystore: k\nfleet_key_file: f\n"
	tests := []struct {
		name, text string
		want       []string // substrings of the error, one per problem
	}{
		{"empty file", "", []string{"is empty"}},
		{"only comments", "# nothing yet\n", []string{"is empty"}},
		{"negative handshake timeout", base + "limits:\n  handshake_timeout: -5s\n",
			[]string{"limits.handshake_timeout: must be positive, got -5s"}},
		{"negative max_conns", base + "limits:\n  max_conns: -1\n", []string{"limits.max_conns: must be positive, got -1"}},
		{"every limit", base + "limits:\n  read_header_timeout: -1s\n  idle_timeout: -1s\n  tunnel_idle_timeout: -1s\n" +
			"  max_header_bytes: -1\n  drain_timeout: -1s\n  body_read_timeout: -1s\n  max_conns_per_ip: -2\n",
			[]string{"limits.read_header_timeout", "limits.idle_timeout", "limits.tunnel_idle_timeout",
				"limits.max_header_bytes", "limits.drain_timeout", "limits.body_read_timeout", "limits.max_conns_per_ip: must be positive, got -2"}},
		{"origin", base + "origin:\n  timeout: -1s\n  dial_timeout: -2s\n",
			[]string{"origin.timeout: must be positive, got -1s", "origin.dial_timeout: must be positive, got -2s"}},
		{"cache", base + "cache:\n  max_entries: -1\n  max_bytes: -1\n  negative_ttl: -1s\n  poll_interval: -1s\n",
			[]string{"cache.max_entries", "cache.max_bytes", "cache.negative_ttl", "cache.poll_interval"}},
		{"session tickets", base + "session_tickets:\n  secret_file: s\n  rotation: -1h\n  accept: -1\n",
			[]string{"session_tickets.rotation: must be positive, got -1h0m0s", "session_tickets.accept: must be positive, got -1"}},
		{"keyless", base + "keyless:\n  timeout: -1s\n", []string{"keyless.timeout: must be positive, got -1s"}},
		{"ech", base + "session_tickets:\n  secret_file: s\nech:\n  public_name: ech.example.net\n  rotation: -1h\n  accept: -1\n",
			[]string{"ech.rotation: must be positive, got -1h0m0s", "ech.accept: must be positive, got -1"}},
		{"acme", base + "acme:\n  ca: https://ca.example/dir\n  renewal_window: 1.5\n  check_interval: -1h\n" +
			"  on_demand:\n    per_minute: -1\n    burst: -1\n    checks_per_second: -1\n    refused_ttl: -1s\n",
			[]string{"acme.renewal_window: must be a fraction between 0 and 1, got 1.5", "acme.check_interval",
				"acme.on_demand.per_minute", "acme.on_demand.burst", "acme.on_demand.checks_per_second", "acme.on_demand.refused_ttl"}},
		{"several at once", base + "limits:\n  handshake_timeout: -5s\n  max_conns: -1\ncurves: [X448]\n",
			[]string{"limits.handshake_timeout", "limits.max_conns", "curves"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edge.yaml")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadEdge(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// tempStore opens an empty keystore in a temporary directory.
func tempStore(t testing.TB) (*keystore.Store, certmagic.Storage) {
	t.Helper()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(context.Background(), keystore.Options{Storage: storage, FleetKey: fleet, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store, storage
}

// TestEdgeNodeKey: the node's attributes come from its node key, which
// must have been issued for exactly geo.attributes; the store opened
// from the file routes by them.
func TestEdgeNodeKey(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if err := keystore.Init(ctx, &certmagic.FileStorage{Path: filepath.Join(dir, "keystore")}); err != nil {
		t.Fatal(err)
	}
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := keystore.WriteFleetKeyFile(filepath.Join(dir, "fleet.key"), fleet); err != nil {
		t.Fatal(err)
	}
	master, err := geo.GenerateMasterKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := geo.ParseAttributes("region: eu, country: de")
	if err != nil {
		t.Fatal(err)
	}
	nodeKey, err := master.NodeKey(nil, issued)
	if err != nil {
		t.Fatal(err)
	}
	if err := geo.WriteNodeKeyFile(filepath.Join(dir, "node.key"), nodeKey); err != nil {
		t.Fatal(err)
	}
	open := func(attrs string) (*keystore.Store, error) {
		text := "keystore: keystore\nfleet_key_file: fleet.key\ngeo:\n  attributes: \"" + attrs + "\"\n  node_key_file: node.key\n"
		path := filepath.Join(dir, "edge.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadEdge(path)
		if err != nil {
			t.Fatal(err)
		}
		store, _, release, err := c.OpenKeystore(ctx, slog.New(slog.DiscardHandler), nil)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { store.Close(); release() })
		return store, nil
	}
	if _, err := open("region: eu, country: fr"); err == nil || !strings.Contains(err.Error(), "was issued for") {
		t.Errorf("node key for other attributes: %v, want an error naming both", err)
	}
	store, err := open("country: de, region: eu")
	if err != nil {
		t.Fatal(err)
	}
	if got := store.NodeAttributes(); !got.Equal(issued) {
		t.Errorf("store's node attributes %q, want %q", got, issued)
	}
}
