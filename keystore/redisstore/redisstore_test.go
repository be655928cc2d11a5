package redisstore_test

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/redistest"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/redisstore"
)

// A Redis keystore is a keystore.Storage (and a certmagic.Storage, for
// ACME: see redisstore.go).
var _ keystore.Storage = (*redisstore.Storage)(nil)

// backends are the storages the conformance tests run on: the keystore
// was built on certmagic.FileStorage, and redisstore must behave alike.
func backends(t *testing.T) map[string]certmagic.Storage {
	srv := redistest.Start(t)
	return map[string]certmagic.Storage{
		"file":  &certmagic.FileStorage{Path: t.TempDir()},
		"redis": redisstore.New(srv.Client(t), redisstore.Options{Prefix: t.Name()}),
	}
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	for name, st := range backends(t) {
		t.Run(name, func(t *testing.T) {
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(st.Store(ctx, "certs/ab/abc/record", []byte("r1")))
			must(st.Store(ctx, "certs/ab/abc/key.sealed", []byte("k1")))
			must(st.Store(ctx, "certs/ab/abd/record", []byte("r2")))
			must(st.Store(ctx, "names/01/a.example", []byte("n")))
			must(st.Store(ctx, "changes/head", []byte("7")))

			if v, err := st.Load(ctx, "certs/ab/abc/record"); err != nil || string(v) != "r1" {
				t.Errorf("Load = %q, %v", v, err)
			}
			if _, err := st.Load(ctx, "certs/ab/nope/record"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load of a missing key: %v, want fs.ErrNotExist", err)
			}
			for key, want := range map[string]bool{"certs/ab/abc/record": true, "certs/ab": true, "certs/zz": false, "names/01/b": false} {
				if got := st.Exists(ctx, key); got != want {
					t.Errorf("Exists(%s) = %v, want %v", key, got, want)
				}
			}
			list := func(dir string, recursive bool) []string {
				t.Helper()
				keys, err := st.List(ctx, dir, recursive)
				if err != nil {
					t.Fatalf("List(%s): %v", dir, err)
				}
				slices.Sort(keys)
				return keys
			}
			if got, want := list("certs/ab", false), []string{"certs/ab/abc", "certs/ab/abd"}; !slices.Equal(got, want) {
				t.Errorf("List = %v, want %v", got, want)
			}
			if got, want := list("certs", true), []string{"certs/ab", "certs/ab/abc", "certs/ab/abc/key.sealed", "certs/ab/abc/record", "certs/ab/abd", "certs/ab/abd/record"}; !slices.Equal(got, want) {
				t.Errorf("recursive List = %v, want %v", got, want)
			}
			if _, err := st.List(ctx, "trash", false); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("List of a missing directory: %v, want fs.ErrNotExist", err)
			}
			info, err := st.Stat(ctx, "certs/ab/abc/record")
			if err != nil || !info.IsTerminal || info.Size != 2 || time.Since(info.Modified) > time.Minute {
				t.Errorf("Stat = %+v, %v", info, err)
			}
			if info, err := st.Stat(ctx, "certs/ab"); err != nil || info.IsTerminal {
				t.Errorf("Stat of a directory = %+v, %v", info, err)
			}

			// Overwrite, delete a file, delete a directory with what is under it.
			must(st.Store(ctx, "certs/ab/abc/record", []byte("r1b")))
			if v, _ := st.Load(ctx, "certs/ab/abc/record"); string(v) != "r1b" {
				t.Errorf("after overwrite: %q", v)
			}
			must(st.Delete(ctx, "certs/ab/abd/record"))
			must(st.Delete(ctx, "certs/ab/abc"))
			must(st.Delete(ctx, "certs/ab/never-there"))
			if st.Exists(ctx, "certs/ab/abc/key.sealed") || st.Exists(ctx, "certs/ab/abd/record") {
				t.Error("deleted keys still exist")
			}
			// Nothing under certs/ab holds a value any more (FileStorage
			// keeps the empty directories, redisstore prunes them: either
			// is fine for the keystore).
			keys, err := st.List(ctx, "certs/ab", true)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			for _, k := range keys {
				if info, err := st.Stat(ctx, k); err == nil && info.IsTerminal {
					t.Errorf("after deleting everything under certs/ab, %s still holds a value", k)
				}
			}
			if got := list("names", true); !slices.Equal(got, []string{"names/01", "names/01/a.example"}) {
				t.Errorf("an untouched directory lists %v", got)
			}
		})
	}
}

// TestLocks: a lock excludes every other holder, on other clients too,
// and a holder that dies without unlocking blocks others only until
// its lock expires.
func TestLocks(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := redisstore.New(srv.Client(t), redisstore.Options{Prefix: "locks", LockTTL: 300 * time.Millisecond})
	b := redisstore.New(srv.Client(t), redisstore.Options{Prefix: "locks", LockTTL: 300 * time.Millisecond})

	var inside, overlaps atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		st := []*redisstore.Storage{a, b}[i%2]
		wg.Go(func() {
			for range 5 {
				if err := st.Lock(ctx, "issue_cert_x"); err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
				inside.Add(-1)
				if err := st.Unlock(ctx, "issue_cert_x"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d times two holders were inside the lock", n)
	}

	// A holder keeps its lock alive past the TTL while it works.
	if err := a.Lock(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := b.Lock(short, "long"); err == nil {
		t.Fatal("b took a lock a holds and refreshes")
	}
	if err := a.Unlock(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "long"); err == nil {
		t.Error("b unlocked a lock it does not hold")
	}

	// A crashed holder: a lock set by a client that then vanishes.
	crashed := srv.Client(t)
	if err := crashed.Set(ctx, "{locks}:l:stale", "dead-node", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Lock(ctx, "stale"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("waited %v for a stale lock", d)
	}
	b.Unlock(ctx, "stale")
}
