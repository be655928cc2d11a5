// Command keyserver runs a Keyless SSL key server: it holds private keys
// on the customer's own machines and signs TLS handshakes for keyedge
// edges that connect over mutual TLS.
//
// Usage:
//
//	keyserver [--config keyserver.yaml]
//	keyserver check-config [--config keyserver.yaml]
//	keyserver --version
//	keyserver help
//
// The configuration is documented in keyserver/testdata/keyserver.yaml;
// relative paths in it are relative to the file. SIGTERM and SIGINT
// shut the server down gracefully (requests already read are answered,
// for up to 10s); SIGHUP re-reads the file and applies its authorize
// rules (authorize, authorize_all) and log_level, all or nothing: a file
// that does not load, or that changes any other setting (each is named;
// they need a restart), is refused and the running config stays.
// check-config checks a file and every file it names as the server does,
// lists every problem and exits 1 if there is one. Without authorize
// rules every request is denied; raw RSA decryption is off unless
// allow_rsa_decrypt is set. -h, --help and help print usage to standard
// output and exit 0; --version and version print the build's version
// and VCS revision. Exit status is 2 for a usage error, 1 for a failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/internal/config"
	"github.com/keyedge/keyedge/internal/ops"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// shutdownTimeout bounds the graceful shutdown on SIGTERM and SIGINT.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, hup)
	stop()
	os.Exit(code)
}

// keyserverHelp is keyserver's usage text after the synopsis.
const keyserverHelp = `Runs a Keyless SSL key server: it signs TLS handshakes with the keys it
holds for the edges its authorize rules admit, over mutual TLS. The
configuration is documented in keyserver/testdata/keyserver.yaml;
relative paths in it are relative to the file. Logs go to standard error.

signals:
  SIGHUP          re-read --config and apply authorize, authorize_all and
                  log_level; a file that does not load, or that changes
                  anything else (each setting named: it needs a restart), is
                  refused and the running config stays
  SIGTERM, SIGINT stop accepting, answer the requests already read for up
                  to 10s, then exit 0`

// run runs the server until ctx ends, reloading the configuration on
// every value from reload.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan os.Signal) int {
	if len(args) > 0 {
		switch args[0] {
		case "help":
			args = []string{"-h"}
		case "version", "-version", "--version":
			fmt.Fprint(stdout, cli.Version("keyserver"))
			return 0
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("keyserver", flag.ContinueOnError)
	path := fs.String("config", "keyserver.yaml", "configuration file")
	cli.SetUsage(fs, "keyserver [--config FILE] | keyserver check-config [--config FILE] | keyserver --version | keyserver help", keyserverHelp)
	rest, err := cli.Parse(fs, args, stdout)
	if err == nil && len(rest) > 0 {
		err = cli.Usagef("unexpected argument %q", rest[0])
	}
	if err != nil {
		return cli.Exit("keyserver", fs, stderr, err)
	}
	cfg, err := config.CheckKeyServer(*path)
	if err != nil {
		fmt.Fprintf(stderr, "keyserver: %v\n", err)
		return 1
	}
	level := new(slog.LevelVar)
	level.Set(cfg.Level())
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(ctx, cfg, *path, log, level, reload); err != nil {
		log.Error("keyserver: " + err.Error())
		return 1
	}
	return 0
}

// serve starts everything cfg describes and runs until ctx ends.
func serve(ctx context.Context, cfg *config.KeyServer, path string, log *slog.Logger, level *slog.LevelVar, reload <-chan os.Signal) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts, err := cfg.ServerOptions(log, reg)
	if err != nil {
		return err
	}
	var keysErr func() error
	var closeKeys func()
	if opts.Keys, keysErr, closeKeys, err = cfg.OpenKeySource(ctx, log, reg); err != nil {
		return err
	}
	defer closeKeys()
	srv, err := keyserver.NewServer(opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	var ready atomic.Bool // /readyz: serving, not draining
	if cfg.MetricsListen != "off" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		metrics := &http.Server{Handler: ops.Handler(reg, &ready, keysErr), ReadHeaderTimeout: 10 * time.Second}
		go metrics.Serve(mln)
		defer metrics.Close()
		log.Info("keyserver: metrics listening", "addr", "http://"+mln.Addr().String()+"/metrics")
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ready.Store(true)
	cfg.WarnAuthorization(log)
	if cfg.AllowRSADecrypt {
		log.Warn("keyserver: allow_rsa_decrypt: raw RSA decryption (a variable-time private key operation) is served")
	}
	log.Info("keyserver: listening", "addr", ln.Addr().String())

wait:
	for {
		select {
		case err := <-served:
			return err
		case <-reload:
			cfg = reloadConfig(path, cfg, srv, log, level)
		case <-ctx.Done():
			break wait
		}
	}
	ready.Store(false)
	log.Info("keyserver: shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("keyserver: connections closed before their requests were answered", "err", err)
	}
	if err := <-served; !errors.Is(err, keyserver.ErrServerClosed) {
		return err
	}
	log.Info("keyserver: stopped")
	return nil
}

// reloadConfig applies the authorize rules (authorize, authorize_all)
// and log level of the file at path, or nothing: a file that does not
// load, or that changes a setting only a restart applies, is refused.
// It returns the config now running.
func reloadConfig(path string, old *config.KeyServer, srv *keyserver.Server, log *slog.Logger, level *slog.LevelVar) *config.KeyServer {
	cfg, err := config.CheckKeyServer(path)
	var auth *keyserver.Authorizer
	if err == nil {
		if names := old.NotReloadable(cfg); len(names) > 0 {
			err = fmt.Errorf("%w (restart the key server for them): %s", config.ErrNeedsRestart, strings.Join(names, ", "))
		}
	}
	if err == nil {
		auth, err = cfg.Authorizer()
	}
	switch {
	case errors.Is(err, config.ErrNeedsRestart):
		log.Error("keyserver: SIGHUP: reload refused; still running the previous config", "path", path, "err", err)
		return old
	case err != nil:
		log.Error("keyserver: SIGHUP: reload failed; still running the previous config", "path", path, "err", err)
		return old
	}
	srv.SetAuthorizer(auth)
	level.Set(cfg.Level())
	log.Info("keyserver: SIGHUP: config reloaded", "path", path, "rules", len(cfg.Authorize), "authorize_all", cfg.AuthorizeAll)
	cfg.WarnAuthorization(log)
	return cfg
}

// checkConfig runs `keyserver check-config --config FILE`: it checks the
// file as the server does at start and on SIGHUP, lists every problem and
// exits 1 if there are any.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyserver check-config", flag.ContinueOnError)
	path := fs.String("config", "keyserver.yaml", "configuration file to check")
	cli.SetUsage(fs, "keyserver check-config [--config FILE]", "Checks the file as keyserver does at start and on SIGHUP, and every file it\nnames; lists every problem and exits 1, or prints one OK line and exits 0.")
	rest, err := cli.Parse(fs, args, stdout)
	if err == nil && len(rest) > 0 {
		err = cli.Usagef("unexpected argument %q", rest[0])
	}
	if err == nil {
		if _, err = config.CheckKeyServer(*path); err == nil {
			fmt.Fprintf(stdout, "keyserver: %s: configuration OK\n", *path)
		}
	}
	return cli.Exit("keyserver check-config", fs, stderr, err)
}
