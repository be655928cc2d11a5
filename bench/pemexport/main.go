// Command pemexport writes generated tenants' certificates and private
// keys from a keystore as PEM files, so that other TLS servers (nginx,
// HAProxy) can be benchmarked with exactly the certificates keyedge
// serves. bench/matrix.sh runs it; it is not for production keys.
//
// Usage:
//
//	pemexport -keystore DIR -fleet-key FILE -tenants N [-domain D] -out DIR
//
// For each tenant t<i>.<domain>, i < N, and each of its certificates,
// it writes OUT/<name>.<type>.pem (type ecdsa or rsa): the chain, leaf
// first, then the PKCS#8 key, a file both nginx (ssl_certificate and
// ssl_certificate_key) and HAProxy (crt) load. Files already there are
// kept, so a larger export reuses a smaller one.
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"golang.org/x/sync/errgroup"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pemexport: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("pemexport", flag.ContinueOnError)
	var (
		dir      = fl.String("keystore", "keystore", "keystore directory")
		fleetKey = fl.String("fleet-key", "fleet.key", "fleet key file")
		tenants  = fl.Int("tenants", 0, "export tenants t0…t<N-1>")
		domain   = fl.String("domain", "keyedge.test", "domain of the tenant names")
		out      = fl.String("out", "", "output directory")
	)
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *tenants <= 0 || *out == "" {
		return errors.New("need -tenants N and -out DIR")
	}
	fleet, err := keystore.ReadFleetKeyFile(*fleetKey)
	if err != nil {
		return err
	}
	store, err := keystore.Open(ctx, keystore.Options{
		Storage:  &certmagic.FileStorage{Path: *dir},
		FleetKey: fleet,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	defer store.Close()
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	var next, written atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= *tenants || ctx.Err() != nil {
					return ctx.Err()
				}
				n, err := export(ctx, store, testpki.TenantName(i, *domain), *out)
				if err != nil {
					return err
				}
				written.Add(int64(n))
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	fmt.Printf("pemexport: %d tenants in %s, %d files written\n", *tenants, *out, written.Load())
	return nil
}

// export writes name's certificates and keys; it returns how many files
// it wrote (0 when they were all there).
func export(ctx context.Context, store *keystore.Store, name, out string) (int, error) {
	entry, err := store.Lookup(ctx, name)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range entry.Certs {
		typ := strings.ToLower(c.Leaf.PublicKeyAlgorithm.String())
		path := filepath.Join(out, name+"."+typ+".pem")
		if _, err := os.Stat(path); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return n, err
		}
		key, err := c.PrivateKey(ctx)
		if err != nil {
			return n, fmt.Errorf("%s: %w", name, err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return n, fmt.Errorf("%s: %w", name, err)
		}
		var data []byte
		for _, cert := range c.Chain {
			data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert})...)
		}
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return n, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
