package bulkfile_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/bulkfile"
	"github.com/keyedge/keyedge/keystore"
)

var (
	_ keystore.Storage  = (*bulkfile.Storage)(nil)
	_ certmagic.Storage = (*bulkfile.Storage)(nil)
)

// TestStoreAndSync: values stored without fsync are where a
// certmagic.FileStorage on the same directory reads them, no temporary
// file is left, and Sync succeeds.
func TestStoreAndSync(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := bulkfile.New(dir)
	values := map[string][]byte{"names/ab/a.example": []byte("a\n"), "certs/cd/x/record": []byte("record"), "changes/head": []byte("1\n")}
	for key, value := range values {
		if err := b.Store(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Store(ctx, "changes/head", []byte("2\n")); err != nil {
		t.Fatal(err)
	}
	values["changes/head"] = []byte("2\n")
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	fs := &certmagic.FileStorage{Path: dir}
	for key, want := range values {
		if got, err := fs.Load(ctx, key); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Load(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(path)[0] == '.' {
			t.Errorf("temporary file left: %s", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
