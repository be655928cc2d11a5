package acme

import (
	"context"
	"strings"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/keystore"
)

// sealedStorage is the certmagic.Storage the Manager gives certmagic:
// the keystore's storage, with certmagic's own private keys (the ACME
// account key) sealed at rest to the fleet key like a tenant key, and
// opened on Load. Without a fleet key, storing one fails with
// keystore.ErrNoSealer.
type sealedStorage struct {
	certmagic.Storage
	store *keystore.Store
}

// isACMEPrivateKey reports whether a storage key is one of certmagic's
// private keys (acme/<CA>/users/<email>/<name>.key).
func isACMEPrivateKey(key string) bool {
	return strings.HasPrefix(key, "acme/") && strings.HasSuffix(key, ".key")
}

func (s *sealedStorage) Store(ctx context.Context, key string, value []byte) error {
	if isACMEPrivateKey(key) {
		sealed, err := s.store.SealSecret(key, value)
		if err != nil {
			return err
		}
		value = sealed
	}
	return s.Storage.Store(ctx, key, value)
}

func (s *sealedStorage) Load(ctx context.Context, key string) ([]byte, error) {
	data, err := s.Storage.Load(ctx, key)
	if err != nil || !isACMEPrivateKey(key) {
		return data, err
	}
	return s.store.OpenSecret(key, data)
}
