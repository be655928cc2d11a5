package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestHTTP3Handoff: keyedge serve answers HTTP/3 on the UDP port of its
// TLS address (http3 on by default) and advertises it in Alt-Svc; after
// SIGUSR2 the new process, given the UDP socket too, answers HTTP/3 on
// the same port.
func TestHTTP3Handoff(t *testing.T) {
	w, addr, _, p := okEdge(t, "http3", "limits:\n  drain_timeout: 5s\n", "--pid-file", "keyedge.pid")
	pidFile := w.Path("keyedge.pid")
	p.WaitOutput(t, "http3 listening", 10*time.Second)

	h2 := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: w.Roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer h2.CloseIdleConnections()
	get := func(rt http.RoundTripper) *http.Response {
		t.Helper()
		resp, err := (&http.Client{Transport: rt, Timeout: 10 * time.Second}).Get("https://t0.keyedge.test/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: %d %q", resp.Proto, resp.StatusCode, body)
		}
		return resp
	}
	h3 := func() *http3.Transport {
		return &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: w.Roots},
			Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				return quic.DialAddr(ctx, addr, tlsCfg, cfg)
			},
		}
	}
	_, port, _ := net.SplitHostPort(addr)
	if got, want := get(h2).Header.Get("Alt-Svc"), `h3=":`+port+`"; ma=86400`; got != want {
		t.Errorf("Alt-Svc %q, want %q", got, want)
	}
	before := h3()
	if resp := get(before); resp.ProtoMajor != 3 {
		t.Fatalf("answered %s", resp.Proto)
	}
	before.Close()

	p.Signal(t, syscall.SIGUSR2)
	var next int
	proctest.Eventually(t, 30*time.Second, "the new process serving", func() bool {
		b, _ := os.ReadFile(pidFile)
		next, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return next != 0 && next != p.PID()
	})
	proctest.KillOnCleanup(t, next)
	if err := p.Wait(t, 20*time.Second); err != nil {
		t.Errorf("the old process: %v", err)
	}
	after := h3()
	defer after.Close()
	if resp := get(after); resp.ProtoMajor != 3 {
		t.Errorf("after SIGUSR2: answered %s", resp.Proto)
	}
}
