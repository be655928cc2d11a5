package keyserver

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testlog"

	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// stallProxy forwards TCP connections to a key server and can stop
// forwarding, in both directions, without closing anything: a key server
// that is SIGSTOPped, blackholed or overloaded, as its clients see it.
// Connections are accepted and bytes are read while it stalls, so dials
// and writes succeed and only the answers never come; on resume the
// bytes held back flow on.
type stallProxy struct {
	ln      net.Listener
	backend string

	mu      sync.Mutex // guards stalled, resumed
	stalled bool
	resumed chan struct{} // closed by resume
}

func newStallProxy(t testing.TB, backend string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, backend: backend}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.resume()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { p.serve(c) })
		}
	}()
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

// stall holds back every byte until resume.
func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		p.stalled, p.resumed = true, make(chan struct{})
	}
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled {
		p.stalled = false
		close(p.resumed)
	}
}

// gate waits while the proxy stalls.
func (p *stallProxy) gate() {
	p.mu.Lock()
	stalled, resumed := p.stalled, p.resumed
	p.mu.Unlock()
	if stalled {
		<-resumed
	}
}

// serve copies bytes both ways between c and a new connection to the
// backend, through the gate, until either side closes.
func (p *stallProxy) serve(c net.Conn) {
	defer c.Close()
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	defer b.Close()
	copyGated := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.gate()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		// Unblock the other direction's Read.
		c.Close()
		b.Close()
	}
	var wg sync.WaitGroup
	wg.Go(func() { copyGated(b, c) })
	copyGated(c, b)
	wg.Wait()
}

// countingSource counts the key lookups a key server makes: one per
// signature it is asked for, so a test can tell which server answered.
type countingSource struct {
	KeySource
	n atomic.Int64
}

func (s *countingSource) Key(ctx context.Context, r KeyRef) (*Key, error) {
	s.n.Add(1)
	return s.KeySource.Key(ctx, r)
}

// startCountingServer starts a key server whose lookups are counted.
func (w *clientWorld) startCountingServer(t testing.TB) (string, *countingSource) {
	t.Helper()
	var src *countingSource
	addr, _ := w.startServer(t, func(k KeySource) KeySource {
		src = &countingSource{KeySource: k}
		return src
	})
	return addr, src
}

// TestClientFailoverFromHungServer: the preferred key server accepts
// connections but stops answering, on the connection in use and in the
// TLS handshake of a new one. A signature whose context carries a
// handshake's long deadline still succeeds through the second server,
// well before that deadline, and later signatures skip the hung server,
// however much time passes, until its health check passes again.
func TestClientFailoverFromHungServer(t *testing.T) {
	for _, tt := range []struct {
		name  string
		conns int
	}{
		{"established connection", 1},
		{"new connection", 2}, // the second signature dials the second slot
	} {
		t.Run(tt.name, func(t *testing.T) { testFailoverFromHungServer(t, tt.conns) })
	}
}

func testFailoverFromHungServer(t *testing.T, conns int) {
	w := newClientWorld(t)
	firstAddr, first := w.startCountingServer(t)
	second, secondSrc := w.startCountingServer(t)
	proxy := newStallProxy(t, firstAddr)
	hung := proxy.addr()
	clock := testclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	// No background pings: the test runs the health checks itself.
	c := w.client(t, ClientOptions{ConnsPerServer: conns, PingInterval: time.Hour, Time: clock.Now})
	digest := sha256.Sum256([]byte("x"))
	sign := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := w.key(t, c, ctx, testpki.ECDSAP256, hung, second).Sign(rand.Reader, digest[:], crypto.SHA256)
		return err
	}
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Ping(ctx, hung)
		return err
	}
	up := func() bool {
		up, _ := c.servers[hung].health()
		return up
	}
	failovers := func() float64 { return testutil.ToFloat64(c.metrics.failovers.WithLabelValues(failoverTimeout)) }

	if err := sign(); err != nil {
		t.Fatal(err)
	}
	if n := first.n.Load(); n != 1 {
		t.Fatalf("warm-up: preferred server made %d signatures, want 1", n)
	}

	proxy.stall()
	if err := sign(); err != nil {
		t.Fatalf("preferred key server hung: %v", err)
	}
	if n := secondSrc.n.Load(); n != 1 {
		t.Fatalf("second server made %d signatures, want 1 (the failover)", n)
	}
	if up() {
		t.Fatal("hung server still marked up")
	}
	if got := failovers(); got != 1 {
		t.Errorf("failovers{reason=timeout} = %v, want 1", got)
	}

	// Later signatures go straight to the second server, however long
	// the hung one stays silent: backoff alone would retry it.
	clock.Advance(time.Hour)
	for i := range 10 {
		if err := sign(); err != nil {
			t.Fatalf("signature %d after the failover: %v", i, err)
		}
	}
	if n := secondSrc.n.Load(); n != 11 {
		t.Errorf("second server made %d signatures, want 11: the hung server was tried again", n)
	}
	if got := failovers(); got != 1 {
		t.Errorf("failovers{reason=timeout} = %v, want still 1", got)
	}

	// Its health check times out too, within the attempt timeout rather
	// than the caller's deadline, and keeps it down.
	if err := ping(); !errors.Is(err, errAttemptTimeout) {
		t.Fatalf("ping of the hung server: %v, want the attempt timeout", err)
	}
	if up() {
		t.Fatal("hung server marked up after a failed health check")
	}

	// It answers again: once a health check passes, it is preferred again.
	proxy.resume()
	var err error
	for range 10 {
		if err = ping(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("health check after the server resumed: %v", err)
	}
	before := secondSrc.n.Load()
	if err := sign(); err != nil {
		t.Fatal(err)
	}
	if secondSrc.n.Load() != before {
		t.Error("recovered preferred server not used again")
	}
}

// TestClientLastServerGetsWholeDeadline: when no server up is left to
// fail over to, the per-attempt timeout does not cut a slow answer
// short: the only server, or the last one up before one marked down,
// gets what remains of the caller's deadline.
func TestClientLastServerGetsWholeDeadline(t *testing.T) {
	for _, withDown := range []bool{false, true} {
		w := newClientWorld(t)
		addr, _ := w.startServer(t, nil)
		slow := newStallProxy(t, addr)
		c := w.client(t, ClientOptions{AttemptTimeout: time.Millisecond, PingInterval: time.Hour})
		addrs := []string{slow.addr()}
		if withDown {
			hung := newStallProxy(t, addr)
			markDown(t, c, hung)
			addrs = append(addrs, hung.addr())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		k := w.key(t, c, ctx, testpki.ECDSAP256, addrs...)
		// Stall the server for longer than the attempt timeout; the wait
		// is ended by a timer, not measured.
		slow.stall()
		time.AfterFunc(50*time.Millisecond, slow.resume)
		digest := sha256.Sum256([]byte("x"))
		if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			t.Errorf("slow server, another marked down %v: %v", withDown, err)
		}
	}
}

// TestClientAllDownFailsWithinAttempts: when every key server of a key
// is already marked down (they accept connections and answer nothing:
// stopped, blackholed), a signature is not given what remains of the
// caller's deadline, a handshake's whole timeout: each server gets
// AttemptTimeout, and the signature fails long before the deadline
// with each server's attempt timeout. Otherwise every handshake for a
// tenant whose key servers hang holds its connection until the
// handshake deadline, and enough of them fill max_conns for every
// tenant.
func TestClientAllDownFailsWithinAttempts(t *testing.T) {
	w := newClientWorld(t)
	addr, _ := w.startServer(t, nil)
	// The proxies before the client, so that the client's cleanup closes
	// its connections before the proxies' cleanup waits for them.
	proxies := []*stallProxy{newStallProxy(t, addr), newStallProxy(t, addr)}
	c := w.client(t, ClientOptions{AttemptTimeout: 50 * time.Millisecond, PingInterval: time.Hour})
	var addrs []string
	for _, hung := range proxies {
		// Connected first, as to servers in use, then hung: the
		// requests wait on the open connection, not in a dial.
		if _, err := c.Ping(context.Background(), hung.addr()); err != nil {
			t.Fatal(err)
		}
		markDown(t, c, hung)
		addrs = append(addrs, hung.addr())
	}
	// The caller's deadline is far beyond the attempts: the signature
	// ending before it is what is checked, not a duration.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	digest := sha256.Sum256([]byte("x"))
	_, err := w.key(t, c, ctx, testpki.ECDSAP256, addrs...).Sign(rand.Reader, digest[:], crypto.SHA256)
	if ctx.Err() != nil {
		t.Fatalf("the signature waited for the caller's deadline (%v); want it to fail once every server marked down had its attempt", err)
	}
	if !errors.Is(err, errAttemptTimeout) || strings.Count(err.Error(), errAttemptTimeout.Error()) != len(addrs) {
		t.Errorf("signature with every server hung: %v; want an attempt timeout from each server", err)
	}
}

// markDown stalls proxy and has c's health check find it hung, so that
// c marks the server behind it down.
func markDown(t *testing.T, c *Client, proxy *stallProxy) {
	t.Helper()
	proxy.stall()
	if _, err := c.Ping(context.Background(), proxy.addr()); err == nil {
		t.Fatal("ping through a stalled proxy succeeded")
	}
}

// TestClientLogsFailuresRateLimited: a preferred server that refuses
// every connection fails over every request (its backoff always over on
// the test's clock); each failover is counted, but the failure and the
// failover are each logged once, not once per request.
func TestClientLogsFailuresRateLimited(t *testing.T) {
	w := newClientWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	second, _ := w.startServer(t, nil)
	clock := testclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	logs := &countingHandler{}
	c := w.client(t, ClientOptions{PingInterval: time.Hour, Time: clock.Now, Logger: slog.New(logs)})
	digest := sha256.Sum256([]byte("x"))
	const n = 20
	for i := range n {
		clock.Advance(time.Hour) // past any backoff: the refused server is tried first again
		if _, err := w.key(t, c, context.Background(), testpki.ECDSAP256, refused, second).Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
	}
	if got := testutil.ToFloat64(c.metrics.failovers.WithLabelValues(failoverUnavailable)); got != n {
		t.Errorf("failovers{reason=unavailable} = %v, want %d", got, n)
	}
	// The interval is 10s of real time; n fast failures take far less.
	if got := logs.warnings.Load(); got > 2 {
		t.Errorf("%d warnings logged for %d failovers, want at most 2 (rate-limited)", got, n)
	}
}

// countingHandler is a slog.Handler counting warnings.
type countingHandler struct{ warnings atomic.Int64 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.warnings.Add(1)
	}
	return nil
}

// TestClientDeadlineSparesSharedConnection: a request whose deadline
// passes while the connection is backed up (the key server reads no
// more) fails alone, at its deadline; the requests sharing its
// connection keep waiting on it. A server that stopped reading is the
// extreme of one that reads slowly under load, where one short deadline
// (a health check's, a handshake's) used to fail a connection's every
// request in flight.
func TestClientDeadlineSparesSharedConnection(t *testing.T) {
	w := newClientWorld(t)
	// A key server that completes the handshake and then reads nothing,
	// with a small receive buffer, so the client's writes back up.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serverTLS := &tls.Config{Certificates: []tls.Certificate{w.identity(t, "keyserver.test")}, ClientCAs: w.pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			raw.(*net.TCPConn).SetReadBuffer(4096)
			tc := tls.Server(raw, serverTLS)
			t.Cleanup(func() { tc.Close() })
			go tc.Handshake()
		}
	}()

	const backlog = 300 // × 60 KB: far more than the socket buffers hold
	c := w.client(t, ClientOptions{ConnsPerServer: 1, MaxInFlight: backlog + 1, Timeout: time.Minute, PingInterval: time.Hour})
	r, err := c.remote(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	long, cancelLong := context.WithTimeout(context.Background(), time.Minute)
	defer cancelLong()
	waiting := make(chan error, backlog)
	for range backlog {
		go func() {
			_, err := r.do(long, &wire.Message{Opcode: wire.OpPing, Payload: make([]byte, 60_000)}, 0)
			waiting <- err
		}()
	}
	// Every long request is at its write (blocked, but for the few that
	// fit in the buffers) before the short one starts.
	cc, err := r.conn(long)
	if err != nil {
		t.Fatal(err)
	}
	for inFlight(cc) < backlog {
		select {
		case err := <-waiting:
			t.Fatalf("a request ended while the server held it: %v", err)
		case <-time.After(time.Millisecond):
		}
	}

	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	returned := make(chan error, 1)
	go func() {
		_, err := r.do(short, &wire.Message{Opcode: wire.OpPing, Payload: []byte("ping")}, 0)
		returned <- err
	}()
	select {
	case err := <-returned:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the short request: %v, want a deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the short request did not return at its deadline: it waited behind the blocked writes")
	}
	select {
	case err := <-waiting:
		t.Errorf("a request with its deadline a minute away ended with the short one: %v", err)
	default:
	}
	if cc.dead() {
		t.Errorf("the shared connection was closed: %v", cc.err)
	}
}

// inFlight is the number of requests on cc waiting for a response.
func inFlight(cc *clientConn) int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.pending)
}

// emptySource holds no key.
type emptySource struct{}

func (emptySource) Key(context.Context, KeyRef) (*Key, error) { return nil, ErrKeyNotFound }

// TestClientWarnsKeyNotFound: a key server answering "key not found" (it
// does not hold the key, or does not let this node use it) is logged at
// warning with what to do, at most once per interval, not only counted.
func TestClientWarnsKeyNotFound(t *testing.T) {
	w := newClientWorld(t)
	addr, _ := w.startServer(t, func(KeySource) KeySource { return emptySource{} })
	var logs testlog.Buffer
	c := w.client(t, ClientOptions{PingInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	digest := sha256.Sum256([]byte("x"))
	for range 5 {
		if _, err := w.key(t, c, context.Background(), testpki.ECDSAP256, addr).Sign(rand.Reader, digest[:], crypto.SHA256); err == nil {
			t.Fatal("signed by a key server holding no key")
		}
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Fatalf("%d warnings for 5 key-not-found answers, want 1 (rate-limited); log:\n%s", n, out)
	}
	for _, want := range []string{"key not found", addr, "authorize"} {
		if !strings.Contains(out, want) {
			t.Errorf("key-not-found warning does not say %q; log:\n%s", want, out)
		}
	}
}
