package bench

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/internal/tlsconf"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// stageError marks the stage a request failed in.
type stageError struct {
	kind string
	err  error
}

func (e *stageError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// shared is the state the workers of a run share.
type shared struct {
	opts   *Options
	parent context.Context // the caller's: its end aborts requests in flight
	stop   context.Context // ends when no new request may start
	signer *signer         // ModeKeyless
	next   atomic.Uint64   // DistSequential's next name
	// sessions is ModeResumed's client session cache, one for all the
	// workers, so a name resumes whichever worker draws it next.
	sessions tls.ClientSessionCache
	tickets  atomic.Int64
	ok       atomic.Int64
	errs     atomic.Int64
}

// take reports whether a worker may start another request.
func (s *shared) take() bool {
	if s.stop.Err() != nil {
		return false
	}
	return s.opts.Requests <= 0 || s.tickets.Add(1) <= s.opts.Requests
}

// newWorkers returns the run's workers, each with its own picker of
// names (none in ModeKeyless).
func (s *shared) newWorkers() []*worker {
	workers := make([]*worker, s.opts.Concurrency)
	if s.opts.Mode == ModeResumed {
		s.sessions = tls.NewLRUClientSessionCache(min(len(s.opts.Names), sessionCacheSize))
	}
	for i := range workers {
		var p *picker
		if s.opts.Mode != ModeKeyless {
			p = newPicker(s.opts.Names, s.opts.Dist, s.opts.ZipfS, s.opts.Seed, uint64(i), &s.next)
		}
		workers[i] = newWorker(s.opts, p, s.sessions)
		workers[i].sh = s
	}
	return workers
}

// drive runs the workers until the run's bounds, with progress lines
// if asked for, and returns when it started and how long it took.
func (s *shared) drive(ctx context.Context, workers []*worker) (time.Time, time.Duration) {
	start := time.Now()
	stop, cancel := context.WithCancel(ctx)
	if s.opts.Duration > 0 {
		stop, cancel = context.WithTimeout(ctx, s.opts.Duration)
	}
	defer cancel()
	s.stop = stop
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(w.run)
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if s.opts.Progress != nil {
		progressWG.Go(func() { s.progress(start, progressDone) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(progressDone)
	progressWG.Wait()
	return start, elapsed
}

// progress prints the rate so far every interval until done closes.
func (s *shared) progress(start time.Time, done <-chan struct{}) {
	t := time.NewTicker(s.opts.ProgressInterval)
	defer t.Stop()
	var lastOK int64
	last := start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			ok, errs := s.ok.Load(), s.errs.Load()
			fmt.Fprintf(s.opts.Progress, "edgebench: %5.1fs %9d ok %9.0f/s (last %.0f/s) errors %d\n",
				now.Sub(start).Seconds(), ok, float64(ok)/now.Sub(start).Seconds(),
				float64(ok-lastOK)/now.Sub(last).Seconds(), errs)
			lastOK, last = ok, now
		}
	}
}

// worker makes one request at a time; its counters are its own until
// the run ends.
type worker struct {
	opts   *Options
	sh     *shared
	picker *picker
	base   *tls.Config
	dialer net.Dialer
	br     *bufio.Reader

	latency *Histogram
	ok      int64
	aborted int64
	errors  map[string]int64
	samples map[string]string
	status  map[int]int64

	// Connection stats: with HTTP/2 and HTTP/3, the dial runs on the
	// transport's dialing goroutine, so they have their own lock.
	connMu    sync.Mutex
	handshake *Histogram
	conns     int64
	groups    map[string]int64
	versions  map[string]int64
	protos    map[string]int64
	certKeys  map[string]int64
	resumed   int64
	offered   *offerCounter // ModeResumed: the session cache's hits

	// udp is the socket of the worker's QUIC connections (HTTP/3), made
	// by the first dial.
	udp *quic.Transport
}

// newWorker returns a worker drawing names from p; sessions is the run's
// client session cache in ModeResumed, else nil.
func newWorker(opts *Options, p *picker, sessions tls.ClientSessionCache) *worker {
	w := &worker{
		opts:   opts,
		picker: p,
		base: &tls.Config{
			RootCAs:          opts.RootCAs,
			CurvePreferences: opts.Curves,
			MinVersion:       cmp.Or(opts.TLSVersion, tls.VersionTLS12),
			MaxVersion:       opts.TLSVersion,
			NextProtos:       []string{"http/1.1"},
			// No ClientSessionCache but in ModeResumed: every handshake
			// is a full one.
		},
		br:        bufio.NewReaderSize(nil, 4096),
		latency:   NewHistogram(),
		handshake: NewHistogram(),
		errors:    make(map[string]int64),
		samples:   make(map[string]string),
		status:    make(map[int]int64),
		groups:    make(map[string]int64),
		versions:  make(map[string]int64),
		protos:    make(map[string]int64),
		certKeys:  make(map[string]int64),
	}
	switch {
	case opts.HTTP2:
		w.base.NextProtos = []string{"h2"}
	case opts.HTTP3:
		w.base.NextProtos = []string{http3.NextProtoH3}
	}
	if len(opts.CertKeys) > 0 {
		w.base.CipherSuites = tls12Suites(opts.CertKeys)
		w.base.VerifyConnection = acceptCertKeys(opts.CertKeys)
	}
	if sessions != nil {
		w.offered = &offerCounter{ClientSessionCache: sessions}
		w.base.ClientSessionCache = w.offered
	}
	return w
}

// sessionCacheSize bounds ModeResumed's session cache: names
// beyond it are drawn again only after their session was evicted, and
// get a full handshake then.
const sessionCacheSize = 1024

// offerCounter counts a worker's handshakes that found a session to
// offer in the run's shared cache. A worker's handshakes run one at a
// time, so the count needs no lock.
type offerCounter struct {
	tls.ClientSessionCache
	hits int64
}

func (c *offerCounter) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := c.ClientSessionCache.Get(key)
	if ok {
		c.hits++
	}
	return s, ok
}

func (w *worker) run() {
	switch {
	case w.opts.Mode == ModeKeyless:
		w.runKeyless()
	case w.opts.HTTP2 || w.opts.HTTP3:
		w.runRoundTrips()
	case w.opts.Mode == ModeHandshake || w.opts.Mode == ModeResumed:
		w.runHandshakes()
	default:
		w.runKeepAlive()
	}
}

// runHandshakes: connect, handshake (full, or resumed in ModeResumed),
// one GET, close; again.
func (w *worker) runHandshakes() {
	for w.sh.take() {
		start := time.Now()
		name := w.picker.pick()
		c, err := w.connect(w.sh.parent, name)
		if err == nil {
			_, err = w.get(c, name, true)
			c.Close()
		}
		w.finish(start, err)
	}
}

// runKeepAlive: one HTTP/1.1 connection, GETs back to back.
func (w *worker) runKeepAlive() {
	name := w.picker.pick()
	var c *tls.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for w.sh.take() {
		var err error
		if c == nil {
			c, err = w.connect(w.sh.parent, name)
		}
		start := time.Now()
		if err == nil {
			var closed bool
			if closed, err = w.get(c, name, false); err != nil || closed {
				c.Close()
				c = nil
			}
		}
		w.finish(start, err)
	}
}

// pool is the HTTP client of runRoundTrips: net/http's transport for
// HTTP/2, quic-go's for HTTP/3. Each dials through the worker, which
// records the handshakes.
type pool interface {
	http.RoundTripper
	CloseIdleConnections()
}

// runRoundTrips makes the requests of HTTP/2 and HTTP/3 through a pool
// of its own: in keep-alive mode one connection, GETs back to back; in
// the handshake modes a new connection per request, closed after it.
func (w *worker) runRoundTrips() {
	var tr pool
	if w.opts.HTTP3 {
		h3 := w.h3Transport()
		defer w.closeQUIC(h3)
		tr = h3
	} else {
		tr = &http.Transport{
			DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return w.connect(ctx, hostOf(addr))
			},
			ForceAttemptHTTP2:   true,
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
		}
	}
	defer tr.CloseIdleConnections()
	keepAlive := w.opts.Mode == ModeKeepAlive
	name := w.picker.pick()
	for w.sh.take() {
		if !keepAlive {
			name = w.picker.pick()
		}
		start := time.Now()
		err := w.roundTrip(tr, "https://"+name+w.opts.Path)
		if !keepAlive {
			tr.CloseIdleConnections()
		}
		w.finish(start, err)
	}
}

// hostOf is the host of the host:port a transport dials (the URL's: the
// server name), or addr itself without a port.
func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// roundTrip makes one GET through tr and reads the whole response, which
// must come over the protocol asked for: a fallback is an error.
func (w *worker) roundTrip(tr http.RoundTripper, url string) error {
	ctx, cancel := context.WithTimeout(w.sh.parent, w.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "edgebench")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return &stageError{ErrRead, err}
	}
	if resp.StatusCode != http.StatusOK {
		w.status[resp.StatusCode]++
		return &stageError{ErrStatus, fmt.Errorf("%s %s", resp.Proto, resp.Status)}
	}
	if want := w.protoMajor(); resp.ProtoMajor != want {
		return &stageError{ErrRead, fmt.Errorf("response over %s, not HTTP/%d", resp.Proto, want)}
	}
	return nil
}

// protoMajor is the HTTP version runRoundTrips' responses must have.
func (w *worker) protoMajor() int {
	if w.opts.HTTP3 {
		return 3
	}
	return 2
}

// connect dials the edge and completes a TLS handshake for name.
func (w *worker) connect(ctx context.Context, name string) (*tls.Conn, error) {
	deadline := time.Now().Add(w.opts.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	raw, err := w.dialer.DialContext(ctx, "tcp", w.opts.Addr)
	if err != nil {
		return nil, &stageError{ErrDial, err}
	}
	raw.SetDeadline(deadline)
	cfg := w.base.Clone()
	cfg.ServerName = name
	c := tls.Client(raw, cfg)
	start := time.Now()
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &stageError{ErrHandshake, err}
	}
	w.recordConn(time.Since(start), c.ConnectionState())
	if w.opts.HTTP2 {
		raw.SetDeadline(time.Time{}) // net/http sets its own per request
	}
	return c, nil
}

// recordConn counts a connection whose handshake took d and negotiated
// cs.
func (w *worker) recordConn(d time.Duration, cs tls.ConnectionState) {
	w.connMu.Lock()
	defer w.connMu.Unlock()
	w.handshake.Record(d)
	w.conns++
	w.groups[tlsconf.CurveName(cs.CurveID)]++
	w.versions[tls.VersionName(cs.Version)]++
	w.protos[cmp.Or(cs.NegotiatedProtocol, "(none)")]++
	if len(cs.PeerCertificates) > 0 {
		w.certKeys[certKeyName(cs.PeerCertificates[0])]++
	}
	if cs.DidResume {
		w.resumed++
	}
}

// get sends one HTTP/1.1 GET on c and reads the whole response. closed
// reports that the connection cannot carry another request.
func (w *worker) get(c *tls.Conn, name string, close bool) (closed bool, err error) {
	c.SetDeadline(time.Now().Add(w.opts.Timeout))
	req := "GET " + w.opts.Path + " HTTP/1.1\r\nHost: " + name + "\r\nUser-Agent: edgebench\r\n"
	if close {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return true, &stageError{ErrRead, err}
	}
	w.br.Reset(c)
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return true, &stageError{ErrRead, err}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return true, &stageError{ErrRead, err}
	}
	// A response must be read to its end before the next request, and
	// anything the server sent beyond it means the stream is out of step.
	if w.br.Buffered() > 0 {
		return true, &stageError{ErrRead, fmt.Errorf("%d unexpected bytes after the response", w.br.Buffered())}
	}
	if resp.StatusCode != http.StatusOK {
		w.status[resp.StatusCode]++
		return resp.Close, &stageError{ErrStatus, fmt.Errorf("%s %s", resp.Proto, resp.Status)}
	}
	return resp.Close, nil
}

// finish records a request's outcome.
func (w *worker) finish(start time.Time, err error) {
	if err == nil {
		w.latency.Record(time.Since(start))
		w.ok++
		w.sh.ok.Add(1)
		return
	}
	if w.sh.parent.Err() != nil {
		w.aborted++
		return
	}
	kind := classify(err)
	w.errors[kind]++
	if _, ok := w.samples[kind]; !ok {
		w.samples[kind] = err.Error()
	}
	w.sh.errs.Add(1)
}

// classify returns the error kind of a failed request.
func classify(err error) string {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return ErrTimeout
	}
	var se *stageError
	if errors.As(err, &se) {
		return se.kind
	}
	return ErrRead
}

func (w *worker) mergeInto(r *Result, latency, handshake *Histogram) {
	w.connMu.Lock()
	defer w.connMu.Unlock()
	latency.Merge(w.latency)
	handshake.Merge(w.handshake)
	r.Requests += w.ok
	r.Aborted += w.aborted
	r.Handshakes += w.conns
	r.Resumed += w.resumed
	if w.offered != nil {
		r.ResumeOffered += w.offered.hits
	}
	for k, v := range w.errors {
		r.Errors[k] += v
	}
	for k, v := range w.samples {
		if _, ok := r.ErrorSamples[k]; !ok {
			r.ErrorSamples[k] = v
		}
	}
	for k, v := range w.status {
		r.Statuses[k] += v
	}
	for k, v := range w.groups {
		r.Groups[k] += v
	}
	for k, v := range w.versions {
		r.Versions[k] += v
	}
	for k, v := range w.protos {
		r.Protocols[k] += v
	}
	for k, v := range w.certKeys {
		r.CertKeys[k] += v
	}
}
