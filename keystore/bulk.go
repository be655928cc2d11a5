package keystore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/caddyserver/certmagic"
	"golang.org/x/sys/unix"
)

// BulkFileStorage is a certmagic.FileStorage for writing many tenants at
// once, such as generating a test keystore of a million. Each Store is
// still atomic for readers (a temporary file renamed into place), but is
// not fsynced one by one: Sync flushes the whole file system once at the
// end. Use it only where a crash before Sync may lose the batch, never
// for a keystore edge nodes are serving from.
type BulkFileStorage struct {
	*certmagic.FileStorage
}

// NewBulkFileStorage returns a BulkFileStorage rooted at dir.
func NewBulkFileStorage(dir string) *BulkFileStorage {
	return &BulkFileStorage{&certmagic.FileStorage{Path: dir}}
}

// Store writes value under key atomically, without fsync.
func (b *BulkFileStorage) Store(_ context.Context, key string, value []byte) error {
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

// Sync flushes everything written to the file system holding the store.
func (b *BulkFileStorage) Sync() error {
	f, err := os.Open(b.Path)
	if err != nil {
		return fmt.Errorf("keystore: failed to sync: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("keystore: failed to sync: %w", err)
	}
	return nil
}
