package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/internal/config"
)

// runECH prints the ECHConfigList the edges of an edge.yaml accept now,
// for the DNS HTTPS records' ech SvcParam, and the one to publish next.
func runECH(_ context.Context, e *env, args []string) error {
	cfgPath := e.flags.String("config", "edge.yaml", "the edges' edge.yaml: its ech section and session ticket secret (which keyctl reads)")
	at := e.flags.String("at", "", "print what to publish at this time (RFC 3339) [now]")
	if err := e.parse(args, 0); err != nil {
		return err
	}
	now := e.now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return cli.Usagef("--at: %v", err)
		}
		now = t
	}
	c, err := config.LoadEdge(*cfgPath)
	if err != nil {
		return err
	}
	keys, err := c.ECHKeys()
	if err != nil {
		return err
	}
	p, err := keys.Publication(now)
	if err != nil {
		return err
	}
	b64 := base64.StdEncoding.EncodeToString
	fmt.Fprintf(e.stdout, "public_name: %s\ncurrent: %s\nnext: %s\nnext_from: %s\ncurrent_until: %s\n",
		p.PublicName, b64(p.Current), b64(p.Next), p.NextFrom.UTC().Format(time.RFC3339), p.CurrentUntil.UTC().Format(time.RFC3339))
	fmt.Fprintf(e.stdout, `# Publish current as the ech SvcParam of every tenant name's HTTPS record, e.g.
#   shop.example.com. 300 IN HTTPS 1 . alpn="h2,http/1.1" ech="%s"
# and next from next_from on (the edges accept it already, so earlier is fine):
# current is accepted until current_until, so the switch must be done at
# least the records' TTL before that. Publishing current at least every
# half rotation, with a TTL of at most half the rotation, keeps every
# config a client has cached accepted.
`, b64(p.Current))
	return nil
}
