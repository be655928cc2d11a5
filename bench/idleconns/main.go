// Command idleconns opens many TLS connections to a server, sends one
// request on each (HTTP/1.1 keep-alive, or HTTP/2), reads the whole
// response and then holds every connection open and idle, so that the
// server's memory per idle connection can be measured. bench/idle.sh
// runs it.
//
// Usage:
//
//	idleconns -addr HOST:PORT -name SNI -ca FILE -n N [-h2] [-c C]
//
// Once every connection has been opened and answered it prints
// "open=N errors=E" and waits, connections held, until SIGTERM or
// SIGINT. A connection the server closes meanwhile is counted on
// stderr, so a measurement over fewer connections than claimed shows.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "idleconns: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("idleconns", flag.ContinueOnError)
	addr := fs.String("addr", "", "server `host:port`")
	name := fs.String("name", "", "SNI and Host")
	caFile := fs.String("ca", "", "PEM `file` of the CA the server's certificate chains to")
	n := fs.Int("n", 5000, "connections")
	conc := fs.Int("c", 32, "connections opened at a time")
	h2 := fs.Bool("h2", false, "HTTP/2 (ALPN h2) instead of HTTP/1.1")
	path := fs.String("path", "/", "request path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *name == "" || *caFile == "" {
		return errors.New("-addr, -name and -ca are required")
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: no certificates", *caFile)
	}
	proto := "http/1.1"
	if *h2 {
		proto = "h2"
	}
	cfg := &tls.Config{
		ServerName: *name, RootCAs: roots, NextProtos: []string{proto},
		MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519},
		ClientSessionCache: nil, // every connection a full handshake, as the testers did
	}
	url := "https://" + *name + *path

	var (
		mu     sync.Mutex
		held   []io.Closer
		errs   atomic.Int64
		closed atomic.Int64 // held connections the server closed
		wg     sync.WaitGroup
		sem    = make(chan struct{}, *conc)
	)
	var firstErr atomic.Value
	for range *n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := open(*addr, cfg, url, *h2, &closed)
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("open=%d errors=%d\n", len(held), errs.Load())
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "idleconns: first error: %s\n", e)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if c := closed.Load(); c > 0 {
		fmt.Fprintf(os.Stderr, "idleconns: the server closed %d of the held connections\n", c)
	}
	for _, c := range held {
		c.Close()
	}
	return nil
}

// open dials, handshakes, sends one GET and reads the response; the
// returned Closer holds the connection. For HTTP/1.1 a goroutine then
// waits on a one-byte read, counting in closed a connection the server
// ends; HTTP/2's client connection has its own reader.
func open(addr string, cfg *tls.Config, url string, h2 bool, closed *atomic.Int64) (io.Closer, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, cfg)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := conn.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if h2 {
		if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
			conn.Close()
			return nil, fmt.Errorf("ALPN: got %q, not h2", p)
		}
		conn.SetDeadline(time.Time{})
		// A Transport whose only connection is conn, HTTP/2 only.
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		tr.DialTLSContext = func(context.Context, string, string) (net.Conn, error) { return conn, nil }
		cc, err := tr.NewClientConn(context.Background(), "https", addr)
		if err != nil {
			conn.Close()
			return nil, err
		}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			cc.Close()
			return nil, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		if err != nil {
			cc.Close()
			return nil, err
		}
		return cc, nil
	}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || resp.Close) {
			err = fmt.Errorf("status %s, close %v", resp.Status, resp.Close)
		}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	go func() {
		var b [1]byte
		if _, err := br.Read(b[:]); !errors.Is(err, net.ErrClosed) {
			closed.Add(1)
		}
	}()
	return conn, nil
}
