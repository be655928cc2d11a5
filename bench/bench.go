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
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"
)

// Modes.
const (
	// ModeHandshake makes every request on a new TCP connection with a
	// full TLS handshake (no session resumption), sends one GET over
	// HTTP/1.1 with "Connection: close", reads the response and closes;
	// with Options.HTTP2 one GET over HTTP/2, with Options.HTTP3 a new
	// QUIC connection and one GET over HTTP/3.
	ModeHandshake = "handshake"
	// ModeKeepAlive keeps Concurrency persistent connections, each
	// issuing GETs back to back over HTTP/1.1 (or HTTP/2 with
	// Options.HTTP2, HTTP/3 over QUIC with Options.HTTP3). A connection's server name is drawn once, when the
	// worker starts; a connection that fails or is closed by the server
	// is replaced by a new one for the same name.
	ModeKeepAlive = "keepalive"
	// ModeResumed is ModeHandshake with a client session cache shared by
	// the workers: a name's first handshake is a full one, later ones
	// offer the session ticket the server sent and resume. Run fails with
	// ErrNotResumed when no handshake resumed.
	ModeResumed = "resumed"
	// ModeKeyless sends signing requests straight to a key server
	// (Options.Keyless) over keyserver.Client's mutual-TLS connections,
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
	ErrTimeout   = "timeout"     // Options.Timeout passed at any stage
	ErrSign      = "sign"        // ModeKeyless: the key server's answer was an error or a bad signature
)

// ErrorKinds lists the error kinds in report order.
var ErrorKinds = []string{ErrDial, ErrHandshake, ErrStatus, ErrRead, ErrTimeout, ErrSign}

// Run drives load at opts.Addr until the run's bounds and returns what
// it measured. It returns an error only when the run cannot start (opts
// fail Check, the key server cannot be reached) or its measurements
// cannot be read, or (with the Result) ErrNotResumed; failed requests
// are counted in the Result.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	if err := opts.Check(); err != nil {
		return nil, err
	}
	sh := &shared{opts: &opts, parent: ctx}
	if opts.Mode == ModeKeyless {
		var err error
		if sh.signer, err = opts.Keyless.open(ctx, opts.Timeout); err != nil {
			return nil, err
		}
		defer sh.signer.close()
	}
	workers := sh.newWorkers()
	before, err := readUsage(ctx, &opts)
	if err != nil {
		return nil, err
	}
	start, elapsed := sh.drive(ctx, workers)
	r := newResult(&opts, start, elapsed, workers, sh.signer)
	if err := before.record(ctx, &opts, r, elapsed); err != nil {
		return r, err
	}
	if opts.Mode == ModeResumed && r.Handshakes > 0 && r.Resumed == 0 {
		return r, fmt.Errorf("%w (%d handshakes, %d offered a session)", ErrNotResumed, r.Handshakes, r.ResumeOffered)
	}
	return r, nil
}

// WaitReady makes one request as opts describe (the first name, a new
// connection) every few milliseconds until one succeeds or within has
// passed, for measuring how long a server takes to start serving. It
// returns when the success came, or an error with the last failure.
func WaitReady(ctx context.Context, opts Options, within time.Duration) (time.Time, error) {
	opts.Concurrency, opts.Requests, opts.Duration = 1, 1, 0
	opts.Names = opts.Names[:min(len(opts.Names), 1)]
	opts.ServerPIDs, opts.OriginPIDs, opts.MetricsURL, opts.Progress = nil, nil, "", nil
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	opts.Timeout = min(cmp.Or(opts.Timeout, within), within)
	last := errors.New("no attempt")
	for {
		r, err := Run(ctx, opts)
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
			return time.Time{}, fmt.Errorf("bench: %s not serving after %v: %w", opts.Addr, within, last)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
