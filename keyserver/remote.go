package keyserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/keyserver/wire"
)

// remote is the client's pool for one key server: up to ConnsPerServer
// multiplexed connections, a health state with backoff, and a latency
// estimate from pings and requests.
type remote struct {
	c    *Client
	addr string

	dialMu []sync.Mutex // one per slot of conns: a single dial at a time

	mu        sync.Mutex // guards conns, next, failures, downUntil, rtt, closed
	conns     []*clientConn
	next      int
	failures  int
	downUntil time.Time
	rtt       time.Duration // EWMA of round trips
	closed    bool

	stopPing context.CancelFunc
}

func newRemote(c *Client, addr string) *remote {
	n := c.cfg.ConnsPerServer
	r := &remote{c: c, addr: addr, conns: make([]*clientConn, n), dialMu: make([]sync.Mutex, n)}
	ctx, cancel := context.WithCancel(context.Background())
	r.stopPing = cancel
	go r.pingLoop(ctx)
	return r
}

// health reports whether the server is up (not in backoff) and its RTT.
func (r *remote) health() (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Now().After(r.downUntil), r.rtt
}

// succeeded and failed update health after a round trip.
func (r *remote) succeeded(rtt time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures, r.downUntil = 0, time.Time{}
	if r.rtt == 0 {
		r.rtt = rtt
	} else {
		r.rtt = (7*r.rtt + rtt) / 8
	}
}

func (r *remote) failed(err error) {
	r.mu.Lock()
	r.failures++
	failures := r.failures
	backoff := min(100*time.Millisecond<<min(failures-1, 7), 10*time.Second)
	r.downUntil = time.Now().Add(backoff)
	r.mu.Unlock()
	r.c.log.Warn("keyserver: key server failing", "addr", r.addr, "failures", failures, "retry_in", backoff, "err", err)
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
	r.dialMu[i].Lock()
	defer r.dialMu[i].Unlock()
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
	ctx, cancel := context.WithTimeout(ctx, r.c.cfg.DialTimeout)
	defer cancel()
	d := &tls.Dialer{Config: r.c.cfg.TLSConfig}
	raw, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	cc := &clientConn{
		conn:    raw.(*tls.Conn),
		pending: map[uint32]chan result{},
		slots:   make(chan struct{}, r.c.cfg.MaxInFlight),
		done:    make(chan struct{}),
	}
	go cc.readLoop()
	return cc, nil
}

// do sends req on a connection and waits for its response. The caller
// owns the returned message.
func (r *remote) do(ctx context.Context, req *wire.Message) (*wire.Message, error) {
	start := time.Now()
	cc, err := r.conn(ctx)
	if err == nil {
		var resp *wire.Message
		if resp, err = cc.roundTrip(ctx, req); err == nil {
			r.succeeded(time.Since(start))
			return resp, nil
		}
	}
	if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
		r.failed(err)
	}
	return nil, err
}

// ping measures a round trip with a ping carrying random bytes, which
// the server must echo.
func (r *remote) ping(ctx context.Context) (time.Duration, error) {
	payload := make([]byte, 8)
	rand.Read(payload)
	start := time.Now()
	resp, err := r.do(ctx, &wire.Message{Opcode: wire.OpPing, Payload: payload})
	if err != nil {
		return 0, err
	}
	if resp.Opcode != wire.OpPong || string(resp.Payload) != string(payload) {
		err := fmt.Errorf("%w: bad pong", wire.ErrFormat)
		r.failed(err)
		return 0, err
	}
	return time.Since(start), nil
}

// pingLoop checks the server every PingInterval, so a failed server is
// found (and a recovered one noticed) without a handshake paying for it.
func (r *remote) pingLoop(ctx context.Context) {
	t := time.NewTicker(r.c.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, r.c.cfg.Timeout)
			r.ping(pctx)
			cancel()
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
type clientConn struct {
	conn  *tls.Conn
	ids   atomic.Uint32
	slots chan struct{} // bounds requests in flight

	writeMu sync.Mutex // serialises writes

	mu      sync.Mutex // guards pending, err
	pending map[uint32]chan result
	err     error         // set once when the connection fails
	done    chan struct{} // closed with err
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
	frame, err := m.MarshalBinary()
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

	cc.writeMu.Lock()
	deadline, _ := ctx.Deadline()
	cc.conn.SetWriteDeadline(deadline)
	_, err = cc.conn.Write(frame)
	cc.writeMu.Unlock()
	if err != nil {
		cc.close(fmt.Errorf("write: %w", err))
		return nil, err
	}
	select {
	case res := <-ch:
		return res.msg, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
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
