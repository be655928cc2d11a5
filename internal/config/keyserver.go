package config

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/rsasigner"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
)

// KeyServer is the keyserver.yaml file of `keyserver`. Relative paths are
// relative to the file. keyserver/testdata/keyserver.yaml is the
// documented example.
type KeyServer struct {
	Listen               string `yaml:"listen"`                 // [":2407"]
	CertFile             string `yaml:"cert_file"`              // server certificate chain (PEM)
	KeyFile              string `yaml:"key_file"`               // its private key (PEM)
	ClientCAFile         string `yaml:"client_ca_file"`         // CAs of the client (edge) certificates (PEM)
	KeysDir              string `yaml:"keys_dir"`               // a directory of key files, or:
	Keystore             string `yaml:"keystore"`               // a keyedge keystore directory or redis:// URL,
	KeystorePasswordFile string `yaml:"keystore_password_file"` // the Redis keystore's password,
	FleetKeyFile         string `yaml:"fleet_key_file"`         // with the fleet key that opens its keys,
	NodeKeyFile          string `yaml:"node_key_file"`          // and this server's geo node key, for keys with a policy
	Authorize            []Rule `yaml:"authorize"`              // absent or empty: no client may use any key
	AuthorizeAll         bool   `yaml:"authorize_all"`          // instead of authorize: every client may use every key
	AllowRSADecrypt      bool   `yaml:"allow_rsa_decrypt"`      // serve raw RSA decryption (RSA key exchange) [false]
	MaxInFlight          int    `yaml:"max_in_flight"`          // per connection [256]
	MetricsListen        string `yaml:"metrics_listen"`         // host:port for /metrics, /healthz, /readyz, or "off" ["off"]
	LogLevel             string `yaml:"log_level"`              // debug, info, warn, error ["info"]
	RSASigner            string `yaml:"rsa_signer"`             // auto, openssl or go, as edge.yaml's ["auto"]

	dir string // of the file, for relative paths
}

// Rule is one authorize rule of keyserver.yaml: the clients it admits
// and the keys they may use (see keyserver.Rule).
type Rule struct {
	Clients []string `yaml:"clients"`
	Keys    []string `yaml:"keys"`
}

// LoadKeyServer reads and checks a keyserver.yaml file, and fills in the
// default listen and metrics_listen. Unknown keys are errors, so a
// misspelt setting is never silently ignored; every problem is reported
// at once. It does not read the files the config names: see
// CheckKeyServer.
func LoadKeyServer(path string) (*KeyServer, error) { return loadKeyServer(path, false) }

// loadKeyServer is LoadKeyServer, and with files CheckKeyServer.
func loadKeyServer(path string, files bool) (*KeyServer, error) {
	c := &KeyServer{dir: filepath.Dir(path)}
	if err := load(path, c, files); err != nil {
		return nil, err
	}
	return c, nil
}

// setDefaults fills in the listeners' defaults.
func (c *KeyServer) setDefaults() {
	c.Listen = cmp.Or(c.Listen, ":2407")
	c.MetricsListen = cmp.Or(c.MetricsListen, "off")
}

// check validates the file, reporting every problem it finds.
func (c *KeyServer) check() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"cert_file", c.CertFile}, {"key_file", c.KeyFile}, {"client_ca_file", c.ClientCAFile}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s is required", f.name))
		}
	}
	if (c.KeysDir == "") == (c.Keystore == "") {
		errs = append(errs, errors.New("set exactly one of keys_dir and keystore"))
	}
	if c.Keystore != "" && c.FleetKeyFile == "" {
		errs = append(errs, errors.New("keystore needs fleet_key_file"))
	}
	if c.KeysDir != "" && (c.FleetKeyFile != "" || c.NodeKeyFile != "" || c.KeystorePasswordFile != "") {
		errs = append(errs, errors.New("fleet_key_file, node_key_file and keystore_password_file go with keystore, not keys_dir"))
	}
	errs = append(errs, checkPositive("max_in_flight", c.MaxInFlight))
	if c.AuthorizeAll && len(c.Authorize) > 0 {
		errs = append(errs, errors.New("set authorize or authorize_all, not both"))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if _, err := rsasigner.ParseBackend(c.RSASigner); err != nil {
		errs = append(errs, fmt.Errorf("rsa_signer: %w", err))
	}
	if _, err := c.Authorizer(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Path resolves p relative to the configuration file.
func (c *KeyServer) Path(p string) string { return resolve(c.dir, p) }

// Level is the configured log level (LoadKeyServer checked it).
func (c *KeyServer) Level() slog.Level {
	l, _ := parseLevel(c.LogLevel)
	return l
}

// Authorizer returns the rules: none (every request denied) when the
// file has no authorize rules, all allowed only with authorize_all.
func (c *KeyServer) Authorizer() (*keyserver.Authorizer, error) {
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

// WarnAuthorization warns of the two settings that make authorization
// moot: no rules (a server that answers nothing) and authorize_all.
func (c *KeyServer) WarnAuthorization(log *slog.Logger) {
	switch {
	case c.AuthorizeAll:
		log.Warn("keyserver: authorize_all: every client with a certificate from client_ca_file may use every key")
	case len(c.Authorize) == 0:
		log.Warn("keyserver: no authorize rules: every request is denied; add rules (or authorize_all: true)")
	}
}

// ServerOptions builds the key server's options: its TLS identity
// and client CAs, read now, and its authorization rules. The caller
// sets Keys (see OpenKeySource).
func (c *KeyServer) ServerOptions(log *slog.Logger, reg prometheus.Registerer) (keyserver.ServerOptions, error) {
	tlsConfig, err := c.tlsConfig(log)
	if err != nil {
		return keyserver.ServerOptions{}, err
	}
	auth, err := c.Authorizer()
	if err != nil {
		return keyserver.ServerOptions{}, err
	}
	return keyserver.ServerOptions{
		Authorizer:      auth,
		AllowRSADecrypt: c.AllowRSADecrypt,
		TLSConfig:       tlsConfig,
		MaxInFlight:     c.MaxInFlight,
		Logger:          log,
		Registerer:      reg,
	}, nil
}

// tlsConfig serves the key server's certificate from its files, re-read
// when they change, so a renewed certificate needs no restart; log is
// told of a renewal that does not load.
func (c *KeyServer) tlsConfig(log *slog.Logger) (*tls.Config, error) {
	identity := &certs.KeyPairFile{CertFile: c.Path(c.CertFile), KeyFile: c.Path(c.KeyFile), Logger: log}
	if _, err := identity.Load(); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	pool, err := certs.ReadCertPool(c.Path(c.ClientCAFile))
	if err != nil {
		return nil, fmt.Errorf("client CAs: %w", err)
	}
	return &tls.Config{GetCertificate: identity.GetCertificate, ClientCAs: pool}, nil
}

// OpenKeySource opens keys_dir or the keystore, whose RSA keys sign as
// rsa_signer says (see rsaSigners). It returns the source, its readiness
// check (nil while its storage answers) and a function closing it.
func (c *KeyServer) OpenKeySource(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) (keyserver.KeySource, func() error, func(), error) {
	signers, err := rsaSigners(c.RSASigner, log, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	if c.KeysDir != "" {
		d, err := keyserver.NewDirSource(c.Path(c.KeysDir), keyserver.DirOptions{Logger: log, Signer: signers.Wrap})
		if err != nil {
			return nil, nil, nil, err
		}
		return d, func() error { return nil }, func() { d.Close() }, nil
	}
	fleet, err := keystore.ReadFleetKeyFile(c.Path(c.FleetKeyFile))
	if err != nil {
		return nil, nil, nil, err
	}
	var nodeKey *geo.NodeKey
	if c.NodeKeyFile != "" {
		if nodeKey, err = geo.ReadNodeKeyFile(c.Path(c.NodeKeyFile)); err != nil {
			return nil, nil, nil, err
		}
	}
	location := keystoreLocation(c.dir, c.Keystore)
	if err := checkKeystoreDir(location); err != nil {
		return nil, nil, nil, err
	}
	store, _, release, err := openKeystore(ctx, location, c.Path(c.KeystorePasswordFile), keystore.Options{
		FleetKey:   fleet,
		NodeKey:    nodeKey,
		Logger:     log,
		Registerer: reg,
		Signer:     signers.Wrap,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return keyserver.NewKeystoreSource(store), store.Err, func() { store.Close(); release() }, nil
}
