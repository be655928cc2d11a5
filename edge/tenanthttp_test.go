package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// headerOrigin is an origin on 127.0.0.1 that answers with the request
// headers it got, as JSON, and a Server and an X-Origin header.
func headerOrigin(t *testing.T) string {
	t.Helper()
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "origin")
		w.Header().Set("X-Origin", "yes")
		json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(o.Close)
	return o.URL
}

// tenantClient is an HTTP client for the edge at addr with client TLS
// config cfg (RootCAs filled in), over HTTP/2 when h2, from local
// address local ("" for any).
func tenantClient(t *testing.T, w *world, cfg *tls.Config, h2 bool, local string) *http.Client {
	t.Helper()
	cfg.RootCAs = w.Roots
	if !h2 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	tr := &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, w.addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// fetch sends req and returns the response with its body read, and the
// request headers the origin reported, if it answered.
func fetch(c *http.Client, req *http.Request) (*http.Response, http.Header, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	var seen http.Header
	if resp.Header.Get("X-Origin") == "yes" {
		if err := json.Unmarshal(body, &seen); err != nil {
			return nil, nil, err
		}
	}
	return resp, seen, nil
}

// setHTTP changes name's settings through the world's writer.
func (w *world) setHTTP(t *testing.T, name string, change func(*keystore.TenantHTTP)) {
	t.Helper()
	err := w.Writer.UpdateHTTP(context.Background(), name, func(h *keystore.TenantHTTP) error { change(h); return nil })
	if err != nil {
		t.Fatal(err)
	}
}

// TestTenantHeaderRulesAndHSTS: a change to a running edge's tenant
// takes effect (through the journal) on HTTP/1.1, served by the
// connection loop, and HTTP/2: HSTS on responses, request rules before
// the origin and response rules before the client, while the edge's own
// forwarding headers stay the edge's. Another tenant is unaffected.
func TestTenantHeaderRulesAndHSTS(t *testing.T) {
	w := newWorld(t, 0, Options{})
	origin := headerOrigin(t)
	w.put(t, testpki.ECDSAP256, origin, "rules.keyedge.test")
	w.put(t, testpki.ECDSAP256, origin, "plain.keyedge.test")
	get := func(c *http.Client, host string) (*http.Response, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/", nil)
		req.Header.Set("Cookie", "session=1")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Add("X-Multi", "client")
		resp, seen, err := fetch(c, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || seen == nil {
			t.Fatalf("GET %s: %s", host, resp.Status)
		}
		return resp, seen
	}

	for _, h2 := range []bool{false, true} {
		c := tenantClient(t, w, &tls.Config{}, h2, "")
		if resp, seen := get(c, "rules.keyedge.test"); resp.Header.Get("Strict-Transport-Security") != "" || seen.Get("Cookie") == "" {
			t.Fatalf("h2=%v: settings before any were set: %v, origin saw %v", h2, resp.Header, seen)
		}
	}
	w.setHTTP(t, "rules.keyedge.test", func(h *keystore.TenantHTTP) {
		h.HSTS = &keystore.HSTS{MaxAge: 365 * 24 * time.Hour, IncludeSubDomains: true}
		h.RequestHeaders = []keystore.HeaderRule{
			{Op: keystore.HeaderSet, Name: "X-Tenant", Value: "rules"},
			{Op: keystore.HeaderRemove, Name: "Cookie"},
			{Op: keystore.HeaderAdd, Name: "X-Multi", Value: "edge"},
		}
		h.ResponseHeaders = []keystore.HeaderRule{
			{Op: keystore.HeaderSet, Name: "X-Frame-Options", Value: "DENY"},
			{Op: keystore.HeaderRemove, Name: "Server"},
		}
	})
	for _, h2 := range []bool{false, true} {
		c := tenantClient(t, w, &tls.Config{}, h2, "")
		eventually(t, 10*time.Second, "the edge applies the new settings", func() bool {
			resp, _ := get(c, "rules.keyedge.test")
			return resp.Header.Get("Strict-Transport-Security") != ""
		})
		resp, seen := get(c, "rules.keyedge.test")
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000; includeSubDomains" {
			t.Errorf("h2=%v: HSTS %q", h2, got)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Server") != "" {
			t.Errorf("h2=%v: response rules not applied: %v", h2, resp.Header)
		}
		if seen.Get("X-Tenant") != "rules" || seen.Get("Cookie") != "" || strings.Join(seen["X-Multi"], ",") != "client,edge" {
			t.Errorf("h2=%v: request rules not applied: origin saw %v", h2, seen)
		}
		if seen.Get("X-Forwarded-For") != "127.0.0.1" || seen.Get("X-Request-Id") == "" || !strings.HasPrefix(seen.Get("Forwarded"), "for=127.0.0.1;") {
			t.Errorf("h2=%v: the edge's forwarding headers: origin saw %v", h2, seen)
		}
		// The other tenant: as before.
		resp, seen = get(c, "plain.keyedge.test")
		if resp.Header.Get("Strict-Transport-Security") != "" || resp.Header.Get("Server") != "origin" || seen.Get("Cookie") == "" || seen.Get("X-Tenant") != "" {
			t.Errorf("h2=%v: a tenant without settings got another's: %v, origin saw %v", h2, resp.Header, seen)
		}
	}
}

// TestTenantRateLimit: past its burst a client gets 429 with
// Retry-After, counted in the metric and logged with status 429, while
// another client address keeps its own bucket; time (the limiter's
// clock, pinned) refills it.
func TestTenantRateLimit(t *testing.T) {
	log, sink := newAccessLog(t)
	w := openWorld(t, 0)
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv, err := NewServer(Options{Store: w.store, AccessLog: log, Logger: slog.New(slog.DiscardHandler), Registerer: w.reg})
	if err != nil {
		t.Fatal(err)
	}
	srv.limiter = newRateLimiter(clock.Now) // before it serves
	w.srv, w.addr = srv, serve(t, srv)
	origin := headerOrigin(t)
	w.put(t, testpki.ECDSAP256, origin, "limited.keyedge.test")
	// One a minute, two at once: the buckets' refill (by the wall
	// clock, which drops full buckets) outlasts the test.
	w.setHTTP(t, "limited.keyedge.test", func(h *keystore.TenantHTTP) { h.RateLimit = &keystore.RateLimit{PerSecond: 1.0 / 60, Burst: 2} })

	status := func(c *http.Client) *http.Response {
		t.Helper()
		resp, _, err := fetch(c, must(http.NewRequest(http.MethodGet, "https://limited.keyedge.test/", nil)))
		if err != nil {
			t.Fatal(err)
		}
		sink.next(t)
		return resp
	}
	for _, h2 := range []bool{false, true} {
		clock.Advance(time.Hour) // full buckets
		c := tenantClient(t, w, &tls.Config{}, h2, "127.0.0.1")
		eventually(t, 10*time.Second, "the edge applies the limit", func() bool {
			return status(c).StatusCode == http.StatusTooManyRequests
		})
		clock.Advance(time.Hour)
		for i := range 2 {
			if resp := status(c); resp.StatusCode != http.StatusOK {
				t.Fatalf("h2=%v: request %d within the burst: %s", h2, i, resp.Status)
			}
		}
		before := testutil.ToFloat64(srv.limiter.limited)
		resp := status(c)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
			t.Fatalf("h2=%v: past the burst: %s, Retry-After %q; want 429, 60", h2, resp.Status, resp.Header.Get("Retry-After"))
		}
		if n := testutil.ToFloat64(srv.limiter.limited) - before; n != 1 {
			t.Errorf("h2=%v: keyedge_edge_rate_limited_total rose by %v, want 1", h2, n)
		}
		// Another client address has its own bucket.
		if resp := status(tenantClient(t, w, &tls.Config{}, h2, "127.0.0.2")); resp.StatusCode != http.StatusOK {
			t.Errorf("h2=%v: another client: %s", h2, resp.Status)
		}
		clock.Advance(59 * time.Second)
		if resp := status(c); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("h2=%v: a second early: %s, Retry-After %q", h2, resp.Status, resp.Header.Get("Retry-After"))
		}
		clock.Advance(time.Second)
		if resp := status(c); resp.StatusCode != http.StatusOK {
			t.Errorf("h2=%v: after Retry-After: %s", h2, resp.Status)
		}
	}
	// The access log: the 429 with its reason.
	resp, _, err := fetch(tenantClient(t, w, &tls.Config{}, false, "127.0.0.1"), must(http.NewRequest(http.MethodGet, "https://limited.keyedge.test/", nil)))
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%v, %v", resp, err)
	}
	rec, line := sink.next(t)
	if rec["status"] != float64(429) || rec["error"] != proxyReasonRateLimited || rec["host"] != "limited.keyedge.test" {
		t.Errorf("access log line %s", line)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
