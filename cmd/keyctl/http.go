package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/keyedge/keyedge/internal/cli"
	"github.com/keyedge/keyedge/keystore"
)

// httpFlags are keyctl http set's flags: each one given changes its
// setting, "off" turning it off; a flag not given leaves its setting.
type httpFlags struct {
	redirect, hsts, rate, burst         string
	requestHeaders, responseHeaders     stringList
	clientCA, clientAuth, clientSubject string
}

func (f *httpFlags) define(e *env) {
	e.flags.StringVar(&f.redirect, "redirect", "", "on: plain-HTTP (port 80) requests are redirected to https (the default); off: refused with 403")
	e.flags.StringVar(&f.hsts, "hsts", "", "Strict-Transport-Security on HTTPS responses: max-age=SECONDS[,includeSubDomains][,preload], or off")
	e.flags.Var(&f.requestHeaders, "request-header", "set:NAME:VALUE, add:NAME:VALUE or remove:NAME applied to requests before the origin (repeat, in order; replaces the request rules), or off")
	e.flags.Var(&f.responseHeaders, "response-header", "the same for responses before the client")
	e.flags.StringVar(&f.rate, "rate", "", "requests per client address: N/s, N/m or N/h (429 with Retry-After past it), or off")
	e.flags.StringVar(&f.burst, "burst", "", "with --rate: requests a client may make at once [the rate's per-second count, at least 1]")
	e.flags.StringVar(&f.clientCA, "client-ca", "", "PEM bundle of the CAs whose client certificates are accepted (stored in the keystore)")
	e.flags.StringVar(&f.clientAuth, "client-auth", "", "client certificates: required (handshake refused without one), optional (verified if sent), or off")
	e.flags.StringVar(&f.clientSubject, "client-subject-header", "", "request header carrying the verified client certificate's subject to the origin (always removed from clients' requests), or off")
}

// change checks the flags, reading the CA bundle, and returns the
// change they make to a name's settings. Bad values are usage errors:
// nothing is read from the keystore.
func (f *httpFlags) change() (func(*keystore.TenantHTTP) error, error) {
	var steps []func(*keystore.TenantHTTP) error
	step := func(s func(*keystore.TenantHTTP) error) { steps = append(steps, s) }
	switch f.redirect {
	case "":
	case "on", "off":
		off := f.redirect == "off"
		step(func(h *keystore.TenantHTTP) error { h.NoRedirect = off; return nil })
	default:
		return nil, cli.Usagef("--redirect %q: want on or off", f.redirect)
	}
	if f.hsts != "" {
		var hsts *keystore.HSTS
		if f.hsts != "off" {
			var err error
			if hsts, err = keystore.ParseHSTS(f.hsts); err != nil {
				return nil, cli.Usagef("--hsts: %v", err)
			}
		}
		step(func(h *keystore.TenantHTTP) error { h.HSTS = hsts; return nil })
	}
	for _, l := range []struct {
		flag  string
		rules stringList
		field func(*keystore.TenantHTTP) *[]keystore.HeaderRule
	}{
		{"--request-header", f.requestHeaders, func(h *keystore.TenantHTTP) *[]keystore.HeaderRule { return &h.RequestHeaders }},
		{"--response-header", f.responseHeaders, func(h *keystore.TenantHTTP) *[]keystore.HeaderRule { return &h.ResponseHeaders }},
	} {
		if len(l.rules) == 0 {
			continue
		}
		rules, err := parseRules(l.flag, l.rules)
		if err != nil {
			return nil, err
		}
		step(func(h *keystore.TenantHTTP) error { *l.field(h) = rules; return nil })
	}
	rate, err := f.rateChange()
	if err != nil {
		return nil, err
	}
	if rate != nil {
		step(rate)
	}
	auth, err := f.clientAuthChange()
	if err != nil {
		return nil, err
	}
	if auth != nil {
		step(auth)
	}
	if len(steps) == 0 {
		return nil, cli.Usagef("nothing to change: give at least one of --redirect, --hsts, --request-header, --response-header, --rate, --burst, --client-auth, --client-ca, --client-subject-header")
	}
	return func(h *keystore.TenantHTTP) error {
		for _, s := range steps {
			if err := s(h); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

// parseRules parses a header flag's rules; "off" alone clears them.
func parseRules(flag string, values stringList) ([]keystore.HeaderRule, error) {
	if len(values) == 1 && values[0] == "off" {
		return nil, nil
	}
	rules := make([]keystore.HeaderRule, len(values))
	for i, v := range values {
		var err error
		if rules[i], err = keystore.ParseHeaderRule(v); err != nil {
			return nil, cli.Usagef("%s: %v", flag, err)
		}
	}
	return rules, nil
}

// rateChange is the change --rate and --burst make, or nil.
func (f *httpFlags) rateChange() (func(*keystore.TenantHTTP) error, error) {
	if f.rate == "off" {
		if f.burst != "" {
			return nil, cli.Usagef("--burst goes with a --rate, not --rate off")
		}
		return func(h *keystore.TenantHTTP) error { h.RateLimit = nil; return nil }, nil
	}
	if f.rate == "" && f.burst == "" {
		return nil, nil
	}
	burst := 0 // the default, or the stored one
	if f.burst != "" {
		var err error
		if burst, err = strconv.Atoi(f.burst); err != nil || burst < 1 {
			return nil, cli.Usagef("--burst %q: want a whole number of requests, at least 1", f.burst)
		}
	}
	var limit *keystore.RateLimit
	if f.rate != "" {
		var err error
		if limit, err = keystore.ParseRateLimit(f.rate, max(burst, 1)); err != nil {
			return nil, cli.Usagef("--rate: %v", err)
		}
	}
	return func(h *keystore.TenantHTTP) error {
		switch {
		case limit == nil && h.RateLimit == nil:
			return errors.New("--burst alone changes a rate limit, and there is none: give --rate too")
		case limit == nil:
			h.RateLimit.Burst = burst
		case burst == 0:
			limit.Burst = max(1, int(math.Ceil(limit.PerSecond)))
			h.RateLimit = limit
		default:
			h.RateLimit = limit
		}
		return nil
	}, nil
}

// clientAuthChange is the change --client-ca, --client-auth and
// --client-subject-header make, or nil.
func (f *httpFlags) clientAuthChange() (func(*keystore.TenantHTTP) error, error) {
	if f.clientAuth == "off" {
		if f.clientCA != "" || f.clientSubject != "" {
			return nil, cli.Usagef("--client-auth off takes no --client-ca or --client-subject-header")
		}
		return func(h *keystore.TenantHTTP) error { h.ClientAuth = nil; return nil }, nil
	}
	if f.clientAuth == "" && f.clientCA == "" && f.clientSubject == "" {
		return nil, nil
	}
	mode := keystore.ClientAuthMode(f.clientAuth)
	if mode != "" && mode != keystore.ClientAuthRequired && mode != keystore.ClientAuthOptional {
		return nil, cli.Usagef("--client-auth %q: want required, optional or off", f.clientAuth)
	}
	var cas string
	if f.clientCA != "" {
		data, err := os.ReadFile(f.clientCA)
		if err != nil {
			return nil, err
		}
		cas = string(data)
		// Checked now, so a bad file is refused before the keystore is opened.
		probe := keystore.TenantHTTP{ClientAuth: &keystore.ClientAuth{CAs: cas, Mode: keystore.ClientAuthRequired}}
		if err := probe.Check(); err != nil {
			return nil, cli.Usagef("--client-ca %s: %v", f.clientCA, err)
		}
	}
	subject := f.clientSubject
	return func(h *keystore.TenantHTTP) error {
		if h.ClientAuth == nil {
			if cas == "" || mode == "" {
				return errors.New("client certificates are off for this name: turn them on with --client-ca FILE and --client-auth required|optional")
			}
			h.ClientAuth = &keystore.ClientAuth{}
		}
		a := h.ClientAuth
		if cas != "" {
			a.CAs = cas
		}
		if mode != "" {
			a.Mode = mode
		}
		switch subject {
		case "":
		case "off":
			a.SubjectHeader = ""
		default:
			a.SubjectHeader = subject
		}
		return nil
	}, nil
}

func runHTTP(ctx context.Context, e *env, args []string) error {
	var f httpFlags
	if len(args) == 0 || (args[0] != "set" && args[0] != "show") {
		f.define(e)
		if err := e.parse(args, anyArgs); err != nil {
			return err // -h among them: the help
		}
		return cli.Usagef("want http set NAME FLAGS..., or http show NAME")
	}
	verb := args[0]
	if verb == "set" {
		f.define(e)
	}
	if err := e.parse(args[1:], 1); err != nil {
		return err
	}
	name := e.args[0]
	var change func(*keystore.TenantHTTP) error
	if verb == "set" {
		var err error
		if change, err = f.change(); err != nil {
			return err // before the keystore is opened
		}
	}
	store, err := e.open(ctx, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	if verb == "set" {
		if err := store.UpdateHTTP(ctx, name, change); err != nil {
			return err
		}
	}
	entry, err := store.Lookup(ctx, name)
	if err != nil {
		return err
	}
	showHTTP(e.stdout, entry)
	if verb == "set" {
		fmt.Fprintf(e.stdout, "written to %d certificate(s); edges follow within their poll interval\n", len(entry.Certs))
	}
	return nil
}

// showHTTP prints a name's HTTP settings, those of its first
// certificate, and warns when its certificates disagree.
func showHTTP(w io.Writer, entry *keystore.Entry) {
	h := entry.Certs[0].Meta.HTTP
	if h == nil {
		h = &keystore.TenantHTTP{}
	}
	fmt.Fprintf(w, "name:            %s\n", entry.Name)
	fmt.Fprintf(w, "redirect:        %s\n", map[bool]string{false: "on (port 80 redirects to https)", true: "off (port 80 refuses with 403)"}[h.NoRedirect])
	hsts := "off"
	if h.HSTS != nil {
		hsts = h.HSTS.String()
	}
	fmt.Fprintf(w, "hsts:            %s\n", hsts)
	for _, l := range []struct {
		what  string
		rules []keystore.HeaderRule
	}{{"request headers: ", h.RequestHeaders}, {"response headers:", h.ResponseHeaders}} {
		if len(l.rules) == 0 {
			fmt.Fprintf(w, "%s none\n", l.what)
			continue
		}
		fmt.Fprintf(w, "%s\n", l.what)
		for _, r := range l.rules {
			fmt.Fprintf(w, "  %s\n", r)
		}
	}
	rate := "off"
	if h.RateLimit != nil {
		rate = h.RateLimit.String() + " per client address"
	}
	fmt.Fprintf(w, "rate limit:      %s\n", rate)
	if a := h.ClientAuth; a == nil {
		fmt.Fprintf(w, "client auth:     off\n")
	} else {
		fmt.Fprintf(w, "client auth:     %s, %d CA(s)\n", a.Mode, strings.Count(a.CAs, "-----BEGIN CERTIFICATE-----"))
		fmt.Fprintf(w, "  subject header: %s\n", map[bool]string{true: "none", false: a.SubjectHeader}[a.SubjectHeader == ""])
	}
	first, _ := json.Marshal(entry.Certs[0].Meta.HTTP)
	for _, c := range entry.Certs[1:] {
		if other, _ := json.Marshal(c.Meta.HTTP); string(other) != string(first) {
			fmt.Fprintf(w, "warning: certificate %s has other settings; keyctl http set rewrites every certificate of the name\n", c.ID)
		}
	}
}
