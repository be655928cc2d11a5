package keyserver

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/internal/ratelog"
	"github.com/keyedge/keyedge/internal/rsasigner"
	"github.com/keyedge/keyedge/internal/tlsconf"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// ServerOptions configures a Server. Zero values get the defaults in brackets.
type ServerOptions struct {
	// Keys finds the private keys requests name. Required.
	Keys KeySource

	// Authorizer says which clients may use which keys; nil lets no
	// client use any key (fail closed). To let every verified client use
	// every key, say so: AllowAll(). Server.SetAuthorizer replaces it.
	Authorizer *Authorizer

	// AllowRSADecrypt answers the raw RSA decryption opcode, which only
	// TLS RSA key exchange needs; keyedge edges negotiate ECDHE suites
	// and never send it. It is a variable-time private key operation on
	// a ciphertext the client chooses, so it is off unless set: a request
	// for it is answered wire.ErrBadOpcode, as the reference server
	// answers an operation it does not serve. [false]
	AllowRSADecrypt bool

	// TLSConfig holds the server's certificate(s) and the CA pool that
	// client certificates must chain to (ClientCAs). Required. NewServer
	// copies it and forces ClientAuth to RequireAndVerifyClientCert,
	// MinVersion to at least TLS 1.2, CurvePreferences to X25519MLKEM768,
	// X25519, P-256, and no NextProtos; configurations returned by
	// GetConfigForClient get the same treatment.
	TLSConfig *tls.Config

	// MaxInFlight bounds the requests read from one connection and not
	// yet answered [256]. At the bound the server stops reading from the
	// connection until a response is written: backpressure, never drops.
	MaxInFlight int

	IdleTimeout      time.Duration // a connection with no request for this long is closed [5m]
	WriteTimeout     time.Duration // writing responses; a peer not reading for this long is dropped [10s]
	HandshakeTimeout time.Duration // [10s]
	RequestTimeout   time.Duration // finding the key and answering one request; then ErrInternal [10s]

	// LogInterval spaces the log lines about refused and failed requests:
	// at most one per interval for each result (denied, disabled,
	// crypto_error, internal), with the number left out since the last
	// one; keyedge_keyserver_requests_total counts every request. [10s]
	LogInterval time.Duration

	Logger     *slog.Logger          // [slog.Default()]
	Registerer prometheus.Registerer // receives the keyedge_keyserver_* metrics if set
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("keyserver: server closed")

// Server answers Keyless SSL requests over mutual TLS: signatures and
// RSA decryptions with the keys of a KeySource, for the clients an
// Authorizer allows.
type Server struct {
	// Static after NewServer.
	opts    ServerOptions
	tls     *tls.Config
	log     *slog.Logger
	metrics *serverMetrics
	logs    ratelog.Limiter // refusals and failures, per result

	auth atomic.Pointer[Authorizer] // nil denies all; swapped by SetAuthorizer

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closing   bool          // Shutdown called: accept nothing more
	idle      chan struct{} // closed when closing and conns is empty
	idleOnce  sync.Once
}

// NewServer checks opts and returns a Server; Serve starts it.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Keys == nil {
		return nil, errors.New("keyserver: ServerOptions.Keys is nil")
	}
	if opts.TLSConfig == nil {
		return nil, errors.New("keyserver: ServerOptions.TLSConfig is nil")
	}
	t := opts.TLSConfig.Clone()
	if t.GetConfigForClient == nil {
		if t.ClientCAs == nil {
			return nil, errors.New("keyserver: ServerOptions.TLSConfig.ClientCAs is nil: no client could be verified")
		}
		if len(t.Certificates) == 0 && t.GetCertificate == nil {
			return nil, errors.New("keyserver: ServerOptions.TLSConfig has no server certificate")
		}
	} else {
		get := t.GetConfigForClient
		t.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hi)
			if err != nil || c == nil {
				return c, err
			}
			c = c.Clone()
			hardenTLS(c)
			return c, nil
		}
	}
	hardenTLS(t)
	opts = opts.withDefaults()
	s := &Server{
		opts:      opts,
		tls:       t,
		log:       opts.Logger,
		metrics:   newServerMetrics(t),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*serverConn]struct{}{},
		idle:      make(chan struct{}),
		logs:      ratelog.Limiter{Interval: opts.LogInterval},
	}
	s.auth.Store(opts.Authorizer)
	if err := s.metrics.register(opts.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// withDefaults returns o with every zero (or negative) limit and a nil
// Logger set to its default. LogInterval is left to ratelog.Limiter,
// whose zero value is the same 10s.
func (o ServerOptions) withDefaults() ServerOptions {
	o.MaxInFlight = cmp.Or(max(o.MaxInFlight, 0), 256)
	o.IdleTimeout = cmp.Or(max(o.IdleTimeout, 0), 5*time.Minute)
	o.WriteTimeout = cmp.Or(max(o.WriteTimeout, 0), 10*time.Second)
	o.HandshakeTimeout = cmp.Or(max(o.HandshakeTimeout, 0), 10*time.Second)
	o.RequestTimeout = cmp.Or(max(o.RequestTimeout, 0), 10*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func hardenTLS(c *tls.Config) {
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	c.CurvePreferences = tlsconf.DefaultCurves()
	c.NextProtos = nil
}

// SetAuthorizer replaces the authorization rules for requests read from
// now on; nil lets no client use any key.
func (s *Server) SetAuthorizer(a *Authorizer) { s.auth.Store(a) }

// Serve accepts connections on ln until Shutdown, and returns
// ErrServerClosed then. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			// Out of file descriptors and the like: wait, as net/http does.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("keyserver: accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("keyserver: accept failed: %w", err)
		}
		delay = 0
		c := newServerConn(s, nc)
		if !s.track(c) {
			nc.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.untrack(c)
			c.serve()
		}()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) track(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.checkIdleLocked()
}

func (s *Server) checkIdleLocked() {
	if s.closing && len(s.conns) == 0 {
		s.idleOnce.Do(func() { close(s.idle) })
	}
}

// Shutdown stops accepting connections and reading requests, answers
// the requests already read, and closes each connection once its
// answers are written. If ctx ends first, it closes the remaining
// connections at once and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.checkIdleLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	select {
	case <-s.idle:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.abort()
	}
	s.mu.Unlock()
	return ctx.Err()
}

// answer computes the response to a decoded request, and the result
// for metrics. It is called concurrently, one goroutine per request.
// The response may alias m.
func (s *Server) answer(ctx context.Context, c *serverConn, m *wire.Message) (*wire.Message, string) {
	op := m.Opcode
	switch {
	case op == wire.OpPing:
		return &wire.Message{ID: m.ID, Opcode: wire.OpPong, Payload: m.Payload}, resultOK
	case op.IsResponse():
		return wire.ErrorResponse(m.ID, wire.ErrUnexpectedOpcode), resultBadRequest
	case op != wire.OpRSADecrypt && !op.IsSign():
		return wire.ErrorResponse(m.ID, wire.ErrBadOpcode), resultBadRequest
	case op == wire.OpRSADecrypt && !s.opts.AllowRSADecrypt:
		s.logs.Log(ctx, s.log, slog.LevelWarn, resultDisabled, "keyserver: raw RSA decryption refused: not enabled",
			"client", c.id, "remote", c.remote, "ski", hex.EncodeToString(m.SKI), "sni", m.SNI)
		return wire.ErrorResponse(m.ID, wire.ErrBadOpcode), resultDisabled
	}
	if h := op.Hash(); (h != 0 && len(m.Payload) != h.Size()) || (op == wire.OpRSADecrypt && len(m.Payload) == 0) {
		return wire.ErrorResponse(m.ID, wire.ErrFormat), resultBadRequest
	}

	key, err := s.opts.Keys.Key(ctx, KeyRef{SKI: m.SKI, CertID: m.CertID, SNI: m.SNI})
	if err == nil && len(m.SKI) > 0 && string(m.SKI) != string(key.SKI[:]) {
		err = fmt.Errorf("%w: source returned a key with another SKI", ErrKeyNotFound)
	}
	switch {
	case errors.Is(err, ErrKeyNotFound):
		s.log.Debug("keyserver: key not found", "client", c.id, "op", op.String(),
			"ski", hex.EncodeToString(m.SKI), "cert_id", m.CertID, "sni", m.SNI, "err", err)
		return wire.ErrorResponse(m.ID, wire.ErrKeyNotFound), resultKeyNotFound
	case err != nil:
		s.logs.Log(ctx, s.log, slog.LevelError, resultInternal, "keyserver: key lookup failed", "client", c.id, "op", op.String(), "err", err)
		return wire.ErrorResponse(m.ID, wire.ErrInternal), resultInternal
	}
	if !s.auth.Load().Allowed(c.peer, key) {
		s.metrics.denials.Inc()
		s.logs.Log(ctx, s.log, slog.LevelWarn, resultDenied, "keyserver: client not authorized for key", "client", c.id, "remote", c.remote,
			"op", op.String(), "ski", hex.EncodeToString(key.SKI[:]), "cert_id", m.CertID, "sni", m.SNI)
		return wire.ErrorResponse(m.ID, wire.ErrKeyNotFound), resultDenied
	}

	start := time.Now()
	out, werr, err := operate(key.Signer, op, m.Payload)
	if err != nil {
		level, result := slog.LevelWarn, resultCryptoError
		if werr == wire.ErrInternal {
			level, result = slog.LevelError, resultInternal
		}
		s.logs.Log(ctx, s.log, level, result, "keyserver: key operation failed", "client", c.id, "op", op.String(),
			"ski", hex.EncodeToString(key.SKI[:]), "err", err)
		return wire.ErrorResponse(m.ID, werr), result
	}
	s.metrics.signSeconds.WithLabelValues(family(op)).Observe(time.Since(start).Seconds())
	return &wire.Message{ID: m.ID, Opcode: wire.OpResponse, Payload: out}, resultOK
}

// operate signs or decrypts payload with signer as op asks, after
// checking the key's type fits op. A failure returns the protocol error
// to answer with and the error to log.
func operate(signer crypto.Signer, op wire.Op, payload []byte) ([]byte, wire.Error, error) {
	var opts crypto.SignerOpts = op.Hash()
	var typeOK bool
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
		typeOK = op == wire.OpRSADecrypt || (op >= wire.OpRSASignMD5SHA1 && op <= wire.OpRSASignSHA512) || op.IsPSS()
		if op.IsPSS() {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: op.Hash()}
		}
	case *ecdsa.PublicKey:
		typeOK = op >= wire.OpECDSASignMD5SHA1 && op <= wire.OpECDSASignSHA512
	case ed25519.PublicKey:
		typeOK = op == wire.OpEd25519Sign
	default:
		return nil, wire.ErrCrypto, fmt.Errorf("unsupported key type %T", pub)
	}
	if !typeOK {
		return nil, wire.ErrCrypto, fmt.Errorf("%v does not apply to a %T key", op, signer.Public())
	}
	if op == wire.OpRSADecrypt {
		priv, ok := signer.(*rsa.PrivateKey)
		if s, isOpenSSL := signer.(*rsasigner.Signer); isOpenSSL {
			priv, ok = s.PrivateKey(), true
		}
		if !ok {
			return nil, wire.ErrCrypto, fmt.Errorf("raw RSA decryption needs an *rsa.PrivateKey, not %T", signer)
		}
		return rawDecrypt(priv, payload)
	}
	sig, err := signer.Sign(rand.Reader, payload, opts)
	if err != nil {
		return nil, wire.ErrCrypto, err
	}
	return sig, 0, nil
}

// rawDecrypt computes c^d mod n, padded to the modulus size, as TLS RSA
// key exchange through a key server needs (the client unpads).
//
// crypto/rsa has no raw decryption, so this uses math/big, which is not
// constant time. It blinds the ciphertext with a random r (c·r^e), so
// timing does not depend on the ciphertext an attacker chose, and checks
// the result (m^e = c) before returning it, so a fault in the CRT
// computation cannot leak a factor of n. Exponent-dependent timing of
// big.Int.Exp remains; prefer ECDHE suites, which never use this.
func rawDecrypt(priv *rsa.PrivateKey, ct []byte) ([]byte, wire.Error, error) {
	k := priv.Size()
	c := new(big.Int).SetBytes(ct)
	if len(ct) > k || c.Cmp(priv.N) >= 0 {
		return nil, wire.ErrCrypto, errors.New("ciphertext is not less than the modulus")
	}
	n, e := priv.N, big.NewInt(int64(priv.E))
	var r, rInv *big.Int
	for rInv == nil {
		var err error
		if r, err = rand.Int(rand.Reader, n); err != nil {
			return nil, wire.ErrInternal, err
		}
		if r.Sign() > 0 {
			rInv = new(big.Int).ModInverse(r, n)
		}
	}
	blinded := new(big.Int).Exp(r, e, n)
	blinded.Mul(blinded, c).Mod(blinded, n)
	m := decryptCRT(priv, blinded)
	m.Mul(m, rInv).Mod(m, n)
	if new(big.Int).Exp(m, e, n).Cmp(c) != 0 {
		return nil, wire.ErrInternal, errors.New("RSA decryption failed its check (bad key or fault)")
	}
	return m.FillBytes(make([]byte, k)), 0, nil
}

// decryptCRT returns c^d mod n, with the Chinese remainder theorem when
// the key has two primes and precomputed values.
func decryptCRT(priv *rsa.PrivateKey, c *big.Int) *big.Int {
	pre := priv.Precomputed
	if len(priv.Primes) != 2 || pre.Dp == nil || pre.Dq == nil || pre.Qinv == nil {
		return new(big.Int).Exp(c, priv.D, priv.N)
	}
	p, q := priv.Primes[0], priv.Primes[1]
	m1 := new(big.Int).Exp(c, pre.Dp, p)
	m2 := new(big.Int).Exp(c, pre.Dq, q)
	h := m1.Sub(m1, m2)
	h.Mul(h, pre.Qinv).Mod(h, p) // Mod is Euclidean: h ≥ 0
	return h.Mul(h, q).Add(h, m2)
}
