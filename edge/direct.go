package edge

import (
	"io"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The direct path: requests the fast path to plain-HTTP origins serves
// (see origin.go) are proxied without httputil.ReverseProxy, which for a
// small response costs as much as the rest of the proxy: a context and a
// request copy to carry the route, a clone of the request, a client trace
// for 1xx responses, header copies value by value, and a flush timer per
// response. serveDirect does what ReverseProxy.ServeHTTP does for these
// requests, in the same order, with the same rewriting (proxyRewriteTo),
// error handling (routeError) and flush policy, but moves the origin's
// response header into the client's without copying its values, and
// starts a flush timer only for a body that does not arrive in one read.

// direct reports whether serveDirect serves r, to origin: a request the
// fast path takes, whose query ReverseProxy would pass unchanged. A
// Content-Length of 0 means no body: net/http's HTTP/2 server gives a
// request ending with its header a Body that is not http.NoBody, with
// that length, and refuses a body longer than the declared length.
func direct(r *http.Request, origin *url.URL) bool {
	return origin.Scheme == "http" && r.ContentLength == 0 && fastKind(r) && cleanQuery(r.URL.RawQuery)
}

// cleanQuery reports whether ReverseProxy leaves q as it is rather than
// re-encoding it: no semicolon, no malformed escape, not too many
// parameters (its cleanQueryParams), and no urlmaxqueryparams setting.
func cleanQuery(q string) bool {
	if q == "" {
		return true
	}
	if godebugMaxQuery || strings.Count(q, "&") >= 1000 {
		return false
	}
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// godebugMaxQuery is set when GODEBUG may set urlmaxqueryparams, with
// which ReverseProxy re-encodes every query.
var godebugMaxQuery = strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams")

// hopHeaders are the hop-by-hop header fields ReverseProxy removes from
// requests and responses, besides those the Connection field lists.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop removes h's hop-by-hop fields, as ReverseProxy does.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f) // canonical already: Del would canonicalise it again
	}
}

// serveDirect forwards r, which direct accepts, to its route's origin on
// the fast path and copies the response to the client. Like
// ReverseProxy, it panics with http.ErrAbortHandler when the response
// body cannot be copied under a server.
//
// r's header becomes the outbound request's, rewritten in place rather
// than cloned: a handler may change its request's header (net/http has
// read what it needs of it before the handler runs), and nothing reads
// r's header after this.
func (p *Proxy) serveDirect(ex *proxyExchange, r *http.Request) {
	w, route := &ex.w, &ex.route
	// The outbound request, as ReverseProxy builds it.
	out := &ex.out
	*out = *r
	ex.outURL = *r.URL
	out.URL = &ex.outURL
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	out.Body, out.Trailer, out.Close = nil, nil, false
	teTrailers := httpguts.HeaderValuesContainsToken(out.Header["Te"], "trailers")
	removeHopByHop(out.Header)
	if teTrailers {
		out.Header["Te"] = []string{"trailers"}
	}
	for _, k := range [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(out.Header, k)
	}
	proxyRewriteTo(&httputil.ProxyRequest{In: r, Out: out}, route, ex.forwarded[:], ex.fwdMemo)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "")
	}

	start := time.Now()
	res, err := p.originRoundTrip(route, out, w.informational)
	if err != nil {
		p.routeError(w, out, route, err)
		return
	}
	p.originAnswered(route, start)

	removeHopByHop(res.Header)
	h := w.Header()
	for k, vv := range res.Header {
		// res.Header is this request's alone: its values move.
		if prev := h[k]; len(prev) > 0 {
			h[k] = append(prev, vv...)
		} else {
			h[k] = vv
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)

	if err := p.copyDirect(w, res); err != nil {
		res.Body.Close()
		if r.Context().Value(http.ServerContextKey) == nil {
			p.log.Debug("edge: response body copy failed, not under a server", "err", err)
			return
		}
		panic(http.ErrAbortHandler)
	}
	res.Body.Close()
	if len(res.Trailer) > 0 {
		http.NewResponseController(w).Flush() // chunked, for the trailers
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			h[k] = append(h[k], vv...)
		}
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			h.Add(k, v)
		}
	}
}

// informational forwards a 1xx response to the client, as ReverseProxy
// does.
func (w *proxyWriter) informational(code int, header textproto.MIMEHeader) error {
	h := w.Header()
	for k, vv := range header {
		h[k] = append(h[k], vv...)
	}
	w.WriteHeader(code)
	clear(h) // WriteHeader does not, for 1xx
	return nil
}

// copyDirect copies res's body to w with ReverseProxy's flush policy: a
// body of unknown length, or an event stream, is flushed on every write;
// any other is flushed proxyFlushInterval after a write at the latest.
// The timer for that starts only when a body does not come in one read:
// when it does, the response ends, and is flushed, right after.
func (p *Proxy) copyDirect(w *proxyWriter, res *http.Response) error {
	buf := p.rp.BufferPool.Get()
	defer p.rp.BufferPool.Put(buf)
	flushEach := res.ContentLength == -1 || eventStream(res.Header.Get("Content-Type"))
	var dst io.Writer = w
	var lw *latencyWriter
	defer func() {
		if lw != nil {
			lw.stop()
		}
	}()
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
			if flushEach {
				if err := http.NewResponseController(w).Flush(); err != nil {
					return err
				}
			} else if lw == nil && rerr == nil {
				// More to come: bound how long these bytes wait.
				lw = &latencyWriter{w: w}
				lw.arm()
				dst = lw
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// eventStream reports whether ct is text/event-stream, as ReverseProxy
// tells (mime.ParseMediaType only for what may be one: it allocates).
func eventStream(ct string) bool {
	const es = "text/event-stream"
	if len(ct) < len(es) || !strings.EqualFold(ct[:len(es)], es) {
		return false
	}
	base, _, _ := mime.ParseMediaType(ct)
	return base == es
}

// latencyWriter flushes its writes proxyFlushInterval after the first
// unflushed one, as ReverseProxy's maxLatencyWriter.
type latencyWriter struct {
	w *proxyWriter

	mu      sync.Mutex // guards the fields below and flushing w
	t       *time.Timer
	pending bool
	stopped bool
}

func (l *latencyWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(b)
	l.armLocked()
	return n, err
}

func (l *latencyWriter) arm() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armLocked()
}

func (l *latencyWriter) armLocked() {
	if l.pending || l.stopped {
		return
	}
	l.pending = true
	if l.t == nil {
		l.t = time.AfterFunc(proxyFlushInterval, l.flush)
	} else {
		l.t.Reset(proxyFlushInterval)
	}
}

func (l *latencyWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.pending || l.stopped {
		return
	}
	http.NewResponseController(l.w).Flush()
	l.pending = false
}

func (l *latencyWriter) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.t != nil {
		l.t.Stop()
	}
}
