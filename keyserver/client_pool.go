package keyserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/keyserver/wire"
)

// remote is the client's pool for one key server: up to ConnsPerServer
// multiplexed connections, a health state, and a latency estimate from
// pings and requests.
//
// Health: a server that fails fast (refused, reset, bad TLS) is down for
// a backoff that doubles with each consecutive failure, then tried
// again. A server that did not answer within AttemptTimeout is down
// until a round trip succeeds: its health check (pingLoop), or a request
// sent to it because no server was up. Retrying it after a backoff would
// cost a request AttemptTimeout each time.
type remote struct {
	c    *Client
	addr string

	dialing []chan struct{} // one per slot of conns, holding its single dial

	mu        sync.Mutex // guards conns, next, failures, downUntil, hung, rtt, closed
	conns     []*clientConn
	next      int
	failures  int           // consecutive
	downUntil time.Time     // backoff after a failure
	hung      bool          // an attempt timed out: down until a round trip succeeds
	rtt       time.Duration // EWMA of round trips
	closed    bool

	stopPing context.CancelFunc
}

func newRemote(c *Client, addr string) *remote {
	n := c.opts.ConnsPerServer
	r := &remote{
		c: c, addr: addr,
		conns:   make([]*clientConn, n),
		dialing: make([]chan struct{}, n),
	}
	for i := range r.dialing {
		r.dialing[i] = make(chan struct{}, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stopPing = cancel
	go r.pingLoop(ctx)
	return r
}

// errAttemptTimeout marks a server's failure to answer within
// AttemptTimeout; the error returned wraps the deadline error too.
var errAttemptTimeout = errors.New("no answer within the attempt timeout")

// health reports whether the server is up and its RTT.
func (r *remote) health() (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.hung && r.c.opts.Time().After(r.downUntil), r.rtt
}

// succeeded and failed update health after a round trip.
func (r *remote) succeeded(rtt time.Duration) {
	r.mu.Lock()
	wasHung := r.hung
	r.failures, r.downUntil, r.hung = 0, time.Time{}, false
	if r.rtt == 0 {
		r.rtt = rtt
	} else {
		r.rtt = (7*r.rtt + rtt) / 8
	}
	r.mu.Unlock()
	if wasHung {
		// At most once per hang, which took AttemptTimeout to find.
		r.c.log.Info("keyserver: key server answering again", "addr", r.addr)
	}
}

// failed marks the server down after err; timedOut says it did not
// answer within AttemptTimeout.
func (r *remote) failed(err error, timedOut bool) {
	r.mu.Lock()
	r.failures++
	failures := r.failures
	backoff := min(100*time.Millisecond<<min(failures-1, 7), 10*time.Second)
	r.downUntil = r.c.opts.Time().Add(backoff)
	r.hung = r.hung || timedOut
	hung := r.hung
	r.mu.Unlock()
	retry := "in " + backoff.String()
	if hung {
		retry = "after a health check passes"
	}
	r.c.logs.Log(context.Background(), r.c.log, slog.LevelWarn, "server_failing "+r.addr, "keyserver: key server failing (logged at most every 10s)",
		"addr", r.addr, "failures", failures, "retry", retry, "err", err)
}

// conn returns a live connection, round robin over the slots, dialing
// one if needed; concurrent callers wait for a slot's single dial.
func (r *remote) conn(ctx context.Context) (*clientConn, error) {
	r.mu.Lock()
	i := r.next
	r.next = (r.next + 1) % len(r.conns)
	r.mu.Unlock()
	if cc, err := r.live(i); cc != nil || err != nil {
		return cc, err
	}
	select {
	case r.dialing[i] <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.dialing[i] }()
	if cc, err := r.live(i); cc != nil || err != nil {
		return cc, err
	}
	cc, err := r.dial(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		cc.close(errClientClosed)
		return nil, errClientClosed
	}
	r.conns[i] = cc
	return cc, nil
}

// live returns slot i's connection if it is usable.
func (r *remote) live(i int) (*clientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClientClosed
	}
	if cc := r.conns[i]; cc != nil && !cc.dead() {
		return cc, nil
	}
	return nil, nil
}

func (r *remote) dial(ctx context.Context) (*clientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.c.opts.DialTimeout)
	defer cancel()
	d := &tls.Dialer{Config: r.c.opts.TLSConfig}
	raw, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	cc := &clientConn{
		conn:         raw.(*tls.Conn),
		writeTimeout: r.c.opts.Timeout,
		pending:      map[uint32]chan result{},
		slots:        make(chan struct{}, r.c.opts.MaxInFlight),
		writes:       make(chan frame, r.c.opts.MaxInFlight),
		done:         make(chan struct{}),
	}
	go cc.readLoop()
	go cc.writeLoop()
	return cc, nil
}

// do sends req on a connection and waits for its response, at most
// timeout when it is not 0, and at most until ctx ends. The caller owns
// the returned message. A failure marks the server down, unless ctx
// ended first: the caller's deadline says nothing about the server.
func (r *remote) do(ctx context.Context, req *wire.Message, timeout time.Duration) (*wire.Message, error) {
	callerDeadline, callerHasDeadline := ctx.Deadline()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	deadline, hasDeadline := ctx.Deadline()
	start := time.Now()
	cc, err := r.conn(ctx)
	if err == nil {
		var resp *wire.Message
		if resp, err = cc.roundTrip(ctx, req); err == nil {
			r.succeeded(time.Since(start))
			return resp, nil
		}
	}
	// The deadline is checked on the clock rather than through ctx.Err:
	// a dial or write can fail on it as a socket deadline before ctx's
	// own timer has fired.
	switch {
	case hasDeadline && !time.Now().Before(deadline):
		if timeout > 0 && (!callerHasDeadline || deadline.Before(callerDeadline)) {
			err = fmt.Errorf("%w (%v): %w", errAttemptTimeout, timeout, err)
			r.failed(err, true)
		}
	case ctx.Err() == nil || !errors.Is(err, ctx.Err()):
		r.failed(err, false)
	}
	return nil, err
}

// ping measures a round trip, within AttemptTimeout, with a ping
// carrying random bytes, which the server must echo.
func (r *remote) ping(ctx context.Context) (time.Duration, error) {
	payload := make([]byte, 8)
	rand.Read(payload)
	start := time.Now()
	resp, err := r.do(ctx, &wire.Message{Opcode: wire.OpPing, Payload: payload}, r.c.opts.AttemptTimeout)
	if err != nil {
		return 0, err
	}
	if resp.Opcode != wire.OpPong || string(resp.Payload) != string(payload) {
		err := fmt.Errorf("%w: bad pong", wire.ErrFormat)
		r.failed(err, false)
		return 0, err
	}
	return time.Since(start), nil
}

// pingLoop checks the server every PingInterval, so a failed server is
// found (and a recovered one noticed) without a handshake paying for it.
func (r *remote) pingLoop(ctx context.Context) {
	t := time.NewTicker(r.c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.ping(ctx)
		}
	}
}

func (r *remote) close() {
	r.stopPing()
	r.mu.Lock()
	r.closed = true
	conns := r.conns
	r.mu.Unlock()
	for _, cc := range conns {
		if cc != nil {
			cc.close(errClientClosed)
		}
	}
}

// clientConn is one connection to a key server with many requests in
// flight; responses are matched to requests by ID, in any order.
//
// Requests are written by writeLoop, not by their callers: a caller
// whose deadline passes while the connection is backed up gives up
// alone, and no one request's deadline can interrupt a write, which
// would leave the TLS stream unusable and fail every request on it.
type clientConn struct {
	// Static after dial.
	conn         *tls.Conn
	writeTimeout time.Duration // a write blocked this long (the server reads nothing) fails the connection
	slots        chan struct{} // bounds requests in flight
	writes       chan frame    // requests for writeLoop; as many as slots, so queuing never blocks for long

	ids atomic.Uint32

	mu      sync.Mutex // guards pending, err
	pending map[uint32]chan result
	err     error         // set once when the connection fails
	done    chan struct{} // closed with err
}

// frame is an encoded request and its ID.
type frame struct {
	id    uint32
	bytes []byte
}

type result struct {
	msg *wire.Message
	err error
}

func (cc *clientConn) dead() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

// close fails the connection and every request waiting on it.
func (cc *clientConn) close(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	pending := cc.pending
	cc.pending = nil
	close(cc.done)
	cc.mu.Unlock()
	cc.conn.Close()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

func (cc *clientConn) roundTrip(ctx context.Context, req *wire.Message) (*wire.Message, error) {
	select {
	case cc.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-cc.done:
		return nil, cc.err
	}
	defer func() { <-cc.slots }()

	m := *req
	m.ID = cc.ids.Add(1)
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	ch := make(chan result, 1)
	cc.mu.Lock()
	if cc.pending == nil {
		cc.mu.Unlock()
		return nil, cc.err
	}
	cc.pending[m.ID] = ch
	cc.mu.Unlock()
	defer func() {
		cc.mu.Lock()
		delete(cc.pending, m.ID)
		cc.mu.Unlock()
	}()

	// A request given up while queued is not written (writeLoop skips
	// IDs no longer pending), so a slot frees its queue place as well.
	select {
	case cc.writes <- frame{id: m.ID, bytes: b}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-cc.done:
		return nil, cc.err
	}
	select {
	case res := <-ch:
		return res.msg, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// writeLoop writes queued requests, in order, until the connection
// fails; one whose caller has already given up is skipped. A write that
// does not complete within writeTimeout (the longest a request may
// last) means the server stopped reading: the connection is failed.
func (cc *clientConn) writeLoop() {
	for {
		var f frame
		select {
		case f = <-cc.writes:
		case <-cc.done:
			return
		}
		cc.mu.Lock()
		_, waited := cc.pending[f.id]
		cc.mu.Unlock()
		if !waited {
			continue
		}
		cc.conn.SetWriteDeadline(time.Now().Add(cc.writeTimeout))
		if _, err := cc.conn.Write(f.bytes); err != nil {
			cc.close(fmt.Errorf("write: %w", err))
			return
		}
	}
}

// readLoop delivers responses to their requests until the connection
// fails. A response nobody waits for (its request timed out) is dropped.
func (cc *clientConn) readLoop() {
	var buf []byte
	for {
		msg, _, err := wire.ReadMessage(cc.conn, &buf)
		if err != nil {
			cc.close(fmt.Errorf("read: %w", err))
			return
		}
		// msg aliases buf, which the next read reuses.
		owned := *msg
		owned.Payload = append([]byte(nil), msg.Payload...)
		owned.SKI, owned.CertDigest, owned.ExtraPayload, owned.RequestContext = nil, nil, nil, nil
		cc.mu.Lock()
		ch := cc.pending[msg.ID]
		delete(cc.pending, msg.ID)
		cc.mu.Unlock()
		if ch != nil {
			ch <- result{msg: &owned}
		}
	}
}
