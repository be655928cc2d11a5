package chaos

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
)

// TestSlowBodies opens 200 POSTs that send their body at 1 byte per
// second against an edge with limits.body_read_timeout 500ms (shorter
// than the gap between two bytes): each is answered 408 or closed, the
// origin is left reading none of their bodies, and a normal client is
// served meanwhile.
func TestSlowBodies(t *testing.T) {
	full(t)
	w := newWorld(t, options{Limits: []string{"body_read_timeout: 500ms"}})
	const slow = 200
	host := w.local[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got408, closed, stuck atomic.Int64
	var wg sync.WaitGroup
	for range slow {
		wg.Go(func() {
			switch slowPost(ctx, w.edge.addr, host) {
			case http.StatusRequestTimeout:
				got408.Add(1)
			case 0:
				closed.Add(1)
			default:
				stuck.Add(1)
			}
		})
	}
	l := w.startLoad(load{Hosts: w.hosts(), Requests: 300, Within: 30 * time.Second})
	wg.Wait()
	rep := l.wait(t)
	t.Logf("%d slow POSTs: %d answered 408, %d closed, %d neither", slow, got408.Load(), closed.Load(), stuck.Load())
	if stuck.Load() != 0 || got408.Load() == 0 {
		t.Errorf("want every slow POST answered 408 or closed (most 408) within a minute")
	}
	proctest.Eventually(t, 30*time.Second, "the origin reading no slow body", func() bool { return w.origin.uploading.Load() == 0 })
	if n := w.edge.metric(t, `keyedge_proxy_errors_total{reason="body_timeout"}`); n != float64(got408.Load()) {
		t.Errorf("keyedge_proxy_errors_total{reason=\"body_timeout\"} = %v, want %d", n, got408.Load())
	}
	rep.allOK(t, "normal clients beside slow POSTs", w.hosts()...)
}

// slowPost sends a POST to /upload for host announcing a 60-byte body
// and then sends it at 1 byte per second, until the edge answers or
// closes the connection or ctx ends. It returns the status the edge
// answered, 0 if the connection closed without an answer, and -1 if
// ctx ended first.
func slowPost(ctx context.Context, addr, host string) int {
	conn, hangUp, err := dialUntil(ctx, addr, host)
	if err != nil {
		return 0
	}
	defer hangUp()
	done := make(chan struct{})
	defer close(done)
	go func() {
		conn.Write([]byte("POST /upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 60\r\n\r\n"))
		for range 60 {
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	switch {
	case err == nil:
		resp.Body.Close()
		return resp.StatusCode
	case ctx.Err() != nil:
		return -1
	default:
		return 0
	}
}

// TestSlowReaders opens 100 requests for a large response whose clients
// then read nothing, against an edge with limits.send_timeout 500ms:
// each is closed and counted once a write to it has waited that long,
// the origin is left streaming to none of them, and normal clients are
// served meanwhile.
func TestSlowReaders(t *testing.T) {
	full(t)
	w := newWorld(t, options{Limits: []string{"send_timeout: 500ms"}})
	const slow = 100
	host := w.local[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var closed, stuck atomic.Int64
	var wg sync.WaitGroup
	for range slow {
		wg.Go(func() {
			if stalledGet(ctx, w.edge.addr, host) {
				closed.Add(1)
			} else {
				stuck.Add(1)
			}
		})
	}
	l := w.startLoad(load{Hosts: w.hosts(), Requests: 300, Within: 30 * time.Second})
	wg.Wait()
	rep := l.wait(t)
	t.Logf("%d stalled readers: %d closed by the edge, %d not", slow, closed.Load(), stuck.Load())
	if stuck.Load() != 0 {
		t.Errorf("want every stalled reader closed by the edge within a minute")
	}
	proctest.Eventually(t, 30*time.Second, "the origin streaming to no stalled reader", func() bool { return w.origin.streaming.Load() == 0 })
	if n := w.edge.metric(t, "keyedge_edge_send_timeouts_total"); n != slow {
		t.Errorf("keyedge_edge_send_timeouts_total = %v, want %d", n, slow)
	}
	rep.allOK(t, "normal clients beside stalled readers", w.hosts()...)
}

// stalledGet asks host for /stream, reads nothing until the edge has
// had time to fill the socket buffers, then waits for the edge to close
// the connection, reading what it sent. It reports whether the edge
// closed it before ctx ended.
func stalledGet(ctx context.Context, addr, host string) bool {
	conn, hangUp, err := dialUntil(ctx, addr, host)
	if err != nil {
		return false
	}
	defer hangUp()
	if _, err := conn.Write([]byte("GET /stream HTTP/1.1\r\nHost: " + host + "\r\n\r\n")); err != nil {
		return false
	}
	// Reading nothing: a bounded wait, long against the edge's 500 ms
	// once the buffers are full. The edge closing meanwhile is what the
	// read below finds.
	select {
	case <-ctx.Done():
		return false
	case <-time.After(5 * time.Second):
	}
	_, err = io.Copy(io.Discard, conn)
	return ctx.Err() == nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// dialUntil connects to addr over TLS for host (any certificate) and
// makes the connection's reads and writes fail once ctx ends; hangUp
// closes it.
func dialUntil(ctx context.Context, addr, host string) (conn net.Conn, hangUp func(), err error) {
	d := tls.Dialer{Config: &tls.Config{ServerName: host, InsecureSkipVerify: true}}
	if conn, err = d.DialContext(ctx, "tcp", addr); err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	return conn, func() { stop(); conn.Close() }, nil
}

// TestIdleSocketsPerIP opens 300 idle TCP connections from 127.0.0.1 to
// an edge with limits.max_conns_per_ip 100: the 200 beyond the limit are
// refused (closed at accept, counted by reason), while a client from
// another address, 127.0.0.2, is served.
func TestIdleSocketsPerIP(t *testing.T) {
	const limit, idle = 100, 300
	w := newWorld(t, options{Limits: []string{"max_conns_per_ip: 100", "handshake_timeout: 60s"}})
	refused := `keyedge_edge_refused_connections_total{reason="per_ip"}`
	before := w.edge.metric(t, refused)
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.Dial("tcp", w.edge.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	proctest.Eventually(t, 30*time.Second, "200 connections refused for max_conns_per_ip", func() bool {
		return w.edge.metric(t, refused)-before >= idle-limit
	})
	w.run(load{Hosts: w.hosts(), Requests: 100, From: "127.0.0.2"}).allOK(t, "another client address beside 300 idle sockets", w.hosts()...)
	if w.serves(w.local[0]) {
		t.Errorf("a new connection from 127.0.0.1 was served beyond max_conns_per_ip")
	}

	// From the clients' side: the refused ones are closed, the others open.
	var open, shut atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err := c.Read(make([]byte, 1))
			if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
				open.Add(1)
			} else {
				shut.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d idle sockets: %d refused, %d held open; %v refused by the edge's count", idle, shut.Load(), open.Load(), w.edge.metric(t, refused)-before)
	if open.Load() != limit || shut.Load() != idle-limit {
		t.Errorf("want %d held open and %d refused", limit, idle-limit)
	}
	if out := w.edge.proc.Output(t); !strings.Contains(out, "max_conns_per_ip") {
		t.Errorf("edge log does not name max_conns_per_ip")
	}
}
