package edge

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Response is the http.ResponseWriter of a request the HTTP/1.1
// connection loop serves itself (h1conn.go). It writes what net/http's
// server writes for the same handler calls, byte for byte but the Date:
// it is net/http's response and chunkWriter (server.go) cut down to the
// requests the loop serves (HTTP/1.1, no body, no Expect, no upgrade,
// never hijacked), with the same two buffers: the body's first
// h1ChunkingBuffer bytes wait in pre, so that a response that ends
// within them gets a Content-Length and, without a Content-Type, one
// sniffed from its start; then the header goes out and the body follows,
// chunked when its length is unknown. TestH1MatchesNetHTTP compares the
// two on the wire.
//
// It is used by the request's goroutine only, and reused for the
// connection's next request (reset).
type h1Response struct {
	conn *h1Conn
	req  *http.Request
	pre  *bufio.Writer // h1ChunkingBuffer bytes, writing to cw

	handlerHeader http.Header // the handler's, which it may change after WriteHeader
	header        http.Header // handlerHeader as it was at WriteHeader, if the handler looked at it since; nil otherwise
	snap          http.Header // header's storage, reused (snapshot)
	snapValues    []string    // the values of snap's fields, reused
	calledHeader  bool        // the handler called Header
	wroteHeader   bool        // a final status was given (not sent yet, maybe)
	handlerDone   bool        // the handler returned: a Content-Length can be computed
	status        int
	contentLength int64 // declared; -1: unknown
	written       int64 // body bytes the handler wrote
	trailers      []string
	closeAfter    bool // close the connection after this response

	cw h1ChunkWriter

	statusBuf [3]byte
	dateBuf   [len(http.TimeFormat)]byte
	clenBuf   [20]byte
}

// h1ChunkingBuffer is how much of a body waits before the header goes
// out, net/http's bufferBeforeChunkingSize.
const h1ChunkingBuffer = 2048

// reset prepares r for req on c. The header maps are the last request's,
// emptied: a map that grows anew for every response costs an allocation
// per request.
func (r *h1Response) reset(c *h1Conn, req *http.Request) {
	pre, cw, h, snap, values := r.pre, r.cw, r.handlerHeader, r.snap, r.snapValues
	if h == nil {
		h = make(http.Header)
	}
	clear(h)
	clear(snap)
	clear(values)
	*r = h1Response{conn: c, req: req, pre: pre, cw: cw, handlerHeader: h, snap: snap, snapValues: values[:0], contentLength: -1}
	r.cw = h1ChunkWriter{res: r}
	r.pre.Reset(&r.cw)
}

func (r *h1Response) Header() http.Header {
	if r.header == nil && r.wroteHeader && !r.cw.wroteHeader {
		// Changes after WriteHeader must not reach the header not yet sent.
		r.snapshot()
	}
	r.calledHeader = true
	return r.handlerHeader
}

// snapshot sets header to a copy of handlerHeader, as
// http.Header.Clone makes (net/http's server clones it), in storage
// reused from one response to the next: a clone costs three allocations
// per request.
func (r *h1Response) snapshot() {
	if r.snap == nil {
		r.snap = make(http.Header, len(r.handlerHeader))
	}
	values := r.snapValues[:0]
	for k, vv := range r.handlerHeader {
		if vv == nil {
			r.snap[k] = nil // as Clone: a nil value stays nil
			continue
		}
		n := len(values)
		values = append(values, vv...)
		r.snap[k] = values[n:len(values):len(values)]
	}
	r.snapValues = values
	r.header = r.snap
}

func (r *h1Response) WriteHeader(code int) {
	if r.wroteHeader {
		return // net/http logs a superfluous call and ignores it
	}
	if code < 100 || code > 999 {
		panic("edge: invalid WriteHeader code " + strconv.Itoa(code)) // as net/http panics
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: written now; the header map is kept (RFC 8297).
		r.writeStatusLine(code)
		r.handlerHeader.WriteSubset(r.conn.bw, h1ExcludedNoBody)
		r.conn.bw.WriteString("\r\n")
		r.conn.bw.Flush()
		return
	}
	r.wroteHeader = true
	r.status = code
	if r.calledHeader && r.header == nil {
		r.snapshot()
	}
	if cl := r.handlerHeader.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			r.contentLength = v
		} else {
			r.handlerHeader.Del("Content-Length")
		}
	}
}

func (r *h1Response) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(r.status) {
		return 0, http.ErrBodyNotAllowed
	}
	r.written += int64(len(p))
	if r.contentLength != -1 && r.written > r.contentLength {
		return 0, http.ErrContentLength
	}
	return r.pre.Write(p)
}

// FlushError sends what is buffered, the header first if it has not
// gone yet; http.ResponseController calls it.
func (r *h1Response) FlushError() error {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	err := r.pre.Flush()
	if !r.cw.wroteHeader {
		r.cw.writeHeader(nil)
	}
	if err2 := r.conn.bw.Flush(); err == nil {
		err = err2
	}
	return err
}

// finish ends the response after the handler returned, and reports
// whether the connection may carry another request.
func (r *h1Response) finish() bool {
	r.handlerDone = true
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	r.pre.Flush()
	r.cw.close()
	r.conn.bw.Flush()
	if r.closeAfter || r.conn.werr != nil {
		return false
	}
	// A body shorter than its Content-Length leaves the client waiting.
	return r.req.Method == http.MethodHead || r.contentLength == -1 || !bodyAllowed(r.status) || r.contentLength == r.written
}

// finalTrailers are the trailers to send after a chunked body: the
// declared ones and those set with http.TrailerPrefix.
func (r *h1Response) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range r.handlerHeader {
		if kk, found := strings.CutPrefix(k, http.TrailerPrefix); found {
			if t == nil {
				t = make(http.Header)
			}
			t[kk] = vv
		}
	}
	for _, k := range r.trailers {
		if t == nil {
			t = make(http.Header)
		}
		for _, v := range r.handlerHeader[k] {
			t.Add(k, v)
		}
	}
	return t
}

func (r *h1Response) declareTrailer(k string) {
	k = http.CanonicalHeaderKey(k)
	if httpguts.ValidTrailerHeader(k) {
		r.trailers = append(r.trailers, k)
	}
}

// writeStatusLine writes an HTTP/1.1 status line, as net/http does.
func (r *h1Response) writeStatusLine(code int) {
	bw := r.conn.bw
	bw.WriteString("HTTP/1.1 ")
	if text := http.StatusText(code); text != "" {
		bw.Write(strconv.AppendInt(r.statusBuf[:0], int64(code), 10))
		bw.WriteByte(' ')
		bw.WriteString(text)
		bw.WriteString("\r\n")
	} else {
		bw.WriteString(strconv.Itoa(code))
		bw.WriteString(" status code ")
		bw.WriteString(strconv.Itoa(code))
		bw.WriteString("\r\n")
	}
}

// bodyAllowed reports whether a response with status may have a body
// (RFC 9110, sections 6.4.1, 15.3.5 and 15.4.5).
func bodyAllowed(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// h1ExcludedNoBody are the fields an informational response does not
// carry.
var h1ExcludedNoBody = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

// h1ChunkWriter writes the body the response's pre buffer lets through
// to the connection, the header first and in chunks when the length is
// unknown: net/http's chunkWriter.
type h1ChunkWriter struct {
	res         *h1Response
	wroteHeader bool // the header is in the connection's buffer
	chunking    bool
	sizeBuf     [16]byte
}

func (cw *h1ChunkWriter) Write(p []byte) (int, error) {
	if !cw.wroteHeader {
		cw.writeHeader(p)
	}
	if cw.res.req.Method == http.MethodHead {
		return len(p), nil
	}
	bw := cw.res.conn.bw
	if cw.chunking {
		bw.Write(strconv.AppendInt(cw.sizeBuf[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if cw.chunking && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		cw.res.conn.tc.Close()
	}
	return n, err
}

func (cw *h1ChunkWriter) close() {
	if !cw.wroteHeader {
		cw.writeHeader(nil)
	}
	if cw.chunking {
		bw := cw.res.conn.bw
		bw.WriteString("0\r\n")
		if trailers := cw.res.finalTrailers(); trailers != nil {
			trailers.Write(bw)
		}
		bw.WriteString("\r\n")
	}
}

// writeHeader finalizes the header and writes it to the connection's
// buffer, as net/http's chunkWriter.writeHeader does for an HTTP/1.1
// request without a body. p is the start of the body, to sniff a
// Content-Type from and, when the handler is done, to count.
func (cw *h1ChunkWriter) writeHeader(p []byte) {
	cw.wroteHeader = true
	w := cw.res
	keepAlives := !w.conn.srv.shuttingDown()
	isHEAD := w.req.Method == http.MethodHead

	header := cw.res.header
	owned := header != nil
	if !owned {
		header = w.handlerHeader
	}
	var exclude map[string]bool
	del := func(key string) {
		if owned {
			header.Del(key)
			return
		}
		if _, ok := header[key]; !ok {
			return
		}
		if exclude == nil {
			exclude = make(map[string]bool)
		}
		exclude[key] = true
	}
	var extra h1ExtraHeader

	trailers := false
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if exclude == nil {
				exclude = make(map[string]bool)
			}
			exclude[k] = true
			trailers = true
		}
	}
	for _, v := range w.header["Trailer"] {
		trailers = true
		foreachHeaderElement(v, w.declareTrailer)
	}

	te := header.Get("Transfer-Encoding")
	hasTE := te != ""
	if w.handlerDone && !trailers && !hasTE && bodyAllowed(w.status) && !hasField(header, "Content-Length") && (!isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		extra.contentLength = strconv.AppendInt(w.clenBuf[:0], int64(len(p)), 10)
	}
	hasCL := w.contentLength != -1

	if w.req.Close {
		w.closeAfter = true
	}
	if header.Get("Connection") == "close" || !keepAlives {
		w.closeAfter = true
	}

	code := w.status
	if bodyAllowed(code) {
		_, haveType := header["Content-Type"]
		if header.Get("Content-Encoding") == "" && !haveType && !hasTE && len(p) > 0 {
			extra.contentType = http.DetectContentType(p)
		}
	} else {
		del("Content-Length")
		del("Transfer-Encoding")
		if code == http.StatusNotModified {
			del("Content-Type")
		}
	}
	if !hasField(header, "Date") {
		extra.date = time.Now().UTC().AppendFormat(w.dateBuf[:0], http.TimeFormat)
	}
	if hasCL && hasTE && te != "identity" {
		del("Content-Length")
		hasCL = false
	}
	switch {
	case isHEAD || !bodyAllowed(code):
		del("Transfer-Encoding")
	case hasCL:
		del("Transfer-Encoding")
	case hasTE && te == "identity":
		cw.chunking = false
		w.closeAfter = true
		del("Transfer-Encoding")
	default:
		cw.chunking = true
		extra.transferEncoding = "chunked"
		if hasTE && te == "chunked" {
			del("Transfer-Encoding")
		}
	}
	if cw.chunking {
		del("Content-Length")
	}
	// net/http keeps a "close" the handler set, but for a server that
	// is shutting down; a 101 the loop never sends.
	if w.closeAfter && (!keepAlives || !hasToken(w.header.Get("Connection"), "close")) {
		del("Connection")
		extra.connection = "close"
	}

	w.writeStatusLine(code)
	bw := w.conn.bw
	w.header.WriteSubset(bw, exclude)
	extra.write(bw)
	bw.WriteString("\r\n")
}

// hasField reports whether h has key, which is canonical, even empty.
func hasField(h http.Header, key string) bool {
	_, ok := h[key]
	return ok
}

// hasToken reports whether the token list v has token, ignoring case, as
// net/http's hasToken (which, unlike httpguts', also splits on spaces).
func hasToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	for sp := 0; sp <= len(v)-len(token); sp++ {
		// The token must start v or follow a space or comma, and end v
		// or come before one.
		if b := v[sp]; b != token[0] && b|0x20 != token[0] {
			continue
		}
		if sp > 0 && !isTokenBoundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !isTokenBoundary(v[end]) {
			continue
		}
		if strings.EqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

// foreachHeaderElement calls fn for each non-empty element of the
// comma-separated list v, as net/http's.
func foreachHeaderElement(v string, fn func(string)) {
	for f := range strings.SplitSeq(v, ",") {
		if f = textproto.TrimString(f); f != "" {
			fn(f)
		}
	}
}

// h1ExtraHeader are the fields writeHeader adds, written after the
// handler's in net/http's order.
type h1ExtraHeader struct {
	contentType      string
	connection       string
	transferEncoding string
	date             []byte
	contentLength    []byte
}

func (h h1ExtraHeader) write(w *bufio.Writer) {
	if h.date != nil {
		w.WriteString("Date: ")
		w.Write(h.date)
		w.WriteString("\r\n")
	}
	if h.contentLength != nil {
		w.WriteString("Content-Length: ")
		w.Write(h.contentLength)
		w.WriteString("\r\n")
	}
	for _, f := range [...]struct{ k, v string }{{"Content-Type", h.contentType}, {"Connection", h.connection}, {"Transfer-Encoding", h.transferEncoding}} {
		if f.v != "" {
			w.WriteString(f.k)
			w.WriteString(": ")
			w.WriteString(f.v)
			w.WriteString("\r\n")
		}
	}
}
