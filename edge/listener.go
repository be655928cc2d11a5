package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// tlsListener accepts TCP connections, completes each TLS handshake in
// its own goroutine under the handshake timeout, and hands finished
// *tls.Conn values to http.Server. Doing the handshake here, not in
// net/http, gives the handshake its own deadline, a connection limit
// enforced before any TLS work, and a metric per handshake outcome.
type tlsListener struct {
	inner net.Listener
	srv   *Server // its tlsConfig, read per handshake so Reload applies

	ready      chan net.Conn     // handshaken connections for Accept
	work       chan handshakeJob // to an idle handshake worker
	idle       atomic.Int32      // handshake workers waiting on work
	ctx        context.Context   // canceled by Close, ending handshakes in flight
	cancel     context.CancelFunc
	wg         sync.WaitGroup // the accept loop and handshakes in flight
	acceptDone chan struct{}  // closed when the accept loop has returned
	drained    chan struct{}  // closed when, after that, every handshake has ended
}

func newTLSListener(inner net.Listener, srv *Server) *tlsListener {
	l := &tlsListener{
		inner:      inner,
		srv:        srv,
		ready:      make(chan net.Conn),
		work:       make(chan handshakeJob),
		acceptDone: make(chan struct{}),
		drained:    make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	go func() {
		<-l.acceptDone
		l.wg.Wait()
		close(l.drained)
	}()
	return l
}

// Accept returns the next connection whose handshake succeeded, or that
// the HTTP/1.1 loop hands over, until Close: after stopAccepting it
// still returns the connections whose handshakes were in flight, and
// those the loop hands over while the server drains.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// stopAccepting closes the TCP listener but lets the handshakes in
// flight finish, so a draining server serves every connection it
// accepted; drained is closed when they have. (With the socket shared by
// a successor process, connections not yet accepted go to it.)
func (l *tlsListener) stopAccepting() error {
	return l.inner.Close()
}

// Close stops accepting; handshakes in progress are abandoned.
func (l *tlsListener) Close() error {
	l.cancel()
	if err := l.inner.Close(); !errors.Is(err, net.ErrClosed) {
		return err // nil too
	}
	return nil // stopAccepting closed it already
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

func (l *tlsListener) acceptLoop() {
	defer l.wg.Done()
	defer close(l.acceptDone)
	var backoff time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.srv.log.Warn("edge: accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-l.ctx.Done():
				return
			}
		}
		backoff = 0
		st := l.srv.settings.Load()
		if n := l.srv.open.Add(1); n > int64(st.limits.MaxConns) {
			l.srv.open.Add(-1)
			l.srv.refuse(refusedMaxConns, "max_conns", st.limits.MaxConns)
			raw.Close()
			continue
		}
		l.srv.metrics.openConns.Inc()
		l.wg.Add(1)
		job := handshakeJob{&trackedConn{Conn: raw, srv: l.srv, rio: newRawSocket(raw)}, st.limits}
		select {
		case l.work <- job:
		default:
			go l.worker(job)
		}
	}
}

// handshakeJob is a connection accepted for its handshake, and the
// limits it was accepted under.
type handshakeJob struct {
	conn   *trackedConn
	limits Limits
}

// Handshake workers wait at most workerIdle for the next connection,
// and at most maxIdleWorkers of them wait, so the stacks kept after a
// burst of handshakes are bounded (to a few MiB) and soon released.
const (
	workerIdle     = 10 * time.Second
	maxIdleWorkers = 128
)

// worker runs handshakes, the first given and then others from work,
// until none comes for workerIdle, the accept loop ends, or
// maxIdleWorkers others are waiting already. A handshake needs a
// goroutine stack of tens of KiB, which a fresh goroutine grows to by
// copying it, two or three times, on every connection; a worker keeps
// its grown stack for the next handshake.
func (l *tlsListener) worker(job handshakeJob) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		if c := l.handshake(job.conn, job.limits); c != nil {
			c.serve(true)
		}
		if l.idle.Add(1) > maxIdleWorkers {
			l.idle.Add(-1)
			return
		}
		idle.Reset(workerIdle)
		select {
		case job = <-l.work:
			l.idle.Add(-1)
		case <-idle.C:
			l.idle.Add(-1)
			return
		case <-l.acceptDone:
			l.idle.Add(-1)
			return
		}
	}
}

// handshake admits a connection under the per-client limit, runs its TLS
// handshake and queues it for Accept; or, for the HTTP/1.1 loop, returns
// it for the caller to serve on its goroutine, whose stack the
// handshake has grown already.
func (l *tlsListener) handshake(raw *trackedConn, limits Limits) *h1Conn {
	defer l.wg.Done()
	// The client's address is known here, not in the accept loop: behind
	// a PROXY protocol listener, RemoteAddr reads the header (within the
	// handshake timeout), which must not stall other accepts. Close ends
	// that read and the handshake by closing the connection.
	stop := context.AfterFunc(l.ctx, func() { raw.Close() })
	addr := raw.RemoteAddr()
	if l.ctx.Err() != nil {
		return nil // closed by Close
	}
	if client, ok := clientPrefix(addr); ok {
		if !l.srv.clients.acquire(client, limits.MaxConnsPerIP) {
			stop()
			l.srv.refuse(refusedPerIP, "max_conns_per_ip", limits.MaxConnsPerIP, "client", client.String())
			raw.Close()
			return nil
		}
		raw.client = client
	}
	// The handshake is bounded by the connection's deadline, not by a
	// context given to crypto/tls, which would start a goroutine per
	// handshake to watch it; its hooks get raw.hs (handshakeContext).
	start := time.Now()
	deadline := start.Add(limits.HandshakeTimeout)
	raw.hs.init(l.ctx, deadline)
	defer raw.hs.end()
	raw.SetReadDeadline(deadline)
	// A hook that gives up at the deadline (a key server that does not
	// answer) still gets its alert to the client: crypto/tls writes it
	// after the hook returns.
	raw.SetWriteDeadline(deadline.Add(handshakeAlertGrace))
	conn := tls.Server(raw, l.srv.tlsConfig.Load())
	err := conn.Handshake()
	raw.facts.handshake = time.Since(start)
	if !stop() && err == nil {
		err = net.ErrClosed // by Close, as the handshake ended
	}
	l.srv.metrics.observeHandshake(conn, err, raw.hs.Err(), raw.facts.handshake)
	if err == nil {
		err = raw.SetDeadline(time.Time{})
		raw.sendTimeout = limits.SendTimeout
	}
	if err != nil {
		l.srv.log.Debug("edge: handshake failed", "remote", raw.RemoteAddr(), "err", err)
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader) {
			answerPlainHTTP(rhe.Conn)
		}
		conn.Close()
		return nil
	}
	cs := conn.ConnectionState()
	l.srv.connected(&raw.hs, &cs, raw)
	if cs.NegotiatedProtocol != "h2" {
		if l.srv.h1Loop {
			return l.srv.serveH1(l, conn, &cs)
		}
		// Counted fresh before net/http takes it, so a Shutdown
		// beginning now waits for its first request.
		l.srv.markFresh(conn)
	}
	select {
	case l.ready <- conn:
	case <-l.ctx.Done():
		l.srv.notFresh(conn)
		conn.Close()
	}
	return nil
}

// plainHTTPResponse answers a client that sent plain HTTP to the TLS
// port, as net/http's own TLS server does.
const plainHTTPResponse = "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
	"Client sent an HTTP request to an HTTPS server.\n"

// plainHTTPLinger bounds answering a plain-HTTP client and reading what
// is left of its request.
const plainHTTPLinger = time.Second

// looksLikeHTTP reports whether the first five bytes of a connection,
// read as a TLS record header, are the start of a plain HTTP request (as
// net/http decides).
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// answerPlainHTTP writes plainHTTPResponse to conn, then half-closes it
// and reads the rest of the request until the client closes: closing
// with the request unread would reset the connection, and the client
// could lose the answer.
func answerPlainHTTP(conn net.Conn) {
	conn.SetDeadline(time.Now().Add(plainHTTPLinger))
	if _, err := io.WriteString(conn, plainHTTPResponse); err != nil {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
	}
}

// handshakeAlertGrace is how long past the handshake deadline the
// handshake's writes may go on, for the alert of a hook that failed at
// the deadline: the handshake's hooks and reads end at the deadline.
const handshakeAlertGrace = time.Second

// trackedConn counts a connection open, in all and for its client,
// until its first Close.
type trackedConn struct {
	net.Conn
	srv    *Server
	client netip.Prefix // counted in srv.clients; invalid: not counted
	once   sync.Once
	facts  connFacts   // for the access log; written by the handshake, read by requests after it
	rio    *rawSocket  // set at accept for a plain TCP connection; nil: Conn's Read and Write
	hs     deadlineCtx // the handshake's context, for its hooks (handshakeContext)

	// sendTimeout bounds each write's wait for the client to read
	// (Limits.SendTimeout), from the end of the handshake on (0 before:
	// the handshake's deadline bounds it); ownDeadline is set while a
	// write deadline set by SetDeadline or SetWriteDeadline (crypto/tls's
	// for its close_notify) is in force, which the send timeout leaves be.
	sendTimeout time.Duration
	ownDeadline atomic.Bool
	waiting     atomic.Bool // without rio: a write bounded by sendTimeout has not completed (sendWaits)
}

// Read and Write go through rio when the connection has one: from the
// handshake on, so that its system calls do not wake the runtime's
// monitor thread (rawSocket).
func (c *trackedConn) Read(p []byte) (int, error) {
	if c.rio != nil {
		return c.rio.Read(p)
	}
	return c.Conn.Read(p)
}

// Write writes p, failing with os.ErrDeadlineExceeded (counted, and the
// connection is then of no more use) when the client read nothing of it
// for sendTimeout. Through rio the deadline is set only when the write
// waits; otherwise each write sets one.
func (c *trackedConn) Write(p []byte) (n int, err error) {
	stall := c.sendTimeout
	if c.ownDeadline.Load() {
		stall = 0
	}
	switch {
	case c.rio != nil:
		n, err = c.rio.writeBounded(p, stall)
	case stall > 0:
		c.Conn.SetWriteDeadline(time.Now().Add(stall))
		c.waiting.Store(true)
		n, err = c.Conn.Write(p)
		if err == nil {
			c.waiting.Store(false)
		}
	default:
		return c.Conn.Write(p)
	}
	if stall > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		c.srv.metrics.sendTimeouts.Inc()
	}
	return n, err
}

// sendWaits reports whether a write to c bounded by the send timeout
// waits for the client to read, or failed: through rio, once the
// socket's buffer was full; otherwise, from the write's start. The
// HTTP/2 stream watch leaves the streams of such a connection to its
// send timeout, which closes it, so one stalled client counts once.
func (c *trackedConn) sendWaits() bool {
	if c.rio != nil {
		return c.rio.waiting.Load()
	}
	return c.waiting.Load()
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	c.ownDeadline.Store(!t.IsZero())
	return c.Conn.SetDeadline(t)
}

func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	c.ownDeadline.Store(!t.IsZero())
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite half-closes the connection, when it can.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.srv.open.Add(-1)
		c.srv.metrics.openConns.Dec()
		if c.client.IsValid() {
			c.srv.clients.release(c.client)
		}
	})
	return c.Conn.Close()
}

// handshakeResult classifies a handshake outcome for the metrics.
func handshakeResult(err, ctxErr error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(ctxErr, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled):
		return "closed"
	}
	return "error"
}

// clientConns counts the open connections of each client. Its map holds
// only clients with connections open, so it is bounded by MaxConns.
type clientConns struct {
	mu   sync.Mutex // guards open
	open map[netip.Prefix]int
}

// acquire counts a new connection of client, unless client already has
// limit open.
func (c *clientConns) acquire(client netip.Prefix, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[client] >= limit {
		return false
	}
	if c.open == nil {
		c.open = map[netip.Prefix]int{}
	}
	c.open[client]++
	return true
}

// release uncounts a connection acquire counted.
func (c *clientConns) release(client netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[client] <= 1 {
		delete(c.open, client)
		return
	}
	c.open[client]--
}

// clientPrefix is what a client address counts as for MaxConnsPerIP:
// the IPv4 address, or the IPv6 address's /64, the smallest network an
// IPv6 host is usually given (so a client cannot dodge the limit by
// using more of its own addresses). ok is false for an address that is
// not IP (a Unix socket).
func clientPrefix(a net.Addr) (p netip.Prefix, ok bool) {
	var addr net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		addr = a.IP
	case *net.UDPAddr: // QUIC (http3.go)
		addr = a.IP
	default:
		return p, false
	}
	ip, isIP := netip.AddrFromSlice(addr)
	if !isIP {
		return p, false
	}
	return clientNetwork(ip)
}

// clientNetwork is clientPrefix for an IP address.
func clientNetwork(ip netip.Addr) (p netip.Prefix, ok bool) {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.WithZone("").Prefix(bits)
	return p, err == nil
}
