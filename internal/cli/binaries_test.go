package cli_test

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/internal/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// TestBinaries runs every binary as a real process with help, version
// and bad command lines, and checks the conventions: help on stdout and
// exit 0, a usage error on stderr with the usage and exit 2, the
// version from the build information.
func TestBinaries(t *testing.T) {
	cmds := []string{"cmd/keyedge", "cmd/keyserver", "cmd/keyctl", "cmd/edgebench"}
	bins := map[string]string{}
	for i, b := range proctest.Build(t, cmds...) {
		bins[filepath.Base(cmds[i])] = b
	}
	const version = `(?m)^%s \S+\n  module:   github.com/keyedge/keyedge\n  revision: ([0-9a-f]{40}|unknown)\n  time:     \S+\n  modified: (true|false|unknown)\n  go:       go1\.`
	type want struct {
		code           int
		stdout, stderr string // regexps; "" wants the stream empty
		notStdout      string // a regexp stdout must not match, if set
	}
	cases := []struct {
		cmd  string
		args []string
		want
	}{
		// keyedge
		{"keyedge", []string{"-h"}, want{0, `^usage: keyedge COMMAND \[flags\]\n\ncommands:\n  serve `, "", ""}},
		{"keyedge", []string{"--help"}, want{0, `(?m)^  demo `, "", ""}},
		{"keyedge", []string{"help"}, want{0, `(?m)^  version `, "", ""}},
		{"keyedge", []string{"help", "serve"}, want{0, `^usage: keyedge serve \[--config FILE\] \[--pid-file FILE\]`, "", ""}},
		{"keyedge", []string{"serve", "-h"}, want{0, `(?m)^  SIGHUP +re-read --config(.|\n)*^  SIGUSR2 +restart with no downtime(.|\n)*^  SIGTERM, SIGINT drain: stop accepting(.|\n)*  -pid-file string`, "", ""}},
		{"keyedge", []string{"serve", "--help"}, want{0, `-config string`, "", ""}},
		{"keyedge", []string{"demo", "-h"}, want{0, `^usage: keyedge demo (.|\n)*  -tenants int`, "", ""}},
		{"keyedge", []string{"--version"}, want{0, strings.ReplaceAll(version, "%s", "keyedge"), "", ""}},
		{"keyedge", []string{"version"}, want{0, strings.ReplaceAll(version, "%s", "keyedge"), "", ""}},
		{"keyedge", nil, want{2, "", `^usage: keyedge COMMAND`, ""}},
		{"keyedge", []string{"frobnicate"}, want{2, "", `^keyedge: unknown command "frobnicate"\n\nusage: keyedge COMMAND`, ""}},
		{"keyedge", []string{"serve", "--bogus"}, want{2, "", `^keyedge serve: usage: flag provided but not defined: -bogus\n\nusage: keyedge serve `, ""}},
		{"keyedge", []string{"serve", "extra"}, want{2, "", `^keyedge serve: usage: unexpected argument "extra"`, ""}},
		{"keyedge", []string{"demo", "--tenants", "many"}, want{2, "", `invalid value "many" for flag -tenants`, ""}},

		// keyserver
		{"keyserver", []string{"-h"}, want{0, `(?m)\Ausage: keyserver \[--config FILE\](.|\n)*^  SIGHUP (.|\n)*  -config string`, "", ""}},
		{"keyserver", []string{"--help"}, want{0, `^usage: keyserver`, "", ""}},
		{"keyserver", []string{"help"}, want{0, `^usage: keyserver`, "", ""}},
		{"keyserver", []string{"--version"}, want{0, strings.ReplaceAll(version, "%s", "keyserver"), "", ""}},
		{"keyserver", []string{"version"}, want{0, strings.ReplaceAll(version, "%s", "keyserver"), "", ""}},
		{"keyserver", []string{"--bogus"}, want{2, "", `^keyserver: usage: flag provided but not defined: -bogus\n\nusage: keyserver`, ""}},
		{"keyserver", []string{"--config", "x.yaml", "extra"}, want{2, "", `^keyserver: usage: unexpected argument "extra"`, ""}},

		// keyctl
		{"keyctl", []string{"-h"}, want{0, `^usage: keyctl COMMAND \[flags\]\n\ncommands:\n  init `, "", ""}},
		{"keyctl", []string{"--help"}, want{0, `(?m)^  help `, "", ""}},
		{"keyctl", []string{"help"}, want{0, `(?m)^  ls `, "", ""}},
		{"keyctl", []string{"help", "rm"}, want{0, `^usage: keyctl rm NAME\|ID \[--yes\](.|\n)*  -yes`, "", ""}},
		{"keyctl", []string{"--version"}, want{0, strings.ReplaceAll(version, "%s", "keyctl"), "", ""}},
		{"keyctl", []string{"version"}, want{0, strings.ReplaceAll(version, "%s", "keyctl"), "", ""}},
		{"keyctl", []string{"ls", "-h"}, want{0, `(?m)^  -keystore string\n(.|\n)*^  -long\n`, "", ""}},
		{"keyctl", []string{"show", "--help"}, want{0, `^usage: keyctl show NAME\n(.|\n)*  -fleet-key string`, "", ""}},
		{"keyctl", []string{"policy", "-h"}, want{0, `^usage: keyctl policy set NAME\|ID "POLICY" \| check "POLICY"(.|\n)*  -geo-master string`, "", ""}},
		// Flags a command does not use are not offered.
		{"keyctl", []string{"identity", "-h"}, want{0, `^usage: keyctl identity NAME(.|\n)*  -valid duration`, "", `keystore|fleet-key`}},
		{"keyctl", []string{"ticket-secret", "-h"}, want{0, `  -out string`, "", `keystore|fleet-key`}},
		{"keyctl", []string{"node-key", "-h"}, want{0, `  -attrs string`, "", `keystore|fleet-key`}},
		{"keyctl", []string{"identity", "edge", "--keystore", "ks"}, want{2, "", `^keyctl identity: usage: flag provided but not defined: -keystore\n\nusage: keyctl identity `, ""}},
		{"keyctl", nil, want{2, "", `^usage: keyctl COMMAND`, ""}},
		{"keyctl", []string{"frobnicate"}, want{2, "", `^keyctl: unknown command "frobnicate"\n\nusage: keyctl COMMAND`, ""}},
		{"keyctl", []string{"show", "--bogus", "x"}, want{2, "", `^keyctl show: usage: flag provided but not defined: -bogus\n\nusage: keyctl show NAME`, ""}},
		{"keyctl", []string{"show"}, want{2, "", `^keyctl show: usage: want 1 argument\(s\), got 0\n\nusage: keyctl show NAME`, ""}},

		// edgebench
		{"edgebench", []string{"-h"}, want{0, `^usage: edgebench -addr HOST:PORT(.|\n)*  -version`, "", `serve-origin`}},
		{"edgebench", []string{"--help"}, want{0, `^usage: edgebench`, "", ""}},
		{"edgebench", []string{"help"}, want{0, `^usage: edgebench`, "", ""}},
		{"edgebench", []string{"--version"}, want{0, strings.ReplaceAll(version, "%s", "edgebench"), "", ""}},
		{"edgebench", []string{"version"}, want{0, strings.ReplaceAll(version, "%s", "edgebench"), "", ""}},
		{"edgebench", []string{"-bogus"}, want{2, "", `^edgebench: usage: flag provided but not defined: -bogus\n\nusage: edgebench`, ""}},
	}
	for _, c := range cases {
		t.Run(c.cmd+" "+strings.Join(c.args, " "), func(t *testing.T) {
			cmd := exec.Command(bins[c.cmd], c.args...)
			cmd.Dir = t.TempDir()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.code {
				t.Errorf("exit status %d, want %d", code, c.code)
			}
			check := func(stream, got, want string) {
				if want == "" && got != "" || !regexp.MustCompile(want).MatchString(got) {
					t.Errorf("%s does not match %q:\n%s", stream, want, got)
				}
			}
			check("stdout", stdout.String(), c.stdout)
			check("stderr", stderr.String(), c.stderr)
			if c.notStdout != "" && regexp.MustCompile(c.notStdout).MatchString(stdout.String()) {
				t.Errorf("stdout matches %q:\n%s", c.notStdout, stdout.String())
			}
		})
	}
}
