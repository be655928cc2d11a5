package edge

import (
	"bufio"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// HTTP/1 heads read without net/http, for the connection loop's own
// requests (h1conn.go) and the fast path's origin responses (origin.go).
// http.ReadRequest and http.ReadResponse cost about 60 allocations per
// proxied request between them (a string per line and per value, the
// URL's parse, a map growing field by field); these readers take the
// common heads only, with one string for the whole head, and the loop's
// request into storage reused from one request to the next.
//
// They take a head only when it is plainly valid: CR LF line ends, no
// obs-fold, field names that are tokens, values of visible ASCII, SP and
// HTAB only, an HTTP/1.1 start line, an origin-form target of plain
// path characters (else net/url parses it), and no framing but what
// they read themselves. Anything else (bare LF, NUL or other control
// bytes, obs-text, a space before a colon, Content-Length or
// Transfer-Encoding in a request, a repeated or malformed one in a
// response, Pragma, Trailer, 1xx, 204 and 304 responses, a response to
// HEAD) is left to net/http, which reads the same bytes: refuses them,
// or reads them its own way. What they do read, they read as net/http
// does, field for field: FuzzRequestHead and FuzzResponseHead compare
// the two.

// h1RequestHead is a request head read by readRequestHead, with the
// storage it reuses for the next one.
type h1RequestHead struct {
	req    http.Request
	url    url.URL
	header http.Header
	strs   [h1HeadValues]string
}

// h1HeadValues is how many values a request head's fields take from
// h1RequestHead's storage; the others allocate their own.
const h1HeadValues = 16

// readRequestHead reads head, a request head with its blank line, as
// http.ReadRequest would, and reports whether it took it. The request
// it returns is h's and valid until h reads the next head; the caller
// gives it its context in place (h1Conn.serveRequest).
func (h *h1RequestHead) readRequestHead(head []byte) (*http.Request, bool) {
	s, ok := headString(head)
	if !ok {
		return nil, false
	}
	line, fields, _ := strings.Cut(s, "\r\n")
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || !httpguts.ValidHeaderFieldName(method) { // a method is a token, as a name
		return nil, false
	}
	if !h.readTarget(target) {
		return nil, false
	}
	if h.header == nil {
		h.header = make(http.Header, h1HeadValues)
	}
	clear(h.header)
	if !readFields(fields, h.header, h.strs[:]) {
		return nil, false
	}
	hdr := h.header
	hosts := hdr["Host"]
	if len(hosts) > 1 || hasField(hdr, "Pragma") || hasField(hdr, "Content-Length") || hasField(hdr, "Transfer-Encoding") {
		return nil, false
	}
	host := ""
	if len(hosts) == 1 {
		host = hosts[0]
	}
	delete(hdr, "Host")
	h.req = http.Request{
		Method:     method,
		URL:        &h.url,
		Proto:      proto,
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     hdr,
		Body:       http.NoBody,
		Host:       host,
		Close:      httpguts.HeaderValuesContainsToken(hdr["Connection"], "close"),
		RequestURI: target,
	}
	return &h.req, true
}

// reset drops what h holds of the last head, for its pool.
func (h *h1RequestHead) reset() {
	h.req, h.url = http.Request{}, url.URL{}
	clear(h.header)
	clear(h.strs[:])
}

// readTarget sets h.url from target, an origin-form request target, as
// url.ParseRequestURI would: a path of characters its escaping leaves
// as they are is the URL's Path as it is; any other goes to net/url.
func (h *h1RequestHead) readTarget(target string) bool {
	if !strings.HasPrefix(target, "/") {
		return false // asterisk, absolute and authority forms: net/http's
	}
	path, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(query); i++ {
		if c := query[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	for i := 0; i < len(path); i++ {
		if !plainPathByte(path[i]) {
			u, err := url.ParseRequestURI(target)
			if err != nil {
				return false
			}
			h.url = *u
			return true
		}
	}
	h.url = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

// plainPathByte reports whether c stands for itself in a URL path: an
// unreserved character, or a reserved one net/url's path escaping
// leaves as it is (RFC 3986, sections 2.2, 2.3 and 3.3).
func plainPathByte(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("-_.~$&+,/:;=@", c) >= 0
}

// readResponseHead reads the head of the response to req at the start of
// br as http.ReadResponse would, consuming it, and returns the response
// with its body framed by its Content-Length; nil, br untouched, for a
// head it does not take (http.ReadResponse then reads it).
func readResponseHead(br *bufio.Reader, req *http.Request) *http.Response {
	if req.Method == http.MethodHead {
		return nil
	}
	n, err := headLength(br)
	if err != nil {
		return nil
	}
	head, _ := br.Peek(n)
	s, ok := headString(head)
	if !ok {
		return nil
	}
	line, fields, _ := strings.Cut(s, "\r\n")
	status, ok := strings.CutPrefix(line, "HTTP/1.1 ")
	if !ok || len(status) < 3 || len(status) > 3 && status[3] != ' ' {
		return nil
	}
	code := 0
	for i := range 3 {
		c := status[i]
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified || !isFieldValue(status) {
		return nil
	}
	lines := strings.Count(fields, "\r\n")
	o := new(originResponse)
	strs := o.values[:]
	if lines > len(strs) {
		strs = make([]string, lines)
	}
	hdr := make(http.Header, lines)
	if !readFields(fields, hdr, strs) {
		return nil
	}
	length, ok := contentLength(hdr["Content-Length"])
	if !ok || hasField(hdr, "Transfer-Encoding") || hasField(hdr, "Pragma") || hasField(hdr, "Trailer") {
		return nil
	}
	res := &o.res
	*res = http.Response{
		Status:        status,
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Body:          http.NoBody,
		ContentLength: length,
		Request:       req,
	}
	if httpguts.HeaderValuesContainsToken(hdr["Connection"], "close") {
		res.Close = true
		delete(hdr, "Connection")
	}
	if length > 0 {
		o.body = lengthBody{br: br, n: length}
		res.Body = &o.body
	}
	br.Discard(n)
	return res
}

// originResponse is what readResponseHead allocates for a response but
// its head's string and header map: one allocation for three.
type originResponse struct {
	res    http.Response
	body   lengthBody
	values [originResponseValues]string // the fields' values, when they fit
}

// originResponseValues is how many field values of a response head
// originResponse holds; a head with more lines allocates a slice for
// them.
const originResponseValues = 8

// contentLength returns the length a response's one Content-Length field
// declares: decimal digits, up to 18 of them.
func contentLength(vv []string) (int64, bool) {
	if len(vv) != 1 || len(vv[0]) == 0 || len(vv[0]) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(vv[0]); i++ {
		c := vv[0][i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// headString returns head, which ends with CR LF CR LF as read here, as
// a string without its blank line; false when it does not end so.
func headString(head []byte) (string, bool) {
	if len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
		return "", false
	}
	return string(head[:len(head)-2]), true
}

// readFields adds the field lines of fields, each ending with CR LF, to
// h as textproto.ReadMIMEHeader would, the values' slices cut from strs
// while it lasts, and reports whether it took every line: not one with
// a bare CR or LF, obs-fold, a name that is not a token, a value with a
// byte other than visible ASCII, SP and HTAB.
func readFields(fields string, h http.Header, strs []string) bool {
	for fields != "" {
		line, rest, ok := strings.Cut(fields, "\r\n")
		if !ok {
			return false
		}
		fields = rest
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return false // also obs-fold, whose line starts with SP or HTAB
		}
		if !isFieldValue(value) {
			return false
		}
		value = textproto.TrimString(value)
		key := textproto.CanonicalMIMEHeaderKey(name)
		vv := h[key]
		if vv == nil && len(strs) > 0 {
			// One value per field, mostly: a slice of capacity 1, which
			// an append copies out, as textproto's.
			vv, strs = strs[:1:1], strs[1:]
			vv[0] = value
			h[key] = vv
			continue
		}
		h[key] = append(vv, value)
	}
	return true
}

// isFieldValue reports whether s has only visible ASCII, SP and HTAB:
// what readFields takes of a field value, and readResponseHead of a
// reason phrase.
func isFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' || c >= 0x7f) && c != '\t' {
			return false
		}
	}
	return true
}

// lengthBody is a response body of a known length, read from its origin
// connection's reader: net/http's body over an io.LimitReader, which
// says io.EOF with the last bytes and io.ErrUnexpectedEOF for a body cut
// short.
type lengthBody struct {
	br *bufio.Reader
	n  int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: originBody closes the connection under it.
func (b *lengthBody) Close() error { return nil }
