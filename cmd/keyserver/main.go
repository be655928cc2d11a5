// Command keyserver runs a Keyless SSL key server: it holds private keys
// on the customer's own machines and signs TLS handshakes for keyedge
// edges that connect over mutual TLS.
//
// Usage:
//
//	keyserver --config keyserver.yaml
//
// The configuration is documented in keyserver/testdata/keyserver.yaml;
// relative paths in it are relative to the file. SIGTERM and SIGINT
// shut the server down gracefully (requests already read are answered,
// for up to 10s); SIGHUP re-reads the file and applies its authorize
// rules (authorize, authorize_all) and log_level. Without authorize
// rules every request is denied; raw RSA decryption is off unless
// allow_rsa_decrypt is set. Exit status is 2 for a usage error, 1 for a
// failure.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/internal/ops"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.yaml.in/yaml/v3"
)

// config is keyserver.yaml.
type config struct {
	Listen               string `yaml:"listen"`                 // [":2407"]
	CertFile             string `yaml:"cert_file"`              // server certificate chain (PEM)
	KeyFile              string `yaml:"key_file"`               // its private key (PEM)
	ClientCAFile         string `yaml:"client_ca_file"`         // CAs of the client (edge) certificates (PEM)
	KeysDir              string `yaml:"keys_dir"`               // a directory of key files, or:
	Keystore             string `yaml:"keystore"`               // a keyedge keystore directory or redis:// URL,
	KeystorePasswordFile string `yaml:"keystore_password_file"` // the Redis keystore's password,
	FleetKeyFile         string `yaml:"fleet_key_file"`         // with the fleet key that opens its keys,
	NodeKeyFile          string `yaml:"node_key_file"`          // and this server's geo node key, for keys with a policy
	Authorize            []rule `yaml:"authorize"`              // absent or empty: no client may use any key
	AuthorizeAll         bool   `yaml:"authorize_all"`          // instead of authorize: every client may use every key
	AllowRSADecrypt      bool   `yaml:"allow_rsa_decrypt"`      // serve raw RSA decryption (RSA key exchange) [false]
	MaxInFlight          int    `yaml:"max_in_flight"`          // per connection [256]
	MetricsListen        string `yaml:"metrics_listen"`         // host:port for /metrics, /healthz, /readyz, or "off" ["off"]
	LogLevel             string `yaml:"log_level"`              // debug, info, warn, error ["info"]

	dir string // of the file, for relative paths
}

type rule struct {
	Clients []string `yaml:"clients"`
	Keys    []string `yaml:"keys"`
}

// shutdownTimeout bounds the graceful shutdown on SIGTERM and SIGINT.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	code := run(ctx, os.Args[1:], os.Stderr, hup)
	stop()
	os.Exit(code)
}

// run runs the server until ctx ends, reloading the configuration on
// every value from reload.
func run(ctx context.Context, args []string, stderr io.Writer, reload <-chan os.Signal) int {
	fs := flag.NewFlagSet("keyserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "keyserver.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "keyserver: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "keyserver: %v\n", err)
		return 1
	}
	level := new(slog.LevelVar)
	level.Set(cfg.level())
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(ctx, cfg, *path, log, level, reload); err != nil {
		log.Error("keyserver: " + err.Error())
		return 1
	}
	return 0
}

// serve starts everything cfg describes and runs until ctx ends.
func serve(ctx context.Context, cfg *config, path string, log *slog.Logger, level *slog.LevelVar, reload <-chan os.Signal) error {
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return err
	}
	auth, err := cfg.authorizer()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	keys, keysErr, closeKeys, err := cfg.keySource(ctx, log, reg)
	if err != nil {
		return err
	}
	defer closeKeys()
	srv, err := keyserver.NewServer(keyserver.Config{
		Keys:            keys,
		Authorizer:      auth,
		AllowRSADecrypt: cfg.AllowRSADecrypt,
		TLSConfig:       tlsConfig,
		MaxInFlight:     cfg.MaxInFlight,
		Logger:          log,
		Registerer:      reg,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	var ready atomic.Bool // /readyz: serving, not draining
	if cfg.MetricsListen != "off" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		metrics := &http.Server{Handler: ops.Handler(reg, &ready, keysErr), ReadHeaderTimeout: 10 * time.Second}
		go metrics.Serve(mln)
		defer metrics.Close()
		log.Info("keyserver: metrics listening", "addr", "http://"+mln.Addr().String()+"/metrics")
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ready.Store(true)
	cfg.warnAuthorization(log)
	if cfg.AllowRSADecrypt {
		log.Warn("keyserver: allow_rsa_decrypt: raw RSA decryption (a variable-time private key operation) is served")
	}
	log.Info("keyserver: listening", "addr", ln.Addr().String())

wait:
	for {
		select {
		case err := <-served:
			return err
		case <-reload:
			reloadConfig(path, cfg, srv, log, level)
		case <-ctx.Done():
			break wait
		}
	}
	ready.Store(false)
	log.Info("keyserver: shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("keyserver: connections closed before their requests were answered", "err", err)
	}
	if err := <-served; !errors.Is(err, keyserver.ErrServerClosed) {
		return err
	}
	log.Info("keyserver: stopped")
	return nil
}

// reloadConfig applies the authorize rules (authorize, authorize_all)
// and log level of the file at path; a file that does not load changes
// nothing.
func reloadConfig(path string, old *config, srv *keyserver.Server, log *slog.Logger, level *slog.LevelVar) {
	cfg, err := loadConfig(path)
	var auth *keyserver.Authorizer
	if err == nil {
		auth, err = cfg.authorizer()
	}
	if err != nil {
		log.Error("keyserver: reload failed; keeping the previous rules", "err", err)
		return
	}
	srv.SetAuthorizer(auth)
	level.Set(cfg.level())
	old.Authorize, old.AuthorizeAll, old.LogLevel = cfg.Authorize, cfg.AuthorizeAll, cfg.LogLevel
	if fmt.Sprint(*cfg) != fmt.Sprint(*old) {
		log.Warn("keyserver: only authorize, authorize_all and log_level change on reload; restart for the rest")
	}
	log.Info("keyserver: reloaded authorization rules", "rules", len(cfg.Authorize), "authorize_all", cfg.AuthorizeAll)
	cfg.warnAuthorization(log)
}

// loadConfig reads and checks a configuration file.
func loadConfig(path string) (*config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	cfg := &config{dir: filepath.Dir(path)}
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("empty file")
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func (c *config) check() error {
	if c.Listen == "" {
		c.Listen = ":2407"
	}
	if c.MetricsListen == "" {
		c.MetricsListen = "off"
	}
	for field, v := range map[string]string{"cert_file": c.CertFile, "key_file": c.KeyFile, "client_ca_file": c.ClientCAFile} {
		if v == "" {
			return fmt.Errorf("%s is required", field)
		}
	}
	switch {
	case (c.KeysDir == "") == (c.Keystore == ""):
		return errors.New("set exactly one of keys_dir and keystore")
	case c.Keystore != "" && c.FleetKeyFile == "":
		return errors.New("keystore needs fleet_key_file")
	case c.KeysDir != "" && (c.FleetKeyFile != "" || c.NodeKeyFile != "" || c.KeystorePasswordFile != ""):
		return errors.New("fleet_key_file, node_key_file and keystore_password_file go with keystore, not keys_dir")
	case c.MaxInFlight < 0:
		return fmt.Errorf("max_in_flight: must be positive, got %d", c.MaxInFlight)
	case c.AuthorizeAll && len(c.Authorize) > 0:
		return errors.New("set authorize or authorize_all, not both")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	_, err := c.authorizer()
	return err
}

// path resolves p relative to the configuration file.
func (c *config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func (c *config) level() slog.Level {
	l, _ := parseLevel(c.LogLevel)
	return l
}

// authorizer returns the rules: none (every request denied) when the
// file has no authorize rules, all allowed only with authorize_all.
func (c *config) authorizer() (*keyserver.Authorizer, error) {
	if c.AuthorizeAll {
		return keyserver.AllowAll(), nil
	}
	rules := make([]keyserver.Rule, len(c.Authorize))
	for i, r := range c.Authorize {
		rules[i] = keyserver.Rule{Clients: r.Clients, Keys: r.Keys}
	}
	a, err := keyserver.NewAuthorizer(rules)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	return a, nil
}

// warnAuthorization warns of the two settings that make authorization
// moot: no rules (a server that answers nothing) and authorize_all.
func (c *config) warnAuthorization(log *slog.Logger) {
	switch {
	case c.AuthorizeAll:
		log.Warn("keyserver: authorize_all: every client with a certificate from client_ca_file may use every key")
	case len(c.Authorize) == 0:
		log.Warn("keyserver: no authorize rules: every request is denied; add rules (or authorize_all: true)")
	}
}

// tlsConfig serves the key server's certificate from its files, re-read
// when they change, so a renewed certificate needs no restart.
func (c *config) tlsConfig() (*tls.Config, error) {
	identity := &certs.KeyPairFile{CertFile: c.path(c.CertFile), KeyFile: c.path(c.KeyFile)}
	if _, err := identity.Load(); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	pool, err := certs.ReadCertPool(c.path(c.ClientCAFile))
	if err != nil {
		return nil, fmt.Errorf("client CAs: %w", err)
	}
	return &tls.Config{GetCertificate: identity.GetCertificate, ClientCAs: pool}, nil
}

// keySource opens keys_dir or the keystore. It returns the source, its
// readiness check (nil while its storage answers) and a function closing
// it.
func (c *config) keySource(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) (keyserver.KeySource, func() error, func(), error) {
	if c.KeysDir != "" {
		d, err := keyserver.NewDirSource(c.path(c.KeysDir), keyserver.DirOptions{Logger: log})
		if err != nil {
			return nil, nil, nil, err
		}
		return d, func() error { return nil }, func() { d.Close() }, nil
	}
	fleet, err := keystore.ReadFleetKeyFile(c.path(c.FleetKeyFile))
	if err != nil {
		return nil, nil, nil, err
	}
	var nodeKey *geo.NodeKey
	if c.NodeKeyFile != "" {
		if nodeKey, err = geo.ReadNodeKeyFile(c.path(c.NodeKeyFile)); err != nil {
			return nil, nil, nil, err
		}
	}
	location := c.Keystore
	if !backend.IsURL(location) {
		location = c.path(location)
		if fi, err := os.Stat(location); err != nil || !fi.IsDir() {
			return nil, nil, nil, fmt.Errorf("no keystore at %s", location)
		}
	}
	storage, release, err := backend.Open(ctx, location, c.path(c.KeystorePasswordFile), log)
	if err != nil {
		return nil, nil, nil, err
	}
	store, err := keystore.Open(ctx, keystore.Options{
		Storage:     storage,
		FleetKey:    fleet,
		NodeKey:     nodeKey,
		Logger:      log,
		Registerer:  reg,
		RequireInit: true,
	})
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	return keyserver.NewKeystoreSource(store), store.Err, func() { store.Close(); release() }, nil
}
