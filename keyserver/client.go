package keyserver

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/internal/ratelog"
	"github.com/keyedge/keyedge/internal/tlsconf"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// ClientOptions configures a Client. Zero values get the defaults in
// brackets.
type ClientOptions struct {
	// TLSConfig holds the client's identity (Certificates or
	// GetClientCertificate, so a renewed certificate file can be picked
	// up without a restart) and the key servers' CA (RootCAs). Required.
	TLSConfig *tls.Config

	// Timeout bounds one request, every key server tried included, when
	// its context has no deadline [5s]. A TLS handshake always has one
	// (the server's handshake timeout), which then bounds the request.
	// It also bounds a write to a key server that reads nothing: the
	// connection, shared by many requests, is then closed. A request's
	// own deadline only ever ends that request.
	Timeout time.Duration

	// AttemptTimeout bounds one attempt on one key server, dial included,
	// while another server is left to fail over to; it is also bounded
	// by the request's deadline [1s]. A server that accepts connections
	// but does not answer (stopped, blackholed, overloaded) costs a
	// request this much before the next server is tried, and is then
	// skipped until a health check passes. The last server tried, or
	// the last one up when only servers marked down follow, gets what
	// remains of the request's deadline: there is no better server to
	// save time for; but when every server is marked down, each gets
	// AttemptTimeout, so that hung servers fail a request within
	// seconds. Health checks are bounded by AttemptTimeout too.
	//
	// The default leaves a warm server (milliseconds plus a round trip)
	// and a cold one (TCP, TLS and the request: three round trips, under
	// a second between continents) time to answer, while several
	// failovers fit in a 10s handshake deadline.
	AttemptTimeout time.Duration

	DialTimeout    time.Duration // [3s]
	ConnsPerServer int           // connections kept to each key server [2]
	MaxInFlight    int           // requests in flight per connection [256]
	PingInterval   time.Duration // health check of every server in use [5s]

	// Time returns the current time, for the backoff of failing servers
	// [time.Now]. Latencies are measured with the monotonic clock.
	Time func() time.Time

	Logger *slog.Logger
}

// Client signs through key servers speaking the Keyless SSL protocol. It
// keeps a small pool of multiplexed mutual-TLS connections to each server
// it has been asked to use, checks their health with pings, measures
// their latency, and fails over between the servers that hold a key. It
// is safe for concurrent use.
type Client struct {
	opts    ClientOptions
	log     *slog.Logger
	metrics *clientMetrics
	logs    ratelog.Limiter // failures and failovers are logged at most every logInterval; metrics count all

	mu      sync.Mutex // guards servers, closed
	servers map[string]*remote
	closed  bool
}

// Endpoint is a key server holding a key: its address and preference
// (lower is preferred; equal preferences are ordered by latency).
type Endpoint struct {
	Addr       string
	Preference int
}

// NewClient returns a Client. Connections are made on first use.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.TLSConfig == nil {
		return nil, errors.New("keyserver: ClientOptions.TLSConfig is nil")
	}
	opts = opts.withDefaults()
	return &Client{
		opts: opts, log: opts.Logger, metrics: newClientMetrics(opts.TLSConfig),
		logs:    ratelog.Limiter{Interval: logInterval},
		servers: map[string]*remote{},
	}, nil
}

// Reconfigured returns a new Client with opts that counts in c's metrics
// (and whose identity the identity expiry gauge then reports), so a
// configuration reload keeps the keyedge_keyless_client_* series: the
// caller registers c's Collectors once. c keeps serving the requests
// already using it; close it once they are done. The new Client opens
// its own connections.
func (c *Client) Reconfigured(opts ClientOptions) (*Client, error) {
	n, err := NewClient(opts)
	if err != nil {
		return nil, err
	}
	n.metrics = c.metrics
	n.metrics.identity.Store(n.opts.TLSConfig)
	return n, nil
}

// withDefaults returns o with a copy of TLSConfig (at least TLS 1.2,
// the default curves if it names none) and every zero field set to its
// default.
func (o ClientOptions) withDefaults() ClientOptions {
	o.TLSConfig = o.TLSConfig.Clone()
	o.TLSConfig.MinVersion = max(o.TLSConfig.MinVersion, tls.VersionTLS12)
	if len(o.TLSConfig.CurvePreferences) == 0 {
		o.TLSConfig.CurvePreferences = tlsconf.DefaultCurves()
	}
	o.Timeout = cmp.Or(o.Timeout, 5*time.Second)
	o.AttemptTimeout = cmp.Or(o.AttemptTimeout, time.Second)
	o.DialTimeout = cmp.Or(o.DialTimeout, 3*time.Second)
	o.ConnsPerServer = cmp.Or(o.ConnsPerServer, 2)
	o.MaxInFlight = cmp.Or(o.MaxInFlight, 256)
	o.PingInterval = cmp.Or(o.PingInterval, 5*time.Second)
	if o.Time == nil {
		o.Time = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Collectors returns the client's metrics for the caller to register.
func (c *Client) Collectors() []prometheus.Collector { return c.metrics.collectors() }

// Close closes every connection; requests in flight fail.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	servers := c.servers
	c.servers = map[string]*remote{}
	c.mu.Unlock()
	for _, r := range servers {
		r.close()
	}
	return nil
}

// remote returns the pool for addr, creating it on first use.
func (c *Client) remote(addr string) (*remote, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClientClosed
	}
	r, ok := c.servers[addr]
	if !ok {
		r = newRemote(c, addr)
		c.servers[addr] = r
	}
	return r, nil
}

var errClientClosed = errors.New("keyserver: client closed")

// logInterval is how often at most the client logs failures and
// failovers of one kind; its metrics count every one.
const logInterval = 10 * time.Second

// Key returns a crypto.Signer for the private key of pub held by the key
// servers, usable as tls.Certificate.PrivateKey. For an RSA key it is
// also a crypto.Decrypter. Signatures use ctx for their deadline and
// cancellation (with Timeout if ctx has no deadline), and AttemptTimeout
// for each server they try but the last (see ClientOptions). ref.SKI
// is set from pub; if the caller set it, it must match.
func (c *Client) Key(ctx context.Context, pub crypto.PublicKey, ref KeyRef, servers []Endpoint) (crypto.Signer, error) {
	if len(servers) == 0 {
		return nil, errors.New("keyserver: no key servers for key")
	}
	ski, err := SKI(pub)
	if err != nil {
		return nil, err
	}
	if ref.SKI != nil && !bytes.Equal(ref.SKI, ski[:]) {
		return nil, errors.New("keyserver: KeyRef.SKI is not the public key's")
	}
	ref.SKI = ski[:]
	k := &RemoteKey{c: c, ctx: ctx, pub: pub, ref: ref, servers: servers}
	if _, ok := pub.(*rsa.PublicKey); ok {
		return &RemoteRSAKey{k}, nil
	}
	return k, nil
}

// RemoteKey is a private key held by key servers.
type RemoteKey struct {
	c       *Client
	ctx     context.Context
	pub     crypto.PublicKey
	ref     KeyRef // SKI set
	servers []Endpoint
	server  atomic.Pointer[string] // the address of the server that answered last
}

// RemoteRSAKey is a RemoteKey for RSA, which can also decrypt.
type RemoteRSAKey struct{ *RemoteKey }

// Public returns the public key.
func (k *RemoteKey) Public() crypto.PublicKey { return k.pub }

// Server returns the address of the key server that made the key's
// latest successful signature or decryption, "" before any: after a
// failover, not the first one tried.
func (k *RemoteKey) Server() string {
	if addr := k.server.Load(); addr != nil {
		return *addr
	}
	return ""
}

// Sign asks the key servers to sign digest, trying them in order of
// preference and measured latency, skipping those that are down, and
// failing over to the next on a connection failure, a server that does
// not answer within AttemptTimeout, or one that does not hold the key.
// rand is ignored: the server has its own.
func (k *RemoteKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	op, err := wire.SignOp(k.pub, opts)
	if err != nil {
		return nil, err
	}
	return k.do(op, digest)
}

// Decrypt decrypts an RSA PKCS#1 v1.5 ciphertext through a raw RSA
// decryption on the key server; the padding is checked here in constant
// time. OAEP and other options are not supported.
func (k *RemoteRSAKey) Decrypt(_ io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	switch opts.(type) {
	//lint:ignore SA1019 the Keyless SSL protocol's RSA-decrypt operation is PKCS#1 v1.5 (TLS RSA key exchange)
	case nil, *rsa.PKCS1v15DecryptOptions:
	default:
		return nil, fmt.Errorf("keyserver: unsupported decryption options %T", opts)
	}
	em, err := k.do(wire.OpRSADecrypt, msg)
	if err != nil {
		return nil, err
	}
	n := k.pub.(*rsa.PublicKey).Size()
	if len(em) != n {
		return nil, errors.New("keyserver: decryption result has the wrong size")
	}
	// EM = 0x00 || 0x02 || PS (≥ 8 nonzero bytes) || 0x00 || M
	good := subtle.ConstantTimeByteEq(em[0], 0) & subtle.ConstantTimeByteEq(em[1], 2)
	index, looking := 0, 1
	for i := 2; i < len(em); i++ {
		zero := subtle.ConstantTimeByteEq(em[i], 0)
		index = subtle.ConstantTimeSelect(looking&zero, i, index)
		looking = subtle.ConstantTimeSelect(zero, 0, looking)
	}
	good &= subtle.ConstantTimeLessOrEq(10, index) & (looking ^ 1)
	if good != 1 {
		return nil, rsa.ErrDecryption
	}
	return em[index+1:], nil
}

// do sends one request for this key and returns the response payload.
func (k *RemoteKey) do(op wire.Op, payload []byte) ([]byte, error) {
	ctx := k.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, k.c.opts.Timeout)
		defer cancel()
	}
	start := time.Now()
	req := &wire.Message{Opcode: op, Payload: payload, SKI: k.ref.SKI, CertID: k.ref.CertID, SNI: k.ref.SNI}
	var errs []error
	servers, up := k.c.order(k.servers)
	for i, r := range servers {
		last := i == len(servers)-1
		// The attempt timeout saves time for the servers after this one.
		// The last server, or the last one up before those known to be
		// down, may use all that is left; with none up, each is only
		// tried in case: a request for a key whose servers all hang
		// fails after their attempts instead of holding its caller (a
		// handshake, its connection) until the deadline.
		timeout := k.c.opts.AttemptTimeout
		if up > 0 && (last || i == up-1) {
			timeout = 0
		}
		resp, err := r.do(ctx, req, timeout)
		if err == nil {
			err = resp.ResponseError()
		}
		if err == nil {
			k.c.metrics.observe("ok", time.Since(start))
			k.server.Store(&r.addr)
			return resp.Payload, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.addr, err))
		if errors.Is(err, wire.ErrKeyNotFound) {
			k.c.keyNotFound(r.addr, k.ref)
		}
		// Another server may hold the key or be reachable; a crypto
		// error or a bad request would fail there too.
		if last || ctx.Err() != nil || !retryable(err) {
			break
		}
		k.c.failedOver(r.addr, servers[i+1].addr, err)
	}
	err := fmt.Errorf("keyserver: %s failed: %w", op, errors.Join(errs...))
	k.c.metrics.observe(resultOf(err), time.Since(start))
	return nil, err
}

// failedOver counts and logs a request moving from one server to the
// next after err.
func (c *Client) failedOver(from, to string, err error) {
	reason := failoverReason(err)
	c.metrics.failovers.WithLabelValues(reason).Inc()
	c.logs.Log(context.Background(), c.log, slog.LevelWarn, "failover", "keyserver: request failed over to the next key server (logged at most every 10s)",
		"from", from, "to", to, "reason", reason, "err", err)
}

// keyNotFound logs, at most every logInterval, a key server answering
// "key not found": a key server says that both for a key it does not
// hold and for one this client's identity may not use, so the operator
// has two things to check.
func (c *Client) keyNotFound(addr string, ref KeyRef) {
	c.logs.Log(context.Background(), c.log, slog.LevelWarn, "key_not_found",
		"keyserver: key server answered key not found (logged at most every 10s): it does not hold the key, or its authorize rules do not let this node's identity use it; add the key to its keys (keys_dir or keystore) or a rule for this node, and see its keyedge_keyserver_denials_total",
		"addr", addr, "cert", ref.CertID, "sni", ref.SNI)
}

// Failover reasons, the reason label of failovers_total.
const (
	failoverTimeout     = "timeout"        // no answer within AttemptTimeout
	failoverUnavailable = "unavailable"    // no connection, or it failed
	failoverError       = "error_response" // the server answered: key not found, read or internal error
)

func failoverReason(err error) string {
	var we wire.Error
	switch {
	case errors.Is(err, errAttemptTimeout):
		return failoverTimeout
	case errors.As(err, &we):
		return failoverError
	}
	return failoverUnavailable
}

// retryable reports whether a failed request may succeed on another server.
func retryable(err error) bool {
	var we wire.Error
	if errors.As(err, &we) {
		return we == wire.ErrKeyNotFound || we == wire.ErrInternal || we == wire.ErrRead
	}
	return true // transport failures and attempt timeouts
}

func resultOf(err error) string {
	var we wire.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errAttemptTimeout):
		return "timeout"
	case errors.As(err, &we) && we == wire.ErrKeyNotFound:
		return "key_not_found"
	case errors.As(err, &we):
		return "error_response"
	}
	return "unavailable"
}

// order returns the pools for servers: the up ones by preference then
// latency, then the ones marked down (tried last, in case all are), and
// how many are up.
func (c *Client) order(servers []Endpoint) ([]*remote, int) {
	type cand struct {
		r    *remote
		pref int
		up   bool
		rtt  time.Duration
	}
	cands := make([]cand, 0, len(servers))
	for _, s := range servers {
		r, err := c.remote(s.Addr)
		if err != nil {
			continue
		}
		up, rtt := r.health()
		cands = append(cands, cand{r, s.Preference, up, rtt})
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		if a.up != b.up {
			if a.up {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.pref, b.pref), cmp.Compare(measured(a.rtt), measured(b.rtt)))
	})
	out, up := make([]*remote, len(cands)), 0
	for i, cd := range cands {
		out[i] = cd.r
		if cd.up {
			up++
		}
	}
	return out, up
}

// measured orders a server not measured yet (rtt 0) after measured
// ones; its ping loop measures it within PingInterval.
func measured(rtt time.Duration) time.Duration {
	if rtt == 0 {
		return math.MaxInt64
	}
	return rtt
}

// Ping sends a ping to the key server at addr and returns the round
// trip. It waits at most AttemptTimeout, and updates the server's health
// as the background health checks do.
func (c *Client) Ping(ctx context.Context, addr string) (time.Duration, error) {
	r, err := c.remote(addr)
	if err != nil {
		return 0, err
	}
	return r.ping(ctx)
}
