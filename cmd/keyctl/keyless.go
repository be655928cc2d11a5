package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func runRoute(ctx context.Context, e *env, args []string) error {
	var servers stringList
	e.flags.Var(&servers, "key-server", "host:port of a key server holding the key (repeat, most preferred first)")
	deleteKey := e.flags.Bool("delete-key", false, "for keyless: delete the key from the keystore (its owner's key server holds it now)")
	if err := e.parse(args, 2); err != nil {
		return err
	}
	route := keystore.Route(e.args[1])
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return cli.Usagef("--key-server %q: %v", s, err)
		}
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.SetRoute(ctx, e.args[0], route, servers, *deleteKey); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s now signs %s%s\n", e.args[0], route, map[bool]string{true: " via " + servers.String(), false: ""}[len(servers) > 0])
	return nil
}

func runIdentity(_ context.Context, e *env, args []string) error {
	caPrefix := e.flags.String("ca", "identity-ca", "identity CA files <prefix>.pem and <prefix>.key, created if missing")
	out := e.flags.String("out", "", "write <out>.pem (certificate chain) and <out>.key (0600) [NAME]")
	valid := e.flags.Duration("valid", 30*24*time.Hour, "validity; keep it short and re-issue before expiry")
	var ips stringList
	e.flags.Var(&ips, "ip", "IP address the holder is reached at, for a key server (repeat)")
	if err := e.parse(args, 1); err != nil {
		return err
	}
	name := e.args[0]
	spec := testpki.LeafSpec{Names: []string{name}, ClientAuth: true, NotAfter: e.now().Add(*valid)}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return cli.Usagef("--ip %q is not an IP address", s)
		}
		spec.IPAddresses = append(spec.IPAddresses, ip)
	}
	ca, err := loadOrCreateCA(*caPrefix)
	if err != nil {
		return err
	}
	leaf, err := ca.Issue(spec)
	if err != nil {
		return err
	}
	base := *out
	if base == "" {
		base = name
	}
	if err := leaf.WritePEM(base+".pem", base+".key"); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "identity %s: %s.pem and %s.key, valid until %s, issued by %s.pem\n",
		name, base, base, leaf.Cert.NotAfter.UTC().Format(time.RFC3339), *caPrefix)
	return nil
}
