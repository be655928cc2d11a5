package edge

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// WebSockets over HTTP/3 (RFC 9220). quic-go's HTTP/3 server tells every
// client that it allows extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL;
// it cannot be turned off), so a client may open a WebSocket with one:
// :method CONNECT, :protocol websocket, and after a 2xx the WebSocket's
// bytes in the stream's DATA frames, without Sec-WebSocket-Key or
// Sec-WebSocket-Accept (RFC 8441, section 5). The edge serves it through
// the proxy's path for HTTP/1.1 upgrades, so routing, the tenant's HTTP
// settings, the X-Forwarded-* fields, the access log and the metrics are
// those of any request:
//
//   - h3Upgrade turns the extended CONNECT into the request an HTTP/1.1
//     client sends to open a WebSocket (GET, Connection: Upgrade,
//     Upgrade: websocket, a new Sec-WebSocket-Key), which the proxy
//     forwards to the tenant's origin;
//   - checkH3Upgrade, in the origin round trip, turns a 101 whose
//     Sec-WebSocket-Accept is not the key's into a 502 (the client cannot
//     check the key the edge chose);
//   - the protocol switch hijacks h3UpgradeWriter, which answers the
//     client 200 with the 101's end-to-end fields (Sec-WebSocket-Protocol,
//     Sec-WebSocket-Extensions…) and hands over the stream as the
//     tunnel's client connection (h3StreamConn): TunnelIdleTimeout and
//     SendTimeout bound it as they bound an upgraded HTTP/1.1 connection.
//
// The request is counted and logged as the protocol switch (101) it is
// towards the origin, as over HTTP/1.1, although the client got a 200.
// Other :protocol values and plain CONNECT get the 405 CONNECT gets over
// HTTP/1.1 and HTTP/2 (RFC 9220 lets a server refuse protocols it does
// not know).

// errWebSocketAccept is why an RFC 9220 WebSocket gets a 502: the
// origin switched protocols without proving it read the edge's key.
var errWebSocketAccept = errors.New("edge: origin's Sec-WebSocket-Accept does not match the Sec-WebSocket-Key sent")

// webSocketGUID is RFC 6455's key suffix (section 1.3).
const webSocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// h3UpgradeKey is the request context key of an RFC 9220 WebSocket's
// *h3UpgradeState.
type h3UpgradeKey struct{}

// h3UpgradeState is what an RFC 9220 WebSocket's origin round trip and
// protocol switch share.
type h3UpgradeState struct {
	accept string      // the Sec-WebSocket-Accept the origin's 101 must carry
	header http.Header // the origin's 101, once checkH3Upgrade has
}

// serveHTTP3 is the HTTP/3 server's handler: serveProxy, with an RFC
// 9220 WebSocket's extended CONNECT served as the upgrade it stands for.
func (s *Server) serveHTTP3(w http.ResponseWriter, r *http.Request) {
	// quic-go puts an extended CONNECT's :protocol in Proto.
	if r.Method == http.MethodConnect && strings.EqualFold(r.Proto, "websocket") {
		w, r = s.h3Upgrade(w, r)
	}
	s.serveProxy(w, r)
}

// h3Upgrade returns the HTTP/1.1 WebSocket upgrade request standing for
// r, an RFC 9220 extended CONNECT, with the writer of its response.
func (s *Server) h3Upgrade(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request) {
	var nonce [16]byte
	rand.Read(nonce[:]) // never fails (crypto/rand)
	key := base64.StdEncoding.EncodeToString(nonce[:])
	sum := sha1.Sum([]byte(key + webSocketGUID))
	state := &h3UpgradeState{accept: base64.StdEncoding.EncodeToString(sum[:])}
	r = r.WithContext(context.WithValue(r.Context(), h3UpgradeKey{}, state))
	r.Method, r.Proto = http.MethodGet, "HTTP/3.0"
	r.Body, r.ContentLength = http.NoBody, 0 // the stream's bytes are the tunnel's
	h := r.Header
	delete(h, "Sec-Websocket-Accept")
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{"websocket"}
	h["Sec-Websocket-Key"] = []string{key}
	limits := s.settings.Load().limits
	return &h3UpgradeWriter{ResponseWriter: w, state: state, r: r,
		sendTimeout: limits.SendTimeout, sendTimeouts: s.metrics.sendTimeouts}, r
}

// checkH3Upgrade returns errWebSocketAccept, having closed res's body,
// when res, the origin's answer to r, is a 101 to an RFC 9220
// WebSocket's upgrade whose Sec-WebSocket-Accept is not for the key the
// edge sent; else it records the 101 for the protocol switch. Other
// requests and responses pass.
func checkH3Upgrade(r *http.Request, res *http.Response) error {
	if res.StatusCode != http.StatusSwitchingProtocols {
		return nil
	}
	state, ok := r.Context().Value(h3UpgradeKey{}).(*h3UpgradeState)
	if !ok {
		return nil
	}
	if res.Header.Get("Sec-Websocket-Accept") != state.accept {
		res.Body.Close()
		return errWebSocketAccept
	}
	state.header = res.Header
	return nil
}

// h3UpgradeWriter is the ResponseWriter of an RFC 9220 WebSocket: quic-go's,
// with the Hijack of the proxy's protocol switch.
type h3UpgradeWriter struct {
	http.ResponseWriter
	state        *h3UpgradeState
	r            *http.Request
	sendTimeout  time.Duration
	sendTimeouts prometheus.Counter
}

// errNoUpgrade: a protocol switch without the origin's checked 101.
var errNoUpgrade = errors.New("edge: protocol switch without a WebSocket upgrade")

// Hijack answers the client 200 with the end-to-end fields of the
// origin's 101, and returns the stream as the connection to tunnel
// through; the HTTP/1.1 101 the proxy then writes to the returned
// writer is discarded.
func (w *h3UpgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.state.header == nil {
		return nil, nil, errNoUpgrade
	}
	h := w.Header()
	for f, v := range w.state.header {
		h[f] = slices.Clone(v) // the proxy appends the 101's fields to h next
	}
	removeHopByHop(h)
	delete(h, "Sec-Websocket-Accept")
	delete(h, "Content-Length") // none in a 2xx to CONNECT (RFC 9110, section 9.3.6)
	streamer, ok := w.ResponseWriter.(http3.HTTPStreamer)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	w.ResponseWriter.WriteHeader(http.StatusOK)
	str, err := streamer.HTTPStream()
	if err != nil {
		return nil, nil, err
	}
	ctx := w.r.Context()
	local, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	remote, _ := ctx.Value(http3.RemoteAddrContextKey).(net.Addr)
	conn := &h3StreamConn{Stream: str, local: local, remote: remote, sendTimeout: w.sendTimeout, sendTimeouts: w.sendTimeouts}
	return conn, bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(io.Discard)), nil
}

// Unwrap lets http.ResponseController reach quic-go's writer.
func (w *h3UpgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// h3StreamConn is an RFC 9220 WebSocket's HTTP/3 stream as the client
// connection the proxy tunnels through: its DATA frames carry the
// WebSocket's bytes. A write waiting longer than SendTimeout for the
// client's flow-control window fails, and is counted as a send timeout.
//
// The tunnel's idle timeout is a read deadline (idleConn) that the
// origin's bytes extend: a read timing out is then tried again. quic-go
// parses a DATA frame's header from the stream as it reads, so a
// deadline passing with half a frame header read would lose that half;
// it takes a client silent for the whole timeout (the origin not) whose
// next frame header is split across packets and delayed right at the
// deadline, and the stream's framing is broken then: quic-go ends the
// stream, or the connection, with a frame error.
type h3StreamConn struct {
	*http3.Stream
	local, remote net.Addr
	sendTimeout   time.Duration
	sendTimeouts  prometheus.Counter
	closedWrite   atomic.Bool // CloseWrite sent the end of the stream
}

func (c *h3StreamConn) Write(p []byte) (int, error) {
	c.Stream.SetWriteDeadline(time.Now().Add(c.sendTimeout))
	n, err := c.Stream.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.sendTimeouts.Inc()
	}
	return n, err
}

// CloseWrite ends the stream towards the client when the origin has
// finished sending.
func (c *h3StreamConn) CloseWrite() error {
	c.closedWrite.Store(true)
	return c.Stream.Close()
}

// Close ends the tunnel: it stops reading the client, and resets the
// stream towards it unless CloseWrite ended it (quic-go's Close may not
// run alongside a Write, which the proxy's copy may still be in).
func (c *h3StreamConn) Close() error {
	c.Stream.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
	if !c.closedWrite.Load() {
		c.Stream.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
	}
	return nil
}

func (c *h3StreamConn) LocalAddr() net.Addr  { return c.local }
func (c *h3StreamConn) RemoteAddr() net.Addr { return c.remote }
