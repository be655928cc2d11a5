package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/certs/acme"
	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/internal/bulkfile"
	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/schollz/progressbar/v3"
)

func runGenTenants(ctx context.Context, e *env, args []string) error {
	var spec testpki.TenantSpec
	var caPrefix string
	e.flags.IntVar(&spec.Count, "count", 0, "number of tenants to generate (required)")
	e.flags.IntVar(&spec.First, "first", 0, "index of the first tenant")
	e.flags.IntVar(&spec.WildcardEvery, "wildcard-every", 0, "give every K-th tenant a wildcard SAN too (0: none)")
	e.flags.IntVar(&spec.RSAEvery, "rsa-every", 0, "make every K-th tenant RSA-2048 (0: none, all ECDSA P-256)")
	e.flags.StringVar(&spec.Domain, "domain", "keyedge.test", "tenants are named t<i>.<domain>")
	e.flags.StringVar(&spec.Origin, "origin", "http://127.0.0.1:8080", "origin URL of every tenant")
	e.policyFlag(&spec.Policy)
	e.flags.IntVar(&spec.Workers, "workers", 0, "parallel generators (default: number of CPUs)")
	e.flags.StringVar(&caPrefix, "ca", "testca", "test CA files <prefix>.pem and <prefix>.key, created if missing")
	if err := e.parse(args, 0); err != nil {
		return err
	}
	if spec.Count <= 0 {
		return cli.Usagef("--count must be positive")
	}
	if _, err := keystore.ParseOrigin(spec.Origin); err != nil {
		return cli.Usagef("--origin: %v", err)
	}
	ca, err := loadOrCreateCA(caPrefix)
	if err != nil {
		return err
	}
	// Generated tenants are written without a per-file fsync and flushed
	// once at the end: a million fsyncs would take most of an hour.
	var bulk *bulkfile.Storage
	var storage keystore.Storage
	if !backend.IsURL(e.keystore) {
		bulk = bulkfile.New(e.keystore)
		storage = bulk
	}
	store, err := e.open(ctx, storage)
	if err != nil {
		return err
	}
	defer store.Close()

	start := time.Now()
	bar := progressbar.NewOptions(spec.Count,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription("generating tenants"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("tenants"),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	err = ca.GenerateTenants(ctx, store, spec, func(done int) { bar.Set(done) })
	bar.Finish()
	if bulk != nil {
		if serr := bulk.Sync(); err == nil {
			err = serr
		}
	}
	if err != nil {
		return err
	}
	d := time.Since(start)
	fmt.Fprintf(e.stdout, "generated %d tenants (%s … %s) in %v (%.0f/s); trust %s.pem\n",
		spec.Count, testpki.TenantName(spec.First, spec.Domain), testpki.TenantName(spec.First+spec.Count-1, spec.Domain),
		d.Round(time.Millisecond), float64(spec.Count)/d.Seconds(), caPrefix)
	return nil
}

// loadOrCreateCA loads the test CA at prefix, creating it when missing.
func loadOrCreateCA(prefix string) (*testpki.CA, error) {
	certFile, keyFile := prefix+".pem", prefix+".key"
	ca, err := testpki.LoadCA(certFile, keyFile)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return ca, err
	}
	if ca, err = testpki.NewCA("keyedge test CA"); err != nil {
		return nil, err
	}
	return ca, ca.Write(certFile, keyFile)
}

func runImport(ctx context.Context, e *env, args []string) error {
	var certFile, keyFile string
	var meta keystore.Meta
	var servers stringList
	e.flags.Var(&servers, "key-server", "with --keyless: host:port of a key server holding the key (repeat, most preferred first)")
	keyless := e.flags.Bool("keyless", false, "the key stays with the tenant's key servers: store no key")
	e.flags.StringVar(&certFile, "cert", "", "PEM certificate chain, leaf first (required)")
	e.flags.StringVar(&keyFile, "key", "", "PEM private key of the leaf (required unless --keyless)")
	e.flags.StringVar(&meta.Tenant, "tenant", "", "tenant name (required)")
	e.flags.StringVar(&meta.Origin, "origin", "", "origin URL requests are proxied to (required)")
	e.policyFlag(&meta.Policy)
	if err := e.parse(args, 0); err != nil {
		return err
	}
	if certFile == "" || meta.Tenant == "" || meta.Origin == "" || (keyFile == "") != *keyless || *keyless != (len(servers) > 0) {
		return cli.Usagef("need --cert, --tenant, --origin, and --key or --keyless with --key-server")
	}
	if _, err := keystore.ParseOrigin(meta.Origin); err != nil {
		return cli.Usagef("--origin: %v", err)
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	chain, err := certs.ParseChainPEM(pemBytes)
	if err != nil {
		return fmt.Errorf("%s: %w", certFile, err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("%s: %w", certFile, err)
	}
	if w := validityWarning(leaf, e.now()); w != "" {
		fmt.Fprintf(e.stderr, "keyctl import: warning: %s\n", w)
	}
	b := &keystore.Bundle{Meta: meta, Chain: chain}
	if *keyless {
		b.Meta.Route, b.Meta.KeyServers = keystore.RouteKeyless, servers
	} else {
		// The operator's own file, but held to the same rule as every
		// key file a binary reads: a key others can read is exposed
		// already, and importing it quietly would hide that.
		keyPEM, err := secretfile.Read(keyFile)
		if err != nil {
			return err
		}
		defer clear(keyPEM)
		if b.Key, err = certs.ParseKeyPEM(keyPEM); err != nil {
			return fmt.Errorf("%s: %w", keyFile, err)
		}
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	ids, err := store.Put(ctx, b)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "imported %s\n", ids[0])
	return nil
}

// validityWarning says what is wrong with leaf's validity period at
// now, or "" when nothing is: the keystore stores such a certificate (a
// renewal may be on its way), but clients refuse it.
func validityWarning(leaf *x509.Certificate, now time.Time) string {
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Sprintf("the certificate expired at %s: clients will refuse it until it is replaced", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Sprintf("the certificate is not valid before %s: clients will refuse it until then", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return ""
}

func runShow(ctx context.Context, e *env, args []string) error {
	if err := e.parse(args, 1); err != nil {
		return err
	}
	store, storage, err := e.openWithStorage(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	entry, err := store.Lookup(ctx, e.args[0])
	if errors.Is(err, keystore.ErrNotFound) {
		if d, derr := acme.Declared(ctx, storage, e.args[0]); derr == nil && d.CertID == "" {
			showPending(e.stdout, d)
			return nil
		}
	}
	if err != nil {
		return err
	}
	w := e.stdout
	fmt.Fprintf(w, "name:      %s\n", entry.Name)
	for _, c := range entry.Certs {
		route := cmp.Or(c.Meta.Route, keystore.RouteLocal)
		fmt.Fprintf(w, "\ncert:      %s\n", c.ID)
		fmt.Fprintf(w, "  tenant:    %s\n", c.Meta.Tenant)
		fmt.Fprintf(w, "  key:       %s\n", c.Leaf.PublicKeyAlgorithm)
		fmt.Fprintf(w, "  names:     %s\n", strings.Join(c.Leaf.DNSNames, ", "))
		fmt.Fprintf(w, "  issuer:    %s\n", c.Leaf.Issuer.CommonName)
		fmt.Fprintf(w, "  not after: %s\n", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "  origin:    %s\n", c.Meta.Origin)
		fmt.Fprintf(w, "  route:     %s\n", route)
		if len(c.Meta.KeyServers) > 0 {
			fmt.Fprintf(w, "  key servers: %s\n", strings.Join(c.Meta.KeyServers, ", "))
		}
		fmt.Fprintf(w, "  policy:    %s\n", cmp.Or(c.Meta.Policy, "(none: fleet key)"))
		fmt.Fprintf(w, "  version:   %d\n", c.Meta.Version)
		fmt.Fprintf(w, "  ocsp:      %s\n", map[bool]string{true: "stapled", false: "none"}[len(c.OCSP) > 0])
	}
	return nil
}

// showPending shows a name declared for ACME whose certificate no node
// has obtained yet.
func showPending(w io.Writer, d *acme.Declaration) {
	fmt.Fprintf(w, "name:      %s\n", d.Names[0])
	fmt.Fprintf(w, "status:    pending: declared for ACME, no certificate obtained yet (the edges obtain it)\n")
	fmt.Fprintf(w, "  names:     %s\n", strings.Join(d.Names, ", "))
	fmt.Fprintf(w, "  tenant:    %s\n", d.Tenant)
	fmt.Fprintf(w, "  origin:    %s\n", d.Origin)
	if d.Failures > 0 {
		fmt.Fprintf(w, "  failures:  %d, next try after %s\n", d.Failures, d.RetryAt.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "  last error: %s\n", d.LastError)
	}
}

// listCacheEntries bounds ls --long's caches: it reads each name once,
// so caching more would only hold memory at a million tenants.
const listCacheEntries = 1024

func runList(ctx context.Context, e *env, args []string) error {
	long := e.flags.Bool("long", false, "one line per certificate of each name: expiry, route (local, keyless or geo), geo policy and origin")
	if err := e.parse(args, 0); err != nil {
		return err
	}
	if *long {
		e.cacheEntries = listCacheEntries
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	if *long {
		fmt.Fprintf(e.stdout, listFormat, "NAME", "NOT AFTER", "ROUTE", "POLICY", "ORIGIN")
	}
	failed := 0
	for name, err := range store.Names(ctx) {
		if err != nil {
			return err
		}
		if !*long {
			if _, err := fmt.Fprintln(e.stdout, name); err != nil {
				return err
			}
			continue
		}
		entry, err := store.Stored(ctx, name)
		if err != nil {
			if ctx.Err() != nil || keystore.IsUnavailable(err) {
				return err
			}
			failed++
			fmt.Fprintf(e.stderr, "keyctl ls: %s: %v\n", name, err)
			continue
		}
		for _, c := range entry.Certs {
			if _, err := fmt.Fprintf(e.stdout, listFormat, name, c.Leaf.NotAfter.UTC().Format(time.RFC3339),
				routeOf(c), cmp.Or(c.Meta.Policy, "-"), cmp.Or(c.Meta.Origin, "-")); err != nil {
				return err
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d names could not be read (above)", failed)
	}
	return nil
}

// listFormat is a line of ls --long. Columns are padded to typical
// widths rather than measured: the listing streams.
const listFormat = "%-32s %-20s %-8s %-24s %s\n"

// routeOf is where c's handshakes are signed, as ls --long shows it:
// keyless (by its owner's key servers), geo (local, where the node's
// attributes satisfy its policy; else by a geo key server) or local.
func routeOf(c *keystore.Cert) string {
	switch {
	case c.Meta.Route == keystore.RouteKeyless:
		return string(keystore.RouteKeyless)
	case c.Meta.Policy != "":
		return "geo"
	}
	return string(keystore.RouteLocal)
}

// countingBar returns a progress bar of unknown length (a spinner and a
// count) until ChangeMax gives it one. Its spinner turns at each render:
// with progressbar's default, a goroutine of its own turns it every
// 100 ms and reads the bar's state without its lock, a data race with
// the first render (progressbar v3.19.1).
func countingBar(w io.Writer, description string) *progressbar.ProgressBar {
	return progressbar.NewOptions(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetSpinnerChangeInterval(0),
		progressbar.OptionClearOnFinish(),
	)
}

// runReindex rebuilds the name filter, showing progress: a spinner while
// names are counted, then a bar while they are added.
func runReindex(ctx context.Context, e *env, args []string) error {
	if err := e.parse(args, 0); err != nil {
		return err
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	bar := countingBar(e.stderr, "counting names")
	start := time.Now()
	n, err := store.RebuildNameFilter(ctx, func(done, total int) {
		if total > 0 && bar.GetMax() != total {
			bar.ChangeMax(total)
			bar.Describe("indexing names")
		}
		bar.Set(done)
	})
	bar.Finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "name filter rebuilt: %d names in %v\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

func runRemove(ctx context.Context, e *env, args []string) error {
	yes := e.flags.Bool("yes", false, "remove without asking for confirmation")
	if err := e.parse(args, 1); err != nil {
		return err
	}
	if !*yes {
		if err := e.confirm("remove " + e.args[0] + " from the keystore and from ACME renewal"); err != nil {
			return err
		}
	}
	store, storage, err := e.openWithStorage(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	// Unmanaged first, so no edge renews the name back between the two.
	unmanaged := acme.Unmanage(ctx, storage, e.args[0])
	switch {
	case unmanaged == nil:
		fmt.Fprintf(e.stdout, "%s is no longer renewed by ACME\n", e.args[0])
	case !errors.Is(unmanaged, acme.ErrNotManaged) && !errors.Is(unmanaged, keystore.ErrBadName):
		return unmanaged
	}
	err = store.Remove(ctx, e.args[0])
	if errors.Is(err, keystore.ErrNotFound) && unmanaged == nil {
		return nil // declared for ACME, never obtained
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %s\n", e.args[0])
	return nil
}
