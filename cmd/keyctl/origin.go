package main

import (
	"cmp"
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keystore"
)

// runOrigin is `keyctl origin set NAME URL[=WEIGHT]... [flags]` and
// `keyctl origin show NAME`.
func runOrigin(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || (args[0] != "set" && args[0] != "show") {
		if err := e.parse(args, anyArgs); err != nil {
			return err // -h among them: the help
		}
		return cli.Usagef("want origin set NAME URL[=WEIGHT]..., or origin show NAME")
	}
	if args[0] == "show" {
		return originShow(ctx, e, args[1:])
	}
	return originSet(ctx, e, args[1:])
}

func originSet(ctx context.Context, e *env, args []string) error {
	var (
		pool keystore.OriginPool
		tls  keystore.OriginTLS
	)
	f := e.flags
	f.StringVar(&pool.Health.Path, "health-path", "", "active health check: GET this path on each origin while the tenant has traffic [none]")
	f.DurationVar(&pool.Health.Interval, "health-interval", 0, "time between health checks of an origin [10s]")
	f.IntVar(&pool.Health.Healthy, "healthy", 0, "successful checks in a row that bring an origin back [2]")
	f.IntVar(&pool.Health.Unhealthy, "unhealthy", 0, "failed checks in a row that take an origin out [3]")
	f.DurationVar(&pool.ConnectTimeout, "connect-timeout", 0, "bound on connecting to an origin, and on its TLS handshake [the edge's dial_timeout]")
	f.DurationVar(&pool.ResponseTimeout, "timeout", 0, "bound on the wait for an origin's response headers [the edge's origin_timeout]")
	caFile := f.String("ca", "", "PEM bundle of the CAs trusted for https origins' certificates [the edge's roots]")
	f.StringVar(&tls.ServerName, "server-name", "", "name sent in SNI to https origins and verified in their certificates [each URL's host]")
	certFile := f.String("client-cert", "", "PEM certificate chain the edge presents to https origins (origin mTLS)")
	keyFile := f.String("client-key", "", "its private key (PEM, a 0600 file); stored sealed to the fleet key")
	if err := e.parse(args, anyArgs); err != nil {
		return err
	}
	if len(e.args) < 2 {
		return cli.Usagef("want origin set NAME URL[=WEIGHT]..., got %d argument(s)", len(e.args))
	}
	if (*certFile == "") != (*keyFile == "") {
		return cli.Usagef("--client-cert and --client-key go together")
	}
	name := e.args[0]
	for _, a := range e.args[1:] {
		t, err := keystore.ParseOriginTarget(a)
		if err != nil {
			return err
		}
		pool.Targets = append(pool.Targets, t)
	}
	var err error
	if *caFile != "" {
		if tls.CA, err = readPEMFile(*caFile); err != nil {
			return err
		}
	}
	var key crypto.Signer
	if *certFile != "" {
		if tls.ClientCert, err = readPEMFile(*certFile); err != nil {
			return err
		}
		keyPEM, err := secretfile.Read(*keyFile)
		if err != nil {
			return err
		}
		defer clear(keyPEM)
		if key, err = certs.ParseKeyPEM(keyPEM); err != nil {
			return fmt.Errorf("%s: %w", *keyFile, err)
		}
	}
	if tls.CA != nil || tls.ServerName != "" || tls.ClientCert != nil {
		pool.TLS = &tls
	}
	if key == nil {
		// Checked here too, so a refusal comes before the keystore opens.
		if err := pool.Check(); err != nil {
			return err
		}
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.SetOrigins(ctx, name, pool, key); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %d origin(s) set; edges follow through the change journal\n", name, len(pool.Targets))
	return nil
}

// maxPEMFile bounds the CA bundle and client certificate files read.
const maxPEMFile = 1 << 20

// readPEMFile reads a certificate file, refusing one over maxPEMFile.
func readPEMFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err == nil && len(data) > maxPEMFile {
		err = fmt.Errorf("larger than %d bytes", maxPEMFile)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// originShow prints the origins of each certificate of a name and how
// the edge reaches them: never a key byte, the client key only as
// present.
func originShow(ctx context.Context, e *env, args []string) error {
	if err := e.parse(args, 1); err != nil {
		return err
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	entry, err := store.Lookup(ctx, e.args[0])
	if err != nil {
		return err
	}
	w := e.stdout
	fmt.Fprintf(w, "name:      %s\n", entry.Name)
	for _, c := range entry.Certs {
		p := c.Meta.Origins()
		fmt.Fprintf(w, "\ncert:      %s\n", c.ID)
		if len(p.Targets) == 0 {
			fmt.Fprintf(w, "  origins:   (none)\n")
			continue
		}
		for _, t := range p.Targets {
			fmt.Fprintf(w, "  origin:    %s weight %d\n", t.URL, t.Weight)
		}
		if p.Health.Path == "" {
			fmt.Fprintf(w, "  health:    passive only (no health check path)\n")
		} else {
			h := p.Health.WithDefaults()
			fmt.Fprintf(w, "  health:    GET %s every %v, out after %d failures, back after %d successes\n", h.Path, h.Interval, h.Unhealthy, h.Healthy)
		}
		fmt.Fprintf(w, "  timeouts:  connect %s, response %s\n", durationOr(p.ConnectTimeout), durationOr(p.ResponseTimeout))
		t := cmp.Or(p.TLS, &keystore.OriginTLS{})
		ca := "the edge's roots"
		if len(t.CA) > 0 {
			der, err := certs.ParseChainPEM(t.CA)
			if err != nil {
				return fmt.Errorf("cert %s: CA bundle: %w", c.ID, err)
			}
			ca = fmt.Sprintf("bundle of %d certificate(s), sha256 %x", len(der), sha256.Sum256(t.CA))
		}
		fmt.Fprintf(w, "  tls ca:    %s\n", ca)
		fmt.Fprintf(w, "  tls name:  %s\n", cmp.Or(t.ServerName, "each URL's host"))
		client := "none"
		if len(t.ClientCert) > 0 {
			chain, err := t.ClientChain()
			if err != nil {
				return fmt.Errorf("cert %s: client certificate: %w", c.ID, err)
			}
			client = fmt.Sprintf("certificate sha256 %x, key sealed to the fleet key", sha256.Sum256(chain[0]))
			if _, err := c.OriginClientKey(); err != nil {
				client += fmt.Sprintf(" (cannot open: %v)", err)
			}
		}
		fmt.Fprintf(w, "  tls client: %s\n", client)
	}
	return nil
}

// durationOr prints d, or the edge's default for zero.
func durationOr(d time.Duration) string {
	if d == 0 {
		return "edge default"
	}
	return d.String()
}
