package keystore_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

// lockCountingStorage is a real FileStorage that counts Lock calls: each
// one starts a certmagic goroutine that rewrites the lock file every
// five seconds until it finds the file gone, so a bulk run that locks
// per batch leaves dozens of them rewriting the same file ("Keeping
// lock file fresh: unexpected end of JSON input").
type lockCountingStorage struct {
	keystore.Storage
	locks atomic.Int64
}

func (l *lockCountingStorage) Lock(ctx context.Context, name string) error {
	l.locks.Add(1)
	return l.Storage.Lock(ctx, name)
}

func TestBulkRunLocksOnce(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, f *fixture, s *keystore.Store)
	}{
		{"GenerateTenants", func(t *testing.T, f *fixture, s *keystore.Store) {
			spec := testpki.TenantSpec{Count: 12, Batch: 2, Workers: 2, Origin: "http://127.0.0.1:1"}
			if err := f.ca.GenerateTenants(context.Background(), s, spec, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"Reseal", func(t *testing.T, f *fixture, s *keystore.Store) {
			// Legacy keys enough for several batches of a lock each.
			seed := f.open(t, keystore.Options{OneShot: true})
			spec := testpki.TenantSpec{Count: 300, Origin: "http://127.0.0.1:1"}
			if err := f.ca.GenerateTenants(context.Background(), seed, spec, nil); err != nil {
				t.Fatal(err)
			}
			if err := keystore.DowngradeKeys(f.dir, f.fleet); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Reseal(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			storage := &lockCountingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
			s := f.open(t, keystore.Options{Storage: storage, OneShot: true})
			tt.run(t, f, s)
			if n := storage.locks.Load(); n != 1 {
				t.Errorf("bulk run took the write lock %d times, want once", n)
			}
		})
	}
}

// TestHoldExcludesOtherWriters: while a Store holds the write lock for a
// bulk run, its own writes go through and another writer on the same
// directory (another keyctl, an edge renewing a certificate) waits.
func TestHoldExcludesOtherWriters(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{OneShot: true})
	other := f.open(t, keystore.Options{OneShot: true})
	ctx := context.Background()
	release, err := s.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, f.bundle(t, testpki.ECDSAP256, "held.example"))
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := other.Put(short, f.bundle(t, testpki.ECDSAP256, "other.example")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("another writer's Put during the hold: err = %v, want it to wait (context.DeadlineExceeded)", err)
	}
	release()
	release() // idempotent
	put(t, other, f.bundle(t, testpki.ECDSAP256, "other.example"))
	put(t, s, f.bundle(t, testpki.ECDSAP256, "after.example"))
}
