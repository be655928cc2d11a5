package edge

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The front door: what the edge answers itself, or changes, before a
// request goes to its origin. net/http already refuses most malformed
// HTTP/1 requests (two different Content-Lengths, an unknown
// Transfer-Encoding, no Host); these are what it lets through.

// Requests the edge refuses itself, without asking the origin.
var (
	// errMethodNotAllowed: TRACE and TRACK echo the request, cookies and
	// all, back to whoever sent it (cross-site tracing); the edge answers
	// them 405, as nginx does, whatever the origin would do. CONNECT asks
	// for a tunnel the edge does not open: forwarded, it reached the
	// origin with an origin-form target no origin can read as one (RFC
	// 9112, section 3.2.3).
	errMethodNotAllowed = errors.New("edge: method not allowed")

	// errNoHost: neither :authority nor Host (HTTP/2), or no Host
	// (HTTP/1.0): no tenant can be chosen.
	errNoHost = errors.New("edge: request names no host")

	// errHostConflict: an HTTP/2 request whose Host header names another
	// authority than its :authority (RFC 9113, section 8.3.1), which
	// origins and the edge might read differently.
	errHostConflict = errors.New("edge: Host header conflicts with :authority")

	// errLengthConflict: an HTTP/2 request with different content-length
	// values (RFC 9110, section 8.6).
	errLengthConflict = errors.New("edge: conflicting content-length values")
)

// allowedMethods is the Allow header of a 405: the methods the edge
// forwards, as far as it knows; the origin may allow fewer.
const allowedMethods = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"

// checkRequest returns why the edge refuses r, or nil. A refusal is the
// client's error: a 405 for errMethodNotAllowed, a 400 for the others.
func checkRequest(r *http.Request) error {
	if strings.EqualFold(r.Method, "TRACE") || strings.EqualFold(r.Method, "TRACK") || strings.EqualFold(r.Method, http.MethodConnect) {
		return errMethodNotAllowed
	}
	if r.Host == "" {
		return errNoHost
	}
	if r.ProtoMajor < 2 {
		return nil // net/http's HTTP/1 parser resolved Host and Content-Length
	}
	defaultPort := "80"
	if r.TLS != nil {
		defaultPort = "443"
	}
	for _, h := range r.Header.Values("Host") {
		if !sameAuthority(h, r.Host, defaultPort) {
			return errHostConflict
		}
	}
	if cl := r.Header.Values("Content-Length"); len(cl) > 1 {
		for _, v := range cl[1:] {
			if strings.TrimSpace(v) != strings.TrimSpace(cl[0]) {
				return errLengthConflict
			}
		}
	}
	return nil
}

// sameAuthority reports whether a and b name the same host and port, a
// missing port being defaultPort (RFC 3986, section 6.2.3).
func sameAuthority(a, b, defaultPort string) bool {
	split := func(s string) (string, string) {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		}
		if port == "" {
			port = defaultPort
		}
		return host, port
	}
	ah, ap := split(a)
	bh, bp := split(b)
	return strings.EqualFold(ah, bh) && ap == bp
}

// stripH2C removes a request to switch to cleartext HTTP/2 ("Upgrade:
// h2c" and HTTP2-Settings, RFC 7540 section 3.2, withdrawn by RFC 9113):
// the client already chose its protocol in the TLS handshake, and an
// origin that switched would speak HTTP/2 to a tunnel the client thinks
// is HTTP/1.1. Other upgrades, WebSocket's, are left alone.
func stripH2C(h http.Header) {
	h.Del("Http2-Settings")
	values := h.Values("Upgrade")
	if len(values) == 0 {
		return
	}
	var kept []string
	for _, v := range values {
		for token := range strings.SplitSeq(v, ",") {
			if token = strings.TrimSpace(token); token != "" && !strings.EqualFold(token, "h2c") {
				kept = append(kept, token)
			}
		}
	}
	if len(kept) == 0 {
		h.Del("Upgrade")
		return
	}
	h["Upgrade"] = []string{strings.Join(kept, ", ")}
}

// mustClose reports whether the client's HTTP/1 connection must close
// after the response to r. RFC 9112, section 6.1 requires it after a
// request with both Content-Length and Transfer-Encoding. net/http
// frames such a request by its chunks but drops the Content-Length
// before the handler sees it (until golang/go#80942's fix, which sets
// Request.Close), so every request with a chunked body closes its
// connection: a reconnect on the rare chunked upload.
func mustClose(r *http.Request) bool {
	return r.ProtoMajor == 1 && len(r.TransferEncoding) > 0
}

// clientBody is a request body that remembers the first error reading it
// gave, so a failed round trip can be blamed on the client when its body
// broke: a bad chunk, fewer bytes than its length before the end, or no
// byte for the read timeout.
//
// With a timeout, each Read first moves the request's read deadline
// (through the server's ResponseController) to timeout from now, so a
// client that stops sending fails the Read with os.ErrDeadlineExceeded,
// which aborts the origin round trip reading from it. At the end of the
// body the deadline is cleared: net/http then waits for the next request
// on the same connection, under its own timeouts.
type clientBody struct {
	io.ReadCloser
	rc      *http.ResponseController // of the request; nil: no timeout
	timeout time.Duration
	n       atomic.Int64 // bytes read; the origin transport may read on its own goroutine

	mu       sync.Mutex // guards err, and rc against use after done
	err      error
	finished bool // the handler returned: rc must not be used
}

func (b *clientBody) Read(p []byte) (int, error) {
	b.setDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.setDeadline(time.Time{})
	}
	if err != nil && err != io.EOF {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// setDeadline sets the request's read deadline, unless the handler has
// returned: the origin transport may still read the body then, but the
// ResponseController may no longer be used.
func (b *clientBody) setDeadline(t time.Time) {
	if b.rc == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.finished {
		b.rc.SetReadDeadline(t) // http.ErrNotSupported: the server has no deadlines, and no timeout applies
	}
}

// finish is called when the handler returns: later reads no longer move
// the deadline. Without a body it does nothing.
func (b *clientBody) finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.finished = true
	b.mu.Unlock()
}

// readErr returns the first error reading the body gave, other than
// io.EOF; nil for a nil body.
func (b *clientBody) readErr() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// count returns how many bytes of the body have been read; 0 for a nil
// body.
func (b *clientBody) count() int64 {
	if b == nil {
		return 0
	}
	return b.n.Load()
}

// timedOut reports whether the client stopped sending its body for the
// read timeout; false for a nil body.
func (b *clientBody) timedOut() bool {
	return errors.Is(b.readErr(), os.ErrDeadlineExceeded)
}

// idleConn is the client's connection once a protocol switch (WebSocket)
// has made it a tunnel to the origin. Every byte of the tunnel passes
// through it, the client's read and the origin's written, so it can
// close the tunnel after timeout without a byte either way: Read returns
// os.ErrDeadlineExceeded then, which ends ReverseProxy's copying.
type idleConn struct {
	net.Conn
	timeout time.Duration
	start   time.Time    // monotonic origin of last
	last    atomic.Int64 // time of the last byte either way, since start
	read    atomic.Int64 // bytes from the client
	written atomic.Int64 // bytes to the client
}

func newIdleConn(c net.Conn, timeout time.Duration) *idleConn {
	return &idleConn{Conn: c, timeout: timeout, start: time.Now()}
}

func (c *idleConn) touch() { c.last.Store(int64(time.Since(c.start))) }

// idleUntil is when the tunnel times out unless a byte passes.
func (c *idleConn) idleUntil() time.Time {
	return c.start.Add(time.Duration(c.last.Load()) + c.timeout)
}

// Read reads the client's bytes, waiting at most until the tunnel has
// been idle for the timeout; bytes the origin sends meanwhile extend the
// wait.
func (c *idleConn) Read(p []byte) (int, error) {
	for {
		if err := c.Conn.SetReadDeadline(c.idleUntil()); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.touch()
			c.read.Add(int64(n))
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(c.idleUntil()) {
			continue // the origin sent something while we waited
		}
		return n, err
	}
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.touch()
		c.written.Add(int64(n))
	}
	return n, err
}

// CloseWrite half-closes the client's connection when the origin has
// finished sending, as ReverseProxy does with a connection that can.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported // ReverseProxy ends the tunnel, as without CloseWrite
}
