package cli

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		positional []string
		config     string
		err        error  // nil, flag.ErrHelp or ErrUsage
		stdout     string // in stdout; "" for none at all
	}{
		{args: []string{"a", "--config", "x.yaml", "b"}, positional: []string{"a", "b"}, config: "x.yaml"},
		{args: []string{"--config=y", "--", "-c", "d"}, positional: []string{"-c", "d"}, config: "y"},
		{args: nil, config: "edge.yaml"},
		{args: []string{"-h"}, err: flag.ErrHelp, stdout: "usage: prog [--config FILE]\n\nwhat it does\n\nflags:\n  -config string"},
		{args: []string{"a", "--help"}, err: flag.ErrHelp, stdout: "usage: prog"},
		{args: []string{"-bogus"}, err: ErrUsage},
		{args: []string{"--config"}, err: ErrUsage},
	} {
		fs := flag.NewFlagSet("prog", flag.ContinueOnError)
		config := fs.String("config", "edge.yaml", "config file")
		SetUsage(fs, "prog [--config FILE]", "what it does")
		var stdout, stderr bytes.Buffer
		fs.SetOutput(&stderr)
		positional, err := Parse(fs, tt.args, &stdout)
		switch {
		case tt.err == nil && err != nil, tt.err != nil && !errors.Is(err, tt.err):
			t.Errorf("Parse(%q) = %v, want %v", tt.args, err, tt.err)
		case tt.err == nil && (!slices.Equal(positional, tt.positional) || *config != tt.config):
			t.Errorf("Parse(%q): positional %q, config %q; want %q, %q", tt.args, positional, *config, tt.positional, tt.config)
		}
		if !strings.Contains(stdout.String(), tt.stdout) || (tt.stdout == "") != (stdout.Len() == 0) {
			t.Errorf("Parse(%q) wrote %q to stdout, want %q in it", tt.args, stdout.String(), tt.stdout)
		}
		if stderr.Len() > 0 {
			t.Errorf("Parse(%q) wrote %q to the flag set's output; Exit reports errors", tt.args, stderr.String())
		}
	}
}

func TestExit(t *testing.T) {
	fs := flag.NewFlagSet("prog", flag.ContinueOnError)
	SetUsage(fs, "prog ARG", "")
	for _, tt := range []struct {
		err    error
		code   int
		stderr string
	}{
		{nil, 0, ""},
		{flag.ErrHelp, 0, ""},
		{Usagef("want %d argument(s)", 1), 2, "prog: usage: want 1 argument(s)\n\nusage: prog ARG\n"},
		{errors.New("no such file"), 1, "prog: no such file\n"},
	} {
		var stderr bytes.Buffer
		if code := Exit("prog", fs, &stderr, tt.err); code != tt.code || stderr.String() != tt.stderr {
			t.Errorf("Exit(%v) = %d, stderr %q; want %d, %q", tt.err, code, stderr.String(), tt.code, tt.stderr)
		}
	}
}
