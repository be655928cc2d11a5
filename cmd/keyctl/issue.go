package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/certs/acme"
	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/keystore"
)

// runIssue obtains certificates from an ACME CA into the keystore and
// declares them managed, so the edges renew them.
//
// Where challenges are answered: by default, by the fleet. keyctl stores
// the challenge tokens in the shared keystore storage and the edges,
// which receive the CA's requests on ports 80 and 443, answer them from
// there (they must be configured with the same --ca). This is what an
// operator of a running fleet wants: nothing to open on the machine
// keyctl runs on. Before any edge runs, --http-addr and --tls-addr make
// keyctl answer itself, on addresses the CA reaches (ports 80 and 443 of
// this host, or forwarded to it) for as long as the command runs.
func runIssue(ctx context.Context, e *env, args []string) error {
	ca := e.flags.String("ca", certmagic.LetsEncryptStagingCA, "ACME directory URL; the edges must use the same one (default: Let's Encrypt staging)")
	email := e.flags.String("email", "", "ACME account contact for expiry notices")
	tenant := e.flags.String("tenant", "", "tenant name [the certificate's first name]")
	origin := e.flags.String("origin", "", "origin URL requests for the names are proxied to (required)")
	caRoot := e.flags.String("ca-root", "", "PEM file of roots to trust for the CA's HTTPS (a test CA such as Pebble)")
	httpAddr := e.flags.String("http-addr", "", "answer HTTP-01 here (host:port the CA reaches as port 80) instead of relying on the edges")
	tlsAddr := e.flags.String("tls-addr", "", "answer TLS-ALPN-01 here (host:port the CA reaches as port 443) instead of relying on the edges")
	deferIssue := e.flags.Bool("defer", false, "only declare the names: the edges obtain the certificates (at their next pass, or on the first handshake with on-demand issuance)")
	timeout := e.flags.Duration("timeout", 5*time.Minute, "give up an order after this long")
	if err := e.parse(args, anyArgs); err != nil {
		return err
	}
	if len(e.args) == 0 || *origin == "" {
		return cli.Usagef("need at least one NAME (SANs of one certificate joined by commas) and --origin")
	}
	if _, err := keystore.ParseOrigin(*origin); err != nil {
		return cli.Usagef("--origin: %v", err)
	}
	var reqs []acme.Request
	for _, a := range e.args {
		names := strings.Split(a, ",")
		reqs = append(reqs, acme.Request{Names: names, Tenant: cmp.Or(*tenant, names[0]), Origin: *origin})
	}
	opts := acme.Options{CA: *ca, Email: *email, Logger: slog.New(slog.NewTextHandler(e.stderr, nil))}
	if *caRoot != "" {
		var err error
		if opts.TrustedRoots, err = certs.ReadCertPool(*caRoot); err != nil {
			return err
		}
	}

	store, storage, err := e.openWithStorage(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	opts.Store, opts.Storage = store, storage

	var listeners *challengeListeners
	if !*deferIssue {
		if listeners, err = openChallengeListeners(&opts, *httpAddr, *tlsAddr); err != nil {
			return err
		}
		defer listeners.close()
	}
	m, err := acme.NewManager(opts)
	if err != nil {
		return err
	}
	defer m.Close()
	if listeners != nil {
		listeners.serve(m)
	}

	var failed int
	for _, req := range reqs {
		if *deferIssue {
			if err := m.Declare(ctx, req); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "declared %s for ACME; the edges obtain it\n", strings.Join(req.Names, ", "))
			continue
		}
		octx, cancel := context.WithTimeout(ctx, *timeout)
		id, err := m.Obtain(octx, req)
		cancel()
		if err != nil {
			failed++
			fmt.Fprintf(e.stderr, "keyctl issue: %s: %v\n", req.Names[0], err)
			continue
		}
		c, err := store.CertByID(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "issued %s: %s, issuer %q, not after %s\n", strings.Join(c.Leaf.DNSNames, ", "), id,
			c.Leaf.Issuer.CommonName, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d certificates not issued (the edges retry managed names with backoff)", failed, len(reqs))
	}
	return nil
}

// challengeListeners are what answers the CA's challenges during one
// keyctl issue. They are opened before the Manager exists, since its
// options name their ports, and served once it does.
//
// certmagic's solvers open a listener at the challenge address for the
// duration of a challenge unless something already listens there, and
// fail if they cannot (port 80 needs privileges). So in fleet mode keyctl
// holds a loopback listener of its own there that only certmagic's check
// connects to: the CA's requests go to the edges, which answer from
// storage. With --http-addr or --tls-addr, keyctl serves the challenges
// on those listeners itself, and disables a challenge type it cannot
// answer.
type challengeListeners struct {
	sink, http, tls net.Listener // nil if not opened
}

func openChallengeListeners(opts *acme.Options, httpAddr, tlsAddr string) (*challengeListeners, error) {
	c := &challengeListeners{}
	listen := func(addr string) (net.Listener, int, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			c.close()
			return nil, 0, err
		}
		return l, l.Addr().(*net.TCPAddr).Port, nil
	}
	var err error
	var port int
	if httpAddr == "" && tlsAddr == "" {
		if c.sink, port, err = listen("127.0.0.1:0"); err != nil {
			return nil, err
		}
		opts.ChallengeHost, opts.HTTPPort, opts.TLSPort = "127.0.0.1", port, port
		return c, nil
	}
	opts.DisableHTTP01, opts.DisableTLSALPN01 = httpAddr == "", tlsAddr == ""
	if httpAddr != "" {
		if c.http, port, err = listen(httpAddr); err != nil {
			return nil, fmt.Errorf("--http-addr: %w", err)
		}
		opts.ChallengeHost, opts.HTTPPort = hostOf(httpAddr), port
	}
	if tlsAddr != "" {
		if c.tls, port, err = listen(tlsAddr); err != nil {
			return nil, fmt.Errorf("--tls-addr: %w", err)
		}
		opts.ChallengeHost, opts.TLSPort = cmp.Or(opts.ChallengeHost, hostOf(tlsAddr)), port
	}
	return c, nil
}

// serve answers challenges with m until close.
func (c *challengeListeners) serve(m *acme.Manager) {
	if c.sink != nil {
		go acceptAndClose(c.sink)
	}
	if c.http != nil {
		srv := &http.Server{Handler: m.HTTPHandler(http.NotFoundHandler()), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(c.http)
	}
	if c.tls != nil {
		go serveTLSChallenges(tls.NewListener(c.tls, &tls.Config{
			GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				cfg, err := m.GetChallengeConfig(hello)
				if err == nil && cfg == nil {
					err = errors.New("keyctl answers only ACME TLS-ALPN-01 challenges")
				}
				return cfg, err
			},
		}))
	}
}

func (c *challengeListeners) close() {
	for _, l := range []net.Listener{c.sink, c.http, c.tls} {
		if l != nil {
			l.Close()
		}
	}
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return host
}

func acceptAndClose(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// serveTLSChallenges completes each handshake (which is the whole
// TLS-ALPN-01 exchange) and closes the connection.
func serveTLSChallenges(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.(*tls.Conn).Handshake()
		}()
	}
}
