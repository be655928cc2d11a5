// Package bench is edgebench's load generator: it drives HTTPS requests
// at a TLS edge (one full or resumed handshake per request, or over
// persistent connections) with server names drawn from a Zipf, uniform
// or sequential distribution, or signing requests straight at a Keyless
// SSL key server, and measures rate, latency, errors, what the
// handshakes negotiated and the CPU time the server spent.
//
// Scripts and figures are beside it: bench/matrix.sh, bench/edge.sh,
// bench/keyless.sh, bench/RESULTS.md.
package bench

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/internal/tlsconf"
)

// Modes.
const (
	// ModeHandshake makes every request on a new TCP connection with a
	// full TLS handshake (no session resumption), sends one GET over
	// HTTP/1.1 with "Connection: close", reads the response and closes.
	ModeHandshake = "handshake"
	// ModeKeepAlive keeps Concurrency persistent connections, each
	// issuing GETs back to back over HTTP/1.1 (or HTTP/2 with
	// Config.HTTP2). A connection's server name is drawn once, when the
	// worker starts; a connection that fails or is closed by the server
	// is replaced by a new one for the same name.
	ModeKeepAlive = "keepalive"
	// ModeResumed is ModeHandshake with a session cache per worker: a
	// name's first handshake on a worker is a full one, later ones offer
	// the session ticket the server sent and resume. Run fails with
	// ErrNotResumed when no handshake resumed.
	ModeResumed = "resumed"
	// ModeKeyless sends signing requests straight to a key server
	// (Config.Keyless) over keyserver.Client's mutual-TLS connections,
	// Concurrency in flight; no edge and no names are involved.
	ModeKeyless = "keyless"
)

// Modes lists the modes, in the order -h names them.
var Modes = []string{ModeHandshake, ModeResumed, ModeKeepAlive, ModeKeyless}

// ErrNotResumed is returned, with the Result, by a ModeResumed run in
// which handshakes completed but none resumed a session.
var ErrNotResumed = errors.New("bench: no handshake resumed a session")

// Error kinds, the keys of Result.Errors.
const (
	ErrDial      = "dial"        // TCP connect failed
	ErrHandshake = "handshake"   // TLS handshake failed, verification included
	ErrStatus    = "http-status" // a response other than 200
	ErrRead      = "read"        // sending the request or reading the response failed
	ErrTimeout   = "timeout"     // Config.Timeout passed at any stage
	ErrSign      = "sign"        // ModeKeyless: the key server's answer was an error or a bad signature
)

// ErrorKinds lists the error kinds in report order.
var ErrorKinds = []string{ErrDial, ErrHandshake, ErrStatus, ErrRead, ErrTimeout, ErrSign}

// Config describes a run.
type Config struct {
	Addr  string   // host:port of the edge (required but in ModeKeyless)
	Mode  string   // one of Modes [ModeHandshake]
	Names []string // server names (SNI and Host) to draw from (required but in ModeKeyless)
	Dist  string   // DistZipf [default], DistUniform or DistSequential
	ZipfS float64  // Zipf exponent [DefaultZipfS]
	Seed  uint64   // seed of the name draws [1]

	// RootCAs verify the edge's certificates, with the drawn name as
	// ServerName. Nil: the system roots.
	RootCAs *x509.CertPool
	// Curves are the client's key exchange preferences. Nil: crypto/tls's
	// defaults (X25519MLKEM768 first).
	Curves []tls.CurveID
	// TLSVersion, if set, is the only TLS version the client offers
	// (tls.VersionTLS12 or tls.VersionTLS13); zero offers both.
	TLSVersion uint16
	// CertKeys, if set, are the server certificate key types the client
	// accepts (see ParseCertKeys): a handshake with any other fails. In
	// TLS 1.2 the client also offers only the cipher suites for them, so
	// a server holding several certificates for a name picks one of
	// these. crypto/tls does not let a TLS 1.3 client restrict its
	// signature_algorithms, so there the names must be chosen to match.
	CertKeys []x509.PublicKeyAlgorithm
	HTTP2    bool   // keep-alive mode over HTTP/2 instead of HTTP/1.1
	Path     string // request path ["/"]

	Concurrency int // parallel workers (connections in keep-alive mode, signatures in flight in keyless mode) [1]

	// Keyless is the key server and key of ModeKeyless.
	Keyless *Keyless

	// A run ends when Duration has passed or Requests requests have been
	// made, whichever comes first; requests in flight then finish (each
	// is bounded by Timeout). With neither set, Duration is 10s.
	Duration time.Duration
	Requests int64
	// Timeout bounds each request, connect and handshake included [10s].
	Timeout time.Duration

	// ServerPIDs are the server's processes: their CPU time (user +
	// system, from /proc/PID/stat) over the run gives Result.ServerCPU.
	// OriginPIDs are measured the same way, separately.
	ServerPIDs []int
	OriginPIDs []int
	// MetricsURL, if set, is the edge's /metrics: the keyedge_* counters
	// that changed during the run are in Result.Metrics.
	MetricsURL string

	// Progress, if set, gets a line every ProgressInterval [1s] with the
	// rate so far and the errors.
	Progress         io.Writer
	ProgressInterval time.Duration

	// Label and Scenario name the run in reports: Summarize groups runs
	// by them (e.g. Label "100000 tenants", Scenario "handshake").
	Label, Scenario string
}

// Result is what a run measured. Durations are in seconds, latencies in
// milliseconds.
type Result struct {
	Label       string    `json:"label,omitempty"`
	Scenario    string    `json:"scenario,omitempty"`
	Mode        string    `json:"mode"`
	HTTP2       bool      `json:"http2"`
	Addr        string    `json:"addr"`
	Names       int       `json:"names"`
	Dist        string    `json:"dist"`
	ZipfS       float64   `json:"zipf_s,omitempty"`
	Seed        uint64    `json:"seed"`
	Curves      []string  `json:"curves"`
	Concurrency int       `json:"concurrency"`
	Start       time.Time `json:"start"`
	Seconds     float64   `json:"seconds"` // wall time, until the last request finished
	ClientProcs int       `json:"client_gomaxprocs"`

	Requests int64            `json:"requests"` // successful (status 200, body read)
	Errors   map[string]int64 `json:"errors"`   // by kind, every kind present
	// ErrorSamples holds the first error message seen of each kind.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	Statuses     map[int]int64     `json:"statuses,omitempty"` // non-200 statuses
	// Aborted requests were cut off because the caller's context ended;
	// they are neither successes nor errors. Requests + errors + Aborted
	// is every request started.
	Aborted int64   `json:"aborted"`
	Rate    float64 `json:"rate"` // Requests per second

	// Handshakes are the TLS handshakes that completed, and what they
	// negotiated: key exchange group, TLS version, ALPN protocol.
	Handshakes    int64            `json:"handshakes"`
	HandshakeRate float64          `json:"handshake_rate"`
	Groups        map[string]int64 `json:"groups"`
	Versions      map[string]int64 `json:"versions"`
	Protocols     map[string]int64 `json:"protocols"`
	// CertKeys counts the key types of the server certificates the
	// completed handshakes verified, e.g. "ECDSA P-256", "RSA-2048".
	CertKeys map[string]int64 `json:"cert_keys"`
	// Resumed handshakes resumed a session; ResumeOffered offered one
	// (ModeResumed). ResumedShare is Resumed over Handshakes.
	Resumed       int64   `json:"resumed"`
	ResumeOffered int64   `json:"resume_offered"`
	ResumedShare  float64 `json:"resumed_share"`
	// TLSVersion and AcceptedCertKeys are Config.TLSVersion and
	// Config.CertKeys, when set.
	TLSVersion       string   `json:"tls_version,omitempty"`
	AcceptedCertKeys []string `json:"accepted_cert_keys,omitempty"`
	// SignKey is the type of the key signed with in ModeKeyless, e.g.
	// "ECDSA P-256" (Addr is the key server's).
	SignKey string `json:"sign_key,omitempty"`

	// Latency is per successful request: in handshake mode from the
	// start of the TCP connect to the end of the response body; in
	// keep-alive mode from sending the request to the end of the body
	// (a new connection's handshake is not included); in keyless mode
	// one signature, from asking to the answer. Handshake is the
	// TLS handshake alone (ClientHello to Finished), for every completed
	// handshake.
	Latency   Percentiles `json:"latency"`
	Handshake Percentiles `json:"handshake"`

	// CPU seconds used during the run. ServerCores is ServerCPU over the
	// wall time: 1.0 is one core kept busy.
	ServerPIDs             []int           `json:"server_pids,omitempty"`
	ServerCPU              float64         `json:"server_cpu_seconds"`
	ServerCPUByPID         map[int]float64 `json:"server_cpu_by_pid,omitempty"`
	ServerCores            float64         `json:"server_cores"`
	RequestsPerServerCPU   float64         `json:"requests_per_server_cpu_second"`
	HandshakesPerServerCPU float64         `json:"handshakes_per_server_cpu_second"`
	OriginCPU              float64         `json:"origin_cpu_seconds,omitempty"`
	ClientCPU              float64         `json:"client_cpu_seconds"` // this process
	ClientCores            float64         `json:"client_cores"`
	ClockTicks             int64           `json:"clock_ticks_per_second"`
	// CPUs is how busy each CPU of the machine was, whoever used it.
	// OtherCores is the CPU time, in cores, that neither the server, the
	// origin, this process nor softirq (loopback networking) accounts
	// for: other processes competing for the machine. Near 0 on a quiet
	// machine; it is only as exact as the clock tick.
	CPUs       []CPUBusy          `json:"cpus,omitempty"`
	OtherCores float64            `json:"other_cores"`
	Metrics    map[string]float64 `json:"metrics,omitempty"` // keyedge_* counters' change
	Warnings   []string           `json:"warnings,omitempty"`
}

// Errs is the total of Errors.
func (r *Result) Errs() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// stageError marks the stage a request failed in.
type stageError struct {
	kind string
	err  error
}

func (e *stageError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// shared is the state the workers of a run share.
type shared struct {
	cfg     *Config
	parent  context.Context // the caller's: its end aborts requests in flight
	stop    context.Context // ends when no new request may start
	signer  *signer         // ModeKeyless
	next    atomic.Uint64   // DistSequential's next name
	tickets atomic.Int64
	ok      atomic.Int64
	errs    atomic.Int64
}

// take reports whether a worker may start another request.
func (s *shared) take() bool {
	if s.stop.Err() != nil {
		return false
	}
	return s.cfg.Requests <= 0 || s.tickets.Add(1) <= s.cfg.Requests
}

// Run drives load at cfg.Addr until the run's bounds and returns what it
// measured. It returns an error only when the run cannot start or its
// measurements cannot be read, or (with the Result) ErrNotResumed;
// failed requests are counted in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.Mode = cmp.Or(cfg.Mode, ModeHandshake)
	switch {
	case !slices.Contains(Modes, cfg.Mode):
		return nil, fmt.Errorf("bench: unknown mode %q (want one of %s)", cfg.Mode, strings.Join(Modes, ", "))
	case cfg.Mode == ModeKeyless && cfg.Keyless == nil:
		return nil, errors.New("bench: keyless mode needs Config.Keyless")
	case cfg.Mode == ModeKeyless:
		cfg.Addr = cfg.Keyless.Addr
	case cfg.Addr == "":
		return nil, errors.New("bench: no address")
	}
	if cfg.HTTP2 && cfg.Mode != ModeKeepAlive {
		return nil, errors.New("bench: HTTP/2 is for keep-alive mode only")
	}
	cfg.Dist = cmp.Or(cfg.Dist, DistZipf)
	if cfg.ZipfS == 0 {
		cfg.ZipfS = DefaultZipfS
	}
	cfg.Seed = cmp.Or(cfg.Seed, 1)
	cfg.Path = cmp.Or(cfg.Path, "/")
	cfg.Concurrency = max(cfg.Concurrency, 1)
	cfg.Timeout = cmp.Or(cfg.Timeout, 10*time.Second)
	cfg.ProgressInterval = cmp.Or(cfg.ProgressInterval, time.Second)
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		cfg.Duration = 10 * time.Second
	}

	sh := &shared{cfg: &cfg, parent: ctx}
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		var p *picker
		if cfg.Mode != ModeKeyless {
			var err error
			if p, err = newPicker(cfg.Names, cfg.Dist, cfg.ZipfS, cfg.Seed, uint64(i), &sh.next); err != nil {
				return nil, err
			}
		}
		workers[i] = newWorker(&cfg, p)
	}
	if cfg.Mode == ModeKeyless {
		var err error
		if sh.signer, err = cfg.Keyless.open(ctx, cfg.Timeout); err != nil {
			return nil, err
		}
		defer sh.signer.close()
	}

	var metricsBefore map[string]float64
	if cfg.MetricsURL != "" {
		var err error
		if metricsBefore, err = scrapeMetrics(ctx, cfg.MetricsURL); err != nil {
			return nil, err
		}
	}
	self := os.Getpid()
	serverBefore, err := snapshotCPU(cfg.ServerPIDs)
	if err != nil {
		return nil, err
	}
	originBefore, err := snapshotCPU(cfg.OriginPIDs)
	if err != nil {
		return nil, err
	}
	selfBefore, err := snapshotCPU([]int{self})
	if err != nil {
		return nil, err
	}
	cpusBefore, cpusErr := readCPUTimes()

	start := time.Now()
	stop, cancel := context.WithCancel(ctx)
	if cfg.Duration > 0 {
		stop, cancel = context.WithTimeout(ctx, cfg.Duration)
	}
	defer cancel()
	sh.stop = stop
	var wg sync.WaitGroup
	for _, w := range workers {
		w.sh = sh
		wg.Go(w.run)
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Go(func() { sh.progress(start, progressDone) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(progressDone)
	progressWG.Wait()

	r := &Result{
		Label: cfg.Label, Scenario: cfg.Scenario,
		Mode: cfg.Mode, HTTP2: cfg.HTTP2, Addr: cfg.Addr, Names: len(cfg.Names),
		Dist: cfg.Dist, Seed: cfg.Seed, Concurrency: cfg.Concurrency,
		Start: start, Seconds: elapsed.Seconds(), ClientProcs: runtime.GOMAXPROCS(0),
		ClockTicks: ClockTicks(), ServerPIDs: cfg.ServerPIDs,
		Errors: make(map[string]int64), ErrorSamples: make(map[string]string), Statuses: make(map[int]int64),
		Groups: make(map[string]int64), Versions: make(map[string]int64), Protocols: make(map[string]int64),
		CertKeys: make(map[string]int64),
	}
	if cfg.TLSVersion != 0 {
		r.TLSVersion = tls.VersionName(cfg.TLSVersion)
	}
	for _, k := range cfg.CertKeys {
		r.AcceptedCertKeys = append(r.AcceptedCertKeys, k.String())
	}
	if sh.signer != nil {
		r.SignKey = sh.signer.keyType
	}
	if cfg.Dist == DistZipf {
		r.ZipfS = cfg.ZipfS
	}
	r.Curves = make([]string, 0, len(cfg.Curves))
	for _, c := range cfg.Curves {
		r.Curves = append(r.Curves, tlsconf.CurveName(c))
	}
	for _, k := range ErrorKinds {
		r.Errors[k] = 0
	}
	latency, handshake := NewHistogram(), NewHistogram()
	for _, w := range workers {
		w.mergeInto(r, latency, handshake)
	}
	r.Latency, r.Handshake = latency.Summary(), handshake.Summary()
	r.Rate = float64(r.Requests) / elapsed.Seconds()
	r.HandshakeRate = float64(r.Handshakes) / elapsed.Seconds()
	if r.Handshakes > 0 {
		r.ResumedShare = float64(r.Resumed) / float64(r.Handshakes)
	}
	if r.Resumed < r.ResumeOffered {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the server declined %d of the %d sessions offered", r.ResumeOffered-r.Resumed, r.ResumeOffered))
	}

	if len(cfg.ServerPIDs) > 0 {
		after, err := snapshotCPU(cfg.ServerPIDs)
		if err != nil {
			return r, fmt.Errorf("bench: after the run (did the server exit?): %w", err)
		}
		r.ServerCPUByPID, r.ServerCPU = serverBefore.since(after)
		r.ServerCores = r.ServerCPU / elapsed.Seconds()
		if r.ServerCPU > 0 {
			r.RequestsPerServerCPU = float64(r.Requests) / r.ServerCPU
			r.HandshakesPerServerCPU = float64(r.Handshakes) / r.ServerCPU
		}
	}
	if len(cfg.OriginPIDs) > 0 {
		after, err := snapshotCPU(cfg.OriginPIDs)
		if err != nil {
			r.Warnings = append(r.Warnings, err.Error())
		} else {
			_, r.OriginCPU = originBefore.since(after)
		}
	}
	if cpusErr == nil {
		if after, err := readCPUTimes(); err == nil {
			r.CPUs = cpuBusy(cpusBefore, after)
		}
	} else {
		r.Warnings = append(r.Warnings, "per-CPU time: "+cpusErr.Error())
	}
	if after, err := snapshotCPU([]int{self}); err == nil {
		_, r.ClientCPU = selfBefore.since(after)
		r.ClientCores = r.ClientCPU / elapsed.Seconds()
	}
	if len(r.CPUs) > 0 {
		r.OtherCores = -(r.ServerCPU + r.OriginCPU + r.ClientCPU) / elapsed.Seconds()
		for _, c := range r.CPUs {
			r.OtherCores += c.Busy - c.Softirq
		}
	}
	if cfg.MetricsURL != "" {
		after, err := scrapeMetrics(ctx, cfg.MetricsURL)
		if err != nil {
			r.Warnings = append(r.Warnings, err.Error())
		} else {
			r.Metrics = metricsDelta(metricsBefore, after)
		}
	}
	if cfg.Mode == ModeResumed && r.Handshakes > 0 && r.Resumed == 0 {
		return r, fmt.Errorf("%w (%d handshakes, %d offered a session)", ErrNotResumed, r.Handshakes, r.ResumeOffered)
	}
	return r, nil
}

// progress prints the rate so far every interval until done closes.
func (s *shared) progress(start time.Time, done <-chan struct{}) {
	t := time.NewTicker(s.cfg.ProgressInterval)
	defer t.Stop()
	var lastOK int64
	last := start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			ok, errs := s.ok.Load(), s.errs.Load()
			fmt.Fprintf(s.cfg.Progress, "edgebench: %5.1fs %9d ok %9.0f/s (last %.0f/s) errors %d\n",
				now.Sub(start).Seconds(), ok, float64(ok)/now.Sub(start).Seconds(),
				float64(ok-lastOK)/now.Sub(last).Seconds(), errs)
			lastOK, last = ok, now
		}
	}
}

// worker makes one request at a time; its counters are its own until
// the run ends.
type worker struct {
	cfg    *Config
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

	// Connection stats: with HTTP/2, connect runs on net/http's dialing
	// goroutine, so they have their own lock.
	connMu    sync.Mutex
	handshake *Histogram
	conns     int64
	groups    map[string]int64
	versions  map[string]int64
	protos    map[string]int64
	certKeys  map[string]int64
	resumed   int64
	offered   *offerCounter // ModeResumed: the session cache's hits
}

func newWorker(cfg *Config, p *picker) *worker {
	w := &worker{
		cfg:    cfg,
		picker: p,
		base: &tls.Config{
			RootCAs:          cfg.RootCAs,
			CurvePreferences: cfg.Curves,
			MinVersion:       cmp.Or(cfg.TLSVersion, tls.VersionTLS12),
			MaxVersion:       cfg.TLSVersion,
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
	if cfg.HTTP2 {
		w.base.NextProtos = []string{"h2"}
	}
	if len(cfg.CertKeys) > 0 {
		w.base.CipherSuites = tls12Suites(cfg.CertKeys)
		w.base.VerifyConnection = acceptCertKeys(cfg.CertKeys)
	}
	if cfg.Mode == ModeResumed {
		w.offered = &offerCounter{ClientSessionCache: tls.NewLRUClientSessionCache(min(len(cfg.Names), sessionCacheSize))}
		w.base.ClientSessionCache = w.offered
	}
	return w
}

// sessionCacheSize bounds a ModeResumed worker's session cache: names
// beyond it are drawn again only after their session was evicted, and
// get a full handshake then.
const sessionCacheSize = 1024

// offerCounter is a client session cache that counts the handshakes
// that found a session to offer. A worker's handshakes run one at a
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
	case w.cfg.Mode == ModeHandshake || w.cfg.Mode == ModeResumed:
		w.runHandshakes()
	case w.cfg.Mode == ModeKeyless:
		w.runKeyless()
	case w.cfg.HTTP2:
		w.runKeepAliveH2()
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

// runKeepAliveH2: one HTTP/2 connection (a transport of its own, dialing
// through connect), GETs back to back.
func (w *worker) runKeepAliveH2() {
	name := w.picker.pick()
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return w.connect(ctx, name)
		},
		ForceAttemptHTTP2:   true,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	url := "https://" + name + w.cfg.Path
	for w.sh.take() {
		start := time.Now()
		err := w.getH2(tr, url)
		w.finish(start, err)
	}
}

func (w *worker) getH2(tr *http.Transport, url string) error {
	ctx, cancel := context.WithTimeout(w.sh.parent, w.cfg.Timeout)
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
	if resp.ProtoMajor != 2 {
		return &stageError{ErrRead, fmt.Errorf("response over %s, not HTTP/2", resp.Proto)}
	}
	return nil
}

// connect dials the edge and completes a TLS handshake for name.
func (w *worker) connect(ctx context.Context, name string) (*tls.Conn, error) {
	deadline := time.Now().Add(w.cfg.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	raw, err := w.dialer.DialContext(ctx, "tcp", w.cfg.Addr)
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
	d := time.Since(start)
	cs := c.ConnectionState()
	w.connMu.Lock()
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
	w.connMu.Unlock()
	if w.cfg.HTTP2 {
		raw.SetDeadline(time.Time{}) // net/http sets its own per request
	}
	return c, nil
}

// get sends one HTTP/1.1 GET on c and reads the whole response. closed
// reports that the connection cannot carry another request.
func (w *worker) get(c *tls.Conn, name string, close bool) (closed bool, err error) {
	c.SetDeadline(time.Now().Add(w.cfg.Timeout))
	req := "GET " + w.cfg.Path + " HTTP/1.1\r\nHost: " + name + "\r\nUser-Agent: edgebench\r\n"
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

// WaitReady makes one request as cfg describes (the first name, a new
// connection) every few milliseconds until one succeeds or within has
// passed, for measuring how long a server takes to start serving. It
// returns when the success came, or an error with the last failure.
func WaitReady(ctx context.Context, cfg Config, within time.Duration) (time.Time, error) {
	cfg.Concurrency, cfg.Requests, cfg.Duration = 1, 1, 0
	cfg.Names = cfg.Names[:min(len(cfg.Names), 1)]
	cfg.ServerPIDs, cfg.OriginPIDs, cfg.MetricsURL, cfg.Progress = nil, nil, "", nil
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	cfg.Timeout = min(cmp.Or(cfg.Timeout, within), within)
	last := errors.New("no attempt")
	for {
		r, err := Run(ctx, cfg)
		switch {
		case err != nil:
			return time.Time{}, err
		case r.Requests == 1:
			return r.Start.Add(time.Duration(r.Seconds * float64(time.Second))), nil
		}
		for k, msg := range r.ErrorSamples {
			last = fmt.Errorf("%s: %s", k, msg)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("bench: %s not serving after %v: %w", cfg.Addr, within, last)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
