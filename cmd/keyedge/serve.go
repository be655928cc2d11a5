package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/cloudflare/tableflip"
	"github.com/keyedge/keyedge/certs/acme"
	"github.com/keyedge/keyedge/edge"
	"github.com/keyedge/keyedge/edge/accesslog"
	"github.com/keyedge/keyedge/internal/config"
	"github.com/keyedge/keyedge/internal/ops"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// node is one running edge: its keystore, server and listeners.
type node struct {
	cfg     *config.Edge
	level   *slog.LevelVar
	log     *slog.Logger
	store   *keystore.Store
	srv     *edge.Server
	keyless *keyserver.Client // nil without a keyless section; replaced on SIGHUP
	ln      net.Listener
	udp     net.PacketConn // HTTP/3's; nil when http3 is off
	metrics *http.Server   // nil when metrics_listen is "off"
	acme    *acme.Manager  // nil when ACME is off
	http    *http.Server   // port 80, with ACME
	stop    func()         // ends the ACME renewal loop
	release func() error   // releases the keystore's storage
	served  chan error     // Serve's result
	ready   atomic.Bool    // /readyz: serving, not draining

	access *accesslog.Logger // nil without an access log
}

// startNode opens the keystore and starts serving cfg, on sockets from
// listen.
func startNode(ctx context.Context, cfg *config.Edge, listen sockets, logOut io.Writer) (_ *node, err error) {
	n := &node{cfg: cfg, level: new(slog.LevelVar), served: make(chan error, 1), stop: func() {}}
	n.level.Set(cfg.Level())
	n.log = slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: n.level}))
	var undo []func()
	defer func() {
		if err != nil {
			for _, f := range slices.Backward(undo) {
				f()
			}
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var storage certmagic.Storage
	if n.store, storage, n.release, err = cfg.OpenKeystore(ctx, n.log, reg); err != nil {
		return nil, err
	}
	undo = append(undo, func() { n.store.Close(); n.release() })
	opts, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	opts.Store, opts.Logger, opts.Registerer = n.store, n.log, reg
	if opts.Keyless, err = cfg.KeylessClient(n.log); err != nil {
		return nil, err
	}
	n.keyless = opts.Keyless
	if n.access, err = cfg.OpenAccessLog(n.log); err != nil {
		return nil, err
	}
	if n.access != nil {
		undo = append(undo, func() { n.access.Close() })
		opts.AccessLog = n.access
	}
	// Listeners are bound before the ACME manager starts, so it answers
	// challenges on them instead of opening its own.
	if n.ln, err = listen.Listen(cfg.ClientListenConfig(), "tcp", cfg.Listen); err != nil {
		return nil, err
	}
	undo = append(undo, func() { n.ln.Close() })
	if cfg.HTTP3On() {
		if n.udp, err = listen.ListenPacket("udp", cfg.HTTP3.Listen); err != nil {
			return nil, fmt.Errorf("http3: %w", err)
		}
		undo = append(undo, func() { n.udp.Close() })
	}
	var httpLn net.Listener
	if cfg.HTTPListen != "" {
		if httpLn, err = listen.Listen(cfg.ClientListenConfig(), "tcp", cfg.HTTPListen); err != nil {
			return nil, fmt.Errorf("http_listen: %w", err)
		}
		undo = append(undo, func() { httpLn.Close() })
	}
	if cfg.ACME.CA != "" {
		if n.acme, err = cfg.ACMEManager(n.store, storage, httpLn.Addr(), n.ln.Addr(), n.log, reg); err != nil {
			return nil, err
		}
		undo = append(undo, func() { n.acme.Close() })
		opts.ACME = acmeHooks(n.acme)
	}
	if n.srv, err = edge.NewServer(opts); err != nil {
		return nil, err
	}
	if addr := cfg.MetricsListen; addr != "off" {
		mln, err := listen.Listen(&net.ListenConfig{}, "tcp", addr) // Go's keep-alive: this server has no idle timeout
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		n.metrics = &http.Server{Handler: metricsHandler(cfg, reg, &n.ready, n.store.Err), ReadHeaderTimeout: 10 * time.Second}
		go n.metrics.Serve(mln)
		n.log.Info("metrics listening", "addr", "http://"+mln.Addr().String()+"/metrics", "pprof", cfg.Pprof)
	}
	go func() { n.served <- n.srv.Serve(n.ln) }()
	if n.udp != nil {
		go func() {
			if err := n.srv.ServeHTTP3(n.udp); !errors.Is(err, http.ErrServerClosed) {
				n.log.Error("http3 stopped; serving HTTP/1.1 and HTTP/2 only", "err", err)
			}
		}()
		n.log.Info("http3 listening", "addr", n.udp.LocalAddr().String())
	}
	n.ready.Store(true)
	n.log.Info("edge listening", "addr", n.ln.Addr().String(), "keystore", storage)
	if httpLn != nil {
		n.http = edge.NewHTTPServer(n.store, opts.ACME, opts.Limits, n.log)
		go n.http.Serve(httpLn)
		n.log.Info("plain http listening (redirects to https)", "addr", httpLn.Addr().String())
	}
	if n.acme != nil {
		runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		n.stop = stop
		go n.acme.Run(runCtx)
		n.log.Info("acme on", "ca", cfg.ACME.CA, "http", httpLn.Addr().String(), "on_demand", cfg.ACME.OnDemand.Enabled)
	}
	return n, nil
}

// metricsHandler serves the metrics listener: /metrics, /healthz and
// /readyz, and /debug/pprof/ when the config turns pprof on.
func metricsHandler(cfg *config.Edge, reg prometheus.Gatherer, ready *atomic.Bool, checks ...func() error) http.Handler {
	h := ops.Handler(reg, ready, checks...)
	if cfg.Pprof {
		h = ops.WithPprof(h)
	}
	return h
}

// acmeHooks hands the edge the Manager's methods it calls.
func acmeHooks(m *acme.Manager) edge.ACME {
	return edge.ACME{
		ChallengeConfig: m.GetChallengeConfig,
		Obtain:          m.OnDemand,
		NotAllowed:      acme.ErrNotAllowed,
		HTTPHandler:     m.HTTPHandler,
	}
}

// metricsURL is where /metrics is served, or "" when off.
func (n *node) metricsURL() string {
	if n.metrics == nil {
		return ""
	}
	return "http://" + n.cfg.MetricsListen + "/metrics"
}

// reload re-reads the config file on SIGHUP and applies all of it or
// nothing: a file that does not load, or that changes a setting SIGHUP
// cannot apply (config.ErrNeedsRestart names each), is refused with the
// reason, and the running config stays.
func (n *node) reload(path string) {
	cfg, err := config.CheckEdge(path)
	var opts edge.Options
	if err == nil {
		opts, err = n.cfg.ReloadOptions(cfg, n.keyless, n.log)
	}
	if err == nil && n.access != nil {
		// First, as its new file is what can still fail; undone below if
		// the rest is refused.
		if err = n.access.Reconfigure(cfg.AccessLogOptions(n.log)); err != nil {
			err = fmt.Errorf("access_log: %w", err)
			if opts.Keyless != nil {
				opts.Keyless.Close()
			}
		}
	}
	if err == nil {
		opts.AccessLog = n.access
		if err = n.srv.Reload(opts); err != nil {
			if opts.Keyless != nil {
				opts.Keyless.Close()
			}
			if n.access != nil {
				n.access.Reconfigure(n.cfg.AccessLogOptions(n.log)) // back to the file and format before
			}
		}
	}
	switch {
	case errors.Is(err, config.ErrNeedsRestart):
		n.log.Error("SIGHUP: reload refused; still running the previous config", "path", path, "err", err)
		return
	case err != nil:
		n.log.Error("SIGHUP: reload failed; still running the previous config", "path", path, "err", err)
		return
	}
	n.level.Set(cfg.Level())
	n.cfg, n.keyless = cfg, opts.Keyless
	n.log.Info("SIGHUP: config reloaded", "path", path)
}

// shutdown drains: stop accepting, let requests in flight finish until
// the drain timeout, then close everything.
func (n *node) shutdown() error {
	timeout := n.cfg.Limits.DrainTimeout
	n.ready.Store(false)
	n.log.Info("draining", "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	n.stop()
	if n.http != nil {
		n.http.Shutdown(ctx)
	}
	err := n.srv.Shutdown(ctx)
	if n.access != nil {
		n.access.Close()
	}
	if n.metrics != nil {
		n.metrics.Close()
	}
	if n.acme != nil {
		n.acme.Close()
	}
	n.store.Close()
	n.release()
	if serr := <-n.served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// reopenAccessLog reopens the access log file, path in the config, after
// logrotate renamed it.
func (n *node) reopenAccessLog(path string) {
	if n.access == nil {
		return
	}
	if err := n.access.Reopen(); err != nil {
		n.log.Error("access log not reopened; still writing to the previous file", "err", err)
		return
	}
	n.log.Info("access log reopened", "path", path)
}

// serve runs `keyedge serve` until SIGTERM or SIGINT (ctx) ends it.
// SIGHUP reloads the config; SIGUSR1 reopens the access log file (for
// logrotate); SIGUSR2 starts the same executable anew
// (tableflip), hands it the listening sockets and, once it is ready,
// drains this process: no connection is refused during the swap. With
// pidFile set, the PID of the process serving is kept there.
func serve(ctx context.Context, path, pidFile string, logOut io.Writer) error {
	cfg, err := config.CheckEdge(path)
	if err != nil {
		return err
	}
	upg, err := tableflip.New(tableflip.Options{PIDFile: pidFile})
	if err != nil {
		return err
	}
	defer upg.Stop()
	n, err := startNode(ctx, cfg, sockets{upg.Fds}, logOut)
	if err != nil {
		return err
	}
	if err := upg.Ready(); err != nil {
		n.shutdown()
		return err
	}
	if upg.HasParent() {
		n.log.Info("took over the listeners from the previous process")
	}
	warnUnreachable(ctx, cfg, n.log)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(signals)
	for {
		select {
		case sig := <-signals:
			switch sig {
			case syscall.SIGHUP:
				n.reload(path)
				continue
			case syscall.SIGUSR1:
				go n.reopenAccessLog(n.cfg.AccessLog.Path) // behind a stuck disk: signals keep being handled
				continue
			}
			n.log.Info("SIGUSR2: starting a new process to take over")
			go func() {
				if err := upg.Upgrade(); err != nil {
					n.log.Error("upgrade failed; this process keeps serving", "err", err)
				}
			}()
		case <-upg.Exit():
			n.log.Info("the new process is ready; draining this one")
			return n.shutdown()
		case err := <-n.served:
			n.served <- err
			n.shutdown()
			return err
		case <-ctx.Done():
			return n.shutdown()
		}
	}
}
