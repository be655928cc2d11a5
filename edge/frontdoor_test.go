package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testlog"

	"github.com/keyedge/keyedge/internal/testpki"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/net/websocket"
)

// The front-door tests' tenants.
const (
	echoHost   = "echo.example.com"   // origin: proxyEchoHandler
	streamHost = "stream.example.com" // origin: a WebSocket that echoes, or streams on "stream"
)

// frontDoorStream is how long the WebSocket origin streams on "stream".
const frontDoorStream = 2500 * time.Millisecond

// frontDoor is a running edge whose tenants' origins echo requests
// (echoHost) and WebSocket messages (streamHost), with the proxy's log
// captured.
type frontDoor struct {
	*world
	log      *testlog.Buffer
	echoHits atomic.Int64 // requests that reached the echo origin
}

func newFrontDoor(t *testing.T, proxy ProxyOptions) *frontDoor {
	t.Helper()
	fd := &frontDoor{log: new(testlog.Buffer)}
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fd.echoHits.Add(1)
		proxyEchoHandler(w, r)
	}))
	t.Cleanup(echo.Close)
	ws := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil {
				return
			}
			if msg == "stream" {
				// Only the origin talks: every 10ms for frontDoorStream.
				for end := time.Now().Add(frontDoorStream); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
					if websocket.Message.Send(ws, "tick") != nil {
						return
					}
				}
				msg = "done"
			}
			if websocket.Message.Send(ws, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(ws.Close)
	proxy.Logger = slog.New(slog.NewTextHandler(fd.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fd.world = newWorld(t, 0, Options{Proxy: proxy})
	fd.put(t, testpki.ECDSAP256, echo.URL, echoHost)
	fd.put(t, testpki.ECDSAP256, ws.URL, streamHost)
	return fd
}

// checkQuietLog fails the test if the proxy logged above Debug: what it
// checked was the client's doing, not the origin's.
func (fd *frontDoor) checkQuietLog(t *testing.T) {
	t.Helper()
	if logged := fd.log.String(); strings.Contains(logged, "level=WARN") || strings.Contains(logged, "level=ERROR") {
		t.Errorf("a client's error was logged above Debug:\n%s", logged)
	}
}

// dialHTTP1 opens a TLS connection to the edge for host that speaks
// HTTP/1.1, for requests written by hand.
func (fd *frontDoor) dialHTTP1(t *testing.T, host string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := fd.handshake(&tls.Config{ServerName: host, RootCAs: fd.Roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	return conn, bufio.NewReader(conn)
}

// roundTripHTTP1 writes raw to a new HTTP/1.1 connection for host and
// reads the response, body included.
func (fd *frontDoor) roundTripHTTP1(t *testing.T, host, raw string) (*http.Response, string) {
	t.Helper()
	conn, br := fd.dialHTTP1(t, host)
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, br)
}

// readResponse reads an HTTP/1 response and its body from br.
func readResponse(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return resp, string(body)
}

// decodeEcho decodes what the echo origin saw.
func decodeEcho(t *testing.T, body string) proxyEcho {
	t.Helper()
	var e proxyEcho
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("decoding the origin's echo %q: %v", body, err)
	}
	return e
}

// TestConflictingFraming: a request with both Content-Length and
// Transfer-Encoding is framed by its chunks, and the connection closes
// after the response (RFC 9112, section 6.1), so a request smuggled
// after it is never read. A request with a Content-Length alone keeps
// its connection.
func TestConflictingFraming(t *testing.T) {
	tests := []struct {
		name      string
		header    string // framing headers of the first request
		body      string
		keepAlive bool
	}{
		{"Content-Length", "Content-Length: 5\r\n", "hello", true},
		{"Content-Length and chunked", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFrontDoor(t, ProxyOptions{})
			conn, br := fd.dialHTTP1(t, echoHost)
			first := "POST /first HTTP/1.1\r\nHost: " + echoHost + "\r\n" + tt.header + "\r\n" + tt.body
			second := "GET /second HTTP/1.1\r\nHost: " + echoHost + "\r\n\r\n"
			if _, err := io.WriteString(conn, first+second); err != nil {
				t.Fatal(err)
			}
			resp, body := readResponse(t, br)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			e := decodeEcho(t, body)
			if e.URI != "/first" || e.Body != "hello" {
				t.Errorf("origin saw %s with body %q, want /first with \"hello\"", e.URI, e.Body)
			}
			if !tt.keepAlive && (strings.Join(e.TransferEncoding, ",") != "chunked" || e.Header.Get("Content-Length") != "") {
				t.Errorf("origin saw Transfer-Encoding %q, Content-Length %q; want chunked alone", e.TransferEncoding, e.Header.Get("Content-Length"))
			}
			if resp.Close == tt.keepAlive {
				t.Errorf("Connection: %q, want close %v", resp.Header.Get("Connection"), !tt.keepAlive)
			}
			resp, err := http.ReadResponse(br, nil)
			if err == nil {
				resp.Body.Close()
			}
			if answered := err == nil; answered != tt.keepAlive {
				t.Fatalf("the request after it on the same connection: answered %v (%v), want %v", answered, err, tt.keepAlive)
			}
		})
	}
}

func TestStripH2C(t *testing.T) {
	tests := []struct {
		upgrade []string
		want    string // "" for no Upgrade header
	}{
		{[]string{"h2c"}, ""},
		{[]string{"H2C"}, ""},
		{[]string{"websocket"}, "websocket"},
		{[]string{"h2c, websocket"}, "websocket"},
		{[]string{"h2c", "websocket"}, "websocket"},
		{nil, ""},
	}
	for _, tt := range tests {
		h := http.Header{"Http2-Settings": {"AAMAAABkAARAAAAAAAIAAAAA"}}
		if tt.upgrade != nil {
			h["Upgrade"] = tt.upgrade
		}
		stripH2C(h)
		if got := strings.Join(h.Values("Upgrade"), "|"); got != tt.want || h.Get("Http2-Settings") != "" {
			t.Errorf("Upgrade %q: got Upgrade %q and HTTP2-Settings %q, want %q and none", tt.upgrade, got, h.Get("Http2-Settings"), tt.want)
		}
	}
}

// h2Client speaks HTTP/2 to the edge frame by frame, to send requests
// net/http's client refuses to make.
type h2Client struct {
	fr     *http2.Framer
	enc    *hpack.Encoder
	block  bytes.Buffer // enc's output
	stream uint32       // the last stream ID used
}

// h2Response is what came back on a stream.
type h2Response struct {
	status string // :status; "" if the stream was reset
	body   string
	reset  http2.ErrCode // RST_STREAM's code
}

func (fd *frontDoor) dialH2(t *testing.T, serverName string) *h2Client {
	t.Helper()
	conn, err := fd.handshake(&tls.Config{ServerName: serverName, RootCAs: fd.Roots, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &h2Client{fr: http2.NewFramer(conn, conn)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.block)
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// do sends a request of the given fields, in order, with body (none if
// empty) on a new stream, and reads the response.
func (c *h2Client) do(t *testing.T, fields [][2]string, body string) h2Response {
	t.Helper()
	c.stream += 2
	id := c.stream - 1 // client streams are odd: 1, 3, …
	c.block.Reset()
	for _, f := range fields {
		if err := c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block.Bytes(), EndStream: body == "", EndHeaders: true})
	if err == nil && body != "" {
		err = c.fr.WriteData(id, true, []byte(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	var res h2Response
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading stream %d's response: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := c.fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v %q", f.ErrCode, f.DebugData())
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				res.status = f.PseudoValue("status")
				if f.StreamEnded() {
					return res
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				res.body += string(f.Data())
				if f.StreamEnded() {
					return res
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				res.reset = f.ErrCode
				return res
			}
		}
	}
}

// TestHTTP2MalformedRequests: HTTP/2 requests whose length or host is
// ambiguous are refused with 400 and never reach the origin (RFC 9113,
// sections 8.1.1 and 8.3.1).
func TestHTTP2MalformedRequests(t *testing.T) {
	request := func(method string, authority bool, extra ...[2]string) [][2]string {
		fields := [][2]string{{":method", method}, {":scheme", "https"}, {":path", "/"}}
		if authority {
			fields = append(fields, [2]string{":authority", echoHost})
		}
		return append(fields, extra...)
	}
	tests := []struct {
		name   string
		fields [][2]string
		body   string
		status string
	}{
		{"two content-lengths", request("POST", true, [2]string{"content-length", "5"}, [2]string{"content-length", "6"}), "hello", "400"},
		{"content-length repeated", request("POST", true, [2]string{"content-length", "5"}, [2]string{"content-length", "5"}), "hello", "200"},
		{"host conflicts with :authority", request("GET", true, [2]string{"host", "other.example.com"}), "", "400"},
		{"two hosts", request("GET", true, [2]string{"host", echoHost}, [2]string{"host", "other.example.com"}), "", "400"},
		{"host and :authority agree", request("GET", true, [2]string{"host", "ECHO.example.com:443"}), "", "200"},
		{"host without :authority", request("GET", false, [2]string{"host", echoHost}), "", "200"},
		{"neither host nor :authority", request("GET", false), "", "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFrontDoor(t, ProxyOptions{})
			res := fd.dialH2(t, echoHost).do(t, tt.fields, tt.body)
			if res.status != tt.status {
				t.Fatalf("got status %q (reset %v), body %q; want %s", res.status, res.reset, res.body, tt.status)
			}
			if hits := fd.echoHits.Load(); (hits > 0) != (tt.status == "200") {
				t.Errorf("origin got %d requests", hits)
			}
			fd.checkQuietLog(t)
		})
	}
}

// TestTraceRefused: the edge answers TRACE (and IIS's TRACK) itself with
// 405, as nginx does, so no origin can echo a client's cookies back to a
// script; and CONNECT, a tunnel it does not open, over HTTP/1.1
// (authority-form) and HTTP/2 alike.
func TestTraceRefused(t *testing.T) {
	tests := []struct {
		method string
		h2     bool
	}{{"TRACE", false}, {"TRACE", true}, {"trace", false}, {"TRACK", false}, {"CONNECT", false}, {"CONNECT", true}}
	for _, tt := range tests {
		fd := newFrontDoor(t, ProxyOptions{})
		req, err := http.NewRequest(tt.method, "https://"+echoHost+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Cookie", "session=secret")
		resp, err := fd.client(t, tt.h2).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || strings.Contains(string(body), "secret") {
			t.Errorf("%s (h2 %v): %d %q, want 405", tt.method, tt.h2, resp.StatusCode, body)
		}
		if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") || strings.Contains(allow, "TRACE") {
			t.Errorf("%s (h2 %v): Allow %q", tt.method, tt.h2, allow)
		}
		if hits := fd.echoHits.Load(); hits != 0 {
			t.Errorf("%s (h2 %v) reached the origin", tt.method, tt.h2)
		}
	}
}

// TestH2CUpgradeStripped: a request to switch to cleartext HTTP/2 is
// served as the HTTP/1.1 request it also is, without the upgrade: the
// origin never sees Upgrade: h2c or HTTP2-Settings.
func TestH2CUpgradeStripped(t *testing.T) {
	const settings = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
	for _, connection := range []string{"Upgrade, HTTP2-Settings", "Upgrade"} {
		fd := newFrontDoor(t, ProxyOptions{})
		resp, body := fd.roundTripHTTP1(t, echoHost, "GET / HTTP/1.1\r\nHost: "+echoHost+"\r\nConnection: "+connection+"\r\nUpgrade: h2c\r\n"+settings+"\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Connection: %s: status %d, body %q", connection, resp.StatusCode, body)
		}
		e := decodeEcho(t, body)
		for _, h := range []string{"Upgrade", "Http2-Settings", "Connection"} {
			if v := e.Header.Values(h); len(v) > 0 {
				t.Errorf("Connection: %s: origin got %s: %q", connection, h, v)
			}
		}
	}
}

// TestMalformedRequestBody: a request body that breaks its own framing is
// the client's error: it gets a 400, counted as bad_request, and nothing
// is logged against the origin.
func TestMalformedRequestBody(t *testing.T) {
	tests := []struct {
		name string
		send func(t *testing.T, fd *frontDoor) int // the status the client got
	}{{
		name: "bad chunk size",
		send: func(t *testing.T, fd *frontDoor) int {
			resp, _ := fd.roundTripHTTP1(t, echoHost, "POST / HTTP/1.1\r\nHost: "+echoHost+"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
			return resp.StatusCode
		},
	}, {
		name: "body shorter than Content-Length, then closed",
		send: func(t *testing.T, fd *frontDoor) int {
			conn, br := fd.dialHTTP1(t, echoHost)
			if _, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: "+echoHost+"\r\nContent-Length: 100\r\n\r\nshort"); err != nil {
				t.Fatal(err)
			}
			if err := conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			resp, _ := readResponse(t, br)
			return resp.StatusCode
		},
	}, {
		name: "HTTP/2 body shorter than content-length",
		send: func(t *testing.T, fd *frontDoor) int {
			fields := [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", echoHost}, {":path", "/"}, {"content-length", "100"}}
			res := fd.dialH2(t, echoHost).do(t, fields, "short")
			if res.status == "" {
				t.Fatalf("stream reset %v, want a response", res.reset)
			}
			var code int
			if _, err := fmt.Sscan(res.status, &code); err != nil {
				t.Fatal(err)
			}
			return code
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFrontDoor(t, ProxyOptions{})
			if got := tt.send(t, fd); got != http.StatusBadRequest {
				t.Errorf("status %d, want 400", got)
			}
			// The proxy counts and logs a failure before it answers.
			for _, reason := range proxyTestReasons {
				want := map[string]float64{"bad_request": 1}[reason]
				if got := metricValue(t, fd.reg, "keyedge_proxy_errors_total", reason); got != want {
					t.Errorf("keyedge_proxy_errors_total{reason=%q} = %v, want %v", reason, got, want)
				}
			}
			fd.checkQuietLog(t)
		})
	}
}

// TestTunnelIdleTimeout: an upgraded connection stays open while bytes
// flow either way, and closes once none have for TunnelIdleTimeout.
func TestTunnelIdleTimeout(t *testing.T) {
	fd := newFrontDoor(t, ProxyOptions{TunnelIdleTimeout: time.Second})
	conn, err := fd.handshake(&tls.Config{ServerName: streamHost, RootCAs: fd.Roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard, far above the timeout
	cfg, err := websocket.NewConfig("wss://"+streamHost+"/", "https://"+streamHost+"/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("WebSocket handshake through the edge: %v", err)
	}
	var got string
	if err := websocket.Message.Send(ws, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := websocket.Message.Receive(ws, &got); err != nil || got != "hello" {
		t.Fatalf("echo: %q, %v", got, err)
	}

	// The origin alone talks, for longer than the timeout.
	if err := websocket.Message.Send(ws, "stream"); err != nil {
		t.Fatal(err)
	}
	ticks := 0
	for got != "done" {
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("tunnel closed while the origin was sending, after %d messages: %v", ticks, err)
		}
		ticks++
	}

	// Then nobody does.
	err = websocket.Message.Receive(ws, &got)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("idle tunnel still open at the hang guard")
	}
	if err == nil {
		t.Fatalf("received %q on an idle tunnel", got)
	}
}

// TestPlainHTTPOnTLSPort: plain HTTP sent to the TLS port gets a 400
// saying so before the connection closes, as Go's and nginx's servers
// answer.
func TestPlainHTTPOnTLSPort(t *testing.T) {
	w := newWorld(t, 1, Options{})
	conn, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: t0.keyedge.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, body := readResponse(t, br)
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Proto, "HTTP/1.") || !strings.Contains(body, "HTTPS") {
		t.Errorf("got %s %d %q, want an HTTP/1.x 400 about HTTPS", resp.Proto, resp.StatusCode, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 400: %v, want the connection closed", err)
	}
}

// TestExpectContinue: a client that sends "Expect: 100-continue" and
// waits before sending its body gets an answer without sending it: the
// origin's response when the origin answers without reading the body,
// "100 Continue" when it reads it (RFC 9110, section 10.1.1). curl sends
// Expect on every upload of 1 MiB or more and waits a second for it.
func TestExpectContinue(t *testing.T) {
	fd := newFrontDoor(t, ProxyOptions{})
	const quick = "quick.example.com" // its origin answers without reading the body
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "answered unread")
	}))
	t.Cleanup(origin.Close)
	fd.put(t, testpki.ECDSAP256, origin.URL, quick)
	head := func(host string) string {
		return "POST / HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
	}

	t.Run("origin answers without the body", func(t *testing.T) {
		conn, br := fd.dialHTTP1(t, quick)
		if _, err := io.WriteString(conn, head(quick)); err != nil {
			t.Fatal(err)
		}
		resp, body := readResponse(t, br) // the body is never sent
		if resp.StatusCode != http.StatusOK || body != "answered unread" {
			t.Errorf("got %s %q, want 200 %q", resp.Status, body, "answered unread")
		}
	})
	t.Run("origin reads the body", func(t *testing.T) {
		conn, br := fd.dialHTTP1(t, echoHost)
		if _, err := io.WriteString(conn, head(echoHost)); err != nil {
			t.Fatal(err)
		}
		interim, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer to the head: %v", err)
		}
		if interim.StatusCode != http.StatusContinue {
			t.Fatalf("the answer to the head is %s, want 100 Continue", interim.Status)
		}
		if _, err := io.WriteString(conn, "hello"); err != nil {
			t.Fatal(err)
		}
		resp, body := readResponse(t, br)
		// The origin's own 100 Continue may follow the edge's: a client
		// reads any number of 1xx before the final response (RFC 9110,
		// section 15.2).
		for resp.StatusCode == http.StatusContinue {
			resp, body = readResponse(t, br)
		}
		if e := decodeEcho(t, body); resp.StatusCode != http.StatusOK || e.Body != "hello" {
			t.Errorf("got %s, the origin saw body %q; want 200 and %q", resp.Status, e.Body, "hello")
		}
	})
}
