package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// geoMasterFlag adds --geo-master to a command's flags.
func (e *env) geoMasterFlag() *string {
	return e.flags.String("geo-master", envOr("KEYEDGE_GEO_MASTER", "geo-master.key"), "geo master key file (0600): issues node keys, re-seals keys between policies; never on an edge")
}

// policyFlag adds --policy, the geo policy of the keys a command stores.
func (e *env) policyFlag(p *string) {
	e.flags.StringVar(p, "policy", "", `geo policy restricting where keys may be used, e.g. "region: eu and not country: ru"`)
}

// initGeo creates the geo master key when there is none, and stores its
// public parameters in the keystore.
func initGeo(ctx context.Context, e *env, path string) error {
	var m *geo.MasterKey
	var err error
	if secretfile.Exists(path) {
		if m, err = geo.ReadMasterKeyFile(path); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "geo master key %s exists, kept\n", path)
	} else {
		if m, err = geo.GenerateMasterKey(rand.Reader); err != nil {
			return err
		}
		if err := geo.WriteMasterKeyFile(path, m); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "new geo master key written to %s (0600): keep it with keyctl, never on an edge node\n", path)
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	return store.SetGeoParams(ctx, &m.Params)
}

func runNodeKey(_ context.Context, e *env, args []string) error {
	master := e.geoMasterFlag()
	attrs := e.flags.String("attrs", "", `the node's attributes, e.g. "region: eu, country: de, dc: fra1" (required)`)
	out := e.flags.String("out", "node.key", "file to write the node key to (0600, must not exist)")
	if err := e.parse(args, 0); err != nil {
		return err
	}
	if *attrs == "" {
		return cli.Usagef("need --attrs")
	}
	a, err := geo.ParseAttributes(*attrs)
	if err != nil {
		return err
	}
	m, err := geo.ReadMasterKeyFile(*master)
	if err != nil {
		return err
	}
	k, err := m.NodeKey(rand.Reader, a)
	if err != nil {
		return err
	}
	if err := geo.WriteNodeKeyFile(*out, k); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "node key for %q written to %s (0600): install it on that node only, with geo.attributes set to the same\n", a, *out)
	return nil
}

func runPolicy(ctx context.Context, e *env, args []string) error {
	master := e.geoMasterFlag()
	if len(args) == 0 || (args[0] != "set" && args[0] != "check") {
		if err := e.parse(args, anyArgs); err != nil {
			return err // -h among them: the help
		}
		return cli.Usagef("want policy set NAME|ID POLICY, or policy check POLICY")
	}
	verb := args[0]
	want := map[string]int{"set": 2, "check": 1}[verb]
	if err := e.parse(args[1:], want); err != nil {
		return err
	}
	if verb == "check" {
		p, err := geo.ParsePolicy(e.args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "policy %q is valid (id %s)\n", p, p.ID())
		return nil
	}
	name, policy := e.args[0], e.args[1]
	if policy != "" {
		if _, err := geo.ParsePolicy(policy); err != nil {
			return err // before any file is read
		}
	}
	store, m, err := e.openAsAdmin(ctx, *master)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.SetPolicy(ctx, name, policy, m); err != nil {
		return err
	}
	if policy == "" {
		fmt.Fprintf(e.stdout, "%s: no policy; key sealed to the fleet key\n", name)
	} else {
		fmt.Fprintf(e.stdout, "%s: policy %q; key re-sealed, edges follow within their poll interval\n", name, policy)
	}
	return nil
}

func runReseal(ctx context.Context, e *env, args []string) error {
	master := e.geoMasterFlag()
	if err := e.parse(args, 0); err != nil {
		return err
	}
	store, m, err := e.openAsAdmin(ctx, *master)
	if err != nil {
		return err
	}
	defer store.Close()
	st, err := store.Reseal(ctx, m)
	fmt.Fprintf(e.stdout, "re-sealed %d keys; %d already envelope-sealed; %d skipped (sealed under a policy: need --geo-master); %d failed; %d moved into their record\n", st.Resealed, st.Current, st.Skipped, st.Failed, st.Moved)
	return err
}

// openAsAdmin opens the keystore, and reads the geo master key at
// masterPath, or returns a nil key when there is no such file: the
// commands that use it work without it on keys sealed to the fleet key.
func (e *env) openAsAdmin(ctx context.Context, masterPath string) (*keystore.Store, *geo.MasterKey, error) {
	var m *geo.MasterKey
	if secretfile.Exists(masterPath) {
		var err error
		if m, err = geo.ReadMasterKeyFile(masterPath); err != nil {
			return nil, nil, err
		}
	}
	store, err := e.open(ctx, nil)
	return store, m, err
}

// printSyntaxError shows where in a policy or attribute string a syntax
// error is, under the error message.
func printSyntaxError(w io.Writer, err error) {
	var se *geo.SyntaxError
	if !errors.As(err, &se) || strings.ContainsAny(se.Input, "\n\r\t") {
		return
	}
	fmt.Fprintf(w, "    %s\n    %s^\n", se.Input, strings.Repeat(" ", se.Column-1))
}

func runTicketSecret(_ context.Context, e *env, args []string) error {
	out := e.flags.String("out", "ticket.secret", "file to write the secret to (0600, must not exist)")
	if err := e.parse(args, 0); err != nil {
		return err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := secretfile.Write(*out, []byte(hex.EncodeToString(secret)+"\n")); err != nil {
		return fmt.Errorf("failed to write ticket secret: %w", err)
	}
	fmt.Fprintf(e.stdout, "session ticket secret written to %s (0600): give every edge of the fleet the same file (session_tickets.secret_file)\n", *out)
	return nil
}
