package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyedge/keyedge/internal/config"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
)

type demoOptions struct {
	tenants int
	check   bool
	listen  string
}

const demoDomain = "keyedge.test"

// demo runs `keyedge demo`: everything on 127.0.0.1 in a temp dir.
func demo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	if o.tenants < 101 {
		return fmt.Errorf("--tenants must be at least 101, for the RSA and wildcard examples")
	}
	dir, err := os.MkdirTemp("", "keyedge-demo-")
	if err != nil {
		return err
	}
	if o.check {
		defer os.RemoveAll(dir)
	}
	fmt.Fprintf(stdout, "keyedge demo in %s\n\n", dir)

	w, err := testworld.New(ctx, testworld.Options{Dir: dir, Name: "keyedge demo", Origin: http.HandlerFunc(demoOrigin), Bulk: true})
	if err != nil {
		return err
	}
	defer w.Close()
	start := time.Now()
	if err := w.GenerateTenants(ctx, testpki.TenantSpec{Count: o.tenants, Domain: demoDomain, WildcardEvery: 10, RSAEvery: 100}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  keystore  %d tenants in %v: t0 … t%d.%s; every 10th also has a wildcard, every 100th is RSA\n",
		o.tenants, time.Since(start).Round(time.Millisecond), o.tenants-1, demoDomain)
	keylessCfg, err := demoKeyless(ctx, w)
	if err != nil {
		return err
	}
	geoCfg, err := demoGeo(ctx, w)
	if err != nil {
		return err
	}
	edgeAddr, err := freeAddr(o.listen)
	if err != nil {
		return err
	}
	metricsAddr, err := freeAddr("127.0.0.1:9090")
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "edge.yaml")
	cfgText := fmt.Sprintf(demoConfig, edgeAddr, metricsAddr) + keylessCfg + geoCfg
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := config.LoadEdge(cfgPath)
	if err != nil {
		return err
	}
	n, err := startNode(ctx, cfg, sockets{}, stderr)
	if err != nil {
		return err
	}
	defer n.shutdown()

	_, port, _ := net.SplitHostPort(edgeAddr)
	fmt.Fprintf(stdout, "  origin    %s\n", w.OriginURL)
	fmt.Fprintf(stdout, "  edge      https://%s   (config %s)\n", edgeAddr, cfgPath)
	fmt.Fprintf(stdout, "  keyless   %s is signed by a key server holding its key in %s\n", keylessHost, w.Path(testworld.KeysDir))
	fmt.Fprintf(stdout, "  geo       this edge is %q: %s (policy region: eu) is signed here, %s (region: us) by a key server at %q\n", demoEdgeAttrs, geoEUHost, geoUSHost, demoKSAttrs)
	fmt.Fprintf(stdout, "  metrics   %s\n\n", n.metricsURL())

	fmt.Fprintln(stdout, "self-check, one request per kind of tenant:")
	failed := selfCheck(ctx, stdout, w.Roots, edgeAddr)
	if err := printRoutes(ctx, stdout, n.metricsURL()); err != nil {
		return err
	}

	fmt.Fprintln(stdout, "\ntry:")
	for _, host := range []string{testpki.TenantName(1, demoDomain), "www." + testpki.TenantName(10, demoDomain), testpki.TenantName(100, demoDomain), keylessHost, geoUSHost} {
		fmt.Fprintf(stdout, "  curl --cacert %s --resolve %s:%s:127.0.0.1 https://%s:%s/\n",
			w.Path(testworld.CAFile), host, port, host, port)
	}
	fmt.Fprintf(stdout, "  curl -s %s | grep -E '^keyedge_(edge_route|keystore_policy)'\n", n.metricsURL())
	fmt.Fprintf(stdout, "  %s show %s --keystore %s --fleet-key %s\n",
		keyctlPath(), testpki.TenantName(42, demoDomain), w.StoreDir, w.Path(testworld.FleetKeyFile))
	fmt.Fprintf(stdout, "  %s ls --long --keystore %s --fleet-key %s | head\n",
		keyctlPath(), w.StoreDir, w.Path(testworld.FleetKeyFile))
	if failed > 0 {
		return fmt.Errorf("self-check: %d of the requests above failed", failed)
	}
	if o.check {
		return nil
	}
	fmt.Fprintln(stdout, "\nserving until Ctrl-C")
	select {
	case <-ctx.Done():
	case err := <-n.served:
		n.served <- err
		return err
	}
	fmt.Fprintln(stdout, "\nstopping")
	return nil
}

// demoConfig is the demo's edge.yaml; paths are relative to it.
const demoConfig = `# Written by keyedge demo. The origin and the key servers this file and
# the keystore point at ran inside the demo process, on 127.0.0.1 ports
# that closed when it ended. keyedge serve --config edge.yaml serves the
# keystore again, but then requests get 502 Bad Gateway (no origin), and
# the keyless and geo-restricted tenants' handshakes fail (no key server;
# serve warns about the geo key server at start). Run keyedge demo again
# for the whole demo.
listen: %s
metrics_listen: %s
keystore: keystore
fleet_key_file: fleet.key
log_level: warn
limits:
  drain_timeout: 5s
`

// demoOrigin is the demo's origin: it says which tenant asked.
func demoOrigin(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "hello from the origin of %s (client %s, %s %s)\n",
		r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-For"), r.Method, r.URL.Path)
}

// freeAddr returns addr if it can be listened on now, else a free port
// on the same host.
func freeAddr(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
			return "", err
		}
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// selfCheck makes one request per kind of tenant through the edge and
// prints what it saw; it returns the number of failures.
func selfCheck(ctx context.Context, w io.Writer, roots *x509.CertPool, edgeAddr string) int {
	checks := []struct {
		host, kind string
		refused    bool
	}{
		{testpki.TenantName(1, demoDomain), "ECDSA tenant", false},
		{"www." + testpki.TenantName(10, demoDomain), "wildcard", false},
		{testpki.TenantName(100, demoDomain), "RSA tenant", false},
		{keylessHost, "keyless tenant", false},
		{geoEUHost, "geo, signed here", false},
		{geoUSHost, "geo, key server", false},
		{"unknown." + demoDomain, "unknown name", true},
	}
	failed := 0
	for _, c := range checks {
		line, err := checkOne(ctx, roots, edgeAddr, c.host)
		if c.refused {
			switch {
			case err != nil && strings.Contains(err.Error(), "unrecognized name"):
				line, err = "refused with an unrecognized_name alert", nil
			case err == nil:
				err = errors.New("an unknown name was served")
			}
		}
		if err != nil {
			failed++
			fmt.Fprintf(w, "  FAIL %-24s %-17s %v\n", c.host, c.kind, err)
			continue
		}
		fmt.Fprintf(w, "  ok   %-24s %-17s %s\n", c.host, c.kind, line)
	}
	return failed
}

func checkOne(ctx context.Context, roots *x509.CertPool, edgeAddr, host string) (string, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, edgeAddr)
			},
		},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	leaf := resp.TLS.PeerCertificates[0]
	return fmt.Sprintf("%s %s %s %s %s: %s", resp.Proto, tls.VersionName(resp.TLS.Version), resp.TLS.CurveID,
		leaf.PublicKeyAlgorithm, resp.Status, strings.TrimSpace(string(body))), nil
}

// printRoutes prints the edge's route decisions, scraped from its
// metrics: how many signatures were made here and by key servers.
func printRoutes(ctx context.Context, w io.Writer, metricsURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var routes []string
	for line := range strings.Lines(string(body)) {
		if rest, ok := strings.CutPrefix(line, "keyedge_edge_route_decisions_total{route="); ok {
			routes = append(routes, strings.Replace(strings.TrimSpace(rest), "} ", "=", 1))
		}
	}
	fmt.Fprintf(w, "  signatures by route (keyedge_edge_route_decisions_total): %s\n", strings.Join(routes, " "))
	return nil
}

// keyctlPath is keyctl beside this binary (as make build puts it), or
// plain "keyctl".
func keyctlPath() string {
	exe, err := os.Executable()
	if err != nil {
		return "keyctl"
	}
	p := filepath.Join(filepath.Dir(exe), "keyctl")
	if _, err := os.Stat(p); err != nil {
		return "keyctl"
	}
	return p
}
