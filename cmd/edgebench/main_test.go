package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/bench"
	"github.com/keyedge/keyedge/bench/benchtest"
)

// TestSmoke runs edgebench end to end, a bounded number of requests in
// every mode, against an edge and a key server on 127.0.0.1, and wants
// every run to finish with no error (it asserts nothing about speed).
// It is part of `make test`.
func TestSmoke(t *testing.T) {
	w := benchtest.Start(t, bench.OriginHandler())
	dir := t.TempDir()
	edge := []string{"-addr", w.Addr, "-ca", w.CAFile, "-tenants", "20", "-c", "4", "-requests", "40", "-duration", "30s",
		"-server-pid", strconv.Itoa(os.Getpid()), "-metrics", w.MetricsURL}
	keyless := []string{"-mode", "keyless", "-key-server", w.KeyServer, "-identity-cert", w.IdentityCert,
		"-identity-key", w.IdentityKey, "-key-server-ca", w.KeyServerCA, "-c", "8", "-requests", "200", "-duration", "30s"}
	cases := []struct {
		name string
		args []string
		want string // in the text report
	}{
		{"handshake", append([]string{"-mode", "handshake", "-curves", "X25519MLKEM768,X25519"}, edge...), "X25519MLKEM768 40"},
		{"handshake-x25519-ecdsa", append([]string{"-mode", "handshake", "-curves", "X25519", "-sig", "ecdsa", "-tls", "1.3"}, edge...), "ECDSA P-256 40"},
		{"resumed", append([]string{"-mode", "resumed", "-dist", "seq"}, edge...), "resumed"},
		{"keepalive", append([]string{"-mode", "keepalive"}, edge...), "40 ok, 0 errors"},
		{"keepalive-h2", append([]string{"-mode", "keepalive", "-h2"}, edge...), "h2 4"},
		{"handshake-h3", append(append([]string{"-mode", "handshake", "-h3"}, edge...), "-addr", w.H3Addr), "h3 40"},
		{"keyless-ecdsa", append([]string{"-key-cert", w.ECDSAKeyCert}, keyless...), "ECDSA P-256"},
		{"keyless-rsa", append([]string{"-key-cert", w.RSAKeyCert}, keyless...), "RSA-2048"},
	}
	var files []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			jsonFile := filepath.Join(dir, c.name+".json")
			args := append([]string{"-json", jsonFile, "-plot", filepath.Join(dir, c.name+".svg"), "-label", c.name, "-scenario", "smoke"}, c.args...)
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("edgebench %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
			}
			r, err := bench.ReadJSON(jsonFile)
			if err != nil {
				t.Fatal(err)
			}
			if r.Errs() != 0 || r.Requests == 0 || r.Aborted != 0 {
				t.Errorf("%d ok, %d aborted, errors %v %v", r.Requests, r.Aborted, r.Errors, r.ErrorSamples)
			}
			if !strings.Contains(stdout.String(), c.want) {
				t.Errorf("report lacks %q:\n%s", c.want, stdout.String())
			}
			if !strings.Contains(stderr.String(), "edgebench:") && r.Seconds > 1.5 {
				t.Errorf("no progress line in %.1f s", r.Seconds)
			}
			files = append(files, jsonFile)
		})
	}

	t.Run("summarize", func(t *testing.T) {
		plot := filepath.Join(dir, "all.png")
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), append([]string{"-summarize", "-plot", plot}, files...), &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if !strings.Contains(stdout.String(), "| smoke | keyless-rsa |") {
			t.Errorf("summary lacks the keyless row:\n%s", stdout.String())
		}
		if fi, err := os.Stat(plot); err != nil || fi.Size() == 0 {
			t.Errorf("plot: %v", err)
		}
	})

	t.Run("ready", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		args := []string{"-addr", w.Addr, "-ca", w.CAFile, "-tenants", "1", "-ready-within", "10s"}
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "ready_seconds=") {
			t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
		}
	})
}

// Bad flags are usage errors, exit status 2, before anything runs.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-tenants", "1", "-duration", "0"},
		{"-mode", "keyless"},
		{"-tenants", "1", "-tls", "1.1"},
		{"-tenants", "1", "-sig", "dsa"},
		{"-names", "x", "-tenants", "1"},
		{"-tenants", "1", "-mode", "nope"},
		{"-tenants", "1", "-dist", "nope", "-h2"},
		{"-tenants", "1", "-mode", "keepalive", "-h2", "-h3"},
		{"-summarize"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("edgebench %v: exit %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}
