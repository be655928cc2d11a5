package config

// What both configuration files share: strict decoding, paths relative
// to the file, the log level, and opening a keystore from its location.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/keystore"
	"go.yaml.in/yaml/v3"
)

// errEmpty is decode's error for a file with no YAML document, or only
// comments.
var errEmpty = errors.New("empty")

// decode decodes a YAML document into v. Unknown keys are errors, so a
// misspelt setting is never silently ignored.
func decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errEmpty
		}
		return err
	}
	return nil
}

// settings is a configuration file's schema: Edge or KeyServer.
type settings interface {
	// check validates the settings, reporting every problem it finds.
	check() error
	// checkFiles checks every file the settings name.
	checkFiles() error
	// setDefaults fills in what the binary defaults.
	setDefaults()
}

// load reads the file at path into c, checks it (and with files, every
// file it names) and fills in the defaults. Errors begin "config PATH"
// (the binary names itself before them); all problems found are
// reported together.
func load(path string, c settings, files bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := decode(data, c); err != nil {
		if errors.Is(err, errEmpty) { // no YAML document at all, or only comments
			return fmt.Errorf("config %s is empty", path)
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	err = c.check()
	if files {
		err = errors.Join(err, c.checkFiles())
	}
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	c.setDefaults()
	return nil
}

// resolve resolves p, a path in the configuration file in directory dir,
// relative to that directory.
func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// keystoreLocation is a keystore setting resolved: a directory relative
// to the file in dir, or a Redis URL as written.
func keystoreLocation(dir, keystore string) string {
	if backend.IsURL(keystore) {
		return keystore
	}
	return resolve(dir, keystore)
}

// parseLevel parses a log_level setting; empty is info.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// openKeystore opens the storage at location (a directory or a Redis URL,
// its password in passwordFile) and the keystore in it with opts, which
// must be initialised (keyctl init). It returns the store, its storage
// and the function releasing the storage, to call after the store's
// Close.
func openKeystore(ctx context.Context, location, passwordFile string, opts keystore.Options) (*keystore.Store, certmagic.Storage, func() error, error) {
	storage, release, err := backend.Open(ctx, location, passwordFile, opts.Logger)
	if err != nil {
		return nil, nil, nil, err
	}
	opts.Storage, opts.RequireInit = storage, true
	store, err := keystore.Open(ctx, opts)
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	return store, storage, release, nil
}
