package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/internal/testpki"
)

// lineSink is where a test's access log goes: each line, as the writer
// writes them.
type lineSink chan string

func (s lineSink) Write(p []byte) (int, error) {
	for line := range strings.Lines(string(p)) {
		s <- line
	}
	return len(p), nil
}

// next returns the next access log line, decoded, and the line itself.
func (s lineSink) next(t *testing.T) (map[string]any, string) {
	t.Helper()
	select {
	case line := <-s:
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		return rec, line
	case <-time.After(10 * time.Second):
		t.Fatal("no access log line")
		return nil, ""
	}
}

// newAccessLog returns an access log writing JSON lines to a lineSink.
func newAccessLog(t *testing.T) (*accesslog.Logger, lineSink) {
	t.Helper()
	sink := make(lineSink, 16)
	l, err := accesslog.New(accesslog.Options{Writer: sink, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, sink
}

// httpClient is an HTTP client sending every request to the edge at
// addr with SNI sni (the URL's host when empty), over HTTP/2 when h2,
// resuming sessions from cache when it is not nil.
func httpClient(t *testing.T, w *world, sni string, h2 bool, cache tls.ClientSessionCache) *http.Client {
	cfg := w.tlsConfig(sni)
	cfg.ClientSessionCache = cache
	if !h2 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	tr := &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, w.addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestAccessLogRecords: each request through real handshakes gets one
// line with its connection's facts: a local ECDSA tenant over HTTP/2 and
// resumed over HTTP/1.1, a keyless tenant signed by a key server
// process, a misdirected request (421) and an unreachable origin (502).
// No query, credential or cookie reaches the log.
func TestAccessLogRecords(t *testing.T) {
	log, sink := newAccessLog(t)
	kw := newKeylessWorld(t, Options{AccessLog: log})
	ks, _ := kw.startKeyServer(t, "ks1")
	kw.putKeyless(t, ks)
	localID := kw.put(t, testpki.ECDSAP256, kw.OriginURL, "local.example.com")
	downID := kw.put(t, testpki.ECDSAP256, proxyTestClosedPort(t), "down.example.com")
	keylessHost := kw.tenants[testpki.ECDSAP256].Cert.DNSNames[0]
	origin, _ := url.Parse(kw.OriginURL)
	sessions := tls.NewLRUClientSessionCache(4)

	tests := []struct {
		name      string
		sni, host string
		h2        bool
		cache     tls.ClientSessionCache
		want      map[string]any
		wantNot   []string // fields the line must not have
	}{
		{"local ECDSA, h2", "", "local.example.com", true, sessions, map[string]any{
			"proto": "h2", "status": 200.0, "host": "local.example.com", "sni": "local.example.com", "path": "/p/a",
			"tenant": "local.example.com", "cert": localID, "route": "local", "resumed": false, "tls": "1.3",
			"group": "X25519MLKEM768", "origin": origin.Host, "bytes_out": float64(len("origin local.example.com")),
		}, []string{"key_server", "error"}},
		{"local ECDSA, resumed, h1", "", "local.example.com", false, sessions, map[string]any{
			"proto": "h1", "status": 200.0, "sni": "local.example.com", "tenant": "local.example.com", "cert": localID,
			"resumed": true,
		}, []string{"route", "key_server"}},
		{"keyless ECDSA, h1", "", keylessHost, false, nil, map[string]any{
			"proto": "h1", "status": 200.0, "tenant": keylessHost, "route": "keyless", "key_server": ks, "resumed": false,
		}, []string{"error"}},
		{"misdirected, h1", "local.example.com", keylessHost, false, nil, map[string]any{
			"proto": "h1", "status": 421.0, "error": "misdirected", "sni": "local.example.com", "host": keylessHost,
			"tenant": "local.example.com", "cert": localID, "route": "local",
		}, []string{"origin"}},
		{"unreachable origin, h2", "", "down.example.com", true, nil, map[string]any{
			"proto": "h2", "status": 502.0, "error": "unreachable", "cert": downID, "route": "local",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := httpClient(t, kw.world, tt.sni, tt.h2, tt.cache)
			req, err := http.NewRequest(http.MethodGet, "https://"+tt.host+"/p/a?token=SECRET-QUERY", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer SECRET-AUTH")
			req.Header.Set("Cookie", "session=SECRET-COOKIE")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			rec, line := sink.next(t)
			for k, v := range tt.want {
				if rec[k] != v {
					t.Errorf("%s = %v, want %v", k, rec[k], v)
				}
			}
			for _, k := range tt.wantNot {
				if v, ok := rec[k]; ok {
					t.Errorf("%s = %v, want none", k, v)
				}
			}
			if id, _ := rec["request_id"].(string); !hexID.MatchString(id) || resp.Header.Get("X-Seen-Request-Id") != id && resp.StatusCode == 200 {
				t.Errorf("request_id %q; the origin saw %q", id, resp.Header.Get("X-Seen-Request-Id"))
			}
			if !strings.HasPrefix(rec["client"].(string), "127.0.0.1:") || rec["method"] != "GET" {
				t.Errorf("client %v, method %v", rec["client"], rec["method"])
			}
			for _, k := range []string{"duration", "handshake_duration"} {
				if d, ok := rec[k].(float64); !ok || d < 0 {
					t.Errorf("%s = %v", k, rec[k])
				}
			}
			if strings.Contains(line, "SECRET") {
				t.Errorf("a secret in the access log: %s", line)
			}
		})
	}
}

// TestAccessLogRequestID: a request's X-Request-ID is the upstream's
// only when the connection came through a trusted PROXY protocol
// upstream and the ID is well formed; otherwise the edge makes one up.
// Either way the origin gets the logged ID, and the client gets none,
// even when the client names X-Request-Id as hop-by-hop in Connection,
// on the direct path and with a request body (ReverseProxy's).
func TestAccessLogRequestID(t *testing.T) {
	loopback, elsewhere, client := proxyTestNetworks()
	tests := []struct {
		name       string
		trusted    []netip.Prefix
		proxy      byte // PROXY header version, 0 for none
		sent       string
		kept       bool
		wantClient string
		connection string // the client's Connection field
		body       string // a POST's, if not empty
	}{
		{"trusted upstream", loopback, 2, "lb-7f3a-0001", true, "203.0.113.7:40000", "", ""},
		{"trusted upstream, malformed ID", loopback, 1, "two words", false, "203.0.113.7:40000", "", ""},
		{"trusted upstream, ID too long", loopback, 2, strings.Repeat("x", 201), false, "203.0.113.7:40000", "", ""},
		{"untrusted client", elsewhere, 0, "lb-7f3a-0001", false, "127.0.0.1", "", ""},
		{"no PROXY protocol", nil, 0, "lb-7f3a-0001", false, "127.0.0.1", "", ""},
		{"listed in Connection", nil, 0, "lb-7f3a-0001", false, "127.0.0.1", "X-Request-Id", ""},
		{"listed in Connection, with a body", nil, 0, "lb-7f3a-0001", false, "127.0.0.1", "X-Request-Id", "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, sink := newAccessLog(t)
			w := newWorld(t, 1, Options{TrustedProxies: tt.trusted, AccessLog: log})
			tr := &http.Transport{
				TLSClientConfig: w.tlsConfig(""),
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return dialProxied(ctx, w.addr, tt.proxy, client)
				},
			}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, "https://t0.keyedge.test/", nil)
			if tt.body != "" {
				req, _ = http.NewRequest(http.MethodPost, "https://t0.keyedge.test/", strings.NewReader(tt.body))
			}
			req.Header.Set("X-Request-Id", tt.sent)
			if tt.connection != "" {
				req.Header.Set("Connection", tt.connection)
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			rec, _ := sink.next(t)
			logged, seen := rec["request_id"], resp.Header.Get("X-Seen-Request-Id")
			if logged != seen {
				t.Errorf("logged request_id %v, the origin saw %q", logged, seen)
			}
			if kept := seen == tt.sent; kept != tt.kept {
				t.Errorf("sent %q, origin saw %q: kept %v, want %v", tt.sent, seen, kept, tt.kept)
			}
			if !tt.kept && !hexID.MatchString(seen) {
				t.Errorf("generated ID %q, want 32 hex digits", seen)
			}
			if got := resp.Header.Get("X-Request-Id"); got != "" {
				t.Errorf("the client got X-Request-ID %q", got)
			}
			if host, _, _ := net.SplitHostPort(rec["client"].(string)); rec["client"] != tt.wantClient && host != tt.wantClient {
				t.Errorf("client %v, want %s", rec["client"], tt.wantClient)
			}
		})
	}
}
