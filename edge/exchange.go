package edge

import (
	"net/http"
	"net/url"
	"time"
)

// proxyExchange is one request's state in the proxy, allocated once per
// request: the writer that records the response, the route, what the
// access log needs at the end, and the direct path's outbound request.
// Each of these was an allocation of its own (with the finish closure
// and the variables it captured, seven per request before the direct
// path's three); over HTTP/2, where every request is a new goroutine and
// its own garbage, they were a fifth of keyedge's allocations per
// request. It is used by the request's goroutine only.
type proxyExchange struct {
	w     proxyWriter
	route proxyRoute

	p         *Proxy
	r         *http.Request // as the handler got it
	conn      *connFacts
	requestID string
	idValue   [1]string      // r's X-Request-Id values, when setRequestID sets it
	forwarded [4]string      // the direct path's X-Forwarded-* and Forwarded values (proxyRewriteTo)
	fwdMemo   *forwardedMemo // the connection's, from the HTTP/1.1 loop; nil: none
	start     time.Time

	// The direct path's outbound request (serveDirect).
	out    http.Request
	outURL url.URL

	stream watchedStream // an HTTP/2 request's, in p.streams until finish
}

// track starts the accounting of request r, served through w: it
// returns the request's exchange, whose writer (w) records the response
// and whose route the caller fills, and whose finish counts and logs the
// request when it ends. Every request the proxy serves goes through it,
// from net/http and from the HTTP/1.1 connection loop alike.
func (p *Proxy) track(w http.ResponseWriter, r *http.Request) *proxyExchange {
	ex := new(proxyExchange)
	p.trackIn(ex, w, r)
	if r.ProtoMajor == 2 && p.streams != nil {
		p.streams.watch(&ex.stream, w, r)
		ex.w.stream = &ex.stream
	}
	return ex
}

// trackIn is track in ex, which the caller reuses once ex's request has
// finished (the HTTP/1.1 loop's: an exchange is a fifth of the memory
// its requests allocate).
func (p *Proxy) trackIn(ex *proxyExchange, w http.ResponseWriter, r *http.Request) {
	*ex = proxyExchange{p: p, r: r, start: time.Now(), conn: connFactsOf(r)}
	ex.requestID = setRequestID(r, ex.conn, ex.idValue[:])
	ex.w = proxyWriter{ResponseWriter: w, tunnelIdle: p.tunnelIdle, mustClose: mustClose(r)}
	ex.route = proxyRoute{host: r.Host, in: r.URL, requestID: r.Header[requestIDHeader]}
}

// finish counts and logs the request, and ends the watch of its
// stream.
func (ex *proxyExchange) finish() {
	if ex.w.stream != nil {
		ex.w.stream.unwatch()
	}
	ex.p.countRequest(&ex.w, ex.r)
	ex.p.logRequest(&ex.w, ex.r, &ex.route, ex.conn, ex.requestID, ex.start)
}
