package keyserver_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testmetrics"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keyserver/wire"
)

// slowSource delays every lookup and records how many overlap.
type slowSource struct {
	keyserver.KeySource
	delay    time.Duration
	inFlight atomic.Int64
	max      atomic.Int64
}

func (s *slowSource) Key(ctx context.Context, r keyserver.KeyRef) (*keyserver.Key, error) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for m := s.max.Load(); n > m && !s.max.CompareAndSwap(m, n); m = s.max.Load() {
	}
	time.Sleep(s.delay)
	return s.KeySource.Key(ctx, r)
}

// gateSource blocks every lookup until release is closed (or the
// request's context ends), and reports each lookup on entered.
type gateSource struct {
	keyserver.KeySource
	entered chan struct{}
	release chan struct{}
}

func newGateSource(t testing.TB) *gateSource {
	src, _ := dirSource(t)
	return &gateSource{KeySource: src, entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gateSource) Key(ctx context.Context, r keyserver.KeyRef) (*keyserver.Key, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.KeySource.Key(ctx, r)
}

// TestConcurrentRequests sends 1000 requests at once on one connection
// and checks that every one is answered, correctly and under its ID,
// that the server worked on many at a time, and never on more than
// MaxInFlight.
func TestConcurrentRequests(t *testing.T) {
	for _, maxInFlight := range []int{0, 16} { // 0: the default, 256
		t.Run("MaxInFlight="+map[int]string{0: "default", 16: "16"}[maxInFlight], func(t *testing.T) {
			k := keys(t)
			inner, _ := dirSource(t)
			src := &slowSource{KeySource: inner, delay: time.Millisecond}
			ts := startServer(t, keyserver.ServerOptions{Keys: src, MaxInFlight: maxInFlight})
			c := ts.client(t)
			const n = 1000
			d := digest(crypto.SHA256, []byte("concurrent"))
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				answered = map[uint32]int{}
				order    []uint32
				failures atomic.Int64
			)
			for range n {
				wg.Go(func() {
					id, ch, err := c.send(&wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: d, SKI: ski(t, k.ecdsa.Public())})
					if err != nil {
						t.Error(err)
						return
					}
					resp, err := c.wait(ch)
					if err != nil {
						t.Error(err)
						return
					}
					if resp.ResponseError() != nil || resp.ID != id || !ecdsa.VerifyASN1(&k.ecdsa.PublicKey, d, resp.Payload) {
						failures.Add(1)
					}
					mu.Lock()
					answered[resp.ID]++
					order = append(order, resp.ID)
					mu.Unlock()
				})
			}
			wg.Wait()
			if len(answered) != n || failures.Load() != 0 {
				t.Fatalf("%d distinct IDs answered, %d bad answers; want %d and 0", len(answered), failures.Load(), n)
			}
			for id, times := range answered {
				if times != 1 {
					t.Errorf("ID %d answered %d times", id, times)
				}
			}
			limit := int64(maxInFlight)
			if limit == 0 {
				limit = 256
			}
			if m := src.max.Load(); m <= 1 || m > limit {
				t.Errorf("at most %d lookups in flight at once, want between 2 and %d", m, limit)
			}
			t.Logf("max in flight %d; %d of %d responses out of ID order", src.max.Load(), outOfOrder(order), n)
		})
	}
}

func outOfOrder(ids []uint32) int {
	n := 0
	for i := 1; i < len(ids); i++ {
		if ids[i] < ids[i-1] {
			n++
		}
	}
	return n
}

// TestShutdownAnswersInFlight checks that Shutdown stops accepting,
// answers a request already read, and then closes the connection.
func TestShutdownAnswersInFlight(t *testing.T) {
	k := keys(t)
	gate := newGateSource(t)
	ts := startServer(t, keyserver.ServerOptions{Keys: gate})
	c := ts.client(t)
	idle := ts.client(t)
	d := digest(crypto.SHA256, []byte("in flight"))
	_, ch, err := c.send(&wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: d, SKI: ski(t, k.ecdsa.Public())})
	if err != nil {
		t.Fatal(err)
	}
	<-gate.entered

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- ts.Shutdown(ctx)
	}()
	select {
	case err := <-ts.served:
		if !errors.Is(err, keyserver.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	if !idle.closed() {
		t.Error("idle connection not closed by Shutdown")
	}
	if _, err := dialRaw(ts.addr, ts.pki, clientCert(t, ts.pki.clientCA, "late.test")); err == nil {
		t.Error("new connection accepted after Shutdown")
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}

	close(gate.release)
	resp, err := c.wait(ch)
	if err != nil {
		t.Fatalf("request in flight at Shutdown: %v", err)
	}
	if resp.ResponseError() != nil || !ecdsa.VerifyASN1(&k.ecdsa.PublicKey, d, resp.Payload) {
		t.Fatalf("request in flight at Shutdown answered %v %x", resp.Opcode, resp.Payload)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if !c.closed() {
		t.Error("connection not closed after its last answer")
	}
}

// TestShutdownDeadline checks that Shutdown closes connections whose
// requests do not finish before its context ends.
func TestShutdownDeadline(t *testing.T) {
	gate := newGateSource(t)
	ts := startServer(t, keyserver.ServerOptions{Keys: gate})
	c := ts.client(t)
	_, ch, err := c.send(&wire.Message{Opcode: wire.OpEd25519Sign, Payload: []byte("m"), SKI: ski(t, keys(t).ed25519.Public())})
	if err != nil {
		t.Fatal(err)
	}
	<-gate.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if _, err := c.wait(ch); err == nil {
		t.Error("request answered after a forced shutdown")
	}
	if !c.closed() {
		t.Error("connection not closed by a forced shutdown")
	}
}

// TestTruncatedFrame checks that a message cut short closes its
// connection, and only that one.
func TestTruncatedFrame(t *testing.T) {
	ts := startServer(t, keyserver.ServerOptions{})
	other := ts.client(t)
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		// The header promises 0x3f8 = 1016 bytes of body; 4 follow.
		{"body", []byte{wire.VersionMajor, wire.VersionMinor, 0x03, 0xf8, 0, 0, 0, 1, 0x11, 0, 1, 0xF1}},
		{"header", []byte{wire.VersionMajor, wire.VersionMinor, 0x03}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.client(t)
			if err := c.write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			if err := c.conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if !c.closed() {
				t.Fatal("connection with a truncated message not closed")
			}
			if resp := mustDo(t, other, &wire.Message{Opcode: wire.OpPing}); resp.Opcode != wire.OpPong {
				t.Fatalf("other connection: ping answered %v", resp.Opcode)
			}
		})
	}
	eventually(t, 5*time.Second, "connections gauge back to 1", func() bool {
		return testmetrics.Sum(t, ts.reg, "keyedge_keyserver_connections", nil) == 1
	})
}

// TestIdleTimeout checks that a connection with no request for
// IdleTimeout is closed.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, keyserver.ServerOptions{IdleTimeout: 100 * time.Millisecond})
	c := ts.client(t)
	mustDo(t, c, &wire.Message{Opcode: wire.OpPing})
	if !c.closed() {
		t.Fatal("idle connection not closed")
	}
}

// TestClientGoesAway checks that a client closing with requests in
// flight costs the server nothing but those requests.
func TestClientGoesAway(t *testing.T) {
	inner, _ := dirSource(t)
	src := &slowSource{KeySource: inner, delay: 20 * time.Millisecond}
	ts := startServer(t, keyserver.ServerOptions{Keys: src})
	c := ts.client(t)
	for range 50 {
		if _, _, err := c.send(&wire.Message{Opcode: wire.OpEd25519Sign, Payload: []byte("m"), SKI: ski(t, keys(t).ed25519.Public())}); err != nil {
			t.Fatal(err)
		}
	}
	c.close()
	eventually(t, 5*time.Second, "connection gauge back to 0", func() bool {
		return testmetrics.Sum(t, ts.reg, "keyedge_keyserver_connections", nil) == 0
	})
	mustDo(t, ts.client(t), &wire.Message{Opcode: wire.OpPing})
}

// rawClient speaks the protocol with package wire: a test utility, not
// the product client. Requests may be sent from many goroutines; a
// reader goroutine hands each response to the request with its ID.
type rawClient struct {
	conn   *tls.Conn
	nextID atomic.Uint32

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex // guards waiting, err
	waiting map[uint32]chan *wire.Message
	err     error
	done    chan struct{} // closed when the reader stops
}

// dialRaw connects with cert as the client certificate (none if its
// Certificate is empty).
func dialRaw(addr string, p *pki, cert tls.Certificate) (*rawClient, error) {
	roots := x509.NewCertPool()
	roots.AddCert(p.serverCA.Certificate())
	cfg := &tls.Config{RootCAs: roots, ServerName: "keyserver.test"}
	if len(cert.Certificate) > 0 {
		cfg.Certificates = []tls.Certificate{cert}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	c := &rawClient{conn: conn, waiting: map[uint32]chan *wire.Message{}, done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

func (c *rawClient) readLoop() {
	defer close(c.done)
	for {
		var buf []byte // a fresh buffer: responses outlive the next read
		m, _, err := wire.ReadMessage(c.conn, &buf)
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.mu.Unlock()
			return
		}
		ch := c.waiting[m.ID]
		delete(c.waiting, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// send writes m with a new ID and returns a channel for its response.
func (c *rawClient) send(m *wire.Message) (uint32, <-chan *wire.Message, error) {
	m.ID = c.nextID.Add(1)
	ch := make(chan *wire.Message, 1)
	c.mu.Lock()
	c.waiting[m.ID] = ch
	c.mu.Unlock()
	b, err := m.MarshalBinary()
	if err != nil {
		return 0, nil, err
	}
	return m.ID, ch, c.write(b)
}

func (c *rawClient) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

// wait returns the response on ch, or an error if the connection ends
// or nothing comes within 10s.
func (c *rawClient) wait(ch <-chan *wire.Message) (*wire.Message, error) {
	select {
	case m := <-ch:
		return m, nil
	case <-c.done:
		select {
		case m := <-ch:
			return m, nil
		default:
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, fmt.Errorf("connection closed: %w", c.err)
	case <-time.After(10 * time.Second):
		return nil, errors.New("no response within 10s")
	}
}

// do sends m and waits for its response.
func (c *rawClient) do(m *wire.Message) (*wire.Message, error) {
	id, ch, err := c.send(m)
	if err != nil {
		return nil, err
	}
	resp, err := c.wait(ch)
	if err == nil && resp.ID != id {
		err = fmt.Errorf("response ID %d, want %d", resp.ID, id)
	}
	return resp, err
}

// closed reports whether the server closed the connection within 5s.
func (c *rawClient) closed() bool {
	select {
	case <-c.done:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

func (c *rawClient) close() { c.conn.Close() }

// BenchmarkServerECDSA measures ECDSA P-256 signatures per second
// through a key server over one mutual TLS connection (client and
// server in this process), with conc requests in flight.
func BenchmarkServerECDSA(b *testing.B) {
	k := keys(b)
	s := ski(b, k.ecdsa.Public())
	ts := startServer(b, keyserver.ServerOptions{Keys: mapSource{[20]byte(s): k.ecdsa}, Logger: slog.New(slog.DiscardHandler)})
	d := digest(crypto.SHA256, []byte("bench"))
	for _, conc := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			benchSign(b, ts.client(b), &wire.Message{Opcode: wire.OpECDSASignSHA256, Payload: d, SKI: s}, conc)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
		})
	}
}

// benchSign sends b.N copies of m over c, conc at a time, each answered
// without error.
func benchSign(b *testing.B, c *rawClient, m *wire.Message, conc int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				req := *m
				resp, err := c.do(&req)
				if err != nil || resp.ResponseError() != nil {
					b.Errorf("request: %v %v", err, resp)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkInProcessECDSA is the baseline for BenchmarkServerECDSA:
// ecdsa.SignASN1 called directly, on one goroutine and on all cores.
func BenchmarkInProcessECDSA(b *testing.B) {
	k := keys(b)
	d := digest(crypto.SHA256, []byte("bench"))
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, k.ecdsa, d); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := ecdsa.SignASN1(rand.Reader, k.ecdsa, d); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
	})
}
