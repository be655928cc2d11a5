package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The fast path to plain-HTTP origins. http.Transport hands each request
// to two goroutines per origin connection (a writer and a reader) through
// channels, and watches every idle connection with a blocked read; on a
// proxy moving small requests that machinery costs more than the request
// itself. originClient instead writes the request and reads the response
// on the caller's goroutine, over pooled HTTP/1.1 connections, and checks
// an idle connection only by using it.
//
// It serves only the requests it can replay safely: bodiless requests
// with an idempotent method (RFC 9110, section 9.2.2) or an
// Idempotency-Key, and no protocol switch. Without a reader watching idle
// connections, a connection the origin closed while idle is found when a
// request fails on it; such a request is sent once more on a new
// connection, as http.Transport retries the same requests. Everything
// else (request bodies, upgrades, https origins) goes through the
// http.Transport.

// fastPath reports whether originClient serves r.
func fastPath(r *http.Request) bool {
	return r.URL.Scheme == "http" && fastRequest(r)
}

// fastRequest reports whether r, to an http:// origin, is one
// originClient serves: bodiless, idempotent, no Upgrade.
func fastRequest(r *http.Request) bool {
	return (r.Body == nil || r.Body == http.NoBody) && r.ContentLength <= 0 && fastKind(r)
}

// fastKind reports whether r, bodiless, is a request originClient serves:
// idempotent, with no Upgrade.
func fastKind(r *http.Request) bool {
	if _, ok := r.Header["Upgrade"]; ok {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	_, key := r.Header["Idempotency-Key"]
	_, xkey := r.Header["X-Idempotency-Key"]
	return key || xkey
}

// originClient is an HTTP/1.1 client for plain-HTTP origins with a pool
// of idle connections per origin. It is safe for concurrent use.
type originClient struct {
	// Static after newOriginClient.
	dialer         *net.Dialer
	maxIdlePerHost int
	maxIdle        int
	idleTimeout    time.Duration
	headerTimeout  time.Duration // OriginTimeout

	mu     sync.Mutex // guards the fields below
	idle   map[string][]*originConn
	nidle  int
	sweep  *time.Timer // armed while a connection is idle
	closed bool
}

func newOriginClient(cfg ProxyOptions, maxIdle int) *originClient {
	return &originClient{
		dialer:         &net.Dialer{Timeout: cfg.DialTimeout},
		maxIdlePerHost: cfg.MaxIdleConnsPerHost,
		maxIdle:        maxIdle,
		idleTimeout:    cfg.IdleConnTimeout,
		headerTimeout:  cfg.OriginTimeout,
		idle:           make(map[string][]*originConn),
	}
}

// originConn is one connection to an origin. It is used by one request
// at a time: taken from the pool, or dialled, by RoundTrip and given back
// when the response body ends.
type originConn struct {
	net.Conn
	addr      string // host:port, its pool's key
	br        *bufio.Reader
	bw        *bufio.Writer
	head      headLimit // under br
	idleSince time.Time
}

// headLimit is what an origin connection's bufio.Reader reads: the
// connection, up to n bytes. send sets n to originMaxHead while it reads a
// response head, and lifts it for the body, as http.Transport does.
type headLimit struct {
	r io.Reader
	n int64
}

// errOriginHeadTooLarge is a response head over originMaxHead bytes.
var errOriginHeadTooLarge = fmt.Errorf("edge: origin response head over %d bytes", originMaxHead)

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errOriginHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// originBufferSize is the size of each origin connection's read and write
// buffers, as http.Transport's.
const originBufferSize = 4 << 10

// originMaxHead bounds the bytes read for a response head (and each 1xx
// before it): http.Transport's default MaxResponseHeaderBytes, which the
// http.Transport of the other origin requests keeps.
const originMaxHead = 10 << 20

// errOriginReused is a request's failure on a pooled connection before
// any of the response arrived: the origin had most likely closed it.
var errOriginReused = errors.New("edge: origin closed the idle connection")

// RoundTrip sends r, which fastPath accepts, and returns the origin's
// response once its header has arrived. The response body is read from
// the origin connection, which returns to the pool at the body's end.
func (c *originClient) RoundTrip(r *http.Request) (*http.Response, error) {
	var got1xx func(int, textproto.MIMEHeader) error
	if trace := httptrace.ContextClientTrace(r.Context()); trace != nil {
		got1xx = trace.Got1xxResponse
	}
	return c.do(r, got1xx)
}

// do is RoundTrip, passing any 1xx responses before the final one to
// got1xx if it is not nil.
func (c *originClient) do(r *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	addr := r.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "80")
	}
	if err := checkHeader(r.Header); err != nil {
		return nil, err
	}
	for {
		pc, reused := c.get(addr)
		if pc == nil {
			var err error
			if pc, err = c.dial(r.Context(), addr); err != nil {
				return nil, err
			}
		}
		res, err := c.roundTrip(pc, r, reused, got1xx)
		if errors.Is(err, errOriginReused) {
			continue // a new connection next: reused ones fail, or run out
		}
		return res, err
	}
}

// roundTrip sends r on pc. On error pc is closed; an error wrapping
// errOriginReused means that r may be sent again.
func (c *originClient) roundTrip(pc *originConn, r *http.Request, reused bool, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	ctx := r.Context()
	if c.headerTimeout > 0 {
		pc.SetReadDeadline(time.Now().Add(c.headerTimeout))
	}
	// A client going away ends the exchange with the origin, until the
	// end of the response body.
	stop := abortOnDone(ctx, pc)
	res, err := pc.send(r, got1xx)
	if err != nil {
		stop()
		pc.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if reused && isOriginGone(err) {
			return nil, fmt.Errorf("%w: %w", errOriginReused, err)
		}
		return nil, err
	}
	keep := !res.Close && !r.Close
	if res.Body == http.NoBody {
		c.release(pc, stop, keep)
		return res, nil
	}
	// The response body streams for as long as the origin sends it:
	// no deadline, unless all of it is already buffered.
	if res.ContentLength < 0 || int64(pc.br.Buffered()) < res.ContentLength {
		pc.SetReadDeadline(time.Time{})
	}
	res.Body = &originBody{rc: res.Body, pc: pc, client: c, stop: stop, keep: keep}
	return res, nil
}

// release ends pc's exchange: it returns pc to the pool if keep is set,
// the exchange was not cut off by its context and the origin sent nothing
// past the response's end, else closes it. Such bytes (a body on a 204 or
// a 304, or on the response to a HEAD, or more than the Content-Length)
// would be read as the next request's response: http.Transport closes a
// connection for them too ("unsolicited response").
func (c *originClient) release(pc *originConn, stop func() bool, keep bool) {
	if stop() && keep && pc.br.Buffered() == 0 {
		c.put(pc)
	} else {
		pc.Close()
	}
}

// isOriginGone reports whether err is what a write to, or a first read
// from, a connection the origin has closed gives: io.EOF before any byte
// of a response (a response cut short is io.ErrUnexpectedEOF), or a
// reset or broken pipe.
func isOriginGone(err error) bool {
	var opErr *net.OpError
	return errors.Is(err, io.EOF) || (errors.As(err, &opErr) && !opErr.Timeout())
}

// aLongTimeAgo is a deadline in the past, to unblock reads and writes.
var aLongTimeAgo = time.Unix(1, 0)

// send writes r and reads the response header, passing any 1xx
// responses before it to got1xx, if not nil (ReverseProxy's and
// serveDirect forward them to the client).
func (pc *originConn) send(r *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	if err := writeRequest(pc.bw, r); err != nil {
		return nil, err
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoResponse, err)
	}
	// io.EOF here, before any byte: the origin had closed the connection
	// (http.ReadResponse would say io.ErrUnexpectedEOF).
	pc.head.n = originMaxHead
	if _, err := pc.br.Peek(1); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoResponse, err)
	}
	for informational := 0; ; informational++ {
		res := readResponseHead(pc.br, r)
		if res == nil {
			var err error
			if res, err = http.ReadResponse(pc.br, r); err != nil {
				return nil, err
			}
		}
		if res.StatusCode >= 200 {
			pc.head.n = math.MaxInt64 // the body's length is the origin's
			return res, nil
		}
		pc.head.n = originMaxHead // the next head's, as http.Transport's
		if res.StatusCode == http.StatusSwitchingProtocols || informational == maxInformational {
			return nil, fmt.Errorf("edge: origin sent an unexpected %s", res.Status)
		}
		if got1xx != nil {
			if err := got1xx(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// maxInformational bounds the 1xx responses before a final one, as
// http.Transport does.
const maxInformational = 5

// reqExcluded reports whether k is a header field writeRequest writes
// itself, or not at all for a bodiless request (a switch: no map lookup
// per field per request).
func reqExcluded(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
		return true
	}
	return false
}

// writeRequest writes r's request line and header in HTTP/1.1 framing.
// checkHeader has checked the header's names and values.
func writeRequest(w *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil || !httpguts.ValidHostHeader(host) {
		return errors.New("edge: invalid origin Host header")
	}
	uri := r.URL.RequestURI()
	if strings.ContainsAny(uri, " \r\n") || strings.ContainsAny(r.Method, " \r\n") {
		return errors.New("edge: invalid origin request line")
	}
	w.WriteString(r.Method)
	w.WriteByte(' ')
	w.WriteString(uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	if ua := r.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		w.WriteString("User-Agent: ")
		w.WriteString(ua[0])
		w.WriteString("\r\n")
	}
	if r.Close {
		w.WriteString("Connection: close\r\n")
	}
	for k, vv := range r.Header {
		if reqExcluded(k) {
			continue
		}
		for _, v := range vv {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(strings.TrimSpace(v))
			w.WriteString("\r\n")
		}
	}
	_, err = w.WriteString("\r\n")
	return err
}

// checkHeader refuses what http.Transport refuses to send: invalid field
// names or values (a value with CR or LF would split the request).
func checkHeader(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("edge: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("edge: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// get returns the most recently used idle connection to addr, or nil.
func (c *originClient) get(addr string) (*originConn, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	conns := c.idle[addr]
	if len(conns) == 0 {
		return nil, false
	}
	pc := conns[len(conns)-1]
	conns[len(conns)-1] = nil
	c.idle[addr] = conns[:len(conns)-1]
	c.nidle--
	if c.idleTimeout > 0 && time.Since(pc.idleSince) > c.idleTimeout {
		// The older ones have been idle longer.
		c.closeIdleLocked(addr)
		go pc.Close()
		return nil, false
	}
	return pc, true
}

// put returns pc to the pool, or closes it when the pool is full.
func (c *originClient) put(pc *originConn) {
	c.mu.Lock()
	conns := c.idle[pc.addr]
	if c.closed || len(conns) >= c.maxIdlePerHost || c.nidle >= c.maxIdle {
		c.mu.Unlock()
		pc.Close()
		return
	}
	pc.idleSince = time.Now()
	c.idle[pc.addr] = append(conns, pc)
	c.nidle++
	if c.sweep == nil && c.idleTimeout > 0 {
		c.sweep = time.AfterFunc(c.idleTimeout, c.closeExpired)
	}
	c.mu.Unlock()
}

// closeExpired closes the connections idle for longer than idleTimeout,
// and re-arms itself while any are idle.
func (c *originClient) closeExpired() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for addr, conns := range c.idle {
		n := 0 // conns is oldest first: the first n have expired
		for n < len(conns) && now.Sub(conns[n].idleSince) > c.idleTimeout {
			conns[n].Close()
			n++
		}
		if n == len(conns) {
			delete(c.idle, addr)
		} else if n > 0 {
			c.idle[addr] = append(conns[:0], conns[n:]...)
			clear(conns[len(conns)-n:])
		}
		c.nidle -= n
	}
	c.sweep = nil
	if c.nidle > 0 && !c.closed {
		c.sweep = time.AfterFunc(c.idleTimeout, c.closeExpired)
	}
}

// closeIdleLocked closes every idle connection to addr.
func (c *originClient) closeIdleLocked(addr string) {
	for _, pc := range c.idle[addr] {
		pc.Close()
	}
	c.nidle -= len(c.idle[addr])
	delete(c.idle, addr)
}

// CloseIdleConnections closes the idle connections. Connections in use
// close when their response ends.
func (c *originClient) CloseIdleConnections() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr := range c.idle {
		c.closeIdleLocked(addr)
	}
}

// dial connects to addr.
func (c *originClient) dial(ctx context.Context, addr string) (*originConn, error) {
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	var rw io.ReadWriter = conn
	if rio := newRawSocket(conn); rio != nil {
		rw = rio
	}
	pc := &originConn{
		Conn: conn,
		addr: addr,
		bw:   bufio.NewWriterSize(rw, originBufferSize),
		head: headLimit{r: rw},
	}
	pc.br = bufio.NewReaderSize(&pc.head, originBufferSize)
	return pc, nil
}

// originBody is a response body read from an origin connection: the
// connection returns to the pool when the body ends, or is closed when
// the body is closed before its end. It is read and closed by one
// goroutine.
type originBody struct {
	rc     io.ReadCloser // the body as http.ReadResponse frames it
	pc     *originConn   // nil once given back or closed
	client *originClient
	stop   func() bool // stops the context's watch on pc
	keep   bool        // the connection may be reused
}

func (b *originBody) Read(p []byte) (int, error) {
	if b.pc == nil {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.client.release(b.pc, b.stop, b.keep)
		b.pc = nil
	}
	return n, err
}

func (b *originBody) Close() error {
	if b.pc == nil {
		return nil
	}
	b.stop()
	b.pc.Close()
	b.pc = nil
	return nil
}
