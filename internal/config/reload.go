package config

// What SIGHUP can apply to a running process, and what it cannot.

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"

	"github.com/keyedge/keyedge/edge"
	"github.com/keyedge/keyedge/keyserver"
)

// ErrNeedsRestart is returned for a re-read file that changes settings
// a running process cannot apply. A reload refused with it changes
// nothing; the message names every such setting.
var ErrNeedsRestart = errors.New("needs a new process")

// edgeLive are the edge.yaml settings SIGHUP applies, by YAML path; a
// path covers the settings under it. Every other setting needs a new
// process (SIGUSR2), so a setting added later is refused on SIGHUP until
// it is wired into ReloadOptions and listed here.
var edgeLive = []string{
	"log_level",
	"fallback",
	"session_tickets",
	"ech",
	"curves",
	"min_tls_version",
	"limits.handshake_timeout",
	"limits.max_conns",
	"limits.max_conns_per_ip",
	"limits.tunnel_idle_timeout",
	"limits.body_read_timeout",
	"limits.send_timeout",  // from the next connection on; HTTP/2 streams' within a second
	"limits.drain_timeout", // read at SIGTERM
	"proxy_protocol.trusted_cidrs",
	"origin",
	"keyless",
	"geo.key_servers",
	// The access log's file and format, applied by the caller
	// (accesslog.Logger.Reconfigure); its buffer is sized at start.
	"access_log.path",
	"access_log.format",
	"access_log.sample",
}

// keyServerLive are the keyserver.yaml settings SIGHUP applies.
var keyServerLive = []string{"authorize", "authorize_all", "log_level"}

// NotReloadable names the settings that differ between c, the config
// running, and next, the file re-read, and that SIGHUP cannot apply:
// they need a new process (SIGUSR2).
func (c *Edge) NotReloadable(next *Edge) []string {
	names := notLive(changedSettings(c, next), edgeLive)
	if (c.Keyless.CertFile == "") != (next.Keyless.CertFile == "") {
		names = append(names, "keyless (turned on or off)")
	}
	if c.accessLogOn() != next.accessLogOn() {
		names = append(names, "access_log (turned on or off)")
	}
	if (len(c.ProxyProtocol.TrustedCIDRs) == 0) != (len(next.ProxyProtocol.TrustedCIDRs) == 0) {
		names = append(names, "proxy_protocol.trusted_cidrs (PROXY protocol turned on or off)")
	}
	return names
}

// NotReloadable names the settings that differ between c, the config
// running, and next, the file re-read, and that SIGHUP cannot apply:
// they need a restart.
func (c *KeyServer) NotReloadable(next *KeyServer) []string {
	return notLive(changedSettings(c, next), keyServerLive)
}

// ReloadOptions checks next, the edge.yaml re-read, against c, the
// config running, and returns the options edge.Server.Reload applies it
// with. keyless is the running keyless client (nil without): when next
// has a keyless section, the options hold a new client with its
// identity, CA and timeouts (re-read, even if unchanged), counting in
// keyless's metrics; edge.Server.Reload retires the old one. log is the
// running logger. A next that changes a setting SIGHUP cannot apply gets
// an error wrapping ErrNeedsRestart naming each of them, and a file that
// cannot be read an error saying why: either way nothing is applied.
func (c *Edge) ReloadOptions(next *Edge, keyless *keyserver.Client, log *slog.Logger) (edge.Options, error) {
	if names := c.NotReloadable(next); len(names) > 0 {
		return edge.Options{}, fmt.Errorf("%w (SIGUSR2 hands the listeners to a new process that reads the whole file): %s", ErrNeedsRestart, strings.Join(names, ", "))
	}
	opts, err := next.Options()
	if err != nil {
		return edge.Options{}, err
	}
	opts.Logger = log
	if keyless != nil {
		ko, err := next.keylessOptions(log)
		if err != nil {
			return edge.Options{}, err
		}
		if opts.Keyless, err = keyless.Reconfigured(ko); err != nil {
			return edge.Options{}, err
		}
	}
	return opts, nil
}

// notLive returns the names that no live path covers.
func notLive(names, live []string) []string {
	var out []string
	for _, n := range names {
		if !slices.ContainsFunc(live, func(p string) bool { return n == p || strings.HasPrefix(n, p+".") }) {
			out = append(out, n)
		}
	}
	return out
}

// changedSettings returns the YAML paths (e.g. "limits.max_conns") of the
// settings whose values differ between a and b, pointers to two structs
// of one config type. A list is one setting.
func changedSettings(a, b any) []string {
	var out []string
	var walk func(prefix string, a, b reflect.Value)
	walk = func(prefix string, a, b reflect.Value) {
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				walk(prefix+name+".", a.Field(i), b.Field(i))
				continue
			}
			if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
				out = append(out, prefix+name)
			}
		}
	}
	walk("", reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem())
	return out
}
