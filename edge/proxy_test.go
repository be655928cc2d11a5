package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testlog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/websocket"
)

// proxyTestHost is the host clients ask for in these tests.
const proxyTestHost = "www.tenant.example"

// proxyTest is a Proxy under test with its metrics registry and log.
type proxyTest struct {
	p   *Proxy
	reg *prometheus.Registry
	log *testlog.Buffer
}

// newProxyTest returns a Proxy configured by cfg and origin whose metrics
// are registered in a fresh registry and whose log is captured.
func newProxyTest(t *testing.T, cfg ProxyOptions, origin OriginFunc) *proxyTest {
	t.Helper()
	pt := &proxyTest{reg: prometheus.NewPedanticRegistry(), log: new(testlog.Buffer)}
	cfg.Logger = slog.New(slog.NewTextHandler(pt.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pt.p = NewProxy(cfg, origin)
	t.Cleanup(pt.p.Close)
	for _, c := range pt.p.Collectors() {
		if err := pt.reg.Register(c); err != nil {
			t.Fatalf("registering the proxy's collectors: %v", err)
		}
	}
	return pt
}

// serve calls ServeHTTP directly, so the metrics are final when it
// returns.
func (pt *proxyTest) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	pt.p.ServeHTTP(rec, r)
	return rec
}

// start serves the proxy on 127.0.0.1. Every request sends on the
// returned channel once ServeHTTP has returned, so a test can wait for the
// proxy to finish with a request the client has already seen the end of.
// The channel holds more signals than any test sends requests.
func (pt *proxyTest) start(t *testing.T) (*httptest.Server, <-chan struct{}) {
	t.Helper()
	done := make(chan struct{}, 1024)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }() // runs when ReverseProxy aborts with a panic, too
		pt.p.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	return front, done
}

// counter returns the value of the counter name{label="value"}.
func (pt *proxyTest) counter(t *testing.T, name, label, value string) float64 {
	t.Helper()
	mfs, err := pt.reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// checkCounts checks every series of the counter name with the given
// label against want; series not in want must be zero.
func (pt *proxyTest) checkCounts(t *testing.T, name, label string, values []string, want map[string]float64) {
	t.Helper()
	for _, v := range values {
		if got := pt.counter(t, name, label, v); got != want[v] {
			t.Errorf("%s{%s=%q} = %v, want %v", name, label, v, got, want[v])
		}
	}
}

var (
	proxyTestCodes   = []string{"1xx", "2xx", "3xx", "4xx", "5xx"}
	proxyTestReasons = []string{"unreachable", "timeout", "no_origin", "misdirected", "bad_request", "not_allowed", "canceled", "other"}
)

// upstreamCount returns how many origin response times were observed.
func (pt *proxyTest) upstreamCount(t *testing.T) uint64 {
	t.Helper()
	mfs, err := pt.reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "keyedge_proxy_upstream_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no keyedge_proxy_upstream_seconds")
	return 0
}

// proxyTestOrigin returns an OriginFunc sending every request to rawURL.
func proxyTestOrigin(t *testing.T, rawURL string) OriginFunc {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parsing origin URL: %v", err)
	}
	return func(*http.Request) (*url.URL, error) { return u, nil }
}

// proxyTestWait returns what ch delivers. The bound is far above anything
// a working proxy needs; it only turns a hang (a proxy that buffers what
// it should stream) into a failure that says why.
func proxyTestWait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("gave up waiting: %s", what)
		panic("unreachable")
	}
}

// proxyEcho is what the echo origin saw of a request.
type proxyEcho struct {
	Host             string
	URI              string
	Proto            string
	Header           http.Header
	ContentLength    int64
	TransferEncoding []string
	Body             string
}

// proxyEchoHandler answers with what it saw of the request, body
// included, and with a hop-by-hop header the proxy must not pass back.
func proxyEchoHandler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Connection", "X-Resp-Secret")
	w.Header().Set("X-Resp-Secret", "1")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(proxyEcho{
		Host: r.Host, URI: r.RequestURI, Proto: r.Proto, Header: r.Header,
		ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding, Body: string(body),
	})
}

func TestProxyForwardingHeaders(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(proxyEchoHandler))
	t.Cleanup(origin.Close)
	originHost := strings.TrimPrefix(origin.URL, "http://")

	tests := []struct {
		name       string
		target     string      // the client's request URL
		host       string      // the client's Host header
		remoteAddr string      // the client's address
		base       string      // the origin URL's base path
		header     http.Header // sent by the client
		wantURI    string
		want       map[string]string // headers the origin sees; "" means absent
	}{{
		name:       "plain",
		target:     "http://" + proxyTestHost + "/index.html",
		host:       proxyTestHost,
		remoteAddr: "192.0.2.7:50000",
		wantURI:    "/index.html",
		want: map[string]string{
			"X-Forwarded-For":   "192.0.2.7",
			"X-Forwarded-Host":  proxyTestHost,
			"X-Forwarded-Proto": "http",
			"Forwarded":         "for=192.0.2.7;host=www.tenant.example;proto=http",
		},
	}, {
		name:       "spoofed forwarding headers are replaced",
		target:     "https://" + proxyTestHost + "/",
		host:       proxyTestHost,
		remoteAddr: "192.0.2.7:50000",
		header: http.Header{
			"X-Forwarded-For":   {"203.0.113.1", "203.0.113.2"},
			"X-Forwarded-Host":  {"admin.tenant.example"},
			"X-Forwarded-Proto": {"http"},
			"Forwarded":         {"for=203.0.113.1;host=admin.tenant.example;proto=https"},
			"X-Real-Ip":         {"203.0.113.9"},
		},
		wantURI: "/",
		want: map[string]string{
			"X-Forwarded-For":   "192.0.2.7",
			"X-Forwarded-Host":  proxyTestHost,
			"X-Forwarded-Proto": "https",
			"Forwarded":         "for=192.0.2.7;host=www.tenant.example;proto=https",
			"X-Real-Ip":         "",
		},
	}, {
		name:       "IPv6 client and host with port",
		target:     "https://" + proxyTestHost + ":8443/",
		host:       proxyTestHost + ":8443",
		remoteAddr: "[2001:db8::1]:50000",
		wantURI:    "/",
		want: map[string]string{
			"X-Forwarded-For":   "2001:db8::1",
			"X-Forwarded-Host":  proxyTestHost + ":8443",
			"X-Forwarded-Proto": "https",
			"Forwarded":         `for="[2001:db8::1]";host="www.tenant.example:8443";proto=https`,
		},
	}, {
		name:       "hop-by-hop headers are stripped",
		target:     "http://" + proxyTestHost + "/",
		host:       proxyTestHost,
		remoteAddr: "192.0.2.7:50000",
		header: http.Header{
			"Connection":          {"X-Secret"},
			"X-Secret":            {"1"},
			"Keep-Alive":          {"timeout=5"},
			"Proxy-Authorization": {"Basic dXNlcjpwYXNz"},
			"X-Kept":              {"yes"},
		},
		wantURI: "/",
		want: map[string]string{
			"Connection":          "",
			"X-Secret":            "",
			"Keep-Alive":          "",
			"Proxy-Authorization": "",
			"X-Kept":              "yes",
		},
	}, {
		name:       "origin base path",
		target:     "http://" + proxyTestHost + "/dir/page?q=1",
		host:       proxyTestHost,
		remoteAddr: "192.0.2.7:50000",
		base:       "/base",
		wantURI:    "/base/dir/page?q=1",
		want:       map[string]string{"X-Forwarded-Host": proxyTestHost},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL+tt.base))
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			r.Host = tt.host
			r.RemoteAddr = tt.remoteAddr
			for k, v := range tt.header {
				r.Header[k] = v
			}
			rec := pt.serve(r)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, body %q", rec.Code, rec.Body)
			}
			if got := rec.Header().Get("X-Resp-Secret"); got != "" {
				t.Errorf("client got the origin's hop-by-hop X-Resp-Secret: %q", got)
			}
			var got proxyEcho
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decoding the origin's echo %q: %v", rec.Body, err)
			}
			if got.Host != originHost {
				t.Errorf("origin got Host %q, want its own host %q", got.Host, originHost)
			}
			if got.URI != tt.wantURI {
				t.Errorf("origin got URI %q, want %q", got.URI, tt.wantURI)
			}
			for k, want := range tt.want {
				if v := got.Header.Values(k); strings.Join(v, ", ") != want {
					t.Errorf("origin got %s: %q, want %q", k, v, want)
				}
			}
		})
	}
}

func TestProxyForwardedValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"www.tenant.example", "www.tenant.example"},
		{"www.tenant.example:8443", `"www.tenant.example:8443"`},
		{"", `""`},
		{`we"ird\host`, `"we\"ird\\host"`},
	}
	for _, tt := range tests {
		if got := proxyForwardedValue(tt.in); got != tt.want {
			t.Errorf("proxyForwardedValue(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestProxyWebSocket(t *testing.T) {
	origin := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(origin.Close)
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
	front, done := pt.start(t)

	cfg, err := websocket.NewConfig("ws"+strings.TrimPrefix(front.URL, "http")+"/echo", "http://"+proxyTestHost+"/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("WebSocket handshake through the proxy: %v", err)
	}
	for _, msg := range []string{"hello", "through the edge", strings.Repeat("x", 100<<10)} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("receive: %v", err)
		}
		if got != msg {
			t.Fatalf("echo of a %d-byte message: got %d bytes", len(msg), len(got))
		}
	}
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	proxyTestWait(t, done, "the proxy to finish the WebSocket connection")
	pt.checkCounts(t, "keyedge_proxy_requests_total", "code", proxyTestCodes, map[string]float64{"1xx": 1})
}

func TestProxyStreamsResponse(t *testing.T) {
	const part1, part2 = "first part\n", "second part\n"
	tests := []struct {
		name   string
		header http.Header // the origin's response headers
	}{
		{"unknown length", http.Header{"Content-Type": {"text/plain"}}},
		{"server-sent events", http.Header{"Content-Type": {"text/event-stream"}}},
		{"known length", http.Header{"Content-Type": {"text/plain"}, "Content-Length": {fmt.Sprint(len(part1 + part2))}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header()[k] = v
				}
				io.WriteString(w, part1)
				http.NewResponseController(w).Flush()
				<-release // the client must see part1 before the origin goes on
				io.WriteString(w, part2)
			}))
			t.Cleanup(origin.Close)
			var once sync.Once
			releaseOrigin := func() { once.Do(func() { close(release) }) }
			t.Cleanup(releaseOrigin) // before origin.Close, which waits for the handler

			pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
			front, _ := pt.start(t)
			res, err := front.Client().Get(front.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()

			first := make(chan string, 1)
			go func() {
				buf := make([]byte, len(part1))
				n, _ := io.ReadFull(res.Body, buf)
				first <- string(buf[:n])
			}()
			if got := proxyTestWait(t, first, "the first part while the origin is still sending"); got != part1 {
				t.Fatalf("first part %q, want %q", got, part1)
			}
			releaseOrigin()
			rest, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != part2 {
				t.Fatalf("rest %q, want %q", rest, part2)
			}
		})
	}
}

func TestProxyStreamsRequestBody(t *testing.T) {
	const firstLen, totalLen = 64 << 10, 8 << 20
	body := bytes.Repeat([]byte("0123456789abcdef"), totalLen/16)

	gotFirst := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.CopyN(h, r.Body, firstLen); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		close(gotFirst) // the client sends the rest only now
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", firstLen+n, h.Sum(nil))
	}))
	t.Cleanup(origin.Close)
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
	front, _ := pt.start(t)

	pr, pw := io.Pipe()
	go func() {
		if _, err := pw.Write(body[:firstLen]); err != nil {
			pw.CloseWithError(err)
			return
		}
		select {
		case <-gotFirst:
		case <-time.After(30 * time.Second): // a hang guard, as in proxyTestWait
			pw.CloseWithError(errors.New("the origin did not get the start of the body while the client was still sending"))
			return
		}
		_, err := pw.Write(body[firstLen:])
		pw.CloseWithError(err)
	}()
	res, err := front.Client().Post(front.URL+"/upload", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d %x", totalLen, sha256.Sum256(body)); string(got) != want {
		t.Fatalf("origin got %q, want %q", got, want)
	}
}

// proxyTestClosedPort returns an http URL on 127.0.0.1 where nothing
// listens.
func proxyTestClosedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

func TestProxyErrors(t *testing.T) {
	errLookup := errors.New("tenant store unavailable at 10.1.2.3")
	tests := []struct {
		name     string
		cfg      ProxyOptions
		origin   func(t *testing.T) (OriginFunc, string) // and the origin address, "" if none
		wantCode int
		wantBody string
		reason   string
		warn     bool // logged at Warn with the host (and origin)
	}{{
		name: "origin unreachable",
		origin: func(t *testing.T) (OriginFunc, string) {
			u := proxyTestClosedPort(t)
			return proxyTestOrigin(t, u), u
		},
		wantCode: http.StatusBadGateway,
		wantBody: "502 Bad Gateway: origin unreachable\n",
		reason:   "unreachable",
		warn:     true,
	}, {
		name: "origin too slow",
		cfg:  ProxyOptions{OriginTimeout: 50 * time.Millisecond},
		origin: func(t *testing.T) (OriginFunc, string) {
			release := make(chan struct{})
			origin := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
			t.Cleanup(origin.Close)
			t.Cleanup(func() { close(release) }) // runs first: origin.Close waits for the handler
			return proxyTestOrigin(t, origin.URL), origin.URL
		},
		wantCode: http.StatusGatewayTimeout,
		wantBody: "504 Gateway Timeout: origin did not answer in time\n",
		reason:   "timeout",
		warn:     true,
	}, {
		name: "no tenant for host",
		origin: func(t *testing.T) (OriginFunc, string) {
			return func(r *http.Request) (*url.URL, error) {
				return nil, fmt.Errorf("tenant for %q: %w", r.Host, ErrNoOrigin)
			}, ""
		},
		wantCode: http.StatusNotFound,
		wantBody: "404 Not Found: no site is configured for this host\n",
		reason:   "no_origin",
	}, {
		name: "misdirected",
		origin: func(t *testing.T) (OriginFunc, string) {
			return func(r *http.Request) (*url.URL, error) {
				return nil, fmt.Errorf("%q on this connection: %w", r.Host, ErrMisdirected)
			}, ""
		},
		wantCode: http.StatusMisdirectedRequest,
		wantBody: "421 Misdirected Request: this host is not served on this connection\n",
		reason:   "misdirected",
	}, {
		name: "origin lookup fails",
		origin: func(t *testing.T) (OriginFunc, string) {
			return func(*http.Request) (*url.URL, error) { return nil, errLookup }, ""
		},
		wantCode: http.StatusBadGateway,
		wantBody: "502 Bad Gateway\n",
		reason:   "other",
		warn:     true,
	}, {
		name: "origin URL not http",
		origin: func(t *testing.T) (OriginFunc, string) {
			return proxyTestOrigin(t, "ftp://127.0.0.1:2121/"), "ftp://127.0.0.1:2121/"
		},
		wantCode: http.StatusBadGateway,
		wantBody: "502 Bad Gateway\n",
		reason:   "other",
		warn:     true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			origin, originAddr := tt.origin(t)
			pt := newProxyTest(t, tt.cfg, origin)
			rec := pt.serve(httptest.NewRequest(http.MethodGet, "https://"+proxyTestHost+"/", nil))

			if rec.Code != tt.wantCode || rec.Body.String() != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			pt.checkCounts(t, "keyedge_proxy_errors_total", "reason", proxyTestReasons, map[string]float64{tt.reason: 1})
			class := fmt.Sprintf("%dxx", tt.wantCode/100)
			pt.checkCounts(t, "keyedge_proxy_requests_total", "code", proxyTestCodes, map[string]float64{class: 1})

			logged := pt.log.String()
			if strings.Contains(logged, "level=ERROR") {
				t.Errorf("logged at Error:\n%s", logged)
			}
			if got := strings.Contains(logged, "level=WARN"); got != tt.warn {
				t.Errorf("logged at Warn: %v, want %v; log:\n%s", got, tt.warn, logged)
			}
			if tt.warn {
				for _, want := range []string{"host=" + proxyTestHost, "reason=" + tt.reason, originAddr} {
					if !strings.Contains(logged, want) {
						t.Errorf("log lacks %q:\n%s", want, logged)
					}
				}
			}
		})
	}
}

func TestProxyClientGoesAway(t *testing.T) {
	const part1 = "first part\n"
	arrived := make(chan struct{})
	release := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/midbody" {
			io.WriteString(w, part1)
			http.NewResponseController(w).Flush()
		}
		arrived <- struct{}{}
		select {
		case <-r.Context().Done(): // the proxy gave up on the request
		case <-release:
		}
	}))
	t.Cleanup(origin.Close)
	t.Cleanup(func() { close(release) })

	t.Run("before the response", func(t *testing.T) {
		pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			select {
			case <-arrived:
				cancel()
			case <-ctx.Done():
			}
		}()
		pt.serve(httptest.NewRequestWithContext(ctx, http.MethodGet, "https://"+proxyTestHost+"/", nil))

		pt.checkCounts(t, "keyedge_proxy_errors_total", "reason", proxyTestReasons, map[string]float64{"canceled": 1})
		pt.checkCounts(t, "keyedge_proxy_requests_total", "code", proxyTestCodes, nil)
		if logged := pt.log.String(); strings.Contains(logged, "level=WARN") || strings.Contains(logged, "level=ERROR") {
			t.Errorf("a client going away was logged above Debug:\n%s", logged)
		}
	})

	t.Run("mid-body", func(t *testing.T) {
		pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
		front, done := pt.start(t)
		res, err := front.Client().Get(front.URL + "/midbody")
		if err != nil {
			t.Fatal(err)
		}
		proxyTestWait(t, arrived, "the origin to send the first part")
		buf := make([]byte, len(part1))
		if _, err := io.ReadFull(res.Body, buf); err != nil {
			t.Fatal(err)
		}
		res.Body.Close() // before the end: the client's connection closes
		proxyTestWait(t, done, "the proxy to give up on the response")

		pt.checkCounts(t, "keyedge_proxy_errors_total", "reason", proxyTestReasons, map[string]float64{"canceled": 1})
		pt.checkCounts(t, "keyedge_proxy_requests_total", "code", proxyTestCodes, map[string]float64{"2xx": 1})
		if logged := pt.log.String(); strings.Contains(logged, "level=WARN") || strings.Contains(logged, "level=ERROR") {
			t.Errorf("a client going away was logged above Debug:\n%s", logged)
		}
	})
}

func TestProxyOriginFailsMidBody(t *testing.T) {
	const part1 = "first part\n"
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, part1)
		rc := http.NewResponseController(w)
		rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close() // mid-chunk: the body never ends properly
	}))
	t.Cleanup(origin.Close)
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL))
	front, done := pt.start(t)

	req, err := http.NewRequest(http.MethodGet, front.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = proxyTestHost
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Errorf("client read a complete body %q from a response the origin cut off", body)
	}
	proxyTestWait(t, done, "the proxy to give up on the response")
	pt.checkCounts(t, "keyedge_proxy_errors_total", "reason", proxyTestReasons, map[string]float64{"other": 1})
	if logged := pt.log.String(); !strings.Contains(logged, "level=WARN") || !strings.Contains(logged, "host="+proxyTestHost) {
		t.Errorf("an origin failing mid-body was not logged at Warn with the host:\n%s", logged)
	}
}

func TestProxyMetrics(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/unavailable":
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/", http.StatusMovedPermanently)
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(origin.Close)
	u, err := url.Parse(origin.URL)
	if err != nil {
		t.Fatal(err)
	}
	pt := newProxyTest(t, ProxyOptions{}, func(r *http.Request) (*url.URL, error) {
		if r.Host != proxyTestHost {
			return nil, ErrNoOrigin
		}
		return u, nil
	})
	for _, target := range []string{
		"https://" + proxyTestHost + "/",
		"https://" + proxyTestHost + "/a",
		"https://" + proxyTestHost + "/moved",
		"https://" + proxyTestHost + "/unavailable",
		"https://nobody.example/",
	} {
		pt.serve(httptest.NewRequest(http.MethodGet, target, nil))
	}

	pt.checkCounts(t, "keyedge_proxy_requests_total", "code", proxyTestCodes,
		map[string]float64{"2xx": 2, "3xx": 1, "4xx": 1, "5xx": 1})
	pt.checkCounts(t, "keyedge_proxy_errors_total", "reason", proxyTestReasons, map[string]float64{"no_origin": 1})
	if got := pt.upstreamCount(t); got != 4 {
		t.Errorf("keyedge_proxy_upstream_seconds count %d, want 4 (one per origin response)", got)
	}
	mfs, err := pt.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), "example") || strings.Contains(lp.GetValue(), "127.0.0.1") {
					t.Errorf("%s has a host in label %s=%q", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

func TestProxyConcurrent(t *testing.T) {
	const clients, perClient = 8, 25
	origins := map[string]*url.URL{}
	for _, tenant := range []string{"a.tenant.example", "b.tenant.example"} {
		origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", tenant, r.Header.Get("X-Forwarded-Host"))
		}))
		t.Cleanup(origin.Close)
		u, err := url.Parse(origin.URL)
		if err != nil {
			t.Fatal(err)
		}
		origins[tenant] = u
	}
	pt := newProxyTest(t, ProxyOptions{MaxIdleConnsPerHost: 4}, func(r *http.Request) (*url.URL, error) {
		if u, ok := origins[r.Host]; ok {
			return u, nil
		}
		return nil, ErrNoOrigin
	})
	front, _ := pt.start(t)

	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for i := range clients {
		wg.Go(func() {
			for j := range perClient {
				host := []string{"a.tenant.example", "b.tenant.example"}[(i+j)%2]
				req, err := http.NewRequest(http.MethodGet, front.URL, nil)
				if err != nil {
					errs <- err
					return
				}
				req.Host = host
				res, err := front.Client().Do(req)
				if err != nil {
					errs <- err
					continue
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if want := host + " " + host; err != nil || string(body) != want {
					errs <- fmt.Errorf("got %q, %v; want %q", body, err, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	front.Close() // waits for the proxy to finish every request
	pt.checkCounts(t, "keyedge_proxy_requests_total", "code", proxyTestCodes,
		map[string]float64{"2xx": clients * perClient})
}

func TestProxyHTTP2Origin(t *testing.T) {
	origin := httptest.NewUnstartedServer(http.HandlerFunc(proxyEchoHandler))
	origin.EnableHTTP2 = true
	origin.StartTLS()
	t.Cleanup(origin.Close)
	trusted := x509.NewCertPool()
	trusted.AddCert(origin.Certificate())

	tests := []struct {
		name      string
		roots     *x509.CertPool
		wantCode  int
		wantProto string
		reason    string
	}{
		{name: "trusted", roots: trusted, wantCode: http.StatusOK, wantProto: "HTTP/2.0"},
		{name: "system roots do not trust it", wantCode: http.StatusBadGateway, reason: "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt := newProxyTest(t, ProxyOptions{OriginRootCAs: tt.roots}, proxyTestOrigin(t, origin.URL))
			rec := pt.serve(httptest.NewRequest(http.MethodGet, "https://"+proxyTestHost+"/", nil))
			if rec.Code != tt.wantCode {
				t.Fatalf("status %d, want %d; body %q", rec.Code, tt.wantCode, rec.Body)
			}
			want := map[string]float64{}
			if tt.reason != "" {
				want[tt.reason] = 1
			}
			pt.checkCounts(t, "keyedge_proxy_errors_total", "reason", proxyTestReasons, want)
			if tt.wantProto == "" {
				return
			}
			var got proxyEcho
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decoding the origin's echo %q: %v", rec.Body, err)
			}
			if got.Proto != tt.wantProto {
				t.Errorf("origin got %s, want %s", got.Proto, tt.wantProto)
			}
		})
	}
}
