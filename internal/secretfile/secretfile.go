// Package secretfile reads and writes files holding secrets: the fleet
// key, the geo master key, node attribute keys, and every private key
// file a keyedge binary reads (TLS keys, CA keys, identity keys). A
// secret file is written once with mode 0600 and never overwritten,
// since replacing a key would strand everything sealed to it; a file
// other users can read is refused, with one rule and one message
// (Private, ErrExposed) wherever it is read.
//
// It imports only the standard library, so that every package of ours,
// certs included, may use it.
package secretfile

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrExposed is returned by Read for a file that users other than its
// owner can access.
var ErrExposed = errors.New("secret file is accessible by other users")

// Private reports whether a file's mode keeps it to its owner: no access
// for others and none for the group, except read access in one shape,
// that of a Kubernetes Secret mounted for a non-root pod: owned by root,
// group-readable by a group this process is in (the pod's fsGroup).
func Private(fi fs.FileInfo) bool {
	perm := fi.Mode().Perm()
	switch {
	case perm&0o037 != 0:
		return false // group write or execute, or anything for others
	case perm&0o040 == 0:
		return true
	}
	return podSecret(fi)
}

// Check returns an error wrapping ErrExposed, naming path and its mode,
// unless fi (path's FileInfo) is Private. It is for callers that have
// stat'ed the file already, such as a directory scan; others use Read.
func Check(path string, fi fs.FileInfo) error {
	if !Private(fi) {
		return fmt.Errorf("%w: %s has mode %v; chmod 600 it", ErrExposed, path, fi.Mode().Perm())
	}
	return nil
}

// Read returns the contents of the secret file at path, refusing one
// that is not Private. The mode is checked on the open file, so a file
// swapped in between the check and the read is not read.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := Check(path, fi); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// KeyPair reads a PEM certificate chain from certFile and its private
// key from keyFile, as tls.LoadX509KeyPair does, refusing a key file
// that is not Private (an error wrapping ErrExposed). The certificate
// file may be readable by anyone.
func KeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := Read(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer clear(keyPEM)
	return tls.X509KeyPair(certPEM, keyPEM)
}

// Write creates path with mode 0600 and writes data, synced to disk. It
// fails with an error wrapping fs.ErrExist when path already exists, and
// leaves no partial file behind on any failure.
func Write(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// Exists reports whether path exists. Errors other than absence count as
// existing, so a caller never overwrites a file it could not stat.
func Exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
