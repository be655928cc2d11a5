package keyserver_test

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"os"
	"testing"

	"github.com/keyedge/keyedge/internal/rsasigner"
	"github.com/keyedge/keyedge/keyserver"
)

// signerBackend is an RSA signer backend a test runs with: its
// DirOptions.Signer hook (nil for Go).
type signerBackend struct {
	name rsasigner.Backend
	wrap func(crypto.Signer) crypto.Signer
}

// signerBackends returns Go's backend, and OpenSSL's where libcrypto
// loads (everywhere when KEYEDGE_REQUIRE_OPENSSL is set, as CI sets it).
func signerBackends(t testing.TB) []signerBackend {
	t.Helper()
	backends := []signerBackend{{name: rsasigner.Go}}
	s, err := rsasigner.New(rsasigner.Options{Backend: rsasigner.OpenSSL, Logger: slog.New(slog.DiscardHandler)})
	switch {
	case errors.Is(err, rsasigner.ErrUnavailable) && os.Getenv("KEYEDGE_REQUIRE_OPENSSL") == "":
		t.Logf("OpenSSL backend not tested: %v", err)
	case err != nil:
		t.Fatal(err)
	default:
		backends = append(backends, signerBackend{name: rsasigner.OpenSSL, wrap: s.Wrap})
	}
	return backends
}

// TestDirSourceSigner: a DirSource with DirOptions.Signer hands out the
// signer the hook made of an RSA key, once per load.
func TestDirSourceSigner(t *testing.T) {
	k := keys(t)
	var wrapped int
	src, _ := dirSourceSigning(t, func(s crypto.Signer) crypto.Signer {
		wrapped++
		return wrappedSigner{s}
	})
	for range 2 {
		key, err := src.Key(context.Background(), keyserver.KeyRef{SKI: ski(t, k.rsa.Public())})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := key.Signer.(wrappedSigner); !ok {
			t.Errorf("the key signs with a %T, not the hook's signer", key.Signer)
		}
	}
	if wrapped != 1 {
		t.Errorf("the hook ran %d times for one key, want once", wrapped)
	}
}

// wrappedSigner marks a signer a DirOptions.Signer hook made.
type wrappedSigner struct{ crypto.Signer }
