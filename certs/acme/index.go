package acme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/keystore"
)

// The managed index is one small JSON file per managed certificate, named
// by its primary name in a hashed index like the keystore's name index
// (keystore.HashedKey):
//
//	acme/managed/<h2>/<name>    h2 = first 2 hex of sha256(name)
//
// It is what the renewal loop walks (never the whole keystore), the state
// nodes re-read under a name's lock before ordering, and where the
// fleet-wide backoff of a failing name lives. certmagic keeps its own
// ACME state beside it, under acme/<CA>/.
const managedDir = "acme/managed"

// ErrNotManaged is returned for a name ACME does not manage.
var ErrNotManaged = errors.New("acme: name is not managed by ACME")

// managedEntry is one file of the managed index.
type managedEntry struct {
	// Declared by Request.
	Names  []string `json:"names"` // primary first
	Tenant string   `json:"tenant"`
	Origin string   `json:"origin,omitempty"`

	// The certificate obtained last; CertID is empty until one is.
	CertID    string    `json:"cert_id,omitempty"`
	Covered   []string  `json:"covered,omitempty"` // the Names it was ordered for
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Orders    int       `json:"orders,omitempty"` // certificates obtained so far

	// OCSPNext is when the staple should be fetched again (zero: at the
	// next pass, if the certificate names a responder).
	OCSPNext time.Time `json:"ocsp_next,omitzero"`

	// Backoff after failed orders.
	Failures  int       `json:"failures,omitempty"`
	RetryAt   time.Time `json:"retry_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

func managedKey(name string) string { return keystore.HashedKey(managedDir, name) }

// loadEntry reads the entry of a normalised name from storage, never a
// cache, so a node sees what another stored before it took the lock.
func (m *Manager) loadEntry(ctx context.Context, name string) (*managedEntry, error) {
	return loadEntry(ctx, m.storage, name)
}

func loadEntry(ctx context.Context, storage certmagic.Storage, name string) (*managedEntry, error) {
	data, err := storage.Load(ctx, managedKey(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotManaged, name)
	}
	if err != nil {
		return nil, fmt.Errorf("acme: failed to read ACME entry of %s: %w", name, err)
	}
	var e managedEntry
	if err := json.Unmarshal(data, &e); err != nil || len(e.Names) == 0 || e.Names[0] != name {
		return nil, fmt.Errorf("acme: corrupt ACME entry %s", managedKey(name))
	}
	return &e, nil
}

// Declaration is what is recorded about a name ACME manages, as tools
// show it.
type Declaration struct {
	Names  []string // the certificate's names, the primary first
	Tenant string
	Origin string
	CertID string // the certificate obtained last; "" while pending

	// After failed orders: how many in a row, when the next is due, and
	// the last error (bounded in length).
	Failures  int
	RetryAt   time.Time
	LastError string
}

// Declared returns what is recorded for the managed certificate whose
// primary (first) name is name, as keyctl issue or on-demand issuance
// declared it: a Declaration with no CertID is pending, obtained by no
// node yet. It returns an error wrapping ErrNotManaged for a name that
// is not a managed primary name.
func Declared(ctx context.Context, storage certmagic.Storage, name string) (*Declaration, error) {
	name, err := keystore.NormalizeName(name)
	if err != nil {
		return nil, err
	}
	e, err := loadEntry(ctx, storage, name)
	if err != nil {
		return nil, err
	}
	return &Declaration{Names: e.Names, Tenant: e.Tenant, Origin: e.Origin, CertID: e.CertID,
		Failures: e.Failures, RetryAt: e.RetryAt, LastError: e.LastError}, nil
}

func (m *Manager) storeEntry(ctx context.Context, e *managedEntry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("acme: failed to encode ACME entry of %s: %w", e.Names[0], err)
	}
	if err := m.storage.Store(ctx, managedKey(e.Names[0]), data); err != nil {
		return fmt.Errorf("acme: failed to write ACME entry of %s: %w", e.Names[0], err)
	}
	return nil
}

// deleteEntry removes the entry of name; the caller holds its lock.
// (FileStorage deletes a missing key without an error, hence Exists.)
func deleteEntry(ctx context.Context, storage certmagic.Storage, name string) error {
	if !storage.Exists(ctx, managedKey(name)) {
		return fmt.Errorf("%w: %s", ErrNotManaged, name)
	}
	err := storage.Delete(ctx, managedKey(name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("acme: failed to delete ACME entry of %s: %w", name, err)
	}
	return nil
}

// managedNames yields every managed primary name, one bucket of the
// index at a time, so memory stays bounded by a bucket.
func (m *Manager) managedNames(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		for name, err := range keystore.HashedNames(ctx, m.storage, managedDir) {
			if err != nil {
				err = fmt.Errorf("acme: failed to list ACME index: %w", err)
			}
			if !yield(name, err) {
				return
			}
		}
	}
}
