package certs

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/keyedge/keyedge/internal/secretfile"
)

// KeyPairFile is a certificate and key on disk that are re-read when
// either file changes, so a short-lived identity renewed by an external
// job (keyctl identity, a cron entry, a secrets sidecar) is picked up
// without a restart. Use its methods as tls.Config.GetCertificate or
// GetClientCertificate. It is safe for concurrent use.
type KeyPairFile struct {
	CertFile, KeyFile string

	// Now tells the time that spaces out the checks for changed files
	// [time.Now]. Tests set it to move past a recheck without waiting.
	Now func() time.Time

	// Logger is told, once per version of the files, of a renewal that
	// does not load, while the previous pair stays in use: without it
	// a broken renewal would go unnoticed until the old pair expires.
	// [slog.Default()]
	Logger *slog.Logger

	mu      sync.Mutex // guards the fields below
	cert    *tls.Certificate
	stamp   string    // modification times and sizes of the files loaded
	broken  string    // stamp of the files that last failed to load, not read again
	checked time.Time // last time the files were stat'ed
}

// recheck is how often the files are stat'ed for changes.
const recheck = time.Second

// Load returns the current key pair, reading the files when they have
// changed. A key file other users can read is refused (an error wrapping
// secretfile.ErrExposed). A file that fails to load, or is refused,
// keeps the previous pair in use, logged once (see Logger), and
// reports the error only when there is none.
func (k *KeyPairFile) Load() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if k.Now != nil {
		now = k.Now()
	}
	if k.cert != nil && now.Sub(k.checked) < recheck {
		return k.cert, nil
	}
	k.checked = now
	stamp, err := fileStamp(k.CertFile, k.KeyFile)
	if err == nil && (stamp == k.stamp || k.cert != nil && stamp == k.broken) {
		return k.cert, nil
	}
	var cert tls.Certificate
	if err == nil {
		cert, err = secretfile.KeyPair(k.CertFile, k.KeyFile)
	}
	if err != nil {
		if k.cert != nil {
			if stamp != "" {
				k.broken = stamp
				cmp.Or(k.Logger, slog.Default()).Error("certs: renewed key pair does not load; still using the previous one",
					"cert_file", k.CertFile, "key_file", k.KeyFile, "err", err)
			}
			return k.cert, nil
		}
		return nil, fmt.Errorf("certs: failed to load key pair %s: %w", k.CertFile, err)
	}
	k.cert, k.stamp = &cert, stamp
	return k.cert, nil
}

// GetCertificate has the signature of tls.Config.GetCertificate.
func (k *KeyPairFile) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Load()
}

// GetClientCertificate has the signature of tls.Config.GetClientCertificate.
func (k *KeyPairFile) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Load()
}

func fileStamp(paths ...string) (string, error) {
	var s string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}
