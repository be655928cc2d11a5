package config

// The files a configuration names, read as the binaries read them, so a
// check finds every missing, unreadable, malformed or exposed file at
// once instead of one per start.

import (
	"errors"
	"fmt"
	"os"

	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/geo"
)

// CheckEdge loads an edge.yaml file as LoadEdge does and reads every
// file it names as keyedge serve does (certificates, keys and their
// modes, secrets, the keystore directory), reporting every problem at
// once, each naming its setting or file. keyedge serve checks its file
// with it at start and on SIGHUP, and keyedge check-config runs it
// alone.
func CheckEdge(path string) (*Edge, error) { return loadEdge(path, true) }

// CheckKeyServer is CheckEdge for a keyserver.yaml file: what keyserver
// checks at start and on SIGHUP, and keyserver check-config alone.
func CheckKeyServer(path string) (*KeyServer, error) { return loadKeyServer(path, true) }

// checkFiles reads the files c names. Settings check already refused
// (half a key pair, a bad geo section) are skipped.
func (c *Edge) checkFiles() error {
	var errs []error
	if c.FleetKeyFile != "" {
		if _, err := keystore.ReadFleetKeyFile(c.Path(c.FleetKeyFile)); err != nil {
			errs = append(errs, fmt.Errorf("fleet_key_file: %w", err))
		}
	}
	if c.Keystore != "" {
		errs = append(errs, checkKeystoreDir(keystoreLocation(c.dir, c.Keystore)))
	}
	if c.KeystorePasswordFile != "" {
		if _, err := secretfile.Read(c.Path(c.KeystorePasswordFile)); err != nil {
			errs = append(errs, fmt.Errorf("keystore_password_file: %w", err))
		}
	}
	if c.Fallback.CertFile != "" && c.Fallback.KeyFile != "" {
		_, err := c.fallback()
		errs = append(errs, err)
	}
	_, err := c.tickets()
	errs = append(errs, err)
	if k := c.Keyless; k.CertFile != "" && k.KeyFile != "" && k.CAFile != "" {
		_, err := c.keylessOptions(nil)
		errs = append(errs, err)
	}
	if _, _, err := c.geo(); err == nil {
		_, err := c.nodeKey()
		errs = append(errs, err)
	}
	_, err = c.acmeRoots()
	errs = append(errs, err)
	return errors.Join(errs...)
}

// checkFiles reads the files c names.
func (c *KeyServer) checkFiles() error {
	var errs []error
	if c.CertFile != "" && c.KeyFile != "" && c.ClientCAFile != "" {
		_, err := c.tlsConfig(nil)
		errs = append(errs, err)
	}
	if c.KeysDir != "" {
		if _, err := os.ReadDir(c.Path(c.KeysDir)); err != nil {
			errs = append(errs, fmt.Errorf("keys_dir: failed to read key directory: %w", err))
		}
	}
	if c.Keystore != "" {
		errs = append(errs, checkKeystoreDir(keystoreLocation(c.dir, c.Keystore)))
	}
	if c.FleetKeyFile != "" {
		if _, err := keystore.ReadFleetKeyFile(c.Path(c.FleetKeyFile)); err != nil {
			errs = append(errs, fmt.Errorf("fleet_key_file: %w", err))
		}
	}
	if c.NodeKeyFile != "" {
		if _, err := geo.ReadNodeKeyFile(c.Path(c.NodeKeyFile)); err != nil {
			errs = append(errs, fmt.Errorf("node_key_file: %w", err))
		}
	}
	if c.KeystorePasswordFile != "" {
		if _, err := secretfile.Read(c.Path(c.KeystorePasswordFile)); err != nil {
			errs = append(errs, fmt.Errorf("keystore_password_file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkKeystoreDir reports a keystore location that names a directory
// that is not there (a Redis URL is checked when it is opened).
func checkKeystoreDir(location string) error {
	if backend.IsURL(location) {
		return nil
	}
	if fi, err := os.Stat(location); err != nil || !fi.IsDir() {
		return fmt.Errorf("keystore: no keystore at %s (keyctl init creates one)", location)
	}
	return nil
}
