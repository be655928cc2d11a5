package edge

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// requestHeadCases are request heads for the loop's reader, and whether
// it takes them itself (false: net/http reads them, or refuses them).
// The smuggling and malformed ones are all net/http's.
var requestHeadCases = []struct {
	name  string
	raw   string
	taken bool
}{
	{"plain GET", "GET /index.html HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n", true},
	{"h2load's lower-case names", "GET / HTTP/1.1\r\nhost: a.test\r\nuser-agent: h2load nghttp2/1.52.0\r\naccept: */*\r\n\r\n", true},
	{"repeated fields", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\nx-a: 2\r\nX-A: 3\r\n\r\n", true},
	{"many fields", "GET / HTTP/1.1\r\nHost: a.test\r\n" + strings.Repeat("X-F: v\r\nX-G: w\r\n", 20) + "\r\n", true},
	{"spaces and tabs around values", "GET / HTTP/1.1\r\nHost:  a.test \t\r\nX-A:\tb c\t \r\nX-Empty:\r\nX-Colon: a:b\r\n\r\n", true},
	{"Connection: close", "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, Close\r\n\r\n", true},
	{"no Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", true},
	{"no fields", "GET / HTTP/1.1\r\n\r\n", true},
	{"query", "GET /p?a=1&b=%41;c=[x]#f HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
	{"empty query", "GET /p? HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
	{"question mark in the query", "GET /p?? HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
	{"reserved path characters", "GET /a/b;c=d,e/$f&g+h:i@j~k.l-m_n HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
	{"double slash", "GET //evil.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
	{"escaped path (net/url's)", "GET /a%2Fb%20c HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
	{"path needing escapes (net/url's)", "GET /a!b*c'(d)\"e HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
	{"bad escape in the path", "GET /a%zz HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"other method", "DELETE /x HTTP/1.1\r\nHost: a.test\r\nIdempotency-Key: k\r\n\r\n", true},
	// Smuggling: framing is always net/http's.
	{"Content-Length and Transfer-Encoding", "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	{"two Content-Lengths", "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", false},
	{"Content-Length: 0", "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n", false},
	{"Transfer-Encoding: chunked", "GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	{"Transfer-Encoding: identity", "GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: identity\r\n\r\n", false},
	{"lower-case transfer-encoding", "GET / HTTP/1.1\r\nHost: a.test\r\ntransfer-encoding: chunked\r\n\r\n", false},
	{"space before the colon", "GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding : chunked\r\n\r\n", false},
	{"bare LF", "GET / HTTP/1.1\nHost: a.test\n\n", false},
	{"bare LF in a field", "GET / HTTP/1.1\r\nHost: a.test\nX-A: b\r\n\r\n", false},
	{"bare CR", "GET / HTTP/1.1\r\nHost: a.test\rX-A: b\r\n\r\n", false},
	{"NUL in a value", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\x00b\r\n\r\n", false},
	{"NUL in a name", "GET / HTTP/1.1\r\nHost: a.test\r\nX\x00A: b\r\n\r\n", false},
	{"obs-text", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: caf\xc3\xa9\r\n\r\n", false},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\r\n b\r\n\r\n", false},
	{"obs-fold with a tab", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\r\n\tTransfer-Encoding: chunked\r\n\r\n", false},
	{"first line folded", "GET / HTTP/1.1\r\n Host: a.test\r\n\r\n", false},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", false},
	{"no colon", "GET / HTTP/1.1\r\nHost: a.test\r\nBad Header\r\n\r\n", false},
	{"empty name", "GET / HTTP/1.1\r\nHost: a.test\r\n: b\r\n\r\n", false},
	{"Pragma", "GET / HTTP/1.1\r\nHost: a.test\r\nPragma: no-cache\r\n\r\n", false},
	{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: a.test\r\n\r\n", false},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a.test\r\n\r\n", false},
	{"lower-case version", "GET / http/1.1\r\nHost: a.test\r\n\r\n", false},
	{"absolute target", "GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"authority", "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
	{"two spaces", "GET  / HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"space in the target", "GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"control byte in the query", "GET /a?b\x01 HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"method not a token", "G(T / HTTP/1.1\r\nHost: a.test\r\n\r\n", false},
	{"huge field", "GET / HTTP/1.1\r\nHost: a.test\r\nCookie: " + strings.Repeat("c", 6000) + "\r\n\r\n", false},
}

// TestReadRequestHead reads each head with the loop's reader and with
// http.ReadRequest: a head the loop takes, net/http takes too, with the
// same request.
func TestReadRequestHead(t *testing.T) {
	for _, tt := range requestHeadCases {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkRequestHead(t, []byte(tt.raw)); got != tt.taken {
				t.Errorf("taken by the loop's reader: %v, want %v", got, tt.taken)
			}
		})
	}
}

// FuzzRequestHead checks that whatever head the loop's reader takes,
// http.ReadRequest reads as the same request.
func FuzzRequestHead(f *testing.F) {
	for _, tt := range requestHeadCases {
		f.Add([]byte(tt.raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkRequestHead(t, raw) })
}

// checkRequestHead reads the head at the start of raw, as the loop finds
// it, with both readers; it fails t if the loop's takes a head that
// http.ReadRequest refuses or reads otherwise, and reports whether the
// loop's took it.
func checkRequestHead(t *testing.T, raw []byte) bool {
	br := bufio.NewReaderSize(bytes.NewReader(raw), h1BufferSize)
	n, err := headLength(br)
	if err != nil {
		return false
	}
	head, _ := br.Peek(n)
	var h h1RequestHead
	for range 2 { // twice: the second time over the first's storage
		got, ok := h.readRequestHead(head)
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if !ok {
			return false
		}
		if err != nil {
			t.Fatalf("the loop's reader took %q, which http.ReadRequest refuses: %v", head, err)
		}
		sameFields(t, head, "http.ReadRequest", []headField{
			{"Method", got.Method, want.Method},
			{"URL", got.URL, want.URL},
			{"Proto", got.Proto, want.Proto},
			{"ProtoMajor", got.ProtoMajor, want.ProtoMajor},
			{"ProtoMinor", got.ProtoMinor, want.ProtoMinor},
			{"Header", got.Header, want.Header},
			{"Body", got.Body, want.Body},
			{"ContentLength", got.ContentLength, want.ContentLength},
			{"TransferEncoding", got.TransferEncoding, want.TransferEncoding},
			{"Close", got.Close, want.Close},
			{"Host", got.Host, want.Host},
			{"Trailer", got.Trailer, want.Trailer},
			{"RequestURI", got.RequestURI, want.RequestURI},
		})
	}
	return true
}

// responseHeadCases are origin response heads (and what follows them)
// for the fast path's reader, to a GET or a HEAD, and whether it takes
// them itself.
var responseHeadCases = []struct {
	name   string
	method string
	raw    string
	taken  bool
}{
	{"length", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nDate: x\r\n\r\nhello", true},
	{"length, the next response after it", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
	{"length 0", "GET", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", true},
	{"body cut short", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true},
	{"no reason", "GET", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", true},
	{"unknown status", "GET", "HTTP/1.1 599 odd reason\r\nContent-Length: 1\r\n\r\nx", true},
	{"Connection: close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", true},
	{"Connection: keep-alive", "GET", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", true},
	{"lower-case names, spaces", "GET", "HTTP/1.1 200 OK\r\ncontent-length:  3 \r\nx-a:\tb \r\nx-a: c\r\n\r\nabc", true},
	{"leading zeros", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 003\r\n\r\nabc", true},
	{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
	{"chunked with trailers", "GET", "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n", false},
	{"Content-Length and Transfer-Encoding", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
	{"Transfer-Encoding: identity", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: identity\r\n\r\nabc", false},
	{"two equal Content-Lengths", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", false},
	{"two Content-Lengths", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", false},
	{"Content-Length list", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", false},
	{"signed Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", false},
	{"empty Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", false},
	{"huge Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", false},
	{"no length", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", false},
	{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false},
	{"204", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false},
	{"304", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false},
	{"103 first", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
	{"HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"two spaces", "GET", "HTTP/1.1  200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"short status", "GET", "HTTP/1.1 20 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"long status", "GET", "HTTP/1.1 2000 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"bare LF", "GET", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx", false},
	{"bare LF in the reason", "GET", "HTTP/1.1 200 O\nContent-Length: 1\r\n\r\nx", false},
	{"obs-fold", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: a\r\n b\r\n\r\nx", false},
	{"space before the colon", "GET", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx", false},
	{"NUL", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: \x00\r\n\r\nx", false},
	{"Pragma", "GET", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 1\r\n\r\nx", false},
	{"huge field", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nSet-Cookie: " + strings.Repeat("c", 6000) + "\r\n\r\nx", false},
	{"head cut short", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", false},
}

// TestReadResponseHead reads each response with the fast path's reader
// and with http.ReadResponse: a response the fast path takes, net/http
// takes too, with the same response, body and what follows it.
func TestReadResponseHead(t *testing.T) {
	for _, tt := range responseHeadCases {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkResponseHead(t, tt.method == http.MethodHead, []byte(tt.raw)); got != tt.taken {
				t.Errorf("taken by the fast path's reader: %v, want %v", got, tt.taken)
			}
		})
	}
}

// FuzzResponseHead checks that whatever response the fast path's reader
// takes, http.ReadResponse reads as the same response.
func FuzzResponseHead(f *testing.F) {
	for _, tt := range responseHeadCases {
		f.Add(tt.method == http.MethodHead, []byte(tt.raw))
	}
	f.Fuzz(func(t *testing.T, head bool, raw []byte) { checkResponseHead(t, head, raw) })
}

// checkResponseHead reads the response at the start of raw to a GET (or
// a HEAD) with both readers; it fails t if the fast path's takes one
// that http.ReadResponse refuses or reads otherwise, or does not leave
// one it does not take as it was, and reports whether it took it.
func checkResponseHead(t *testing.T, head bool, raw []byte) bool {
	req := &http.Request{Method: http.MethodGet}
	if head {
		req.Method = http.MethodHead
	}
	br := bufio.NewReaderSize(bytes.NewReader(raw), originBufferSize)
	got := readResponseHead(br, req)
	stdr := bufio.NewReaderSize(bytes.NewReader(raw), originBufferSize)
	want, err := http.ReadResponse(stdr, req)
	if got == nil {
		if rest, _ := io.ReadAll(br); !bytes.Equal(rest, raw) {
			t.Fatalf("%q: the fast path's reader left it, but consumed %d bytes", raw, len(raw)-len(rest))
		}
		return false
	}
	if err != nil {
		t.Fatalf("the fast path's reader took %q, which http.ReadResponse refuses: %v", raw, err)
	}
	gotBody, gotErr := io.ReadAll(got.Body)
	wantBody, wantErr := io.ReadAll(want.Body)
	gotRest, _ := io.ReadAll(br)
	wantRest, _ := io.ReadAll(stdr)
	sameFields(t, raw, "http.ReadResponse", []headField{
		{"Status", got.Status, want.Status},
		{"StatusCode", got.StatusCode, want.StatusCode},
		{"Proto", got.Proto, want.Proto},
		{"ProtoMajor", got.ProtoMajor, want.ProtoMajor},
		{"ProtoMinor", got.ProtoMinor, want.ProtoMinor},
		{"Header", got.Header, want.Header},
		{"ContentLength", got.ContentLength, want.ContentLength},
		{"TransferEncoding", got.TransferEncoding, want.TransferEncoding},
		{"Close", got.Close, want.Close},
		{"Trailer", got.Trailer, want.Trailer},
		{"Uncompressed", got.Uncompressed, want.Uncompressed},
		{"Request", got.Request, want.Request},
		{"Body == NoBody", got.Body == http.NoBody, want.Body == http.NoBody},
		{"body", string(gotBody), string(wantBody)},
		{"body's error", gotErr, wantErr},
		{"the bytes after it", string(gotRest), string(wantRest)},
	})
	return true
}

// headField is a field of what the edge's reader and net/http's read.
type headField struct {
	name      string
	got, want any
}

// sameFields fails t for the first of fields that net/http's reader,
// named std, did not read as the edge's did from input.
func sameFields(t *testing.T, input []byte, std string, fields []headField) {
	t.Helper()
	for _, f := range fields {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Fatalf("%q: %s: the edge's reader has %#v, %s %#v", input, f.name, f.got, std, f.want)
		}
	}
}
