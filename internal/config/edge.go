package config

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/edge"
	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/internal/rsasigner"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/internal/tlsconf"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/prometheus/client_golang/prometheus"
)

// Edge is the edge.yaml file of `keyedge serve`. Relative paths are
// relative to the file. edge/testdata/edge.yaml is the documented
// example. LoadEdge fills in the defaults of listen, metrics_listen,
// acme.http_listen and limits.drain_timeout; other unset settings stay
// zero, the default of the option they are wired to.
type Edge struct {
	Listen        string `yaml:"listen"`         // TLS address [:443]
	MetricsListen string `yaml:"metrics_listen"` // /metrics address [127.0.0.1:9090]; "off" disables
	Keystore      string `yaml:"keystore"`       // keystore directory, or redis[s]://host:port/db[?prefix=P] shared by a fleet (required)
	// KeystorePasswordFile holds the Redis keystore's password (0600).
	KeystorePasswordFile string `yaml:"keystore_password_file"`
	FleetKeyFile         string `yaml:"fleet_key_file"` // fleet key, mode 0600 (required)
	LogLevel             string `yaml:"log_level"`      // debug, info, warn, error [info]
	// RSASigner picks who computes local RSA signatures: OpenSSL's
	// libcrypto.so.3 (openssl: the edge does not start without it), Go's
	// crypto/rsa (go), or OpenSSL when it loads and else Go (auto). See
	// internal/rsasigner [auto].
	RSASigner string `yaml:"rsa_signer"`
	// Pprof serves Go's profiles (net/http/pprof) under /debug/pprof/ on
	// metrics_listen, for profiling in production. They show the
	// process's internals and a CPU or trace profile costs CPU while it
	// runs, so keep metrics_listen private when it is on [false].
	Pprof bool `yaml:"pprof"`

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

	// ECH serves Encrypted ClientHello under one public name for the
	// fleet, with keys derived per epoch from the fleet secret of
	// session_tickets (and its previous_secret_file while it rotates),
	// so every node accepts the same configs (see edge.ECHKeys).
	// `keyctl ech --config` prints what to publish in DNS. Unset: off.
	ECH struct {
		PublicName string        `yaml:"public_name"` // the outer ClientHello's name; its certificate comes from the keystore
		Rotation   time.Duration `yaml:"rotation"`    // epoch length [24h], at least 1m
		Accept     int           `yaml:"accept"`      // previous epochs whose configs are still accepted [1]
	} `yaml:"ech"`

	Curves        []string `yaml:"curves"`          // [X25519MLKEM768, X25519, P-256]
	MinTLSVersion string   `yaml:"min_tls_version"` // "1.2" or "1.3" [1.2]

	Limits struct {
		HandshakeTimeout  time.Duration `yaml:"handshake_timeout"`   // [10s]
		ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"` // [10s]
		IdleTimeout       time.Duration `yaml:"idle_timeout"`        // [120s]
		TunnelIdleTimeout time.Duration `yaml:"tunnel_idle_timeout"` // upgraded (WebSocket) connection without traffic [5m]
		BodyReadTimeout   time.Duration `yaml:"body_read_timeout"`   // between two reads of a request body, then 408 [60s]
		SendTimeout       time.Duration `yaml:"send_timeout"`        // a write waiting for the client to read, then the connection closes [60s]
		MaxConns          int           `yaml:"max_conns"`           // [10000]
		MaxConnsPerIP     int           `yaml:"max_conns_per_ip"`    // per client address (IPv6: /64) [256, at most max_conns/4]
		MaxHeaderBytes    int           `yaml:"max_header_bytes"`    // [65536]
		DrainTimeout      time.Duration `yaml:"drain_timeout"`       // SIGTERM grace [30s]
		// TCPKeepAlive turns on TCP keep-alive probes on client
		// connections (listen, http_listen) after this long idle; see
		// Edge.ClientListenConfig [off].
		TCPKeepAlive time.Duration `yaml:"tcp_keepalive"`
	} `yaml:"limits"`

	// HTTP3 serves HTTP/3 over QUIC on a UDP socket, with the TLS
	// listener's certificates, limits (max_conns and max_conns_per_ip
	// count TCP and QUIC connections together) and origins, and
	// advertises it in an Alt-Svc field on HTTP/1.1 and HTTP/2
	// responses. PROXY protocol is TCP only.
	HTTP3 struct {
		Enabled      *bool         `yaml:"enabled"`         // [true]
		Listen       string        `yaml:"listen"`          // UDP address [listen's]
		AltSvcMaxAge time.Duration `yaml:"alt_svc_max_age"` // how long clients remember Alt-Svc [24h]
	} `yaml:"http3"`

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
		// limits.handshake_timeout. See keyserver.ClientOptions [1s].
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
	// The edge routes by the node key's attributes; attributes is checked
	// against them, so the file says where the node is.
	Geo struct {
		Attributes  string `yaml:"attributes"`    // e.g. "region: eu, country: de, dc: fra1"
		NodeKeyFile string `yaml:"node_key_file"` // mode 0600, issued for exactly these attributes
		KeyServers  []struct {
			Addr       string `yaml:"addr"`       // host:port
			Attributes string `yaml:"attributes"` // where it runs, as its own node key says
			Preference int    `yaml:"preference"` // lower first [0]
		} `yaml:"key_servers"`
	} `yaml:"geo"`

	// HTTPListen is the plain-HTTP listener (port 80): it redirects every
	// request to https, but for tenants that opted out (keyctl http set
	// --redirect off: 403), and answers ACME HTTP-01 when acme is on.
	// [off; with acme on, acme.http_listen's :80]
	HTTPListen string `yaml:"http_listen"`

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

	// AccessLog writes one line per request (package edge/accesslog) to
	// path: a file, reopened on SIGUSR1 for logrotate, or stdout. Lines
	// wait in a buffer for the disk; when it is full they are dropped
	// and keyedge_edge_access_log_dropped_total counts them. Unset path:
	// no access log.
	AccessLog struct {
		Path   string  `yaml:"path"`   // a file (created 0640), or "stdout"
		Format string  `yaml:"format"` // json or text (key=value) [json]
		Sample float64 `yaml:"sample"` // fraction of requests logged; errors and 5xx always are [1]
		Buffer int     `yaml:"buffer"` // lines waiting for the disk [4096]
		Off    bool    `yaml:"off"`    // log nothing, keeping the settings [false]
	} `yaml:"access_log"`

	Cache struct {
		MaxEntries   int           `yaml:"max_entries"`   // [100000]
		MaxBytes     int64         `yaml:"max_bytes"`     // [256 MiB]
		NegativeTTL  time.Duration `yaml:"negative_ttl"`  // [1s]
		PollInterval time.Duration `yaml:"poll_interval"` // change journal [500ms]
	} `yaml:"cache"`

	dir string // directory of the file, for relative paths
}

// LoadEdge reads and checks an edge.yaml file. Unknown keys are errors,
// so a misspelt setting is never silently ignored; every problem is
// reported at once, each naming its setting.
//
// It does not read the files the config names: see CheckEdge.
func LoadEdge(path string) (*Edge, error) { return loadEdge(path, false) }

// loadEdge is LoadEdge, and with files CheckEdge.
func loadEdge(path string, files bool) (*Edge, error) {
	c := &Edge{dir: filepath.Dir(path)}
	if err := load(path, c, files); err != nil {
		return nil, err
	}
	return c, nil
}

// setDefaults fills in the settings only the binary uses: its listeners
// and drain timeout. The others keep their zero value, which the
// libraries' options take as their default.
func (c *Edge) setDefaults() {
	c.Listen = cmp.Or(c.Listen, ":443")
	c.MetricsListen = cmp.Or(c.MetricsListen, "127.0.0.1:9090")
	if c.ACME.CA != "" {
		c.ACME.HTTPListen = cmp.Or(c.ACME.HTTPListen, c.HTTPListen, ":80")
		c.HTTPListen = c.ACME.HTTPListen
	}
	c.Limits.DrainTimeout = cmp.Or(c.Limits.DrainTimeout, 30*time.Second)
	if c.HTTP3On() {
		c.HTTP3.Listen = cmp.Or(c.HTTP3.Listen, c.Listen)
	}
}

// HTTP3On reports whether HTTP/3 is served (http3.enabled, default on).
func (c *Edge) HTTP3On() bool { return c.HTTP3.Enabled == nil || *c.HTTP3.Enabled }

// check validates the whole config and reports every problem it finds
// at once, each naming its setting.
func (c *Edge) check() error {
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
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if _, err := rsasigner.ParseBackend(c.RSASigner); err != nil {
		errs = append(errs, fmt.Errorf("rsa_signer: %w", err))
	}
	if _, _, err := c.geo(); err != nil {
		errs = append(errs, err)
	}
	if st := c.SessionTickets; st.SecretFile == "" && (st.PreviousSecretFile != "" || st.Rotation != 0 || st.Accept != 0) {
		errs = append(errs, errors.New("session_tickets settings need session_tickets.secret_file"))
	}
	errs = append(errs, c.checkECH())
	if h := c.HTTP3; !c.HTTP3On() && (h.Listen != "" || h.AltSvcMaxAge != 0) {
		errs = append(errs, errors.New("http3 settings need http3.enabled (it is false)"))
	}
	if c.HTTPListen != "" && c.ACME.HTTPListen != "" && c.HTTPListen != c.ACME.HTTPListen {
		errs = append(errs, fmt.Errorf("http_listen %q and acme.http_listen %q: one plain-HTTP listener serves both; set one", c.HTTPListen, c.ACME.HTTPListen))
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
	errs = append(errs, c.checkAccessLog())
	return errors.Join(errs...)
}

// checkECH checks the ech section. (checkNumbers refuses negative
// numbers.)
func (c *Edge) checkECH() error {
	e := c.ECH
	switch {
	case e.PublicName == "" && (e.Rotation != 0 || e.Accept != 0):
		return errors.New("ech settings need ech.public_name")
	case e.PublicName == "":
		return nil
	case c.SessionTickets.SecretFile == "":
		return errors.New("ech needs session_tickets.secret_file: the fleet secret its keys derive from")
	case e.Rotation > 0 && e.Rotation < time.Minute:
		return fmt.Errorf("ech.rotation: must be at least 1m, got %v", e.Rotation)
	}
	if err := edge.CheckECHPublicName(e.PublicName); err != nil {
		return fmt.Errorf("ech.public_name: %w", err)
	}
	return nil
}

// checkAccessLog checks the access_log section. (checkNumbers refuses
// negative numbers.)
func (c *Edge) checkAccessLog() error {
	a := c.AccessLog
	var errs []error
	if a.Path == "" && (a.Format != "" || a.Sample != 0 || a.Buffer != 0) {
		errs = append(errs, errors.New("access_log settings need access_log.path (a file, or stdout)"))
	}
	if f := accesslog.Format(a.Format); f != "" && f != accesslog.JSON && f != accesslog.Text {
		errs = append(errs, fmt.Errorf("access_log.format: %q is not json or text", a.Format))
	}
	if a.Sample > 1 {
		errs = append(errs, fmt.Errorf("access_log.sample: must be a fraction up to 1, got %v (0 or unset logs every request; off: true logs none)", a.Sample))
	}
	return errors.Join(errs...)
}

// checkNumbers checks every duration, count, size and rate of the file.
// Zero is "unset" and gets the default; a negative value would disable
// a limit or fail every handshake, so it is an error naming the setting.
func (c *Edge) checkNumbers() error {
	l, st, a, od, cache := c.Limits, c.SessionTickets, c.ACME, c.ACME.OnDemand, c.Cache
	errs := []error{
		checkPositive("limits.handshake_timeout", l.HandshakeTimeout),
		checkPositive("limits.read_header_timeout", l.ReadHeaderTimeout),
		checkPositive("limits.idle_timeout", l.IdleTimeout),
		checkPositive("limits.tunnel_idle_timeout", l.TunnelIdleTimeout),
		checkPositive("limits.body_read_timeout", l.BodyReadTimeout),
		checkPositive("limits.send_timeout", l.SendTimeout),
		checkPositive("limits.max_conns", l.MaxConns),
		checkPositive("limits.max_conns_per_ip", l.MaxConnsPerIP),
		checkPositive("limits.max_header_bytes", l.MaxHeaderBytes),
		checkPositive("limits.drain_timeout", l.DrainTimeout),
		checkPositive("limits.tcp_keepalive", l.TCPKeepAlive),
		checkPositive("http3.alt_svc_max_age", c.HTTP3.AltSvcMaxAge),
		checkPositive("session_tickets.rotation", st.Rotation),
		checkPositive("session_tickets.accept", st.Accept),
		checkPositive("ech.rotation", c.ECH.Rotation),
		checkPositive("ech.accept", c.ECH.Accept),
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
		checkPositive("access_log.sample", c.AccessLog.Sample),
		checkPositive("access_log.buffer", c.AccessLog.Buffer),
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
func (c *Edge) checkKeylessTimeouts() error {
	k := c.Keyless
	handshake := edge.Limits{HandshakeTimeout: c.Limits.HandshakeTimeout}.WithDefaults().HandshakeTimeout
	if handshake > 0 && k.AttemptTimeout >= handshake {
		return fmt.Errorf("keyless.attempt_timeout (%v) must be shorter than limits.handshake_timeout (%v), or a handshake never fails over to a second key server", k.AttemptTimeout, handshake)
	}
	return nil
}

// Path resolves p relative to the config file.
func (c *Edge) Path(p string) string { return resolve(c.dir, p) }

// Level is the configured log level (LoadEdge checked it).
func (c *Edge) Level() slog.Level {
	l, _ := parseLevel(c.LogLevel)
	return l
}

// OpenKeystore opens the keystore the file names, with its fleet key,
// its node key (see nodeKey), its cache settings and the RSA signer of
// rsa_signer (see rsaSigners). It returns the
// store, its storage (the ACME manager's too) and the function releasing
// the storage, to call after the store's Close.
func (c *Edge) OpenKeystore(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) (*keystore.Store, certmagic.Storage, func() error, error) {
	fleet, err := keystore.ReadFleetKeyFile(c.Path(c.FleetKeyFile))
	if err != nil {
		return nil, nil, nil, err
	}
	nodeKey, err := c.nodeKey()
	if err != nil {
		return nil, nil, nil, err
	}
	signers, err := rsaSigners(c.RSASigner, log, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	return openKeystore(ctx, keystoreLocation(c.dir, c.Keystore), c.Path(c.KeystorePasswordFile), keystore.Options{
		FleetKey:     fleet,
		NodeKey:      nodeKey,
		MaxEntries:   c.Cache.MaxEntries,
		MaxBytes:     c.Cache.MaxBytes,
		NegativeTTL:  c.Cache.NegativeTTL,
		PollInterval: c.Cache.PollInterval,
		Logger:       log,
		Registerer:   reg,
		Signer:       signers.Wrap,
	})
}

// Options builds server options from the config, reading the fallback
// certificate and ticket keys. The caller sets Store (see OpenKeystore),
// Logger, Registerer, Keyless (see KeylessClient) and ACME (see
// ACMEManager).
func (c *Edge) Options() (edge.Options, error) {
	var o edge.Options
	var err error
	if o.Fallback, err = c.fallback(); err != nil {
		return o, err
	}
	if o.Tickets, err = c.tickets(); err != nil {
		return o, err
	}
	o.ECH = c.ech(o.Tickets)
	o.Curves, _ = parseCurves(c.Curves)
	o.MinVersion, _ = parseVersion(c.MinTLSVersion)
	o.TrustedProxies, _ = parsePrefixes(c.ProxyProtocol.TrustedCIDRs)
	o.Limits = edge.Limits{
		HandshakeTimeout:  c.Limits.HandshakeTimeout,
		ReadHeaderTimeout: c.Limits.ReadHeaderTimeout,
		IdleTimeout:       c.Limits.IdleTimeout,
		MaxConns:          c.Limits.MaxConns,
		MaxHeaderBytes:    c.Limits.MaxHeaderBytes,
		MaxConnsPerIP:     c.Limits.MaxConnsPerIP,
		SendTimeout:       c.Limits.SendTimeout,
	}
	o.Proxy = edge.ProxyOptions{
		OriginTimeout:     c.Origin.Timeout,
		DialTimeout:       c.Origin.DialTimeout,
		TunnelIdleTimeout: c.Limits.TunnelIdleTimeout,
		BodyReadTimeout:   c.Limits.BodyReadTimeout,
	}
	o.HTTP3.AltSvcMaxAge = c.HTTP3.AltSvcMaxAge
	_, o.KeyServers, _ = c.geo()
	return o, nil
}

// fallback reads the fallback certificate, or returns nil without one.
func (c *Edge) fallback() (*tls.Certificate, error) {
	if c.Fallback.CertFile == "" {
		return nil, nil
	}
	cert, err := secretfile.KeyPair(c.Path(c.Fallback.CertFile), c.Path(c.Fallback.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("edge: fallback certificate: %w", err)
	}
	return &cert, nil
}

// tickets reads the session ticket secrets, or returns nil without them.
func (c *Edge) tickets() (*edge.TicketKeys, error) {
	st := c.SessionTickets
	if st.SecretFile == "" {
		return nil, nil
	}
	t := &edge.TicketKeys{Period: st.Rotation, Accept: st.Accept}
	var err error
	if t.Secret, err = edge.ReadTicketSecret(c.Path(st.SecretFile)); err != nil {
		return nil, err
	}
	if st.PreviousSecretFile != "" {
		if t.Previous, err = edge.ReadTicketSecret(c.Path(st.PreviousSecretFile)); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// ech returns the ECH keys, derived from the session ticket secrets
// (tickets), or nil when ECH is off.
func (c *Edge) ech(tickets *edge.TicketKeys) *edge.ECHKeys {
	if c.ECH.PublicName == "" || tickets == nil {
		return nil
	}
	return &edge.ECHKeys{
		PublicName: c.ECH.PublicName,
		Secret:     tickets.Secret,
		Previous:   tickets.Previous,
		Period:     c.ECH.Rotation,
		Accept:     c.ECH.Accept,
	}
}

// ECHKeys reads the fleet secret and returns the ECH keys the file
// configures, for printing what to publish in DNS (keyctl ech).
// ErrNoECH: the file has no ech section.
func (c *Edge) ECHKeys() (*edge.ECHKeys, error) {
	if c.ECH.PublicName == "" {
		return nil, ErrNoECH
	}
	tickets, err := c.tickets()
	if err != nil {
		return nil, err
	}
	return c.ech(tickets), nil
}

// ErrNoECH is returned by Edge.ECHKeys for a file without ECH.
var ErrNoECH = errors.New("edge: config has no ech section (ech.public_name)")

// geo parses the geo section.
func (c *Edge) geo() (geo.Attributes, []edge.KeyServer, error) {
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
	servers := make([]edge.KeyServer, len(g.KeyServers))
	for i, ks := range g.KeyServers {
		if _, _, err := net.SplitHostPort(ks.Addr); err != nil {
			return node, nil, fmt.Errorf("geo.key_servers[%d].addr: %w", i, err)
		}
		attrs, err := geo.ParseAttributes(ks.Attributes)
		if err != nil {
			return node, nil, fmt.Errorf("geo.key_servers[%d].attributes: %w", i, err)
		}
		servers[i] = edge.KeyServer{Addr: ks.Addr, Attributes: attrs, Preference: ks.Preference}
	}
	return node, servers, nil
}

// nodeKey reads the node's geo attribute key, or returns nil when the
// config names none. The edge routes by the key's attributes (see
// keystore.Store.NodeAttributes); a key issued for other attributes than
// geo.attributes is an error, so the file says where the node is.
func (c *Edge) nodeKey() (*geo.NodeKey, error) {
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

// OpenAccessLog opens the access log the file names, or returns nil when
// it names none or turns it off. The caller closes it after the server's
// Shutdown, calls Reopen on SIGUSR1, and Reconfigure with
// AccessLogOptions on SIGHUP.
func (c *Edge) OpenAccessLog(log *slog.Logger) (*accesslog.Logger, error) {
	if !c.accessLogOn() {
		return nil, nil
	}
	l, err := accesslog.New(c.AccessLogOptions(log))
	if err != nil {
		return nil, fmt.Errorf("edge: access log: %w", err)
	}
	return l, nil
}

// AccessLogOptions are the access log's settings, its path resolved
// against the config file's directory.
func (c *Edge) AccessLogOptions(log *slog.Logger) accesslog.Options {
	a := c.AccessLog
	path := a.Path
	if path != accesslog.Stdout {
		path = c.Path(path)
	}
	return accesslog.Options{Path: path, Format: accesslog.Format(a.Format), Sample: a.Sample, Buffer: a.Buffer, Logger: log}
}

// accessLogOn reports whether the file turns an access log on.
func (c *Edge) accessLogOn() bool { return c.AccessLog.Path != "" && !c.AccessLog.Off }

// KeylessClient makes the client for keyless tenants' key servers, or
// returns nil when the config has no keyless section.
func (c *Edge) KeylessClient(log *slog.Logger) (*keyserver.Client, error) {
	if c.Keyless.CertFile == "" {
		return nil, nil
	}
	opts, err := c.keylessOptions(log)
	if err != nil {
		return nil, err
	}
	return keyserver.NewClient(opts)
}

// keylessOptions reads the keyless identity and CA into client options.
func (c *Edge) keylessOptions(log *slog.Logger) (keyserver.ClientOptions, error) {
	identity := &certs.KeyPairFile{CertFile: c.Path(c.Keyless.CertFile), KeyFile: c.Path(c.Keyless.KeyFile), Logger: log}
	if _, err := identity.Load(); err != nil {
		return keyserver.ClientOptions{}, fmt.Errorf("edge: keyless identity: %w", err)
	}
	roots, err := certs.ReadCertPool(c.Path(c.Keyless.CAFile))
	if err != nil {
		return keyserver.ClientOptions{}, fmt.Errorf("edge: keyless CA: %w", err)
	}
	return keyserver.ClientOptions{
		TLSConfig:      &tls.Config{RootCAs: roots, GetClientCertificate: identity.GetClientCertificate},
		Timeout:        c.Keyless.Timeout,
		AttemptTimeout: c.Keyless.AttemptTimeout,
		Logger:         log,
	}, nil
}

func parseCurves(names []string) ([]tls.CurveID, error) {
	ids, err := tlsconf.ParseCurves(names)
	if err != nil {
		return nil, fmt.Errorf("curves: %w", err)
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
