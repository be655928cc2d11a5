package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"golang.org/x/net/http/httpguts"
)

// The HTTP/1.1 connection loop. net/http's server keeps a 4 KiB read
// buffer, a 4 KiB write buffer and a goroutine grown by serving for
// every open connection, idle or not, and starts a goroutine for a
// background read with every request. The loop serves an HTTP/1.1
// connection after its handshake instead: while the connection is idle
// it holds no buffer, only its goroutine parked in a 1-byte read; a
// request's buffers come from a pool and go back to it before the next
// wait. It serves the requests the direct path takes (direct.go):
// bodiless, idempotent HTTP/1.1 requests to an http:// origin, for the
// connection's own name, with none of Expect, Upgrade or an absolute
// target. Any other request, or anything unusual (a head that does not
// fit the 4 KiB buffer, a parse error), and the connection with it, is
// handed to net/http for the rest of the connection's life: the bytes
// read so far are replayed to it first (handoffConn), so everything
// net/http does (upgrades, bodies, 100-continue, trailers, its errors
// and limits) applies to those requests unchanged.

// h1Conns are the connections the loop serves, for Shutdown, and the
// buffers they share.
type h1Conns struct {
	mu       sync.Mutex // guards conns and draining
	conns    map[*h1Conn]struct{}
	draining bool

	wg   sync.WaitGroup // a loop running
	pool sync.Pool      // *h1Buffers
}

// h1State is where a loop is, for Shutdown: idle loops are closed,
// active ones finish their request first.
const (
	h1Idle int32 = iota
	h1Active
	h1Closed
)

// add registers c, unless the server is draining.
func (cs *h1Conns) add(c *h1Conn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.draining {
		return false
	}
	if cs.conns == nil {
		cs.conns = make(map[*h1Conn]struct{})
	}
	cs.conns[c] = struct{}{}
	cs.wg.Add(1)
	return true
}

func (cs *h1Conns) remove(c *h1Conn) {
	cs.mu.Lock()
	delete(cs.conns, c)
	cs.mu.Unlock()
	cs.wg.Done()
}

func (cs *h1Conns) isDraining() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.draining
}

// drain closes the idle connections; the others close after the
// response they are writing, which says "Connection: close".
func (cs *h1Conns) drain() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.draining = true
	for c := range cs.conns {
		if c.state.CompareAndSwap(h1Idle, h1Closed) {
			c.tc.Close()
		}
	}
}

// wait waits for the loops to end, or closes their connections when ctx
// ends first.
func (cs *h1Conns) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		cs.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	cs.mu.Lock()
	for c := range cs.conns {
		c.tc.Close()
	}
	cs.mu.Unlock()
	<-done
	return ctx.Err()
}

// h1Buffers are what a connection holds only while it serves a request.
type h1Buffers struct {
	br   *bufio.Reader // the connection's bytes
	bw   *bufio.Writer // to the connection
	head *bufio.Reader // one request head, for http.ReadRequest
	src  bytes.Reader  // head's source
	req  h1RequestHead // the request head, read without net/http
	res  h1Response
	ctx  *h1RequestContext // the last request's context (nextRequestContext)
	ex   proxyExchange     // the request's in the proxy
}

// h1BufferSize is the size of the read and write buffers, net/http's;
// a request head that does not fit goes to net/http.
const h1BufferSize = 4 << 10

func (cs *h1Conns) getBuffers(c *h1Conn) *h1Buffers {
	b, ok := cs.pool.Get().(*h1Buffers)
	if !ok {
		b = &h1Buffers{
			br:   bufio.NewReaderSize(nil, h1BufferSize),
			bw:   bufio.NewWriterSize(nil, h1BufferSize),
			head: bufio.NewReaderSize(nil, h1BufferSize),
		}
		b.res.pre = bufio.NewWriterSize(nil, h1ChunkingBuffer)
	}
	b.br.Reset(c)
	b.bw.Reset(c)
	return b
}

func (cs *h1Conns) putBuffers(b *h1Buffers) {
	b.br.Reset(nil)
	b.bw.Reset(nil)
	b.head.Reset(nil)
	b.src.Reset(nil)
	b.req.reset()
	b.res.reset(nil, nil)
	if b.ctx != nil && !b.ctx.reusable() {
		b.ctx = nil // someone may hold it: it stays as it is
	} else if b.ctx != nil {
		b.ctx.Context = nil
	}
	b.ex = proxyExchange{}
	cs.pool.Put(b)
}

// h1Conn is one connection the loop serves.
type h1Conn struct {
	// Static after serveH1 starts the loop.
	srv    *Server
	l      *tlsListener // hands connections over to net/http
	tc     *tls.Conn
	tls    *tls.ConnectionState
	remote string
	ctx    context.Context // each request's parent

	state atomic.Int32 // h1Idle, h1Active or h1Closed

	// Owned by the loop's goroutine (and by watchRead while it runs,
	// which the loop waits for).
	bufs      *h1Buffers // nil while idle
	bw        *bufio.Writer
	one       [1]byte
	pending   bool          // one holds the next byte of the connection
	fwd       forwardedMemo // its requests' X-Forwarded-For and Forwarded values (proxyRewriteTo)
	werr      error
	reqCtx    *h1RequestContext // the current request's; nil between requests
	served    bool              // a request was served: the connection is no longer fresh
	waiting   bool              // a wait for the next request began (waitUntil is its end)
	waitUntil time.Time

	// The watch (startWatch): one timer for the connection's life, reset
	// for each request.
	watchTimer *time.Timer
	watching   sync.WaitGroup
	watchMu    sync.Mutex // orders watchRead's start against stopWatch
	watchEnded bool       // stopWatch ran: watchRead must not start reading
}

// serveH1 readies conn, which negotiated HTTP/1.1 (or nothing) and came
// through l, for the loop, and returns it for the caller to serve; nil
// if the server is draining (conn is closed then). Like net/http, it
// counts conn as fresh until its first request.
func (s *Server) serveH1(l *tlsListener, conn *tls.Conn, cs *tls.ConnectionState) *h1Conn {
	c := &h1Conn{srv: s, l: l, tc: conn, tls: cs, remote: conn.RemoteAddr().String()}
	c.ctx = withConn(context.WithValue(context.WithValue(context.Background(), http.ServerContextKey, s.http), http.LocalAddrContextKey, conn.LocalAddr()), conn)
	if !s.h1.add(c) {
		conn.Close()
		return nil
	}
	s.markFresh(conn)
	return c
}

// serve is the loop: wait for a request, read its head, serve it or hand
// the connection to net/http. After serving, it waits for the next
// request itself for h1HoldWait at most, then in a new goroutine, and
// ends: serving grows a goroutine's stack (to 8 KiB), and a parked
// goroutine keeps its stack as it is, so an idle connection would keep
// that; a new one starts small. grown says the stack is grown already
// (the handshake's): then the first wait holds too.
func (c *h1Conn) serve(grown bool) {
	handedOff, moved := false, false
	defer func() {
		if !moved {
			c.end(handedOff)
		}
	}()
	limits := c.srv.settings.Load().limits
	servedHere := grown
	reserveStack4K()
	for {
		if c.bufs == nil || c.bufs.br.Buffered() == 0 {
			c.release()
			wait := limits.ReadHeaderTimeout // the first request's, as net/http
			if c.served {
				wait = limits.IdleTimeout
			}
			switch c.await(wait, servedHere) {
			case h1Moving:
				moved = true
				go c.serve(false)
				return
			case h1Gone:
				return
			}
			c.bufs = c.srv.h1.getBuffers(c)
			c.bw = c.bufs.bw
			if !servedHere {
				reserveStack8K()
			}
		}
		if c.served { // the first request's head has ReadHeaderTimeout from the start, as with net/http
			c.tc.SetReadDeadline(time.Now().Add(limits.ReadHeaderTimeout))
		}
		r, to, err := c.readRequest()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return // as net/http: no answer to a head that did not come in time
		}
		if r == nil {
			handedOff = c.handoff()
			return
		}
		// The head's deadline stays until the next wait's replaces it:
		// nothing reads the connection before, but the watch, which
		// clears it (watchRead).
		c.served, servedHere = true, true
		c.srv.notFresh(c.tc)
		if !c.serveRequest(r, to) || c.srv.shuttingDown() {
			return
		}
	}
}

// end ends the loop: the connection closes unless net/http took it.
func (c *h1Conn) end(handedOff bool) {
	c.srv.notFresh(c.tc)
	if !handedOff {
		if c.bufs != nil {
			c.bw.Flush()
			c.release()
		}
		c.tc.Close()
	}
	c.srv.h1.remove(c)
}

// h1HoldWait is how long a loop that served a request waits for the next
// one on its own goroutine, its stack grown, before it goes on waiting in
// a new one (serve). A client that sends its requests one after another
// sends the next one sooner: waiting in place saves starting a goroutine
// and growing its stack twice for each request (3–4% of a proxied
// request's CPU in a profile); a connection that goes idle keeps the
// grown stack this long.
const h1HoldWait = 20 * time.Millisecond

// h1Wait is what await found.
type h1Wait int

const (
	h1Arrived h1Wait = iota // the first byte of a request
	h1Moving                // nothing within h1HoldWait: wait on in a new goroutine
	h1Gone                  // no request: timeout, close, drain or Shutdown
)

// await waits for the first byte of the next request, holding no buffer:
// at most timeout from the start of the wait, at most h1HoldWait if hold
// is set. It reports h1Gone when the server is draining, and when
// Shutdown closed the connection while it waited.
func (c *h1Conn) await(timeout time.Duration, hold bool) h1Wait {
	if c.pending {
		c.state.Store(h1Active)
		return h1Arrived // watchRead read it
	}
	c.state.Store(h1Idle)
	if c.srv.h1.isDraining() {
		return h1Gone
	}
	now := time.Now()
	if !c.waiting { // else the rest of a wait that moved
		c.waiting, c.waitUntil = true, now.Add(timeout)
	}
	until := c.waitUntil
	held := hold && now.Add(h1HoldWait).Before(until)
	if held {
		until = now.Add(h1HoldWait)
	}
	c.tc.SetReadDeadline(until)
	n, err := c.tc.Read(c.one[:])
	if n == 0 && held && errors.Is(err, os.ErrDeadlineExceeded) {
		return h1Moving
	}
	c.waiting = false
	if !c.state.CompareAndSwap(h1Idle, h1Active) || n == 0 {
		return h1Gone
	}
	c.pending = true
	return h1Arrived
}

// Read reads the connection for the request reader: the byte await or
// watch read first, then what tls.Conn has.
func (c *h1Conn) Read(p []byte) (int, error) {
	if !c.pending || len(p) == 0 {
		return c.tc.Read(p)
	}
	p[0] = c.one[0]
	c.pending = false
	if len(p) == 1 {
		return 1, nil
	}
	// The rest of the record that byte came in, if any, is decrypted
	// already; if it was all, this waits for what the head needs anyway.
	n, err := c.tc.Read(p[1:])
	return n + 1, err
}

// Write writes to the connection for the response writer, remembering
// the first error, which cancels the request (as net/http's
// checkConnErrorWriter).
func (c *h1Conn) Write(p []byte) (int, error) {
	n, err := c.tc.Write(p)
	if err != nil && c.werr == nil {
		c.werr = err
		if c.reqCtx != nil {
			c.reqCtx.cancel()
		}
	}
	return n, err
}

// release returns the buffers to the pool.
func (c *h1Conn) release() {
	if c.bufs != nil {
		c.srv.h1.putBuffers(c.bufs)
		c.bufs, c.bw = nil, nil
	}
}

// h1Route is where the loop sends a request it serves: the tenant's
// certificate (its settings), the origin pool and the origin chosen.
type h1Route struct {
	cert   *keystore.Cert
	pool   *originPool
	target *originTarget
}

// readRequest reads the next request head and returns the request with
// its route if the loop serves it; a nil request, with a nil error or
// not, means the connection goes to net/http, its head still buffered.
// The tenant is looked up once, here, for both the tenant HTTP layer
// and the origin.
func (c *h1Conn) readRequest() (*http.Request, h1Route, error) {
	br := c.bufs.br
	n, err := headLength(br)
	if err != nil {
		return nil, h1Route{}, err
	}
	head, _ := br.Peek(n)
	r, ok := c.bufs.req.readRequestHead(head)
	if !ok {
		c.bufs.src.Reset(head)
		c.bufs.head.Reset(&c.bufs.src)
		r, err = http.ReadRequest(c.bufs.head)
	}
	if err != nil || !c.fastRequest(r) {
		return nil, h1Route{}, nil
	}
	r.RemoteAddr = c.remote
	r.TLS = c.tls
	cert, err := c.srv.tenant(r)
	pool, err := c.srv.settings.Load().proxy.tenantPool(cert, err)
	if err != nil {
		return nil, h1Route{}, nil
	}
	target := pool.pick(nil)
	if !direct(r, target.url) {
		return nil, h1Route{}, nil
	}
	br.Discard(n)
	return r, h1Route{cert, pool, target}, nil
}

// headLength returns the length of the request head at the start of br,
// its blank line included, reading until it is all buffered; an error
// wrapping bufio.ErrBufferFull if it does not fit.
func headLength(br *bufio.Reader) (int, error) {
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		// A line ends at LF; the head, at the first empty line (LF, or
		// CR LF) after one, as textproto reads it.
		for i := scanned; i < len(buf); i++ {
			if buf[i] != '\n' {
				continue
			}
			if i+1 < len(buf) && buf[i+1] == '\n' {
				return i + 2, nil
			}
			if i+2 < len(buf) && buf[i+1] == '\r' && buf[i+2] == '\n' {
				return i + 3, nil
			}
		}
		scanned = max(0, len(buf)-2) // an LF near the end: its line is not complete yet
		if len(buf) == br.Size() {
			return 0, bufio.ErrBufferFull
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return 0, err
		}
	}
}

// fastRequest reports whether the loop may serve r, as net/http's
// server would read it: HTTP/1.1, an origin-form target, a valid Host
// naming the connection's own name, valid header fields, no body, no
// Expect, and a request the direct path serves (checkRequest's and
// fastKind's; direct then checks the origin).
func (c *h1Conn) fastRequest(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.URL.Host != "" || !strings.HasPrefix(r.RequestURI, "/") {
		return false
	}
	if r.Body != http.NoBody || r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return false
	}
	if _, ok := r.Header["Expect"]; ok {
		return false
	}
	if r.Host == "" || !httpguts.ValidHostHeader(r.Host) || checkHeader(r.Header) != nil {
		return false
	}
	if checkRequest(r) != nil || !fastKind(r) {
		return false
	}
	host := hostOf(r)
	return sameName(host, c.tls.ServerName)
}

// serveRequest serves r and finishes it, and reports whether the
// connection may carry another request. Every request the loop serves
// ends here: the place for per-request accounting that is not the
// proxy's.
func (c *h1Conn) serveRequest(r *http.Request, to h1Route) (keep bool) {
	ctx := nextRequestContext(c.bufs.ctx, c.ctx)
	c.bufs.ctx = ctx
	defer ctx.cancel()
	c.reqCtx = ctx
	*r = *r.WithContext(ctx) // r is the loop's: no copy
	res := &c.bufs.res
	res.reset(c, r)
	c.startWatch()
	defer func() {
		c.stopWatch()
		c.reqCtx = nil
		if err := recover(); err != nil {
			if err != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.http.ErrorLog.Printf("http: panic serving %v: %v\n%s", c.remote, err, buf)
			}
			keep = false // as net/http: what is buffered goes out, then the connection closes
		}
	}()
	c.srv.advertiseHTTP3(res.Header())
	p := c.srv.settings.Load().proxy
	if w, ok := c.srv.applyTenant(res, r, p, to.cert); ok {
		p.serveFast(&c.bufs.ex, &c.fwd, w, r, to.pool, to.target)
	}
	return res.finish()
}

// h1WatchDelay is how long a request runs before the loop watches its
// connection for the client going away, as net/http's background read
// does for every request. Watching costs a goroutine, a read that finds
// nothing, and waking both goroutines to stop it: a few microseconds,
// which for a request that takes longer than this are noise, but which
// made up 3–4% of a proxied request's CPU when this was 5 ms (h2load
// through a loaded origin, responses after ~10 ms). A client that goes
// away sooner is noticed at the response, or after this delay.
const h1WatchDelay = 100 * time.Millisecond

// startWatch starts the watch of the current request (c.reqCtx's):
// after h1WatchDelay, watchRead reads the connection until stopWatch.
// The connection's one timer is reset for each request: a timer and a
// closure allocated for each cost more than the reset.
func (c *h1Conn) startWatch() {
	c.watching.Add(1)
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(h1WatchDelay, c.watchRead)
		return
	}
	c.watchTimer.Reset(h1WatchDelay)
}

// watchRead reads the connection while the request runs: a client that
// closes the connection cancels the request (its origin request with
// it); a byte of a next request is kept for the loop. It clears the read
// deadline the request's head left, unless stopWatch came first.
func (c *h1Conn) watchRead() {
	defer c.watching.Done()
	c.watchMu.Lock()
	if c.watchEnded {
		c.watchMu.Unlock()
		return
	}
	c.tc.SetReadDeadline(time.Time{})
	c.watchMu.Unlock()
	reserveStack4K()
	n, err := c.tc.Read(c.one[:])
	switch {
	case n == 1:
		c.pending = true
	case !errors.Is(err, os.ErrDeadlineExceeded):
		c.reqCtx.cancel()
	}
}

// stopWatch ends the watch and waits for watchRead, if it started. The
// read deadline is then in the past; the loop sets the next one before
// it reads.
func (c *h1Conn) stopWatch() {
	if c.watchTimer.Stop() {
		c.watching.Done()
		return
	}
	c.watchMu.Lock()
	c.watchEnded = true
	c.tc.SetReadDeadline(aLongTimeAgo)
	c.watchMu.Unlock()
	c.watching.Wait()
	c.watchEnded = false
}

// handoff hands the connection to net/http, the bytes read so far to be
// read again, and reports whether net/http took it: not once it has
// been shut down.
func (c *h1Conn) handoff() bool {
	br := c.bufs.br
	buffered, _ := br.Peek(br.Buffered())
	hc := &handoffConn{Conn: c.tc, replay: bytes.Clone(buffered)}
	c.release()
	if !c.served {
		c.srv.markFresh(hc) // before the connection leaves fresh, so Shutdown waits for it
	}
	select {
	case c.l.ready <- hc:
		return true
	case <-c.l.ctx.Done():
		c.srv.notFresh(hc)
		return false
	}
}

// handoffConn is a connection handed over to net/http: its reads return
// replay first. It is not a *tls.Conn, but net/http finds the TLS state
// through ConnectionState.
type handoffConn struct {
	*tls.Conn
	replay []byte
}

func (c *handoffConn) Read(p []byte) (int, error) {
	if len(c.replay) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.replay)
	c.replay = c.replay[n:]
	return n, nil
}
