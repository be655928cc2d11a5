package edge

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// A request read just as Shutdown begins is served: Shutdown waits until
// net/http is past its own shutdown check for that connection, not a
// guessed while after the connection turned active.
func TestShutdownServesRequestReadAsItStarts(t *testing.T) {
	w := newWorld(t, 2, Options{})
	srv, err := NewServer(Options{Store: w.openStore(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv.h1Loop = false // net/http's path; TestH1Shutdown drains the loop
	// Hold the connection between "active" and net/http's shutdown check
	// until Shutdown has begun (or, if Shutdown waits for it, a while).
	var (
		activeOnce, shutdownOnce sync.Once
		active                   = make(chan struct{})
		shuttingDown             = make(chan struct{})
	)
	srv.http.RegisterOnShutdown(func() { shutdownOnce.Do(func() { close(shuttingDown) }) })
	track := srv.http.ConnState
	srv.http.ConnState = func(c net.Conn, st http.ConnState) {
		track(c, st)
		if st == http.StateActive {
			activeOnce.Do(func() { close(active) })
			select {
			case <-shuttingDown:
			case <-time.After(time.Second):
			}
		}
	}
	addr := serve(t, srv)

	conn, err := w.handshakeTo(addr, w.tlsConfig("t0.keyedge.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: t0.keyedge.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-active
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("request read as Shutdown began got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "origin t0.keyedge.test" {
		t.Fatalf("request read as Shutdown began: %d %q", resp.StatusCode, body)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
