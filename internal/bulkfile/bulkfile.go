// Package bulkfile is a certmagic.FileStorage for writing many files at
// once, such as generating a test keystore of a million tenants (keyctl
// gen-tenants, the demo, benchmarks). Each Store is still atomic for
// readers (a temporary file renamed into place), but is not fsynced one
// by one: Sync flushes everything once at the end. Use it only where a
// crash before Sync may lose the batch, never for a keystore edge nodes
// are serving from.
package bulkfile

import (
	"context"
	"os"
	"path/filepath"

	"github.com/caddyserver/certmagic"
)

// Storage is a certmagic.FileStorage whose Store does not fsync.
type Storage struct {
	*certmagic.FileStorage
}

// New returns a Storage rooted at dir.
func New(dir string) *Storage {
	return &Storage{&certmagic.FileStorage{Path: dir}}
}

// Store writes value under key atomically, without fsync.
func (b *Storage) Store(_ context.Context, key string, value []byte) error {
	name := b.Filename(key)
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
