package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadKeyServerExample checks that the documented example
// configuration is valid.
func TestLoadKeyServerExample(t *testing.T) {
	cfg, err := LoadKeyServer("../../keyserver/testdata/keyserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KeysDir != "keys" || len(cfg.Authorize) != 2 || cfg.MetricsListen != "127.0.0.1:9102" {
		t.Errorf("example config parsed as %+v", cfg)
	}
	if got, want := cfg.Path(cfg.KeysDir), filepath.Join("..", "..", "keyserver", "testdata", "keys"); got != want {
		t.Errorf("keys_dir path %q, want %q, relative to the file", got, want)
	}
}

// TestLoadKeyServerErrors: each mistake is refused with a message naming
// the setting, and the defaults fill in listen and metrics_listen.
func TestLoadKeyServerErrors(t *testing.T) {
	const base = "cert_file: s.pem\nkey_file: s.key\nclient_ca_file: ca.pem\n"
	tests := map[string]struct{ text, want string }{
		"unknown key":    {base + "keys_dir: k\nlisen: x\n", "field lisen not found"},
		"empty":          {"", "is empty"},
		"no cert":        {"key_file: s.key\nclient_ca_file: ca.pem\nkeys_dir: k\n", "cert_file is required"},
		"both sources":   {base + "keys_dir: k\nkeystore: s\n", "set exactly one of keys_dir and keystore"},
		"no fleet key":   {base + "keystore: s\n", "keystore needs fleet_key_file"},
		"fleet with dir": {base + "keys_dir: k\nfleet_key_file: f\n", "go with keystore, not keys_dir"},
		"in flight":      {base + "keys_dir: k\nmax_in_flight: -1\n", "max_in_flight: must be positive, got -1"},
		"both authorize": {base + "keys_dir: k\nauthorize_all: true\nauthorize:\n  - clients: [\"dns:a.test\"]\n    keys: [\"*\"]\n", "set authorize or authorize_all, not both"},
		"bad rule":       {base + "keys_dir: k\nauthorize:\n  - clients: [\"a.test\"]\n    keys: [\"*\"]\n", "authorize: "},
		"bad level":      {base + "keys_dir: k\nlog_level: loud\n", `log_level "loud"`},
		"bad rsa signer": {base + "keys_dir: k\nrsa_signer: OpenSSL\n", `rsa_signer: rsasigner: "OpenSSL" is not auto, openssl or go`},
	}
	for name, tt := range tests {
		path := filepath.Join(t.TempDir(), "keyserver.yaml")
		if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyServer(path)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "config "+path) {
			t.Errorf("%s: err = %v, want \"config PATH\" then %q", name, err, tt.want)
		}
	}

	path := filepath.Join(t.TempDir(), "keyserver.yaml")
	if err := os.WriteFile(path, []byte(base+"keys_dir: k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadKeyServer(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":2407" || cfg.MetricsListen != "off" {
		t.Errorf("defaults: listen %q, metrics_listen %q", cfg.Listen, cfg.MetricsListen)
	}
}
