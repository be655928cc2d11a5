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
// session cache, so after a name's first handshake per worker the rest
// resume (it fails when none did); -mode keepalive keeps -c connections
// busy; -mode keyless keeps -c signatures in flight to a key server. The
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// hiddenFlags are for bench/edge.sh, not shown in -h.
var hiddenFlags = map[string]bool{"serve-origin": true, "ready-within": true, "started-at": true}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        bench.Config
		namesFile  = fs.String("names", "", "file of server names, one a line")
		tenants    = fs.Int("tenants", 0, "use the generated tenant names t0…t<N-1>.<domain> (instead of -names)")
		domain     = fs.String("domain", "keyedge.test", "domain of -tenants names")
		caFile     = fs.String("ca", "", "PEM file of the CA that issued the edge's certificates (default: system roots)")
		curves     = fs.String("curves", "", "client key exchange preferences, e.g. X25519MLKEM768,X25519,P-256 (default: crypto/tls's)")
		serverPIDs = fs.String("server-pid", "", "comma-separated PIDs of the server, for its CPU time")
		originPIDs = fs.String("origin-pid", "", "comma-separated PIDs of the origin, for its CPU time (reported apart)")
		jsonFile   = fs.String("json", "", "write the result as JSON to this file")
		quiet      = fs.Bool("q", false, "no progress lines on stderr")
		summarize  = fs.Bool("summarize", false, "print a markdown table of the JSON results named as arguments, and exit")
		origin     = fs.String("serve-origin", "", "run the benchmark origin on this address until killed")
		quietLoad  = fs.Float64("wait-quiet", 0, "before the run, wait (up to -wait-quiet-for) until the machine's load is at most this many cores (0: don't)")
		quietFor   = fs.Duration("wait-quiet-for", time.Minute, "longest wait for -wait-quiet")
		maxOther   = fs.Float64("max-other-load", 0, "exit with status 3 when other processes used more than this many cores during the run (0: no limit); with -summarize, leave such runs out of the figures")
		plotFile   = fs.String("plot", "", "draw the result (with -summarize: every result) to this .svg or .png file")
		tlsVersion = fs.String("tls", "", "offer only this TLS version: 1.2 or 1.3 (default both)")
		certKeys   = fs.String("sig", "", "server certificate key types (so signature algorithms) to accept, e.g. ecdsa or rsa; with -tls 1.2 only their cipher suites are offered (default any)")
		keyServer  = fs.String("key-server", "", "keyless mode: host:port of the key server")
		idCert     = fs.String("identity-cert", "", "keyless mode: PEM certificate chain of the client's mTLS identity")
		idKey      = fs.String("identity-key", "", "keyless mode: PEM key of the client's mTLS identity")
		ksCA       = fs.String("key-server-ca", "", "keyless mode: PEM CA of the key server's certificate")
		keyCert    = fs.String("key-cert", "", "keyless mode: PEM certificate of the key to sign with (the key server finds it by its SKI)")
		keyConns   = fs.Int("key-conns", 0, "keyless mode: connections to the key server (default the edge's, 2)")
		ready      = fs.Duration("ready-within", 0, "instead of a run, retry one request until it succeeds, up to this long, and print ready_seconds")
		startedAt  = fs.Int64("started-at", 0, "with -ready-within: the server's start, Unix nanoseconds; ready_seconds counts from it")
	)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:443", "host:port of the edge")
	fs.StringVar(&cfg.Mode, "mode", bench.ModeHandshake, "handshake (new connection and full handshake per request), resumed (the same, resuming sessions), keepalive, or keyless (signatures from a key server)")
	fs.BoolVar(&cfg.HTTP2, "h2", false, "keepalive over HTTP/2 instead of HTTP/1.1")
	fs.StringVar(&cfg.Dist, "dist", bench.DistZipf, "name distribution: zipf, uniform or seq (in turn)")
	fs.Float64Var(&cfg.ZipfS, "zipf-s", bench.DefaultZipfS, "Zipf exponent (> 1)")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the name draws")
	fs.IntVar(&cfg.Concurrency, "c", 16, "concurrent requests (connections in keepalive mode, signatures in flight in keyless mode)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "stop after this long (0: only -requests bounds the run)")
	fs.Int64Var(&cfg.Requests, "requests", 0, "stop after this many requests (0: only -duration bounds the run)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "bound on each request, connect and handshake included")
	fs.StringVar(&cfg.Path, "path", "/", "request path")
	fs.StringVar(&cfg.MetricsURL, "metrics", "", "the edge's /metrics URL: report the keyedge_* counters that changed")
	fs.StringVar(&cfg.Label, "label", "", "label of the run in reports, e.g. \"100000 tenants\"")
	fs.StringVar(&cfg.Scenario, "scenario", "", "scenario of the run in reports, e.g. \"handshake\"")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edgebench -addr HOST:PORT (-names FILE | -tenants N) [flags]\n       edgebench -mode keyless -key-server HOST:PORT -identity-cert F -identity-key F -key-server-ca F -key-cert F [flags]\n       edgebench -summarize [-plot FILE] RESULT.json...\n\nflags:")
		fs.VisitAll(func(f *flag.Flag) {
			if hiddenFlags[f.Name] {
				return
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(stderr, "  -%s\n    \t%s%s\n", f.Name, f.Usage, def)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "edgebench: "+format+"\n", a...)
		return 2
	}

	if *origin != "" {
		err := bench.ServeOrigin(ctx, *origin, func(a net.Addr) {
			fmt.Fprintf(stderr, "edgebench: origin listening on http://%s\n", a)
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "edgebench: origin: %v\n", err)
			return 1
		}
		return 0
	}
	if *summarize {
		if fs.NArg() == 0 {
			return usageErr("-summarize needs JSON result files")
		}
		var results []*bench.Result
		for _, path := range fs.Args() {
			r, err := bench.ReadJSON(path)
			if err != nil {
				fmt.Fprintf(stderr, "edgebench: %v\n", err)
				return 1
			}
			results = append(results, r)
		}
		bench.Summarize(stdout, results, *maxOther)
		if *plotFile != "" {
			if err := bench.WritePlot(*plotFile, results); err != nil {
				fmt.Fprintf(stderr, "edgebench: %v\n", err)
				return 1
			}
		}
		return 0
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}

	switch {
	case cfg.Mode == bench.ModeKeyless:
		if *keyServer == "" || *idCert == "" || *idKey == "" || *ksCA == "" || *keyCert == "" {
			return usageErr("keyless mode needs -key-server, -identity-cert, -identity-key, -key-server-ca and -key-cert")
		}
		k, err := bench.LoadKeyless(*keyServer, *idCert, *idKey, *ksCA, *keyCert)
		if err != nil {
			fmt.Fprintf(stderr, "edgebench: %v\n", err)
			return 1
		}
		k.Conns = *keyConns
		cfg.Keyless = k
	case *namesFile != "" && *tenants > 0:
		return usageErr("-names and -tenants exclude each other")
	case *namesFile != "":
		names, err := bench.ReadNames(*namesFile)
		if err != nil {
			fmt.Fprintf(stderr, "edgebench: %v\n", err)
			return 1
		}
		cfg.Names = names
	case *tenants > 0:
		cfg.Names = bench.TenantNames(*tenants, *domain)
	default:
		return usageErr("need -names FILE or -tenants N")
	}
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		return usageErr("need a positive -duration or -requests: the run must end")
	}
	var err error
	if cfg.Curves, err = bench.ParseCurves(*curves); err != nil {
		return usageErr("%v", err)
	}
	if cfg.TLSVersion, err = bench.ParseTLSVersion(*tlsVersion); err != nil {
		return usageErr("%v", err)
	}
	if cfg.CertKeys, err = bench.ParseCertKeys(*certKeys); err != nil {
		return usageErr("%v", err)
	}
	if cfg.ServerPIDs, err = parsePIDs(*serverPIDs); err != nil {
		return usageErr("-server-pid: %v", err)
	}
	if cfg.OriginPIDs, err = parsePIDs(*originPIDs); err != nil {
		return usageErr("-origin-pid: %v", err)
	}
	if *caFile != "" {
		if cfg.RootCAs, err = certs.ReadCertPool(*caFile); err != nil {
			fmt.Fprintf(stderr, "edgebench: %v\n", err)
			return 1
		}
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	if *ready > 0 {
		since := time.Now()
		if *startedAt > 0 {
			since = time.Unix(0, *startedAt)
		}
		at, err := bench.WaitReady(ctx, cfg, *ready)
		if err != nil {
			fmt.Fprintf(stderr, "edgebench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "ready_seconds=%.4f\n", at.Sub(since).Seconds())
		return 0
	}

	if *quietLoad > 0 {
		load, ok, err := bench.WaitQuiet(ctx, *quietLoad, *quietFor)
		if err != nil {
			fmt.Fprintf(stderr, "edgebench: %v\n", err)
			return 1
		}
		if !ok {
			fmt.Fprintf(stderr, "edgebench: the machine is still busy (%.2f cores) after %v; running anyway\n", load, *quietFor)
		}
	}
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "edgebench: %v\n", err)
		if res == nil {
			return 1
		}
	}
	bench.WriteText(stdout, res)
	if *jsonFile != "" {
		if werr := bench.WriteJSON(*jsonFile, res); werr != nil {
			fmt.Fprintf(stderr, "edgebench: %v\n", werr)
			return 1
		}
	}
	if *plotFile != "" {
		if werr := bench.WritePlot(*plotFile, []*bench.Result{res}); werr != nil {
			fmt.Fprintf(stderr, "edgebench: %v\n", werr)
			return 1
		}
	}
	if err != nil {
		return 1
	}
	if *maxOther > 0 && res.OtherCores > *maxOther {
		fmt.Fprintf(stderr, "edgebench: other processes used %.2f cores during the run, more than -max-other-load %.2f\n", res.OtherCores, *maxOther)
		return 3
	}
	return 0
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
