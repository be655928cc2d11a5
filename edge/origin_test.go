package edge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
)

// originConns is a plain-HTTP origin that records the client address of
// each request and reports each connection it closes.
type originConns struct {
	*httptest.Server
	mu      sync.Mutex
	remotes []string
	closed  chan struct{} // a connection closed; buffered far beyond any test
}

func newOriginConns(t *testing.T, h http.HandlerFunc) *originConns {
	o := &originConns{closed: make(chan struct{}, 1024)}
	o.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.remotes = append(o.remotes, r.RemoteAddr)
		o.mu.Unlock()
		h(w, r)
	}))
	o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			o.closed <- struct{}{}
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	return o
}

// conns returns how many distinct client connections the requests came
// on.
func (o *originConns) conns() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]bool{}
	for _, r := range o.remotes {
		seen[r] = true
	}
	return len(seen)
}

func TestFastPath(t *testing.T) {
	get := httptest.NewRequest(http.MethodGet, "http://h/", nil)
	post := httptest.NewRequest(http.MethodPost, "http://h/", strings.NewReader("x"))
	idemPost := httptest.NewRequest(http.MethodPost, "http://h/", nil)
	idemPost.Header.Set("Idempotency-Key", "1")
	ws := httptest.NewRequest(http.MethodGet, "http://h/", nil)
	ws.Header.Set("Upgrade", "websocket")
	secure := httptest.NewRequest(http.MethodGet, "https://h/", nil)
	for _, tt := range []struct {
		name string
		r    *http.Request
		want bool
	}{
		{"GET", get, true},
		{"POST with a body", post, false},
		{"POST with an Idempotency-Key", idemPost, true},
		{"POST without one", httptest.NewRequest(http.MethodPost, "http://h/", nil), false},
		{"upgrade", ws, false},
		{"https origin", secure, false},
	} {
		if got := fastPath(tt.r); got != tt.want {
			t.Errorf("fastPath(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestOriginReuse checks that the fast path reuses one origin connection
// for sequential requests, bodiless responses included, while requests
// with a body go through the http.Transport.
func TestOriginReuse(t *testing.T) {
	origin := newOriginConns(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %s", r.Method, r.Header.Get("X-Forwarded-Host"))
		}
	})
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
	front, _ := pt.start(t)
	client := front.Client()
	for i := range 12 {
		method, path := []string{http.MethodGet, http.MethodHead, http.MethodGet}[i%3], []string{"/", "/", "/empty"}[i%3]
		req, _ := http.NewRequest(method, front.URL+path, nil)
		req.Host = proxyTestHost
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		want := map[string]string{"/": method + " " + proxyTestHost, "/empty": ""}[path]
		if method == http.MethodHead {
			want = ""
		}
		if string(body) != want {
			t.Errorf("%s %s: got %d %q, want %q", method, path, res.StatusCode, body, want)
		}
	}
	if n := origin.conns(); n != 1 {
		t.Errorf("12 sequential bodiless requests came on %d origin connections, want 1", n)
	}
	res, err := client.Post(front.URL, "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if n := origin.conns(); n != 2 {
		t.Errorf("after a POST with a body: %d origin connections, want 2 (the Transport's own)", n)
	}
}

// TestOriginClosesIdle checks that a request sent on a pooled connection
// the origin has closed meanwhile is sent again on a new one.
func TestOriginClosesIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// One request per connection, then close, without saying so first:
	// what an origin's keep-alive timeout does to an idle connection.
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
					return
				}
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, "http://"+ln.Addr().String()))
	front, done := pt.start(t)
	for i := range 3 {
		res, body := frontGet(t, context.Background(), front)
		if res.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Errorf("request %d: %d %q, want 200 \"ok\"", i, res.StatusCode, body)
		}
		proxyTestWait(t, done, "the proxy to finish the request")
	}
	pt.checkCounts(t, "keyedge_proxy_errors_total", "reason", proxyTestReasons, map[string]float64{})
}

// TestOriginConnectionClose checks that a connection the origin asks to
// close is not reused, and that it is closed.
func TestOriginConnectionClose(t *testing.T) {
	origin := newOriginConns(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
	front, _ := pt.start(t)
	for range 2 {
		res, body := frontGet(t, context.Background(), front)
		if string(body) != "bye" || res.Header.Get("Connection") != "" {
			t.Errorf("got %q, Connection %q; want \"bye\" and no Connection header", body, res.Header.Get("Connection"))
		}
	}
	if n := origin.conns(); n != 2 {
		t.Errorf("2 requests to an origin closing each connection came on %d connections, want 2", n)
	}
}

// TestOriginIdleTimeout checks that idle origin connections are closed
// after IdleConnTimeout, and that Close closes them.
func TestOriginIdleTimeout(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  ProxyOptions
	}{{"idle timeout", ProxyOptions{IdleConnTimeout: 1}}, {"Close", ProxyOptions{}}} {
		t.Run(tt.name, func(t *testing.T) {
			origin := newOriginConns(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			pt := newProxyTest(t, tt.cfg, proxyTestOrigin(t, origin.URL))
			rec := pt.serve(httptest.NewRequest(http.MethodGet, "http://"+proxyTestHost+"/", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			if tt.name == "Close" {
				pt.p.Close()
			}
			proxyTestWait(t, origin.closed, "the idle origin connection to close")
		})
	}
}

// TestOriginInformational checks that 1xx responses before the final one
// reach the client on the fast path, and that a chunked response's
// trailers do.
func TestOriginInformational(t *testing.T) {
	origin := newOriginConns(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush() // chunked
		io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
	})
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
	front, _ := pt.start(t)
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	res, body := frontGet(t, httptrace.WithClientTrace(context.Background(), trace), front)
	if string(body) != "body" || res.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("got %q, trailer %v; want \"body\" and X-Checksum: abc", body, res.Trailer)
	}
	if len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Errorf("1xx responses %q, want one 103 with its Link", hints)
	}
	if n := origin.conns(); n != 1 {
		t.Errorf("%d origin connections", n)
	}
}

// frontGet sends a GET for the proxy test's tenant to front and returns
// the response, its body read and closed.
func frontGet(t *testing.T, ctx context.Context, front *httptest.Server) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, front.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = proxyTestHost
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(body)
}

// TestOriginStrayBytes checks that bytes an origin sends after the end of
// a response (a body on a 204 or a 304, or on the response to a HEAD, or
// more than its Content-Length) are never taken for the response to the
// next request sent on that origin connection: the connection is closed
// rather than reused, as http.Transport closes one on an "unsolicited
// response". The stray bytes here are a whole response, which the next
// request, a client's own, must never get.
func TestOriginStrayBytes(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	origin := rawOrigin(t, func(requestLine string) string {
		_, target, _ := strings.Cut(requestLine, " ")
		path, _, _ := strings.Cut(target, " ")
		switch path {
		case "/nocontent":
			return "HTTP/1.1 204 No Content\r\nContent-Length: 41\r\n\r\n" + stray
		case "/notmodified":
			return "HTTP/1.1 304 Not Modified\r\nContent-Length: 41\r\n\r\n" + stray
		case "/long":
			return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlong" + stray
		}
		// The response to a HEAD has no body: this one's is stray.
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
	})
	w := tenantWorld(t, "http://"+origin, "stray.keyedge.test")
	for _, tt := range []struct {
		method, path string
		code         int
		body         string
	}{
		{http.MethodGet, "/nocontent", http.StatusNoContent, ""},
		{http.MethodGet, "/notmodified", http.StatusNotModified, ""},
		{http.MethodHead, "/head", http.StatusOK, ""},
		{http.MethodGet, "/long", http.StatusOK, "long"},
	} {
		for _, h2 := range []bool{false, true} {
			c := w.client(t, h2)
			req, _ := http.NewRequest(tt.method, "https://stray.keyedge.test"+tt.path, nil)
			res, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.code || string(body) != tt.body {
				t.Errorf("%s %s (HTTP/2 %v): %d %q, want %d %q", tt.method, tt.path, h2, res.StatusCode, body, tt.code, tt.body)
			}
			if res, body := w.get(t, c, "stray.keyedge.test", "/next"); res.StatusCode != http.StatusOK || body != "/next" {
				t.Errorf("the request after %s %s (HTTP/2 %v): %d %q, want 200 \"/next\"", tt.method, tt.path, h2, res.StatusCode, body)
			}
		}
	}
}

// TestOriginHeadLimit checks that the fast path reads at most
// originMaxHead of a response head, as http.Transport reads at most its
// MaxResponseHeaderBytes: an origin sending an endless head gets its
// client a 502, not the edge's memory, and the next request is answered.
func TestOriginHeadLimit(t *testing.T) {
	origin := rawOrigin(t, func(requestLine string) string {
		if strings.HasPrefix(requestLine, "GET /huge ") {
			return "HTTP/1.1 200 OK\r\nX-Huge: " + strings.Repeat("h", originMaxHead) + "\r\nContent-Length: 2\r\n\r\nok"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
	})
	w := tenantWorld(t, "http://"+origin, "huge.keyedge.test")
	for _, h2 := range []bool{false, true} {
		c := w.client(t, h2)
		if res, _ := w.get(t, c, "huge.keyedge.test", "/huge"); res.StatusCode != http.StatusBadGateway {
			t.Errorf("a head over %d bytes (HTTP/2 %v): %d, want 502", originMaxHead, h2, res.StatusCode)
		}
		if res, body := w.get(t, c, "huge.keyedge.test", "/next"); res.StatusCode != http.StatusOK || body != "next" {
			t.Errorf("the request after it (HTTP/2 %v): %d %q, want 200 \"next\"", h2, res.StatusCode, body)
		}
	}
}
