// Command keyctl manages a keyedge keystore: create the fleet and geo
// master keys, generate test tenants, import certificates, inspect and
// remove them, restrict where keys may be used and issue node keys.
//
// Usage:
//
//	keyctl init        [--keystore DIR] [--fleet-key FILE] [--geo-master FILE]
//	keyctl gen-tenants --count N [--wildcard-every K] [--rsa-every K] [--domain D] [--origin URL] [--ca PREFIX]
//	keyctl import      --cert chain.pem --key key.pem --tenant T --origin URL [--policy P]
//	keyctl show        NAME
//	keyctl ls          [--long]
//	keyctl reindex
//	keyctl rm          NAME|ID [--yes]
//	keyctl route       NAME|ID local|keyless [--key-server HOST:PORT]... [--delete-key]
//	keyctl node-key    --attrs "region: eu, country: de" [--out FILE] [--geo-master FILE]
//	keyctl http        set NAME [--redirect on|off] [--hsts SPEC|off] [--request-header RULE]... [--response-header RULE]... [--rate N/s [--burst B]|off] [--client-ca FILE --client-auth required|optional|off] [--client-subject-header H|off] | show NAME
//	keyctl policy      set NAME|ID "POLICY" [--geo-master FILE] | check "POLICY"
//	keyctl origin      set NAME URL[=WEIGHT]... [--health-path P] [--ca FILE] [--server-name N] [--client-cert F --client-key F] ... | show NAME
//	keyctl reseal      [--geo-master FILE]
//	keyctl issue       NAME[,SAN]... --origin URL [--ca URL] [--email E] [--defer] ...
//	keyctl ticket-secret [--out FILE]
//	keyctl ech         [--config edge.yaml] [--at TIME]
//	keyctl identity    NAME [--ca PREFIX] [--ip IP]... [--valid D] [--out PREFIX]
//	keyctl version
//	keyctl help        [COMMAND]
//
// Every command that reads or writes the keystore takes --keystore
// (default $KEYEDGE_KEYSTORE or ./keystore) and --fleet-key (default
// $KEYEDGE_FLEET_KEY or ./fleet.key); flags may come before or after
// the arguments. -h, --help and help print usage to standard output and
// exit 0. Exit status is 0 when the change is made (and, for a
// write, journaled: every edge follows it), 1 for a failure that left
// the keystore as it was, 2 for a usage error, and 3 for a write
// interrupted and not undone (a disk still full): some edges may serve
// part of it; run the command again once the cause is fixed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keystore"
)

type command struct {
	cli.Command
	keystore bool // reads or writes the keystore: takes --keystore and --fleet-key
	run      func(ctx context.Context, env *env, args []string) error
}

var commands = []command{
	{cli.Command{Name: "init", Summary: "create the keystore (directory and empty change journal), a fleet key and a geo master key (0600 each)"}, true, runInit},
	{cli.Command{Name: "gen-tenants", Args: "--count N [flags]", Summary: "generate N test tenants signed by a test CA"}, true, runGenTenants},
	{cli.Command{Name: "import", Args: "--cert FILE (--key FILE | --keyless --key-server HOST:PORT...) --tenant T --origin URL [--policy P]", Summary: "store a certificate chain and its key"}, true, runImport},
	{cli.Command{Name: "show", Args: "NAME", Summary: "show the certificates serving NAME (never key bytes), or that it is pending with ACME"}, true, runShow},
	{cli.Command{Name: "ls", Args: "[--long]", Summary: "list every stored name, streaming; --long: expiry, route, policy and origin too"}, true, runList},
	{cli.Command{Name: "reindex", Summary: "rebuild the name filter that keeps unknown names away from storage (a keystore from before it, or one reported corrupt)"}, true, runReindex},
	{cli.Command{Name: "rm", Args: "NAME|ID [--yes]", Summary: "remove a certificate by ID, or every certificate serving NAME, after confirmation"}, true, runRemove},
	{cli.Command{Name: "route", Args: "NAME|ID local|keyless [--key-server HOST:PORT]... [--delete-key]", Summary: "choose where a certificate's handshakes are signed"}, true, runRoute},
	{cli.Command{Name: "node-key", Args: "--attrs \"region: eu, dc: fra1\" [--out FILE]", Summary: "issue a node's geo attribute key from the geo master key"}, false, runNodeKey},
	{cli.Command{Name: "http", Args: "set NAME [--redirect on|off] [--hsts max-age=N[,includeSubDomains][,preload]|off] [--request-header RULE]... [--response-header RULE]... [--rate N/s [--burst B]|off] [--client-ca FILE] [--client-auth required|optional|off] [--client-subject-header H|off] | show NAME", Summary: "a name's HTTP settings: https redirect, HSTS, header rules, rate limit, client certificates"}, true, runHTTP},
	{cli.Command{Name: "policy", Args: "set NAME|ID \"POLICY\" | check \"POLICY\"", Summary: "restrict where a key may be used (\"\" lifts it), re-sealing it; or check a policy"}, true, runPolicy},
	{cli.Command{Name: "origin", Args: "set NAME URL[=WEIGHT]... [--health-path P --health-interval D] [--ca FILE] [--server-name N] [--client-cert F --client-key F] [--connect-timeout D] [--timeout D] | show NAME", Summary: "set a name's origins (weights, health check, timeouts, origin TLS), or show them (never key bytes)"}, true, runOrigin},
	{cli.Command{Name: "reseal", Args: "[--geo-master FILE]", Summary: "rewrite keys sealed by a keyedge before envelope encryption in the envelope format (fast for edges to open); policy-sealed ones need the geo master key"}, true, runReseal},
	{cli.Command{Name: "issue", Args: "NAME[,SAN]... --origin URL [--ca URL] [--email E] [--tenant T] [--ca-root FILE] [--http-addr A] [--tls-addr A] [--defer]", Summary: "obtain certificates from an ACME CA into the keystore; the edges renew them"}, true, runIssue},
	{cli.Command{Name: "ticket-secret", Args: "[--out FILE]", Summary: "create the fleet's session ticket secret (0600)"}, false, runTicketSecret},
	{cli.Command{Name: "ech", Args: "[--config edge.yaml] [--at TIME]", Summary: "print the ECH config list to publish in DNS (HTTPS records' ech=), and the next one and when"}, false, runECH},
	{cli.Command{Name: "identity", Args: "NAME [--ca PREFIX] [--ip IP]... [--valid D] [--out PREFIX]", Summary: "issue an mTLS identity for an edge or a key server"}, false, runIdentity},
	{cli.Command{Name: "version", Summary: "print the version and VCS revision of this build"}, false, runVersion},
}

// help is the help command, listed with the others.
var help = cli.Command{Name: "help", Args: "[COMMAND]", Summary: "print this help, or a command's"}

// env is what every command shares: its flags and standard streams.
type env struct {
	flags        *flag.FlagSet
	keystore     string // a directory or a Redis URL
	passwordFile string // the Redis keystore's password
	fleetKey     string
	cacheEntries int      // bound on the keystore's caches; 0: the default
	args         []string // positional arguments, after parse
	stdin        *os.File
	stdout       io.Writer
	stderr       io.Writer
	now          func() time.Time
	release      []func() error // run when the command returns
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		return run(ctx, []string{args[1], "-h"}, stdin, stdout, stderr)
	case "-version", "--version":
		args[0] = "version"
	}
	for _, c := range commands {
		if c.Name != args[0] {
			continue
		}
		e := &env{flags: flag.NewFlagSet("keyctl "+c.Name, flag.ContinueOnError), stdin: stdin, stdout: stdout, stderr: stderr, now: time.Now}
		if c.keystore {
			e.flags.StringVar(&e.keystore, "keystore", envOr("KEYEDGE_KEYSTORE", "keystore"), "keystore directory, or redis://host:port/db URL of a shared one")
			e.flags.StringVar(&e.passwordFile, "keystore-password-file", os.Getenv("KEYEDGE_KEYSTORE_PASSWORD_FILE"), "file holding the Redis keystore's password (0600)")
			e.flags.StringVar(&e.fleetKey, "fleet-key", envOr("KEYEDGE_FLEET_KEY", "fleet.key"), "fleet key file (0600)")
		}
		cli.SetUsage(e.flags, strings.TrimSpace("keyctl "+c.Name+" "+c.Args), c.Summary)
		err := c.run(ctx, e, args[1:])
		for _, release := range e.release {
			release()
		}
		if errors.Is(err, keystore.ErrIncomplete) {
			fmt.Fprintf(stderr, "keyctl %s: %v\n", c.Name, err)
			return 3
		}
		code := cli.Exit("keyctl "+c.Name, e.flags, stderr, err)
		if code == 1 {
			printSyntaxError(stderr, err)
		}
		return code
	}
	fmt.Fprintf(stderr, "keyctl: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	list := make([]cli.Command, 0, len(commands)+1)
	for _, c := range commands {
		list = append(list, c.Command)
	}
	cli.PrintCommands(w, "keyctl", append(list, help))
}

func runVersion(_ context.Context, e *env, args []string) error {
	if err := e.parse(args, 0); err != nil {
		return err
	}
	_, err := fmt.Fprint(e.stdout, cli.Version("keyctl"))
	return err
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// anyArgs is parse's positional count for commands taking any number.
const anyArgs = -1

// parse parses flags, which may come before, between or after the
// positional arguments, and checks how many of those there are.
func (e *env) parse(args []string, positional int) error {
	var err error
	if e.args, err = cli.Parse(e.flags, args, e.stdout); err != nil {
		return err
	}
	if positional != anyArgs && len(e.args) != positional {
		return cli.Usagef("want %d argument(s), got %d", positional, len(e.args))
	}
	return nil
}

// storage opens the storage --keystore names: a directory, which must
// exist (keyctl init creates it), or a Redis URL. It is released when
// the command returns.
func (e *env) storage(ctx context.Context) (certmagic.Storage, error) {
	if !backend.IsURL(e.keystore) {
		if fi, err := os.Stat(e.keystore); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("no keystore at %s (run keyctl init first)", e.keystore)
		}
	}
	st, release, err := backend.Open(ctx, e.keystore, e.passwordFile, slog.New(slog.NewTextHandler(e.stderr, nil)))
	if err != nil {
		return nil, err
	}
	e.release = append(e.release, release)
	return st, nil
}

// openWithStorage opens the keystore of --keystore, and returns its
// storage too, for commands that also use it directly.
func (e *env) openWithStorage(ctx context.Context) (*keystore.Store, certmagic.Storage, error) {
	storage, err := e.storage(ctx)
	if err != nil {
		return nil, nil, err
	}
	store, err := e.open(ctx, storage)
	return store, storage, err
}

// open opens the keystore over storage (nil: e.storage) with the fleet
// key, for one command: no journal follower, no background work.
func (e *env) open(ctx context.Context, storage keystore.Storage) (*keystore.Store, error) {
	fleet, err := keystore.ReadFleetKeyFile(e.fleetKey)
	if err != nil {
		return nil, err
	}
	if storage == nil {
		if storage, err = e.storage(ctx); err != nil {
			return nil, err
		}
	}
	return keystore.Open(ctx, keystore.Options{
		Storage:    storage,
		FleetKey:   fleet,
		Logger:     slog.New(slog.NewTextHandler(e.stderr, nil)),
		OneShot:    true,
		MaxEntries: e.cacheEntries,
	})
}

// runInit creates what is missing of the keystore directory, the fleet
// key and the geo master key, and keeps whatever exists.
func runInit(ctx context.Context, e *env, args []string) error {
	master := e.geoMasterFlag()
	if err := e.parse(args, 0); err != nil {
		return err
	}
	if !backend.IsURL(e.keystore) {
		if err := os.MkdirAll(e.keystore, 0o700); err != nil {
			return err
		}
	}
	storage, err := e.storage(ctx)
	if err != nil {
		return err
	}
	if err := keystore.Init(ctx, storage); err != nil {
		return err
	}
	if secretfile.Exists(e.fleetKey) {
		fmt.Fprintf(e.stdout, "fleet key %s exists, kept\n", e.fleetKey)
	} else {
		k, err := keystore.GenerateFleetKey()
		if err != nil {
			return err
		}
		if err := keystore.WriteFleetKeyFile(e.fleetKey, k); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "new fleet key written to %s (0600): keep it secret, every node needs it\n", e.fleetKey)
	}
	if err := initGeo(ctx, e, *master); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "keystore %s ready\n", e.keystore)
	return nil
}
