// Package testworld assembles the world an edge runs in for the demo,
// the benchmarks and the tests, on 127.0.0.1 and in one directory: a
// fleet key, a test CA and an initialised keystore of generated tenants,
// an origin, an identity CA with mTLS identities, in-process key servers
// holding keyless tenants' keys, and geo master and node keys.
//
// It builds everything around the edge but not the edge itself, and does
// not import package edge (whose own tests use it): each caller starts
// its edge its own way — keyedge demo by writing an edge.yaml and loading
// it like keyedge serve, tests and benchmarks with edge.NewServer over a
// store from [World.OpenStore].
//
// [New] returns errors and [World.Close] stops what it started, for the
// demo; [ForTest] is New for a test. Everything uses a discarding logger.
//
// Files in [World.Dir]:
//
//	fleet.key                      the fleet key
//	testca.pem, testca.key         the CA of the tenants' certificates
//	keystore/                      the keystore, initialised as keyctl init leaves it
//	identity-ca.pem, identity-ca.key  the CA of mTLS identities (edges, key servers)
//	keyserver-keys/                keys held by in-process key servers (HoldKey)
//	geo-master.key                 the geo master key (EnableGeo)
package testworld

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/bulkfile"
	"github.com/keyedge/keyedge/internal/filestore"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// Names of the world's files and directories in Dir.
const (
	FleetKeyFile   = "fleet.key"
	CAFile         = "testca.pem"
	KeystoreDir    = "keystore"
	IdentityCAFile = "identity-ca.pem"
	KeysDir        = "keyserver-keys"
	MasterKeyFile  = "geo-master.key"
)

// Options says how to build a World. The zero value is a world named
// "keyedge test" whose origin answers 404, in the current directory.
type Options struct {
	// Dir is where the world's files go; it must exist and is left in
	// place by Close. ForTest uses a fresh t.TempDir() when empty.
	Dir string
	// Name prefixes the common names of the CAs: "<Name> CA" and
	// "<Name> identity CA" [default "keyedge test"].
	Name string
	// Origin handles the requests proxied to every tenant [default 404].
	Origin http.Handler
	// Bulk makes GenerateTenants write through keystore.BulkFileStorage
	// and sync the file system once at the end: fast for thousands of
	// tenants, and a crash before the end may lose them.
	Bulk bool
}

// World is the world's files, its running origin and key servers, and a
// writing store, until Close. Its fields are set by New; Master by
// EnableGeo.
type World struct {
	Dir        string             // the world's files (see the package doc)
	StoreDir   string             // Dir/keystore
	Fleet      *keystore.FleetKey // in Dir/fleet.key
	CA         *testpki.CA        // issues tenants' certificates; in Dir/testca.pem
	Roots      *x509.CertPool     // CA alone, for TLS clients of the edge
	IdentityCA *testpki.CA        // issues mTLS identities; in Dir/identity-ca.pem
	OriginURL  string             // http://127.0.0.1:<port>
	Master     *geo.MasterKey     // after EnableGeo; in Dir/geo-master.key

	// Writer is a store over the keystore that writes, opened one-shot
	// as keyctl opens it.
	Writer *keystore.Store

	opts    Options
	closers []func() error // run last first by Close
}

// New builds a world in opts.Dir: its fleet key, CAs and initialised
// keystore, an origin on 127.0.0.1 and Writer. On error, what it had
// started is stopped again.
func New(ctx context.Context, opts Options) (*World, error) {
	w := &World{Dir: opts.Dir, StoreDir: filepath.Join(opts.Dir, KeystoreDir), opts: opts}
	if err := w.build(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("testworld: %w", err)
	}
	return w, nil
}

func (w *World) build(ctx context.Context) error {
	name := cmp.Or(w.opts.Name, "keyedge test")
	var err error
	if w.Fleet, err = keystore.GenerateFleetKey(); err != nil {
		return err
	}
	if err := keystore.WriteFleetKeyFile(w.Path(FleetKeyFile), w.Fleet); err != nil {
		return err
	}
	if w.CA, err = newCA(name+" CA", w.Path(CAFile), w.Path("testca.key")); err != nil {
		return err
	}
	w.Roots = x509.NewCertPool()
	w.Roots.AddCert(w.CA.Certificate())
	if w.IdentityCA, err = newCA(name+" identity CA", w.Path(IdentityCAFile), w.Path("identity-ca.key")); err != nil {
		return err
	}
	origin := w.opts.Origin
	if origin == nil {
		origin = http.NotFoundHandler()
	}
	if err := w.startOrigin(origin); err != nil {
		return err
	}
	// Initialised as keyctl init leaves it: key servers refuse one that
	// is not.
	if err := keystore.Init(ctx, &certmagic.FileStorage{Path: w.StoreDir}); err != nil {
		return err
	}
	w.Writer, err = w.openStore(ctx, keystore.Options{OneShot: true})
	return err
}

// newCA creates a test CA and writes it to certFile and keyFile.
func newCA(commonName, certFile, keyFile string) (*testpki.CA, error) {
	ca, err := testpki.NewCA(commonName)
	if err != nil {
		return nil, err
	}
	return ca, ca.Write(certFile, keyFile)
}

// Path is the file or directory elem… in the world's directory.
func (w *World) Path(elem ...string) string {
	return filepath.Join(append([]string{w.Dir}, elem...)...)
}

// Close stops the key servers and the origin and closes the stores the
// world opened, the last started first.
func (w *World) Close() error {
	var errs []error
	for i := len(w.closers) - 1; i >= 0; i-- {
		errs = append(errs, w.closers[i]())
	}
	w.closers = nil
	return errors.Join(errs...)
}

// onClose has Close call f.
func (w *World) onClose(f func() error) { w.closers = append(w.closers, f) }

// startOrigin serves h over plain HTTP on 127.0.0.1 until Close.
func (w *World) startOrigin(h http.Handler) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	w.onClose(srv.Close)
	w.OriginURL = "http://" + ln.Addr().String()
	return nil
}

// OpenStore opens a store over the keystore, closed by Close. Storage is
// the keystore's files; FleetKey and Logger default to the world's (a
// discarding logger).
func (w *World) OpenStore(ctx context.Context, opts keystore.Options) (*keystore.Store, error) {
	s, err := w.openStore(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("testworld: %w", err)
	}
	return s, nil
}

func (w *World) openStore(ctx context.Context, opts keystore.Options) (*keystore.Store, error) {
	opts.Storage = filestore.New(w.StoreDir) // as backend.Open gives keyedge
	w.fill(&opts)
	s, err := keystore.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	w.onClose(s.Close)
	return s, nil
}

func (w *World) fill(opts *keystore.Options) {
	opts.FleetKey = cmp.Or(opts.FleetKey, w.Fleet)
	opts.Logger = cmp.Or(opts.Logger, discard)
}

var discard = slog.New(slog.DiscardHandler)

// GenerateTenants stores the tenants of spec (see testpki.TenantSpec),
// their origin the world's unless spec names one. With Options.Bulk it
// writes through a store of its own over keystore.BulkFileStorage and
// syncs once at the end; otherwise through Writer.
func (w *World) GenerateTenants(ctx context.Context, spec testpki.TenantSpec) error {
	spec.Origin = cmp.Or(spec.Origin, w.OriginURL)
	if !w.opts.Bulk {
		return w.generate(ctx, w.Writer, spec)
	}
	bulk := bulkfile.New(w.StoreDir)
	opts := keystore.Options{Storage: bulk}
	w.fill(&opts)
	store, err := keystore.Open(ctx, opts)
	if err != nil {
		return fmt.Errorf("testworld: %w", err)
	}
	defer store.Close()
	if err := w.generate(ctx, store, spec); err != nil {
		return err
	}
	if err := bulk.Sync(); err != nil {
		return fmt.Errorf("testworld: %w", err)
	}
	return nil
}

func (w *World) generate(ctx context.Context, store *keystore.Store, spec testpki.TenantSpec) error {
	if err := w.CA.GenerateTenants(ctx, store, spec, nil); err != nil {
		return fmt.Errorf("testworld: failed to generate tenants: %w", err)
	}
	return nil
}
