package keystore

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/caddyserver/certmagic"
)

// certmagic's file storage is the keystore's default backend.
var _ Storage = (*certmagic.FileStorage)(nil)

// TestLockFile: the file clearFailedLock would remove is the one
// certmagic.FileStorage holds the write lock in.
func TestLockFile(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	if err := st.Lock(ctx, writeLock); err != nil {
		t.Fatal(err)
	}
	defer st.Unlock(ctx, writeLock)
	file, ok := lockFile(st, writeLock)
	if !ok {
		t.Fatal("lockFile does not recognise a certmagic.FileStorage")
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("write lock held, but no lock file at %s: %v", file, err)
	}
}

// TestHashedNames: a hashed index yields the names stored under its
// directory, and nothing for an index not there.
func TestHashedNames(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	want := []string{"a.example", "b.example", "c.example", "*.d.example"}
	for _, name := range want {
		if err := st.Store(ctx, HashedKey("idx", name), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Store(ctx, HashedKey("other", "x.example"), nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	for name, err := range HashedNames(ctx, st, "idx") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, name)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("HashedNames = %q, want %q", got, want)
	}
	for name, err := range HashedNames(ctx, st, "missing") {
		t.Errorf("HashedNames of a missing index yielded %q, %v", name, err)
	}
}
