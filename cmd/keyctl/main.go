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
//	keyctl ls
//	keyctl reindex
//	keyctl rm          NAME|ID
//	keyctl route       NAME|ID local|keyless [--key-server HOST:PORT]... [--delete-key]
//	keyctl node-key    --attrs "region: eu, country: de" [--out FILE] [--geo-master FILE]
//	keyctl policy      set NAME|ID "POLICY" [--geo-master FILE] | check "POLICY"
//	keyctl reseal      [--geo-master FILE]
//	keyctl issue       NAME[,SAN]... --origin URL [--ca URL] [--email E] [--defer] ...
//	keyctl ticket-secret [--out FILE]
//	keyctl identity    NAME [--ca PREFIX] [--ip IP]... [--valid D] [--out PREFIX]
//
// Every command takes --keystore (default $KEYEDGE_KEYSTORE or
// ./keystore) and --fleet-key (default $KEYEDGE_FLEET_KEY or
// ./fleet.key). Exit status is 0 when the change is made (and, for a
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
	"syscall"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keystore"
)

// errUsage marks a usage error: exit status 2 and the command's help.
var errUsage = errors.New("usage")

type command struct {
	name, args, help string
	run              func(ctx context.Context, env *env, args []string) error
}

var commands = []command{
	{"init", "", "create the keystore (directory and empty change journal), a fleet key and a geo master key (0600 each)", runInit},
	{"gen-tenants", "--count N [flags]", "generate N test tenants signed by a test CA", runGenTenants},
	{"import", "--cert FILE --key FILE --tenant T --origin URL", "store a certificate chain and its key", runImport},
	{"show", "NAME", "show the certificates serving NAME (never key bytes)", runShow},
	{"ls", "", "list every stored name, streaming", runList},
	{"reindex", "", "rebuild the name filter that keeps unknown names away from storage (a keystore from before it, or one reported corrupt)", runReindex},
	{"rm", "NAME|ID", "remove a certificate by ID, or every certificate serving NAME", runRemove},
	{"route", "NAME|ID local|keyless [--key-server HOST:PORT]... [--delete-key]", "choose where a certificate's handshakes are signed", runRoute},
	{"node-key", "--attrs \"region: eu, dc: fra1\" [--out FILE]", "issue a node's geo attribute key from the geo master key", runNodeKey},
	{"policy", "set NAME|ID \"POLICY\" | check \"POLICY\"", "restrict where a key may be used (\"\" lifts it), re-sealing it; or check a policy", runPolicy},
	{"reseal", "[--geo-master FILE]", "rewrite keys sealed by a keyedge before envelope encryption in the envelope format (fast for edges to open); policy-sealed ones need the geo master key", runReseal},
	{"issue", "NAME[,SAN]... --origin URL [--ca URL] [--email E] [--tenant T] [--ca-root FILE] [--http-addr A] [--tls-addr A] [--defer]", "obtain certificates from an ACME CA into the keystore; the edges renew them", runIssue},
	{"ticket-secret", "[--out FILE]", "create the fleet's session ticket secret (0600)", runTicketSecret},
	{"identity", "NAME [--ca PREFIX] [--ip IP]... [--valid D] [--out PREFIX]", "issue an mTLS identity for an edge or a key server", runIdentity},
}

// env is what every command shares: its flags and standard streams.
type env struct {
	flags        *flag.FlagSet
	keystore     string // a directory or a Redis URL
	passwordFile string // the Redis keystore's password
	fleetKey     string
	args         []string // positional arguments, after parse
	stdout       io.Writer
	stderr       io.Writer
	release      []func() error // run when the command returns
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		return 2
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		e := &env{flags: flag.NewFlagSet("keyctl "+c.name, flag.ContinueOnError), stdout: stdout, stderr: stderr}
		e.flags.SetOutput(stderr)
		e.flags.StringVar(&e.keystore, "keystore", envOr("KEYEDGE_KEYSTORE", "keystore"), "keystore directory, or redis://host:port/db URL of a shared one")
		e.flags.StringVar(&e.passwordFile, "keystore-password-file", os.Getenv("KEYEDGE_KEYSTORE_PASSWORD_FILE"), "file holding the Redis keystore's password (0600)")
		e.flags.StringVar(&e.fleetKey, "fleet-key", envOr("KEYEDGE_FLEET_KEY", "fleet.key"), "fleet key file (0600)")
		e.flags.Usage = func() {
			fmt.Fprintf(stderr, "usage: keyctl %s %s\n  %s\n\nflags:\n", c.name, c.args, c.help)
			e.flags.PrintDefaults()
		}
		err := c.run(ctx, e, args[1:])
		for _, release := range e.release {
			release()
		}
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 2
		case errors.Is(err, keystore.ErrIncomplete):
			fmt.Fprintf(stderr, "keyctl %s: %v\n", c.name, err)
			return 3
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "keyctl %s: %v\n", c.name, err)
			e.flags.Usage()
			return 2
		default:
			fmt.Fprintf(stderr, "keyctl %s: %v\n", c.name, err)
			printSyntaxError(stderr, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "keyctl: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: keyctl COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.help)
	}
	fmt.Fprintln(w, "\nRun keyctl COMMAND -h for a command's flags.")
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
	for {
		if err := e.flags.Parse(args); err != nil {
			return err
		}
		if e.flags.NArg() == 0 {
			break
		}
		e.args = append(e.args, e.flags.Arg(0))
		args = e.flags.Args()[1:]
	}
	if positional != anyArgs && len(e.args) != positional {
		return fmt.Errorf("%w: want %d argument(s), got %d", errUsage, positional, len(e.args))
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
		Storage:  storage,
		FleetKey: fleet,
		Logger:   slog.New(slog.NewTextHandler(e.stderr, nil)),
		OneShot:  true,
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
