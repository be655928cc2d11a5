package edge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/acme"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"
)

// Config is the edge.yaml file of `keyedge serve`. Relative paths are
// relative to the file. See testdata/edge.yaml for a documented example.
type Config struct {
	Listen        string `yaml:"listen"`         // TLS address [:443]
	MetricsListen string `yaml:"metrics_listen"` // /metrics address [127.0.0.1:9090]; "off" disables
	Keystore      string `yaml:"keystore"`       // keystore directory, or redis[s]://host:port/db[?prefix=P] shared by a fleet (required)
	// KeystorePasswordFile holds the Redis keystore's password (0600).
	KeystorePasswordFile string `yaml:"keystore_password_file"`
	FleetKeyFile         string `yaml:"fleet_key_file"` // fleet key, mode 0600 (required)
	LogLevel             string `yaml:"log_level"`      // debug, info, warn, error [info]

	Fallback struct {
		CertFile string `yaml:"cert_file"` // PEM chain, leaf first
		KeyFile  string `yaml:"key_file"`  // PEM private key, mode 0600
	} `yaml:"fallback"` // served for no or unknown SNI; unset: unrecognized_name

	// SessionTickets derive the fleet's session ticket keys from a shared
	// secret (see TicketKeys), so sessions resume on any node. Unset:
	// per-process random keys.
	SessionTickets struct {
		SecretFile         string        `yaml:"secret_file"`          // hex, >= 32 bytes, mode 0600 (keyctl ticket-secret)
		PreviousSecretFile string        `yaml:"previous_secret_file"` // the secret being rotated out: decrypts only
		Rotation           time.Duration `yaml:"rotation"`             // epoch length [1h]
		Accept             int           `yaml:"accept"`               // previous epochs still resumed [2]
	} `yaml:"session_tickets"`

	Curves        []string `yaml:"curves"`          // [X25519MLKEM768, X25519, P-256]
	MinTLSVersion string   `yaml:"min_tls_version"` // "1.2" or "1.3" [1.2]

	Limits struct {
		HandshakeTimeout  time.Duration `yaml:"handshake_timeout"`   // [10s]
		ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"` // [10s]
		IdleTimeout       time.Duration `yaml:"idle_timeout"`        // [120s]
		TunnelIdleTimeout time.Duration `yaml:"tunnel_idle_timeout"` // upgraded (WebSocket) connection without traffic [5m]
		BodyReadTimeout   time.Duration `yaml:"body_read_timeout"`   // between two reads of a request body, then 408 [60s]
		MaxConns          int           `yaml:"max_conns"`           // [10000]
		MaxConnsPerIP     int           `yaml:"max_conns_per_ip"`    // per client address (IPv6: /64) [256, at most max_conns/4]
		MaxHeaderBytes    int           `yaml:"max_header_bytes"`    // [65536]
		DrainTimeout      time.Duration `yaml:"drain_timeout"`       // SIGTERM grace [30s]
	} `yaml:"limits"`

	ProxyProtocol struct {
		TrustedCIDRs []string `yaml:"trusted_cidrs"` // PROXY v1/v2 required from these, refused from others
	} `yaml:"proxy_protocol"`

	Origin struct {
		Timeout     time.Duration `yaml:"timeout"`      // response headers [30s], then 504
		DialTimeout time.Duration `yaml:"dial_timeout"` // [5s]
	} `yaml:"origin"`

	// Keyless is how this node reaches tenants' key servers: its mTLS
	// identity (re-read when the files change, so a renewed short-lived
	// certificate needs no restart) and the CA key servers' certificates
	// chain to. Unset: keyless tenants fail their handshakes.
	Keyless struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
		CAFile   string `yaml:"ca_file"`
		// AttemptTimeout bounds one try on one key server, dial included,
		// before the next one is tried; a server that timed out is skipped
		// until its health check passes. It must be shorter than
		// limits.handshake_timeout. See keyserver.ClientConfig [1s].
		AttemptTimeout time.Duration `yaml:"attempt_timeout"`
		// Timeout bounds one signature, every key server tried included,
		// when its caller sets no deadline. Handshakes always set one
		// (limits.handshake_timeout), so it does not bound their
		// signatures [5s].
		Timeout time.Duration `yaml:"timeout"`
	} `yaml:"keyless"`

	// Geo places this node for keys with a geo policy: its attributes, the
	// attribute key `keyctl node-key` issued for them, and the directory
	// of key servers that sign for restricted keys this node may not open.
	Geo struct {
		Attributes  string `yaml:"attributes"`    // e.g. "region: eu, country: de, dc: fra1"
		NodeKeyFile string `yaml:"node_key_file"` // mode 0600, issued for exactly these attributes
		KeyServers  []struct {
			Addr       string `yaml:"addr"`       // host:port
			Attributes string `yaml:"attributes"` // where it runs, as its own node key says
			Preference int    `yaml:"preference"` // lower first [0]
		} `yaml:"key_servers"`
	} `yaml:"geo"`

	// ACME obtains and renews certificates of the names declared for it
	// (keyctl issue) from an ACME CA, answering HTTP-01 on http_listen
	// (which otherwise redirects to https) and TLS-ALPN-01 on listen.
	// Every node of a fleet must name the same CA: challenge tokens and
	// the account are stored under it. Unset ca: ACME off, no port 80.
	ACME struct {
		CA            string        `yaml:"ca"`             // directory URL, e.g. Let's Encrypt staging
		Email         string        `yaml:"email"`          // account contact for expiry notices
		CARootFile    string        `yaml:"ca_root_file"`   // PEM roots for the CA's HTTPS [system roots]
		HTTPListen    string        `yaml:"http_listen"`    // HTTP-01 and the https redirect [:80]
		RenewalWindow float64       `yaml:"renewal_window"` // last fraction of the lifetime [0.333]
		CheckInterval time.Duration `yaml:"check_interval"` // renewal and OCSP pass, jittered [1h]
		OnDemand      struct {
			Enabled   bool    `yaml:"enabled"`    // obtain in the handshake [false]
			AllowURL  string  `yaml:"allow_url"`  // ask this URL (?domain=NAME, 200 = yes) [only declared names]
			PerMinute float64 `yaml:"per_minute"` // orders per minute, all names [1]
			Burst     int     `yaml:"burst"`      // [5]
			// Storage reads and allow_url calls for names without a
			// certificate, all names together; past them, no I/O.
			ChecksPerSecond float64       `yaml:"checks_per_second"` // [10]
			CheckBurst      int           `yaml:"check_burst"`       // [20]
			RefusedTTL      time.Duration `yaml:"refused_ttl"`       // a refused name is refused from memory [1m]
		} `yaml:"on_demand"`
	} `yaml:"acme"`

	Cache struct {
		MaxEntries   int           `yaml:"max_entries"`   // [100000]
		MaxBytes     int64         `yaml:"max_bytes"`     // [256 MiB]
		NegativeTTL  time.Duration `yaml:"negative_ttl"`  // [1s]
		PollInterval time.Duration `yaml:"poll_interval"` // change journal [500ms]
	} `yaml:"cache"`

	dir string // directory of the file, for relative paths
}

// LoadConfig reads and checks a config file. Unknown keys are errors, so
// a misspelt setting is never silently ignored.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("edge: failed to read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	c := &Config{dir: filepath.Dir(path)}
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) { // no YAML document at all, or only comments
			return nil, fmt.Errorf("edge: config %s is empty", path)
		}
		return nil, fmt.Errorf("edge: config %s: %w", path, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("edge: config %s: %w", path, err)
	}
	return c, nil
}

// check validates the whole config and reports every problem it finds
// at once, each naming its setting.
func (c *Config) check() error {
	var errs []error
	if c.Keystore == "" || c.FleetKeyFile == "" {
		errs = append(errs, errors.New("keystore and fleet_key_file are required"))
	}
	if (c.Fallback.CertFile == "") != (c.Fallback.KeyFile == "") {
		errs = append(errs, errors.New("fallback needs both cert_file and key_file"))
	}
	if k := c.Keyless; (k.CertFile == "") != (k.KeyFile == "") || (k.CertFile == "") != (k.CAFile == "") {
		errs = append(errs, errors.New("keyless needs cert_file, key_file and ca_file together"))
	}
	errs = append(errs, c.checkNumbers(), c.checkKeylessTimeouts())
	if _, err := c.Level(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := c.geo(); err != nil {
		errs = append(errs, err)
	}
	if st := c.SessionTickets; st.SecretFile == "" && (st.PreviousSecretFile != "" || st.Rotation != 0 || st.Accept != 0) {
		errs = append(errs, errors.New("session_tickets settings need session_tickets.secret_file"))
	}
	if a := c.ACME; a.CA == "" && (a.Email != "" || a.CARootFile != "" || a.HTTPListen != "" || a.OnDemand.Enabled) {
		errs = append(errs, errors.New("acme settings need acme.ca"))
	}
	if _, err := parseCurves(c.Curves); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseVersion(c.MinTLSVersion); err != nil {
		errs = append(errs, err)
	}
	if _, err := parsePrefixes(c.ProxyProtocol.TrustedCIDRs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkNumbers checks every duration, count, size and rate of the file.
// Zero is "unset" and gets the default; a negative value would disable
// a limit or fail every handshake, so it is an error naming the setting.
func (c *Config) checkNumbers() error {
	l, st, a, od, cache := c.Limits, c.SessionTickets, c.ACME, c.ACME.OnDemand, c.Cache
	errs := []error{
		checkPositive("limits.handshake_timeout", l.HandshakeTimeout),
		checkPositive("limits.read_header_timeout", l.ReadHeaderTimeout),
		checkPositive("limits.idle_timeout", l.IdleTimeout),
		checkPositive("limits.tunnel_idle_timeout", l.TunnelIdleTimeout),
		checkPositive("limits.body_read_timeout", l.BodyReadTimeout),
		checkPositive("limits.max_conns", l.MaxConns),
		checkPositive("limits.max_conns_per_ip", l.MaxConnsPerIP),
		checkPositive("limits.max_header_bytes", l.MaxHeaderBytes),
		checkPositive("limits.drain_timeout", l.DrainTimeout),
		checkPositive("session_tickets.rotation", st.Rotation),
		checkPositive("session_tickets.accept", st.Accept),
		checkPositive("origin.timeout", c.Origin.Timeout),
		checkPositive("origin.dial_timeout", c.Origin.DialTimeout),
		checkPositive("keyless.attempt_timeout", c.Keyless.AttemptTimeout),
		checkPositive("keyless.timeout", c.Keyless.Timeout),
		checkPositive("acme.check_interval", a.CheckInterval),
		checkPositive("acme.on_demand.per_minute", od.PerMinute),
		checkPositive("acme.on_demand.burst", od.Burst),
		checkPositive("acme.on_demand.checks_per_second", od.ChecksPerSecond),
		checkPositive("acme.on_demand.check_burst", od.CheckBurst),
		checkPositive("acme.on_demand.refused_ttl", od.RefusedTTL),
		checkPositive("cache.max_entries", cache.MaxEntries),
		checkPositive("cache.max_bytes", cache.MaxBytes),
		checkPositive("cache.negative_ttl", cache.NegativeTTL),
		checkPositive("cache.poll_interval", cache.PollInterval),
	}
	if st.Rotation > 0 && st.Rotation < time.Second {
		errs = append(errs, fmt.Errorf("session_tickets.rotation: must be at least 1s, got %v", st.Rotation))
	}
	if a.RenewalWindow < 0 || a.RenewalWindow >= 1 {
		errs = append(errs, fmt.Errorf("acme.renewal_window: must be a fraction between 0 and 1, got %v", a.RenewalWindow))
	}
	return errors.Join(errs...)
}

// checkPositive reports a negative setting; zero means the default.
func checkPositive[T int | int64 | float64 | time.Duration](name string, v T) error {
	if v < 0 {
		return fmt.Errorf("%s: must be positive, got %v", name, v)
	}
	return nil
}

// checkKeylessTimeouts refuses an attempt timeout that leaves a
// handshake no time to fail over to a second key server. (checkNumbers
// refuses negative ones.)
func (c *Config) checkKeylessTimeouts() error {
	k := c.Keyless
	handshake := Limits{HandshakeTimeout: c.Limits.HandshakeTimeout}.withDefaults().HandshakeTimeout
	if handshake > 0 && k.AttemptTimeout >= handshake {
		return fmt.Errorf("keyless.attempt_timeout (%v) must be shorter than limits.handshake_timeout (%v), or a handshake never fails over to a second key server", k.AttemptTimeout, handshake)
	}
	return nil
}

// KeystoreLocation is the keystore's directory, resolved relative to the
// file, or its Redis URL as written.
func (c *Config) KeystoreLocation() string {
	if backend.IsURL(c.Keystore) {
		return c.Keystore
	}
	return c.Path(c.Keystore)
}

// Path resolves p relative to the config file.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// Level is the configured log level.
func (c *Config) Level() (slog.Level, error) {
	var l slog.Level
	if c.LogLevel == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level: %w", err)
	}
	return l, nil
}

// Options builds server options from the config, reading the fallback
// certificate and ticket keys. The caller sets Store, Logger, Registerer
// and Keyless (see KeylessClient).
func (c *Config) Options() (Options, error) {
	var o Options
	var err error
	if c.Fallback.CertFile != "" {
		cert, err := secretfile.KeyPair(c.Path(c.Fallback.CertFile), c.Path(c.Fallback.KeyFile))
		if err != nil {
			return o, fmt.Errorf("edge: fallback certificate: %w", err)
		}
		o.Fallback = &cert
	}
	if st := c.SessionTickets; st.SecretFile != "" {
		o.Tickets = &TicketKeys{Period: st.Rotation, Accept: st.Accept}
		if o.Tickets.Secret, err = ReadTicketSecret(c.Path(st.SecretFile)); err != nil {
			return o, err
		}
		if st.PreviousSecretFile != "" {
			if o.Tickets.Previous, err = ReadTicketSecret(c.Path(st.PreviousSecretFile)); err != nil {
				return o, err
			}
		}
		if err := o.Tickets.check(); err != nil {
			return o, err
		}
	}
	o.Curves, _ = parseCurves(c.Curves)
	o.MinVersion, _ = parseVersion(c.MinTLSVersion)
	o.TrustedProxies, _ = parsePrefixes(c.ProxyProtocol.TrustedCIDRs)
	o.Limits = Limits{
		HandshakeTimeout:  c.Limits.HandshakeTimeout,
		ReadHeaderTimeout: c.Limits.ReadHeaderTimeout,
		IdleTimeout:       c.Limits.IdleTimeout,
		MaxConns:          c.Limits.MaxConns,
		MaxHeaderBytes:    c.Limits.MaxHeaderBytes,
		MaxConnsPerIP:     c.Limits.MaxConnsPerIP,
	}
	o.Proxy = ProxyConfig{
		OriginTimeout:     c.Origin.Timeout,
		DialTimeout:       c.Origin.DialTimeout,
		TunnelIdleTimeout: c.Limits.TunnelIdleTimeout,
		BodyReadTimeout:   c.Limits.BodyReadTimeout,
	}
	o.Node, o.KeyServers, _ = c.geo()
	return o, nil
}

// geo parses the geo section.
func (c *Config) geo() (geo.Attributes, []KeyServer, error) {
	g := c.Geo
	node, err := geo.ParseAttributes(g.Attributes)
	if err != nil {
		return node, nil, fmt.Errorf("geo.attributes: %w", err)
	}
	if g.NodeKeyFile != "" && g.Attributes == "" {
		return node, nil, errors.New("geo.node_key_file needs geo.attributes (the attributes it was issued for)")
	}
	if len(g.KeyServers) > 0 && c.Keyless.CertFile == "" {
		return node, nil, errors.New("geo.key_servers needs the keyless section (this node's identity to key servers)")
	}
	servers := make([]KeyServer, len(g.KeyServers))
	for i, ks := range g.KeyServers {
		if _, _, err := net.SplitHostPort(ks.Addr); err != nil {
			return node, nil, fmt.Errorf("geo.key_servers[%d].addr: %w", i, err)
		}
		attrs, err := geo.ParseAttributes(ks.Attributes)
		if err != nil {
			return node, nil, fmt.Errorf("geo.key_servers[%d].attributes: %w", i, err)
		}
		servers[i] = KeyServer{Addr: ks.Addr, Attributes: attrs, Preference: ks.Preference}
	}
	return node, servers, nil
}

// NodeKey reads the node's geo attribute key, or returns nil when the
// config names none. A key issued for other attributes than the
// configured ones is an error: the node would route by attributes its
// key cannot honour.
func (c *Config) NodeKey() (*geo.NodeKey, error) {
	if c.Geo.NodeKeyFile == "" {
		return nil, nil
	}
	k, err := geo.ReadNodeKeyFile(c.Path(c.Geo.NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	node, _, err := c.geo()
	if err != nil {
		return nil, err
	}
	if !k.Attributes().Equal(node) {
		return nil, fmt.Errorf("edge: node key %s was issued for %q, but geo.attributes are %q", c.Geo.NodeKeyFile, k.Attributes(), node)
	}
	return k, nil
}

// KeylessClient makes the client for keyless tenants' key servers, or
// returns nil when the config has no keyless section.
func (c *Config) KeylessClient(log *slog.Logger) (*keyserver.Client, error) {
	if c.Keyless.CertFile == "" {
		return nil, nil
	}
	identity := &certs.KeyPairFile{CertFile: c.Path(c.Keyless.CertFile), KeyFile: c.Path(c.Keyless.KeyFile)}
	if _, err := identity.Load(); err != nil {
		return nil, fmt.Errorf("edge: keyless identity: %w", err)
	}
	roots, err := certs.ReadCertPool(c.Path(c.Keyless.CAFile))
	if err != nil {
		return nil, fmt.Errorf("edge: keyless CA: %w", err)
	}
	return keyserver.NewClient(keyserver.ClientConfig{
		TLSConfig:      &tls.Config{RootCAs: roots, GetClientCertificate: identity.GetClientCertificate},
		Timeout:        c.Keyless.Timeout,
		AttemptTimeout: c.Keyless.AttemptTimeout,
		Logger:         log,
	})
}

// ACMEManager makes the ACME manager of a node whose keystore is store
// over storage, answering challenges on the node's bound listeners
// httpAddr (port 80) and tlsAddr (443). It returns nil when ACME is off.
func (c *Config) ACMEManager(store *keystore.Store, storage certmagic.Storage, httpAddr, tlsAddr net.Addr, log *slog.Logger, reg prometheus.Registerer) (*acme.Manager, error) {
	a := c.ACME
	if a.CA == "" {
		return nil, nil
	}
	opts := acme.Options{
		Store: store, Storage: storage, CA: a.CA, Email: a.Email,
		RenewalWindow: a.RenewalWindow, CheckInterval: a.CheckInterval,
		Logger: log, Registerer: reg,
	}
	if a.CARootFile != "" {
		roots, err := certs.ReadCertPool(c.Path(a.CARootFile))
		if err != nil {
			return nil, fmt.Errorf("edge: acme.ca_root_file: %w", err)
		}
		opts.TrustedRoots = roots
	}
	// certmagic opens its own challenge listener unless one is bound at
	// the ports it is told; tell it the node's own.
	if ta, ok := tlsAddr.(*net.TCPAddr); ok && ta.Port != 443 {
		opts.TLSPort = ta.Port
	}
	if ha, ok := httpAddr.(*net.TCPAddr); ok && ha.Port != 80 {
		opts.HTTPPort = ha.Port
	}
	if p := a.OnDemand; p.Enabled {
		opts.OnDemand = &acme.OnDemandPolicy{
			Rate: rate.Limit(p.PerMinute / 60), Burst: p.Burst,
			CheckRate: rate.Limit(p.ChecksPerSecond), CheckBurst: p.CheckBurst, RefusedTTL: p.RefusedTTL,
		}
		if p.AllowURL != "" {
			allow, err := acme.AllowURL(nil, p.AllowURL)
			if err != nil {
				return nil, fmt.Errorf("edge: acme.on_demand.allow_url: %w", err)
			}
			opts.OnDemand.Allow = allow
		}
	}
	return acme.NewManager(opts)
}

var curveNames = map[string]tls.CurveID{
	"X25519MLKEM768": tls.X25519MLKEM768,
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"P-384":          tls.CurveP384,
	"P-521":          tls.CurveP521,
}

func parseCurves(names []string) ([]tls.CurveID, error) {
	var ids []tls.CurveID
	for _, n := range names {
		id, ok := curveNames[n]
		if !ok {
			return nil, fmt.Errorf("curves: unknown %q (want X25519MLKEM768, X25519, P-256, P-384 or P-521)", n)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func parseVersion(v string) (uint16, error) {
	switch v {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("min_tls_version: %q is not 1.2 or 1.3", v)
}

func parsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, fmt.Errorf("proxy_protocol.trusted_cidrs: %w", err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}
