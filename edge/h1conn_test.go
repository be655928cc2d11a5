package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// h1TestOrigin answers by path, to give the loop every kind of response
// the direct path copies.
func h1TestOrigin(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/echo": // what the origin got
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k+": "+strings.Join(r.Header[k], " | "))
		}
		sort.Strings(keys)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI, "host": r.Host, "header": keys})
	case "/small":
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello")
	case "/chunked": // unknown length
		io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
		io.WriteString(w, "def")
	case "/sniff": // no Content-Type: the edge sniffs one, as net/http does
		w.Header()["Content-Type"] = nil
		io.WriteString(w, "<html><body>hi</body></html>")
	case "/empty":
		w.Header()["Content-Type"] = nil
	case "/big":
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(100<<10))
		io.WriteString(w, strings.Repeat("0123456789abcdef", 100<<10/16))
	case "/bigchunked":
		for i := range 20 {
			io.WriteString(w, strings.Repeat(string(rune('a'+i)), 1000))
			w.(http.Flusher).Flush()
		}
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/notmodified":
		w.Header().Set("ETag", `"x"`)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotModified)
	case "/trailers":
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "1")
	case "/early":
		w.Header().Set("Link", "</s.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "after hints")
	case "/odd":
		w.Header().Set("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.WriteHeader(599)
		io.WriteString(w, "odd")
	case "/short": // a Content-Length the body does not reach
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "abc")
	default:
		http.NotFound(w, r)
	}
}

// h1TestEdges starts two edges over one keystore, one serving HTTP/1.1
// with the loop and one with net/http alone, for a tenant whose origin
// is h1TestOrigin and one whose origin is down.
func h1TestEdges(t *testing.T) (w *world, loop, std *Server, addrs [2]string, regs [2]*prometheus.Registry) {
	t.Helper()
	w = openWorld(t, 0)
	origin := httptest.NewServer(http.HandlerFunc(h1TestOrigin))
	t.Cleanup(origin.Close)
	w.put(t, testpki.ECDSAP256, origin.URL, "cmp.keyedge.test", "alt.keyedge.test")
	w.put(t, testpki.ECDSAP256, proxyTestClosedPort(t), "down.keyedge.test")
	w.put(t, testpki.ECDSAP256, "https://127.0.0.1:1", "secure.keyedge.test")
	var servers [2]*Server
	for i := range servers {
		regs[i] = prometheus.NewRegistry()
		srv, err := NewServer(Options{Store: w.openStore(t), Logger: slog.New(slog.DiscardHandler), Registerer: regs[i]})
		if err != nil {
			t.Fatal(err)
		}
		srv.h1Loop = i == 0
		servers[i] = srv
		addrs[i] = serve(t, srv)
	}
	for _, name := range []string{"cmp.keyedge.test", "down.keyedge.test", "secure.keyedge.test"} {
		eventually(t, 10*time.Second, name+" in the edges' keystore", func() bool {
			for _, srv := range servers {
				if _, err := srv.store.Lookup(context.Background(), name); err != nil {
					return false
				}
			}
			return true
		})
	}
	return w, servers[0], servers[1], addrs, regs
}

// h1Exchange sends raw on a new HTTP/1.1 connection to addr for
// serverName and returns all the edge sent until it closed the
// connection, Date fields blanked.
func h1Exchange(t *testing.T, w *world, addr, serverName, raw string) string {
	t.Helper()
	cfg := w.tlsConfig(serverName)
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := w.handshakeTo(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v (got %q)", raw, err, got)
	}
	out := h1Date.ReplaceAllString(string(got), "Date: -\r\n")
	out = h1RequestID.ReplaceAllString(out, "X-Request-Id: -")
	// A chunked body's chunks are the reads of the origin's body, which
	// follow its packets on both paths alike: chunks of the test
	// origin's letters are joined, and their sizes blanked.
	for prev := ""; prev != out; {
		prev, out = out, h1Chunk.ReplaceAllString(out, "$1$2")
	}
	return h1ChunkSize.ReplaceAllString(out, "\r\n\r\n-\r\n$1")
}

var (
	h1Date      = regexp.MustCompile(`Date: [^\r]*\r\n`)
	h1RequestID = regexp.MustCompile(`X-Request-Id: [0-9a-f]{32}`) // generated per request (the origin echoes it)
	h1Chunk     = regexp.MustCompile(`([a-z])\r\n[0-9a-f]+\r\n([a-z])`)
	h1ChunkSize = regexp.MustCompile(`\r\n\r\n[0-9a-f]+\r\n([a-z])`)
)

// TestH1MatchesNetHTTP checks that the HTTP/1.1 loop answers every
// request byte for byte as net/http's server does, whether it serves the
// request itself or hands the connection over, and that the origin sees
// the same requests and the metrics count the same.
func TestH1MatchesNetHTTP(t *testing.T) {
	w, _, _, addrs, regs := h1TestEdges(t)
	const host = "Host: cmp.keyedge.test\r\n"
	get := func(path string, extra ...string) string {
		return "GET " + path + " HTTP/1.1\r\n" + host + strings.Join(extra, "") + "\r\n"
	}
	last := func(method, path string, extra ...string) string {
		return method + " " + path + " HTTP/1.1\r\n" + host + strings.Join(extra, "") + "Connection: close\r\n\r\n"
	}
	for _, tt := range []struct {
		name, sni, raw string
	}{
		{"keep-alive, then close", "", get("/echo", "X-Forwarded-For: 203.0.113.1\r\nConnection: X-Secret\r\nX-Secret: 1\r\nTe: trailers\r\nUser-Agent: t\r\n") + get("/small") + last("GET", "/echo")},
		{"pipelined in one write", "", get("/small") + get("/chunked") + get("/small") + last("GET", "/small")},
		{"HEAD", "", get("/small") + "HEAD /small HTTP/1.1\r\n" + host + "\r\n" + "HEAD /chunked HTTP/1.1\r\n" + host + "\r\n" + last("HEAD", "/empty")},
		{"OPTIONS and an Idempotency-Key DELETE", "", "OPTIONS /echo HTTP/1.1\r\n" + host + "\r\n" + last("DELETE", "/echo", "Idempotency-Key: k1\r\n")},
		{"unknown length", "", last("GET", "/chunked")},
		{"sniffed type", "", get("/sniff") + last("GET", "/empty")},
		{"large bodies", "", get("/big") + last("GET", "/bigchunked")},
		{"no body statuses", "", get("/nocontent") + last("GET", "/notmodified")},
		{"trailers", "", last("GET", "/trailers")},
		{"early hints", "", last("GET", "/early")},
		{"unknown status, repeated and hop-by-hop fields", "", last("GET", "/odd")},
		{"body shorter than its length", "", get("/short") + get("/small")},
		{"query", "", get("/echo?a=1&b=%41") + last("GET", "/echo?a=1;b=2")},
		{"bare LF line ends", "", "GET /small HTTP/1.1\n" + "Host: cmp.keyedge.test\n\n" + last("GET", "/small")},
		{"Host with a port and a trailing dot", "", "GET /small HTTP/1.1\r\nHost: cmp.keyedge.test.:443\r\n\r\n" + last("GET", "/small")},
		{"Http2-Settings stripped", "", last("GET", "/echo", "Http2-Settings: AAAA\r\n")},
		// Handed over to net/http:
		{"POST with a body, then GET", "", "POST /echo HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nabc" + get("/small") + last("GET", "/echo")},
		{"GET, then a chunked POST", "", get("/small") + "POST /echo HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"HTTP/1.0", "", "GET /small HTTP/1.0\r\n" + host + "\r\n"},
		{"HTTP/1.0 keep-alive", "", "GET /small HTTP/1.0\r\n" + host + "Connection: keep-alive\r\n\r\n" + last("GET", "/small")},
		{"Expect", "", last("GET", "/small", "Expect: 100-continue\r\n")},
		{"unknown Expect", "", get("/small") + last("GET", "/small", "Expect: x\r\n")},
		{"TRACE", "", get("/small") + last("TRACE", "/small")},
		{"POST without Idempotency-Key", "", last("POST", "/echo")},
		{"Upgrade", "", last("GET", "/echo", "Upgrade: websocket\r\n")},
		{"absolute target", "", "GET https://cmp.keyedge.test/echo HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n"},
		{"another name on the certificate", "", get("/small") + "GET /echo HTTP/1.1\r\nHost: alt.keyedge.test\r\nConnection: close\r\n\r\n"},
		{"misdirected", "", get("/small") + "GET /echo HTTP/1.1\r\nHost: down.keyedge.test\r\nConnection: close\r\n\r\n"},
		{"no Host", "", get("/small") + "GET /small HTTP/1.1\r\n\r\n"},
		{"two Hosts", "", "GET /small HTTP/1.1\r\n" + host + host + "\r\n"},
		{"malformed header", "", get("/small") + "GET /small HTTP/1.1\r\n" + host + "Bad Header\r\n\r\n"},
		{"invalid header value", "", "GET /small HTTP/1.1\r\n" + host + "X-A: a\x01b\r\n\r\n"},
		{"malformed request line", "", "GET\r\n\r\n"},
		{"HTTP/2 preface", "", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"head larger than the loop's buffer", "", last("GET", "/echo", "Cookie: "+strings.Repeat("c", 6000)+"\r\n")},
		{"origin unreachable", "down.keyedge.test", "GET /small HTTP/1.1\r\nHost: down.keyedge.test\r\n\r\n" + "GET /small HTTP/1.1\r\nHost: down.keyedge.test\r\nConnection: close\r\n\r\n"},
		{"https origin", "secure.keyedge.test", "GET /small HTTP/1.1\r\nHost: secure.keyedge.test\r\nConnection: close\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sni := tt.sni
			if sni == "" {
				sni = "cmp.keyedge.test"
			}
			loop := h1Exchange(t, w, addrs[0], sni, tt.raw)
			std := h1Exchange(t, w, addrs[1], sni, tt.raw)
			if loop != std {
				t.Errorf("for %.300q the loop sent %d bytes, net/http %d; from byte %d, the loop sent\n%q\nnet/http\n%q",
					tt.raw, len(loop), len(std), h1Diff(loop, std), h1Around(loop, h1Diff(loop, std)), h1Around(std, h1Diff(loop, std)))
			}
		})
	}
	for _, name := range []string{"keyedge_proxy_requests_total", "keyedge_proxy_errors_total"} {
		var got [2]string
		for i, reg := range regs {
			got[i] = h1Metric(t, reg, name)
		}
		if got[0] != got[1] {
			t.Errorf("%s: the loop's edge counted\n%s\nnet/http's\n%s", name, got[0], got[1])
		}
	}
}

// h1Diff returns the index of the first byte where a and b differ.
func h1Diff(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// h1Around returns up to 200 bytes of s from 100 before i.
func h1Around(s string, i int) string {
	start := max(0, i-100)
	return s[start:min(len(s), start+200)]
}

// h1Metric returns the text exposition of the metric family name in reg.
func h1Metric(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					b.WriteString(l.GetName() + "=" + l.GetValue() + " ")
				}
				fmt.Fprintln(&b, m.GetCounter().GetValue())
			}
		}
	}
	return b.String()
}

// TestH1Shutdown checks the loop's part of a graceful drain: an idle
// keep-alive connection is closed, a request in flight finishes, with
// "Connection: close", and its connection closes after it.
func TestH1Shutdown(t *testing.T) {
	w := newWorld(t, 1, Options{})
	cfg := w.tlsConfig("t0.keyedge.test")
	cfg.NextProtos = []string{"http/1.1"}
	var conns [2]*tls.Conn
	var readers [2]*bufio.Reader
	for i := range conns {
		c, err := w.handshake(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		conns[i], readers[i] = c, bufio.NewReader(c)
	}
	// conns[0] goes idle after one request; conns[1] waits for /slow.
	io.WriteString(conns[0], "GET / HTTP/1.1\r\nHost: t0.keyedge.test\r\n\r\n")
	res, err := http.ReadResponse(readers[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	io.WriteString(conns[1], "GET /slow HTTP/1.1\r\nHost: t0.keyedge.test\r\n\r\n")
	<-w.slowArrived

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- w.srv.Shutdown(ctx)
	}()
	if n, err := readers[0].ReadByte(); err != io.EOF {
		t.Fatalf("idle connection during Shutdown: read %q, %v; want it closed", n, err)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	w.release()
	res, err = http.ReadResponse(readers[1], nil)
	if err != nil {
		t.Fatalf("request in flight during Shutdown: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "origin t0.keyedge.test" || !res.Close {
		t.Fatalf("request in flight during Shutdown: %d %q, Connection: %q", res.StatusCode, body, res.Header.Get("Connection"))
	}
	if _, err := readers[1].ReadByte(); err != io.EOF {
		t.Fatalf("after the last response: %v, want the connection closed", err)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestH1ClientGoesAway checks that a client closing its connection while
// the origin works on its request cancels the origin request, as with
// net/http's server, and is counted as canceled.
func TestH1ClientGoesAway(t *testing.T) {
	w := newWorld(t, 1, Options{})
	cfg := w.tlsConfig("t0.keyedge.test")
	cfg.NextProtos = []string{"http/1.1"}
	c, err := w.handshake(cfg)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: t0.keyedge.test\r\n\r\n")
	<-w.slowArrived
	c.Close()
	eventually(t, 10*time.Second, "the request counted as canceled", func() bool {
		return testutil.ToFloat64(w.srv.settings.Load().proxy.metrics.errors.WithLabelValues(proxyReasonCanceled)) == 1
	})
}
