// Command edgebench drives HTTPS load at a TLS edge (keyedge, or any
// HTTPS server), or signing load at a Keyless SSL key server, and reports
// the rate, latency percentiles, errors by kind, what the handshakes
// negotiated and, given the server's PIDs, the server's CPU time.
//
// Usage:
//
//	edgebench -addr HOST:PORT (-names FILE | -tenants N [-domain D]) [flags]
//	edgebench -mode keyless -key-server HOST:PORT -identity-cert F -identity-key F -key-server-ca F -key-cert F [flags]
//	edgebench -summarize [-plot FILE] RESULT.json...
//
// -mode handshake makes a new TCP connection and a full TLS handshake for
// every request (no resumption); -mode resumed does the same with a
// session cache shared by the workers, so after a name's first handshake
// the rest resume (it fails when none did); -mode keepalive keeps -c connections
// busy; -h2 makes any of these HTTP/2, -h3 HTTP/3 over QUIC
// (connections and handshakes are QUIC's then); -mode keyless keeps -c signatures in flight to a key server. The
// run ends after -duration or -requests, whichever comes first, and
// prints a progress line every second on stderr (-q: none). -json writes
// the result for `edgebench -summarize`, which prints a markdown table of
// medians over several results; -plot draws them (SVG or PNG).
// bench/matrix.sh runs the benchmarks with it; see bench/RESULTS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyedge/keyedge/bench"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is edgebench with args, returning its exit status: 0, 1 when the
// run failed, 2 for a usage error, 3 when -max-other-load was exceeded.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 1 && args[0] == "help":
		args = []string{"-h"}
	case len(args) == 1 && args[0] == "version":
		args = []string{"-version"}
	}
	var c command
	fs := c.flagSet()
	rest, err := cli.Parse(fs, args, stdout)
	if err != nil {
		return cli.Exit("edgebench", fs, stderr, err)
	}
	switch {
	case c.version:
		fmt.Fprint(stdout, cli.Version("edgebench"))
		return 0
	case c.origin != "":
		return c.serveOrigin(ctx, stderr)
	case c.summarize:
		return c.summarizeResults(rest, stdout, stderr)
	case len(rest) > 0:
		return fail(stderr, usageError{fmt.Errorf("unexpected arguments %q", rest)})
	}
	opts, err := c.options(stderr)
	if err != nil {
		return fail(stderr, err)
	}
	if c.readyWithin > 0 {
		return c.waitReady(ctx, opts, stdout, stderr)
	}
	return c.load(ctx, opts, stdout, stderr)
}

// command holds edgebench's flags: the options of a run, and the flags
// that become them or say what to do around it.
type command struct {
	opts bench.Options

	namesFile, domain string
	tenants           int
	caFile            string
	curves            string
	tlsVersion        string
	certKeys          string
	serverPIDs        string
	originPIDs        string

	// Keyless mode.
	keyServer, idCert, idKey, keyServerCA, keyCert string
	keyConns                                       int

	jsonFile, plotFile string
	quiet              bool
	quietLoad          float64
	quietFor           time.Duration
	maxOther           float64

	summarize   bool
	version     bool
	origin      string
	readyWithin time.Duration
	startedAt   int64
}

// hiddenFlags are for bench/edge.sh, not shown in -h.
var hiddenFlags = map[string]bool{"serve-origin": true, "ready-within": true, "started-at": true}

// flagSet returns edgebench's flags, parsed into c.
func (c *command) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("edgebench", flag.ContinueOnError)
	fs.BoolVar(&c.version, "version", false, "print the version and VCS revision of this build, and exit")
	fs.StringVar(&c.namesFile, "names", "", "file of server names, one a line")
	fs.IntVar(&c.tenants, "tenants", 0, "use the generated tenant names t0…t<N-1>.<domain> (instead of -names)")
	fs.StringVar(&c.domain, "domain", "keyedge.test", "domain of -tenants names")
	fs.StringVar(&c.caFile, "ca", "", "PEM file of the CA that issued the edge's certificates (default: system roots)")
	fs.StringVar(&c.curves, "curves", "", "client key exchange preferences, e.g. X25519MLKEM768,X25519,P-256 (default: crypto/tls's)")
	fs.StringVar(&c.serverPIDs, "server-pid", "", "comma-separated PIDs of the server, for its CPU time")
	fs.StringVar(&c.originPIDs, "origin-pid", "", "comma-separated PIDs of the origin, for its CPU time (reported apart)")
	fs.StringVar(&c.jsonFile, "json", "", "write the result as JSON to this file")
	fs.BoolVar(&c.quiet, "q", false, "no progress lines on stderr")
	fs.BoolVar(&c.summarize, "summarize", false, "print a markdown table of the JSON results named as arguments, and exit")
	fs.StringVar(&c.origin, "serve-origin", "", "run the benchmark origin on this address until killed")
	fs.Float64Var(&c.quietLoad, "wait-quiet", 0, "before the run, wait (up to -wait-quiet-for) until the machine's load is at most this many cores (0: don't)")
	fs.DurationVar(&c.quietFor, "wait-quiet-for", time.Minute, "longest wait for -wait-quiet")
	fs.Float64Var(&c.maxOther, "max-other-load", 0, "exit with status 3 when other processes used more than this many cores during the run (0: no limit); with -summarize, leave such runs out of the figures")
	fs.StringVar(&c.plotFile, "plot", "", "draw the result (with -summarize: every result) to this .svg or .png file")
	fs.StringVar(&c.tlsVersion, "tls", "", "offer only this TLS version: 1.2 or 1.3 (default both)")
	fs.StringVar(&c.certKeys, "sig", "", "server certificate key types (so signature algorithms) to accept, e.g. ecdsa or rsa; with -tls 1.2 only their cipher suites are offered (default any)")
	fs.StringVar(&c.keyServer, "key-server", "", "keyless mode: host:port of the key server")
	fs.StringVar(&c.idCert, "identity-cert", "", "keyless mode: PEM certificate chain of the client's mTLS identity")
	fs.StringVar(&c.idKey, "identity-key", "", "keyless mode: PEM key of the client's mTLS identity")
	fs.StringVar(&c.keyServerCA, "key-server-ca", "", "keyless mode: PEM CA of the key server's certificate")
	fs.StringVar(&c.keyCert, "key-cert", "", "keyless mode: PEM certificate of the key to sign with (the key server finds it by its SKI)")
	fs.IntVar(&c.keyConns, "key-conns", 0, "keyless mode: connections to the key server (default the edge's, 2)")
	fs.DurationVar(&c.readyWithin, "ready-within", 0, "instead of a run, retry one request until it succeeds, up to this long, and print ready_seconds")
	fs.Int64Var(&c.startedAt, "started-at", 0, "with -ready-within: the server's start, Unix nanoseconds; ready_seconds counts from it")
	o := &c.opts
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:443", "host:port of the edge")
	fs.StringVar(&o.Mode, "mode", bench.ModeHandshake, "handshake (new connection and full handshake per request), resumed (the same, resuming sessions), keepalive, or keyless (signatures from a key server)")
	fs.BoolVar(&o.HTTP2, "h2", false, "HTTP/2 instead of HTTP/1.1, in handshake, resumed or keepalive mode")
	fs.BoolVar(&o.HTTP3, "h3", false, "HTTP/3 over QUIC to the UDP port of -addr instead of TCP, in handshake, resumed or keepalive mode")
	fs.StringVar(&o.Dist, "dist", bench.DistZipf, "name distribution: zipf, uniform or seq (in turn)")
	fs.Float64Var(&o.ZipfS, "zipf-s", bench.DefaultZipfS, "Zipf exponent (> 1)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the name draws")
	fs.IntVar(&o.Concurrency, "c", 16, "concurrent requests (connections in keepalive mode, signatures in flight in keyless mode)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "stop after this long (0: only -requests bounds the run)")
	fs.Int64Var(&o.Requests, "requests", 0, "stop after this many requests (0: only -duration bounds the run)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "bound on each request, connect and handshake included")
	fs.StringVar(&o.Path, "path", "/", "request path")
	fs.StringVar(&o.MetricsURL, "metrics", "", "the edge's /metrics URL: report the keyedge_* counters that changed")
	fs.StringVar(&o.Label, "label", "", "label of the run in reports, e.g. \"100000 tenants\"")
	fs.StringVar(&o.Scenario, "scenario", "", "scenario of the run in reports, e.g. \"handshake\"")
	fs.Usage = func() {
		w := fs.Output() // standard output for -h, see cli.Parse
		fmt.Fprintln(w, "usage: edgebench -addr HOST:PORT (-names FILE | -tenants N) [flags]\n       edgebench -mode keyless -key-server HOST:PORT -identity-cert F -identity-key F -key-server-ca F -key-cert F [flags]\n       edgebench -summarize [-plot FILE] RESULT.json...\n\nflags:")
		fs.VisitAll(func(f *flag.Flag) {
			if hiddenFlags[f.Name] {
				return
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(w, "  -%s\n    \t%s%s\n", f.Name, f.Usage, def)
		})
	}
	return fs
}

// usageError is a problem with the command line: exit status 2.
type usageError struct{ error }

// fail prints err, a line "edgebench: …" per problem, and returns the
// exit status: 2 for a usageError, else 1.
func fail(stderr io.Writer, err error) int {
	for line := range strings.Lines(err.Error()) {
		fmt.Fprintf(stderr, "edgebench: %s", line)
		if !strings.HasSuffix(line, "\n") {
			fmt.Fprintln(stderr)
		}
	}
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// options turns the flags into the run's options: first every problem
// that needs no file read to see (one usageError), then the files they
// name are read, then the options pass bench.Options.Check.
func (c *command) options(stderr io.Writer) (bench.Options, error) {
	o := c.opts
	var errs []error
	switch {
	case o.Mode == bench.ModeKeyless:
		if c.keyServer == "" || c.idCert == "" || c.idKey == "" || c.keyServerCA == "" || c.keyCert == "" {
			errs = append(errs, errors.New("keyless mode needs -key-server, -identity-cert, -identity-key, -key-server-ca and -key-cert"))
		}
	case c.namesFile != "" && c.tenants > 0:
		errs = append(errs, errors.New("-names and -tenants exclude each other"))
	case c.namesFile == "" && c.tenants <= 0:
		errs = append(errs, errors.New("need -names FILE or -tenants N"))
	}
	if o.Duration <= 0 && o.Requests <= 0 {
		errs = append(errs, errors.New("need a positive -duration or -requests: the run must end"))
	}
	var err error
	if o.Curves, err = bench.ParseCurves(c.curves); err != nil {
		errs = append(errs, err)
	}
	if o.TLSVersion, err = bench.ParseTLSVersion(c.tlsVersion); err != nil {
		errs = append(errs, err)
	}
	if o.CertKeys, err = bench.ParseCertKeys(c.certKeys); err != nil {
		errs = append(errs, err)
	}
	if o.ServerPIDs, err = parsePIDs(c.serverPIDs); err != nil {
		errs = append(errs, fmt.Errorf("-server-pid: %w", err))
	}
	if o.OriginPIDs, err = parsePIDs(c.originPIDs); err != nil {
		errs = append(errs, fmt.Errorf("-origin-pid: %w", err))
	}
	if len(errs) > 0 {
		return o, usageError{errors.Join(errs...)}
	}

	switch {
	case o.Mode == bench.ModeKeyless:
		if o.Keyless, err = bench.LoadKeyless(c.keyServer, c.idCert, c.idKey, c.keyServerCA, c.keyCert); err != nil {
			return o, err
		}
		o.Keyless.Conns = c.keyConns
	case c.namesFile != "":
		if o.Names, err = bench.ReadNames(c.namesFile); err != nil {
			return o, err
		}
	default:
		o.Names = bench.TenantNames(c.tenants, c.domain)
	}
	if c.caFile != "" {
		if o.RootCAs, err = certs.ReadCertPool(c.caFile); err != nil {
			return o, err
		}
	}
	if !c.quiet {
		o.Progress = stderr
	}
	if err := o.Check(); err != nil {
		return o, usageError{err}
	}
	return o, nil
}

func parsePIDs(list string) ([]int, error) {
	var pids []int
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		pid, err := strconv.Atoi(s)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("bad PID %q", s)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// serveOrigin is -serve-origin: the benchmark origin until killed.
func (c *command) serveOrigin(ctx context.Context, stderr io.Writer) int {
	err := bench.ServeOrigin(ctx, c.origin, func(a net.Addr) {
		fmt.Fprintf(stderr, "edgebench: origin listening on http://%s\n", a)
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return fail(stderr, fmt.Errorf("origin: %w", err))
	}
	return 0
}

// summarizeResults is -summarize: a markdown table of the results in
// files, and with -plot their figure.
func (c *command) summarizeResults(files []string, stdout, stderr io.Writer) int {
	if len(files) == 0 {
		return fail(stderr, usageError{errors.New("-summarize needs JSON result files")})
	}
	var results []*bench.Result
	for _, path := range files {
		r, err := bench.ReadJSON(path)
		if err != nil {
			return fail(stderr, err)
		}
		results = append(results, r)
	}
	bench.Summarize(stdout, results, c.maxOther)
	if c.plotFile != "" {
		if err := bench.WritePlot(c.plotFile, results); err != nil {
			return fail(stderr, err)
		}
	}
	return 0
}

// waitReady is -ready-within: one request retried until it succeeds,
// and the time it took from -started-at (or now).
func (c *command) waitReady(ctx context.Context, opts bench.Options, stdout, stderr io.Writer) int {
	since := time.Now()
	if c.startedAt > 0 {
		since = time.Unix(0, c.startedAt)
	}
	at, err := bench.WaitReady(ctx, opts, c.readyWithin)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "ready_seconds=%.4f\n", at.Sub(since).Seconds())
	return 0
}

// load is a run: wait for a quiet machine if asked, drive the load,
// print the report and write the files asked for.
func (c *command) load(ctx context.Context, opts bench.Options, stdout, stderr io.Writer) int {
	if c.quietLoad > 0 {
		load, ok, err := bench.WaitQuiet(ctx, c.quietLoad, c.quietFor)
		if err != nil {
			return fail(stderr, err)
		}
		if !ok {
			fmt.Fprintf(stderr, "edgebench: the machine is still busy (%.2f cores) after %v; running anyway\n", load, c.quietFor)
		}
	}
	res, runErr := bench.Run(ctx, opts)
	if runErr != nil {
		fail(stderr, runErr)
		if res == nil {
			return 1
		}
	}
	bench.WriteText(stdout, res)
	if c.jsonFile != "" {
		if err := bench.WriteJSON(c.jsonFile, res); err != nil {
			return fail(stderr, err)
		}
	}
	if c.plotFile != "" {
		if err := bench.WritePlot(c.plotFile, []*bench.Result{res}); err != nil {
			return fail(stderr, err)
		}
	}
	if runErr != nil {
		return 1
	}
	if c.maxOther > 0 && res.OtherCores > c.maxOther {
		fmt.Fprintf(stderr, "edgebench: other processes used %.2f cores during the run, more than -max-other-load %.2f\n", res.OtherCores, c.maxOther)
		return 3
	}
	return 0
}
