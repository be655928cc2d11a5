package edge

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testmetrics"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/websocket"
)

const (
	wsHost    = "ws.example.com"    // the WebSocket origin's tenant
	wsOthHost = "other.example.com" // another tenant, with a certificate of its own
)

// wsOrigin is a WebSocket echo origin (golang.org/x/net/websocket's
// server, which checks the handshake): it records each request's
// header, refuses /refuse with a 403, answers /bad-accept with a 101
// whose Sec-WebSocket-Accept is not the key's, and on /flood sends
// messages without end instead of echoing.
type wsOrigin struct {
	url    string
	seen   chan http.Header  // each request's header
	closed chan struct{}     // an echo connection ended
	srv    *httptest.Server  // closed when the test ends
	echo   *websocket.Server // the echo handler
}

func newWSOrigin(t *testing.T) *wsOrigin {
	o := &wsOrigin{seen: make(chan http.Header, 16), closed: make(chan struct{}, 16)}
	o.echo = &websocket.Server{Handler: func(ws *websocket.Conn) {
		defer func() { o.closed <- struct{}{} }()
		if ws.Request().URL.Path == "/flood" {
			for websocket.Message.Send(ws, strings.Repeat("flood ", 1000)) == nil {
			}
			return
		}
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, msg) != nil {
				return
			}
		}
	}}
	o.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		o.seen <- r.Header.Clone()
		switch r.URL.Path {
		case "/refuse":
			http.Error(rw, "origin says no", http.StatusForbidden)
		case "/bad-accept":
			conn, brw, err := http.NewResponseController(rw).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBrZXkncw==\r\n\r\n")
			brw.Flush()
		default:
			o.echo.ServeHTTP(rw, r)
		}
	}))
	t.Cleanup(o.srv.Close)
	o.url = o.srv.URL
	return o
}

// h3WebSocket is a client's RFC 9220 WebSocket over HTTP/3: quic-go's
// client connection and the extended CONNECT's stream.
type h3WebSocket struct {
	conn *quic.Conn
	str  *http3.RequestStream
	resp *http.Response
}

// dialH3WebSocket opens a QUIC connection to addr with SNI sni, checks
// that the edge allows extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL),
// and sends an extended CONNECT for :protocol protocol (a plain CONNECT
// when empty) to https://host/path, offering the "chat" subprotocol.
func dialH3WebSocket(t *testing.T, w *world, addr, sni, host, path, protocol string) *h3WebSocket {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: w.Roots, ServerName: sni, NextProtos: []string{http3.NextProtoH3}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	cc := (&http3.Transport{}).NewClientConn(conn)
	select {
	case <-cc.ReceivedSettings():
	case <-ctx.Done():
		t.Fatal("no SETTINGS from the edge")
	}
	if !cc.Settings().EnableExtendedConnect {
		t.Fatal("the edge does not send SETTINGS_ENABLE_CONNECT_PROTOCOL")
	}
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{
		Method: http.MethodConnect,
		Proto:  protocol,
		Host:   host,
		URL:    &url.URL{Scheme: "https", Host: host, Path: path},
		Header: http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Protocol": {"chat"}},
	}
	if err := str.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := str.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	return &h3WebSocket{conn: conn, str: str, resp: resp}
}

// echo sends msg in a client's (masked) text frame, RFC 6455 section
// 5.2, and reads the origin's echo, an unmasked text frame.
func (ws *h3WebSocket) echo(t *testing.T, msg string) {
	t.Helper()
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	frame := append([]byte{0x81, 0x80 | byte(len(msg))}, mask[:]...)
	for i := range len(msg) {
		frame = append(frame, msg[i]^mask[i%4])
	}
	if _, err := ws.str.Write(frame); err != nil {
		t.Fatalf("sending a frame: %v", err)
	}
	ws.str.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 2+len(msg))
	if _, err := io.ReadFull(ws.str, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if want := append([]byte{0x81, byte(len(msg))}, msg...); string(got) != string(want) {
		t.Fatalf("echo % x, want % x", got, want)
	}
}

// closeAndDrain half-closes the client's side, as a client does after
// the closing handshake, and reads until the edge closes its side: the
// origin has seen the end of the tunnel and closed too.
func (ws *h3WebSocket) closeAndDrain(t *testing.T) {
	t.Helper()
	if err := ws.str.Close(); err != nil {
		t.Fatal(err)
	}
	ws.str.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(ws.str); err != nil || len(rest) > 0 {
		t.Fatalf("after the client's close: %q, %v; want the edge's end of stream", rest, err)
	}
}

// TestHTTP3WebSocket: quic-go's HTTP/3 server tells every client that it
// allows extended CONNECT, so an RFC 9220 WebSocket (extended CONNECT,
// :protocol websocket) over HTTP/3 is proxied to the tenant's origin as
// an HTTP/1.1 upgrade, with the edge's own Sec-WebSocket-Key and the
// X-Forwarded-* fields, and its frames flow both ways; the origin's
// refusal passes through, a 101 for another key is a 502, other
// protocols and plain CONNECT get 405, a host the connection does not
// serve 421; the tunnel closes when idle or when the client stops
// reading, and drains on Shutdown.
// Before RFC 9220 was served, every row but the 405s failed with a 405.
func TestHTTP3WebSocket(t *testing.T) {
	origin := newWSOrigin(t)
	tests := []struct {
		name, sni, host, path, protocol string
		opts                            Options // the edge's, but for AccessLog
		status                          int
		then                            func(t *testing.T, w *world, ws *h3WebSocket, o *wsOrigin, log lineSink)
	}{
		{name: "echo", path: "/chat", protocol: "websocket", status: http.StatusOK, then: func(t *testing.T, w *world, ws *h3WebSocket, o *wsOrigin, log lineSink) {
			if got := ws.resp.Header.Get("Sec-Websocket-Protocol"); got != "chat" {
				t.Errorf("Sec-WebSocket-Protocol %q, want the origin's chat", got)
			}
			for _, f := range []string{"Sec-Websocket-Accept", "Upgrade", "Connection"} {
				if v, ok := ws.resp.Header[f]; ok {
					t.Errorf("the client got %s: %q (RFC 9220: not on HTTP/3)", f, v)
				}
			}
			ws.echo(t, "hello")
			ws.echo(t, "over h3")
			seen := <-o.seen
			key, err := base64.StdEncoding.DecodeString(seen.Get("Sec-Websocket-Key"))
			if err != nil || len(key) != 16 {
				t.Errorf("origin saw Sec-WebSocket-Key %q, want 16 random bytes in base64", seen.Get("Sec-Websocket-Key"))
			}
			want := map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-Websocket-Version": "13",
				"Sec-Websocket-Protocol": "chat", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": wsHost}
			for f, v := range want {
				if got := seen.Get(f); !strings.EqualFold(got, v) {
					t.Errorf("origin saw %s %q, want %q", f, got, v)
				}
			}
			if seen.Get("X-Request-Id") == "" || !strings.Contains(seen.Get("Forwarded"), "for=127.0.0.1") {
				t.Errorf("origin saw X-Request-Id %q, Forwarded %q", seen.Get("X-Request-Id"), seen.Get("Forwarded"))
			}
			ws.closeAndDrain(t)
			<-o.closed
			rec, _ := log.next(t)
			if rec["proto"] != "h3" || rec["status"] != 101.0 || rec["bytes_in"].(float64) < 2*(6+5) || rec["bytes_out"].(float64) < 2*(2+5) {
				t.Errorf("access log %v, want an h3 protocol switch with the tunnel's bytes", rec)
			}
			if got := testmetrics.Sum(t, w.reg, "keyedge_proxy_protocol_requests_total", map[string]string{"proto": "h3"}); got != 1 {
				t.Errorf("%v h3 requests counted, want 1", got)
			}
			if got := testmetrics.Sum(t, w.reg, "keyedge_proxy_requests_total", map[string]string{"code": "1xx"}); got != 1 {
				t.Errorf("%v protocol switches counted, want 1", got)
			}
		}},
		{name: "origin refuses", path: "/refuse", protocol: "websocket", status: http.StatusForbidden, then: func(t *testing.T, w *world, ws *h3WebSocket, o *wsOrigin, log lineSink) {
			if body, _ := io.ReadAll(ws.resp.Body); !strings.Contains(string(body), "origin says no") {
				t.Errorf("body %q, want the origin's", body)
			}
		}},
		{name: "origin accepts another key", path: "/bad-accept", protocol: "websocket", status: http.StatusBadGateway},
		{name: "not websocket", path: "/", protocol: "connect-udp", status: http.StatusMethodNotAllowed},
		{name: "plain CONNECT", protocol: "", status: http.StatusMethodNotAllowed},
		{name: "misdirected", host: wsOthHost, path: "/chat", protocol: "websocket", status: http.StatusMisdirectedRequest},
		{name: "idle", path: "/chat", protocol: "websocket", opts: Options{Proxy: ProxyOptions{TunnelIdleTimeout: 300 * time.Millisecond}}, status: http.StatusOK, then: func(t *testing.T, w *world, ws *h3WebSocket, o *wsOrigin, log lineSink) {
			ws.echo(t, "hello")
			ws.str.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := ws.str.Read(make([]byte, 1))
			if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("idle tunnel: read %v, want the edge to end the stream", err)
			}
			<-o.closed
		}},
		{name: "client stops reading", path: "/flood", protocol: "websocket", opts: Options{Limits: Limits{SendTimeout: 300 * time.Millisecond}}, status: http.StatusOK, then: func(t *testing.T, w *world, ws *h3WebSocket, o *wsOrigin, log lineSink) {
			// The client reads nothing: its stream's flow-control window
			// fills and the edge's write waits for it.
			eventually(t, 10*time.Second, "a send timeout counted", func() bool {
				return testmetrics.Sum(t, w.reg, "keyedge_edge_send_timeouts_total", nil) == 1
			})
			<-o.closed
		}},
		{name: "shutdown drains", path: "/chat", protocol: "websocket", status: http.StatusOK, then: func(t *testing.T, w *world, ws *h3WebSocket, o *wsOrigin, log lineSink) {
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				shut <- w.srv.Shutdown(ctx)
			}()
			eventually(t, 10*time.Second, "Shutdown begun", func() bool { return w.srv.shuttingDown() && w.srv.h3.altSvc.Load() == nil })
			ws.echo(t, "still here")
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned %v with a WebSocket open", err)
			default:
			}
			ws.closeAndDrain(t)
			ws.conn.CloseWithError(0, "")
			if err := <-shut; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, sink := newAccessLog(t)
			w := openWorld(t, 0)
			w.put(t, testpki.ECDSAP256, origin.url, wsHost)
			w.put(t, testpki.ECDSAP256, origin.url, wsOthHost)
			tt.opts.AccessLog = log
			w.startEdge(t, tt.opts)
			eventually(t, 10*time.Second, "the tenants in the edge's keystore", func() bool {
				_, err1 := w.srv.store.Lookup(context.Background(), wsHost)
				_, err2 := w.srv.store.Lookup(context.Background(), wsOthHost)
				return err1 == nil && err2 == nil
			})
			addr := serveH3(t, w.srv)
			host := cmp.Or(tt.host, wsHost)
			ws := dialH3WebSocket(t, w, addr, wsHost, host, tt.path, tt.protocol)
			if ws.resp.StatusCode != tt.status {
				body, _ := io.ReadAll(io.LimitReader(ws.resp.Body, 200))
				t.Fatalf("extended CONNECT %q to %s%s: %d %q, want %d", tt.protocol, host, tt.path, ws.resp.StatusCode, body, tt.status)
			}
			if tt.then != nil {
				tt.then(t, w, ws, origin, sink)
			}
		})
	}
}
