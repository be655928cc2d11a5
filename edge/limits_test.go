package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestSlowRequestBody: a POST whose body stalls gets a 408 once no byte
// has come for BodyReadTimeout, and its origin request is cut off (the
// origin's read of the body fails), so the origin connection is not held
// by the stalled client. It counts as the client's error.
func TestSlowRequestBody(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			originRead := make(chan error, 1) // how the origin's read of the body ended
			origin := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				originRead <- err
			}))
			t.Cleanup(func() {
				origin.CloseClientConnections() // a handler still reading ends
				origin.Close()
			})
			w := newWorld(t, 0, Options{Proxy: ProxyOptions{BodyReadTimeout: 200 * time.Millisecond}})
			w.put(t, testpki.ECDSAP256, origin.URL, "upload.example.com")

			// A hang guard, not a timing: the client's transport waits
			// for its body to end before it gives up.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			body, stall := io.Pipe()
			context.AfterFunc(ctx, func() { stall.CloseWithError(ctx.Err()) })
			go stall.Write([]byte("the first bytes")) // and then nothing
			req, err := http.NewRequestWithContext(ctx, "POST", "https://upload.example.com/", body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = 1000
			resp, err := w.client(t, h2).Do(req)
			if err != nil {
				t.Fatalf("stalled POST: %v, want a 408", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Errorf("stalled POST: %s, want 408", resp.Status)
			}
			select {
			case err := <-originRead:
				if err == nil {
					t.Error("the origin read a whole body the client never sent")
				}
			case <-ctx.Done():
				t.Fatal("the origin's request still waits for the stalled body")
			}
			errs := w.srv.settings.Load().proxy.metrics.errors
			if got := testutil.ToFloat64(errs.WithLabelValues(proxyReasonBodyTimeout)); got != 1 {
				t.Errorf("body_timeout errors = %v, want 1", got)
			}
			for _, reason := range []string{proxyReasonUnreachable, proxyReasonTimeout, proxyReasonOther, proxyReasonBadRequest} {
				if got := testutil.ToFloat64(errs.WithLabelValues(reason)); got != 0 {
					t.Errorf("%s errors = %v, want 0: a stalled client is not the origin's failure", reason, got)
				}
			}
		})
	}
}

// TestMaxConnsPerIP: past MaxConnsPerIP connections from one client
// address (as the PROXY header names it) are refused at accept, while
// other clients still connect. IPv6 clients count by /64.
func TestMaxConnsPerIP(t *testing.T) {
	w := newWorld(t, 1, Options{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Limits:         Limits{MaxConnsPerIP: 2},
	})
	// dial connects as client through a PROXY header and handshakes.
	dial := func(client string) (*tls.Conn, error) {
		conn, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		src := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(client))
		if _, err := proxyproto.HeaderProxyFromAddrs(2, src, conn.RemoteAddr().(*net.TCPAddr)).WriteTo(conn); err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(conn, w.tlsConfig("t0.keyedge.test"))
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			tc.Close()
			return nil, err
		}
		tc.SetDeadline(time.Time{})
		return tc, nil
	}
	var held []*tls.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for _, client := range []string{"203.0.113.7:1000", "203.0.113.7:1001", "[2001:db8:1:2::1]:1000", "[2001:db8:1:2::2]:1000"} {
		c, err := dial(client)
		if err != nil {
			t.Fatalf("client %s within the limit: %v", client, err)
		}
		held = append(held, c)
	}
	for _, client := range []string{"203.0.113.7:1002", "[2001:db8:1:2:ffff::3]:1000"} {
		if c, err := dial(client); err == nil {
			c.Close()
			t.Errorf("client %s: connection over max_conns_per_ip=2 handshook", client)
		}
	}
	for _, client := range []string{"198.51.100.9:1000", "[2001:db8:1:3::1]:1000"} {
		c, err := dial(client)
		if err != nil {
			t.Fatalf("another client %s refused: %v", client, err)
		}
		c.Close()
	}
	if got := testutil.ToFloat64(w.srv.metrics.refused.WithLabelValues(refusedPerIP)); got != 2 {
		t.Errorf("per_ip refusals = %v, want 2", got)
	}
	held[0].Close()
	eventually(t, 5*time.Second, "a slot of 203.0.113.7 frees when one of its connections closes", func() bool {
		c, err := dial("203.0.113.7:1003")
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestIdleTimeout: a keep-alive connection, HTTP/1.1 (keyedge's loop) or
// HTTP/2 (net/http's), is closed once idle for IdleTimeout after its
// request. With no TCP keep-alive probes on client connections, this is
// what reclaims a client that went away between requests.
func TestIdleTimeout(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		w := newWorld(t, 1, Options{Limits: Limits{IdleTimeout: 300 * time.Millisecond}})
		resp, _ := w.get(t, w.client(t, h2), "t0.keyedge.test", "/")
		if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
			t.Fatalf("h2=%v: served over %s", h2, resp.Proto)
		}
		open := func() float64 { return testutil.ToFloat64(w.srv.metrics.openConns) }
		eventually(t, 10*time.Second, fmt.Sprintf("h2=%v: the idle connection closed by the edge", h2), func() bool { return open() == 0 })
	}
}

// TestSendTimeout: a client that stops reading a response is closed once
// a write to it has waited SendTimeout, as nginx's send_timeout does, so
// it cannot hold its connection and the origin's for ever; the origin's
// request is cut off, it is counted, and other clients are served. Over
// HTTP/1.1 on a plain TCP connection (raw socket calls) and through
// PROXY protocol (net.Conn's), and over HTTP/2 with flow-control windows
// that let the edge send all it has (net/http's server writing).
func TestSendTimeout(t *testing.T) {
	for _, tt := range []struct {
		name        string
		proxied, h2 bool
	}{
		{"h1", false, false},
		{"h1 proxy_protocol", true, false},
		{"h2", false, true},
	} {
		proxied := tt.proxied
		t.Run(tt.name, func(t *testing.T) {
			origin := newStreamOrigin(t)
			opts := Options{Limits: Limits{SendTimeout: 200 * time.Millisecond}}
			if proxied {
				opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			}
			w := newWorld(t, 0, opts)
			w.put(t, testpki.ECDSAP256, origin.URL, "stream.example.com")

			conn, err := net.Dial("tcp", w.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if proxied {
				src := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.7:1000"))
				if _, err := proxyproto.HeaderProxyFromAddrs(2, src, conn.RemoteAddr().(*net.TCPAddr)).WriteTo(conn); err != nil {
					t.Fatal(err)
				}
			}
			cfg := w.tlsConfig("stream.example.com")
			if tt.h2 {
				cfg.NextProtos = []string{"h2"}
			}
			tc := tls.Client(conn, cfg)
			if tt.h2 {
				h2Get(t, startH2(t, tc, 1<<30), 1, "stream.example.com", "/big")
			} else if _, err := io.WriteString(tc, "GET /big HTTP/1.1\r\nHost: stream.example.com\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			// ... and read nothing: the edge gives up after 200 ms of a
			// full socket buffer.
			origin.requireCutOff(t, "a client that reads nothing")
			eventually(t, 10*time.Second, "the stalled client counted in keyedge_edge_send_timeouts_total", func() bool {
				return testutil.ToFloat64(w.srv.metrics.sendTimeouts) == 1
			})
			eventually(t, 10*time.Second, "the stalled client's connection closed", func() bool {
				return testutil.ToFloat64(w.srv.metrics.openConns) == 0
			})
			if got := testutil.ToFloat64(w.srv.metrics.sendTimeouts); got != 1 {
				t.Errorf("keyedge_edge_send_timeouts_total = %v for one stalled client, want 1", got)
			}
			if proxied {
				return // a client without a PROXY header is refused here
			}
			w.put(t, testpki.ECDSAP256, w.OriginURL, "other.example.com")
			if resp, body := w.get(t, w.client(t, false), "other.example.com", "/"); resp.StatusCode != http.StatusOK {
				t.Errorf("another client: %s %q, want 200", resp.Status, body)
			}
		})
	}
}

// TestSendTimeoutH2Window: an HTTP/2 client that keeps its connection
// reading but never opens a stream's flow-control window past the first
// 64 KiB has that stream reset once the edge's write has waited
// SendTimeout for the window, as nginx's send_timeout bounds it, so it
// cannot hold the request's origin connection for ever; the origin's
// request is cut off, it is counted, and the connection's other streams
// are served. The edge starts with a send timeout of an hour and is
// reloaded to 300 ms, as a SIGHUP would.
func TestSendTimeoutH2Window(t *testing.T) {
	origin := newStreamOrigin(t)
	w := newWorld(t, 0, Options{Limits: Limits{SendTimeout: time.Hour}})
	if err := w.srv.Reload(Options{Limits: Limits{SendTimeout: 300 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	w.put(t, testpki.ECDSAP256, origin.URL, "stream.example.com")
	cfg := w.tlsConfig("stream.example.com")
	cfg.NextProtos = []string{"h2"}
	tc, err := w.handshake(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	// A hang guard, not a timing: the edge gives up after 300 ms of
	// waiting for the window.
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	fr := startH2(t, tc, 64<<10)
	h2Get(t, fr, 1, "stream.example.com", "/big")

	var got int
	for reset := false; !reset; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d bytes of the stalled stream: %v, want its RST_STREAM", got, err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			got += len(f.Data()) // and no WINDOW_UPDATE for it
		case *http2.RSTStreamFrame:
			reset = f.StreamID == 1
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v: the connection closed rather than the stalled stream", f.ErrCode)
		}
	}
	origin.requireCutOff(t, "a stream that took 64 KiB")
	eventually(t, 10*time.Second, "the stalled stream counted in keyedge_edge_send_timeouts_total", func() bool {
		return testutil.ToFloat64(w.srv.metrics.sendTimeouts) == 1
	})

	h2Get(t, fr, 3, "stream.example.com", "/small")
	var status, body string
	for done := false; !done; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("another stream of the connection: %v", err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == 3 {
				status, done = f.PseudoValue("status"), f.StreamEnded()
			}
		case *http2.DataFrame:
			if f.StreamID == 3 {
				body += string(f.Data())
				done = f.StreamEnded()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 3 {
				t.Fatalf("another stream of the connection reset: %v", f.ErrCode)
			}
		}
	}
	if status != "200" || body != "small" {
		t.Errorf("another stream of the connection: %s %q, want 200 \"small\"", status, body)
	}
	if got := testutil.ToFloat64(w.srv.metrics.sendTimeouts); got != 1 {
		t.Errorf("keyedge_edge_send_timeouts_total = %v after a stream that read its response, want 1", got)
	}
}

// TestSendTimeoutH2LongPoll: an HTTP/2 response that sends nothing for
// many times SendTimeout (a long poll, an event stream between events)
// is not cut: the send timeout bounds a write's wait, not a response.
func TestSendTimeoutH2LongPoll(t *testing.T) {
	origin := newStreamOrigin(t)
	const sendTimeout = 100 * time.Millisecond
	w := newWorld(t, 0, Options{Limits: Limits{SendTimeout: sendTimeout}})
	w.put(t, testpki.ECDSAP256, origin.URL, "stream.example.com")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a hang guard
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "https://stream.example.com/poll", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.client(t, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("first"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("the poll's first event: %v", err)
	}
	// Not a timing: ten times SendTimeout of silence, which the edge
	// must sit through however long it really is.
	time.Sleep(10 * sendTimeout)
	close(origin.release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "last" {
		t.Errorf("the poll after its silence: %q, %v; want \"last\"", rest, err)
	}
	if got := testutil.ToFloat64(w.srv.metrics.sendTimeouts); got != 0 {
		t.Errorf("keyedge_edge_send_timeouts_total = %v, want 0", got)
	}
}

// streamOrigin is the origin of the send timeout tests: its /big
// streams 1 GiB and tells on done how that ended (nil: all sent); its
// /poll sends "first", then "last" once release is closed; anything
// else is "small".
type streamOrigin struct {
	*httptest.Server
	done    chan error
	release chan struct{}
}

func newStreamOrigin(t *testing.T) *streamOrigin {
	o := &streamOrigin{done: make(chan error, 1), release: make(chan struct{})}
	o.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			chunk := make([]byte, 64<<10)
			for range 16 << 10 { // at most 1 GiB
				if _, err := rw.Write(chunk); err != nil {
					o.done <- err
					return
				}
			}
			o.done <- nil
		case "/poll":
			io.WriteString(rw, "first")
			http.NewResponseController(rw).Flush()
			select {
			case <-o.release:
				io.WriteString(rw, "last")
			case <-r.Context().Done():
			}
		default:
			io.WriteString(rw, "small")
		}
	}))
	t.Cleanup(o.Close)
	return o
}

// requireCutOff waits for the streaming of /big to client to end, and
// fails t unless the edge cut it off. The wait is a hang guard, not a
// timing.
func (o *streamOrigin) requireCutOff(t *testing.T, client string) {
	t.Helper()
	select {
	case err := <-o.done:
		if err == nil {
			t.Fatalf("the origin sent 1 GiB to %s", client)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the origin still streams to %s", client)
	}
}

// startH2 opens an HTTP/2 connection on tc whose flow-control window is
// 1 GiB for the connection and streamWindow for each stream, and returns
// its framer, which acknowledges nothing and opens no window further.
func startH2(t *testing.T, tc *tls.Conn, streamWindow uint32) *http2.Framer {
	t.Helper()
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(tc, tc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	err := errors.Join(
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow}),
		fr.WriteWindowUpdate(0, 1<<30),
	)
	if err != nil {
		t.Fatal(err)
	}
	return fr
}

// h2Get asks for host's path on stream id of fr's connection.
func h2Get(t *testing.T, fr *http2.Framer, id uint32, host, path string) {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", host}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}
