// Command keyedge runs an edge node: flags, signals and process
// plumbing around package edge, with edge.yaml loaded and wired by
// package internal/config.
//
// Usage:
//
//	keyedge serve --config edge.yaml [--pid-file FILE]
//	keyedge check-config --config edge.yaml
//	keyedge demo [--tenants N] [--check]
//
// serve terminates TLS for every tenant in the configured keystore and
// proxies to their origins. SIGTERM or SIGINT drains (stop accepting,
// finish requests in flight up to limits.drain_timeout); SIGHUP applies
// the re-read file without dropping connections, all of it or nothing: a
// file that does not load, or that changes a setting only a new process
// can apply (listen, keystore, fleet_key_file, …: each is named), is
// refused and the running config stays (see edge/testdata/edge.yaml for
// which settings SIGHUP applies); SIGUSR1 reopens the access log file,
// for logrotate; SIGUSR2 restarts
// with no downtime: a new process of the (possibly replaced) executable
// takes over the listening sockets, and this one drains once it is
// ready. --pid-file keeps the serving process's PID, for systemd.
//
// check-config checks a config file and every file it names as serve
// does, lists every problem and exits 1 if there is one (nginx -t).
//
// demo builds everything on one machine in a temp dir: a keystore of
// generated tenants, an origin and an edge on 127.0.0.1, and prints what
// to curl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: keyedge serve --config edge.yaml [--pid-file FILE] | keyedge check-config --config edge.yaml | keyedge demo [--tenants N] [--check]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("keyedge serve", flag.ContinueOnError)
		fs.SetOutput(stderr)
		config := fs.String("config", "edge.yaml", "config file")
		pidFile := fs.String("pid-file", "", "write the serving process's PID here (kept current across SIGUSR2 restarts)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		err = serve(ctx, *config, *pidFile, stderr)
	case "check-config":
		return checkConfig(args[1:], stdout, stderr)
	case "demo":
		fs := flag.NewFlagSet("keyedge demo", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var o demoOptions
		fs.IntVar(&o.tenants, "tenants", 1000, "number of generated tenants")
		fs.BoolVar(&o.check, "check", false, "exit after the self-check instead of serving until Ctrl-C")
		fs.StringVar(&o.listen, "listen", "127.0.0.1:8443", "edge address (a free port is used if taken)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		err = demo(ctx, o, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "keyedge: unknown command %q\n", args[0])
		return 2
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "keyedge %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
