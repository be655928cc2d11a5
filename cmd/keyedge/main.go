// Command keyedge runs an edge node: flags, signals and process
// plumbing around package edge, with edge.yaml loaded and wired by
// package internal/config.
//
// Usage:
//
//	keyedge serve [--config edge.yaml] [--pid-file FILE]
//	keyedge check-config [--config edge.yaml]
//	keyedge demo [--tenants N] [--check] [--listen ADDR]
//	keyedge version
//	keyedge help [COMMAND]
//
// serve terminates TLS for every tenant in the configured keystore and
// proxies to their origins; serveHelp (keyedge serve -h) says which
// signals it takes. --pid-file keeps the serving process's PID, for
// systemd.
//
// demo builds everything on one machine in a temp dir: a keystore of
// generated tenants, an origin and an edge on 127.0.0.1, and prints what
// to curl.
//
// -h, --help and help print usage to standard output and exit 0;
// --version and version print the build's version and VCS revision. A
// usage error exits 2, a failure 1.
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

	"github.com/keyedge/keyedge/internal/cli"
)

// commands are keyedge's subcommands, for its usage.
var commands = []cli.Command{
	{Name: "serve", Args: "[--config FILE] [--pid-file FILE]", Summary: "terminate TLS for the keystore's tenants and proxy to their origins"},
	{Name: "check-config", Args: "[--config FILE]", Summary: "check a config file and every file it names as serve does; list every problem (like nginx -t)"},
	{Name: "demo", Args: "[--tenants N] [--check] [--listen ADDR]", Summary: "run a keystore, origin, key servers and an edge on 127.0.0.1 in a temp dir, and print what to try"},
	{Name: "version", Summary: "print the version and VCS revision of this build"},
	{Name: "help", Args: "[COMMAND]", Summary: "print this help, or a command's"},
}

// serveHelp is keyedge serve's usage text after the synopsis. It says
// only what serve does: keep it in step with serve.go.
const serveHelp = `Terminates TLS for every tenant in the keystore edge.yaml names and
proxies their requests to their origins. Logs go to standard error.

signals:
  SIGHUP          re-read --config and apply it without dropping connections,
                  all of it or nothing: a file that does not load or check, or
                  that changes a setting only a new process can apply
                  (listen, keystore, fleet_key_file, ...: each is named), is
                  refused, logged, and the running config stays
  SIGUSR1         reopen the access log file (for logrotate)
  SIGUSR2         restart with no downtime: a new process of the (possibly
                  replaced) executable takes over the listening sockets, and
                  this one drains once the new one is ready
  SIGTERM, SIGINT drain: stop accepting, let requests in flight finish for up
                  to limits.drain_timeout, then exit 0`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		cli.PrintCommands(stderr, "keyedge", commands)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		cli.PrintCommands(stdout, "keyedge", commands)
		return 0
	case "help":
		if len(args) == 1 {
			cli.PrintCommands(stdout, "keyedge", commands)
			return 0
		}
		return run([]string{args[1], "-h"}, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprint(stdout, cli.Version("keyedge"))
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Each flag set is named by a literal: deploy's tests read them from
	// this source.
	var fs *flag.FlagSet
	var do func() error
	switch args[0] {
	case "serve":
		fs = flag.NewFlagSet("keyedge serve", flag.ContinueOnError)
		config := fs.String("config", "edge.yaml", "config file")
		pidFile := fs.String("pid-file", "", "write the serving process's PID here (kept current across SIGUSR2 restarts)")
		cli.SetUsage(fs, fs.Name()+" "+commands[0].Args, serveHelp)
		do = func() error { return serve(ctx, *config, *pidFile, stderr) }
	case "check-config":
		fs = flag.NewFlagSet("keyedge check-config", flag.ContinueOnError)
		config := fs.String("config", "edge.yaml", "config file to check")
		cli.SetUsage(fs, fs.Name()+" "+commands[1].Args, "Checks the file as serve does at start and on SIGHUP: every setting, and every\nfile it names (missing, unreadable, malformed, or a key file others can read).\nLists every problem and exits 1, or prints one OK line and exits 0.")
		do = func() error { return checkConfig(*config, stdout) }
	case "demo":
		fs = flag.NewFlagSet("keyedge demo", flag.ContinueOnError)
		var o demoOptions
		fs.IntVar(&o.tenants, "tenants", 1000, "number of generated tenants")
		fs.BoolVar(&o.check, "check", false, "exit after the self-check instead of serving until Ctrl-C")
		fs.StringVar(&o.listen, "listen", "127.0.0.1:8443", "edge address (a free port is used if taken)")
		cli.SetUsage(fs, fs.Name()+" "+commands[2].Args, "Builds a keystore of generated tenants, an origin, key servers and an edge\non 127.0.0.1 in a new temp dir, checks one request per kind of tenant,\nprints commands to try, and serves until Ctrl-C (with --check: exits).")
		do = func() error { return demo(ctx, o, stdout, stderr) }
	default:
		fmt.Fprintf(stderr, "keyedge: unknown command %q\n\n", args[0])
		cli.PrintCommands(stderr, "keyedge", commands)
		return 2
	}
	rest, err := cli.Parse(fs, args[1:], stdout)
	if err == nil && len(rest) > 0 {
		err = cli.Usagef("unexpected argument %q", rest[0])
	}
	if err == nil {
		if err = do(); errors.Is(err, context.Canceled) {
			err = nil
		}
	}
	return cli.Exit(fs.Name(), fs, stderr, err)
}
