package keystore_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// TestVanishedKeystore moves a file keystore away under a running
// Store: cached tenants keep being served, everything else fails as
// ErrUnavailable (counted as lookup errors, never as unknown names), Err
// reports it, and moving the directory back recovers without a restart.
func TestVanishedKeystore(t *testing.T) {
	f := newFixture(t)
	put(t, f.open(t, keystore.Options{}),
		f.bundle(t, testpki.ECDSAP256, "cached.test"), f.bundle(t, testpki.ECDSAP256, "cold.test"))
	reg := prometheus.NewRegistry()
	logs := &logCounter{}
	s := f.open(t, keystore.Options{PollInterval: 20 * time.Millisecond, Registerer: reg, Logger: slog.New(logs)})
	ctx := context.Background()
	if _, err := s.Lookup(ctx, "cached.test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("Err before the move = %v", err)
	}

	away := f.dir + ".away"
	if err := os.Rename(f.dir, away); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Err reports the vanished keystore", func() bool { return s.Err() != nil })
	if err := s.Err(); !errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("Err = %v, want ErrUnavailable", err)
	}
	if _, err := s.Lookup(ctx, "cached.test"); err != nil {
		t.Errorf("cached tenant while the keystore is away: %v", err)
	}
	for range 3 {
		for _, name := range []string{"cold.test", "unknown.test"} {
			if _, err := s.Lookup(ctx, name); !errors.Is(err, keystore.ErrUnavailable) {
				t.Errorf("Lookup(%s) while the keystore is away = %v, want ErrUnavailable", name, err)
			}
		}
	}
	if n := metricSum(t, reg, "keyedge_keystore_lookups_total", "result", "error"); n != 6 {
		t.Errorf("lookups counted as errors = %v, want 6", n)
	}
	if n := metricSum(t, reg, "keyedge_keystore_lookups_total", "result", "negative"); n != 0 {
		t.Errorf("lookups counted as negative = %v, want 0", n)
	}
	if n := metricSum(t, reg, "keyedge_keystore_storage_up", "", ""); n != 0 {
		t.Errorf("keyedge_keystore_storage_up = %v while away, want 0", n)
	}
	if n := logs.errs.Load(); n > 2 {
		t.Errorf("%d ERROR lines for one outage, want at most 2 (rate-limited):\n%s", n, logs.buf.String())
	}

	if err := os.Rename(away, f.dir); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Err clears once the keystore is back", func() bool { return s.Err() == nil })
	for _, name := range []string{"cached.test", "cold.test"} {
		if _, err := s.Lookup(ctx, name); err != nil {
			t.Errorf("Lookup(%s) after the move back: %v", name, err)
		}
	}
	if _, err := s.Lookup(ctx, "unknown.test"); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("Lookup(unknown.test) after the move back = %v, want ErrNotFound", err)
	}
	if n := metricSum(t, reg, "keyedge_keystore_storage_up", "", ""); n != 1 {
		t.Errorf("keyedge_keystore_storage_up = %v after recovery, want 1", n)
	}
}

// TestVanishedKeystoreBeforePoll: a lookup that finds no file checks
// that the keystore is still there, so it does not take a vanished
// keystore for an unknown name even before the journal poll notices.
func TestVanishedKeystoreBeforePoll(t *testing.T) {
	f := newFixture(t)
	put(t, f.open(t, keystore.Options{}), f.bundle(t, testpki.ECDSAP256, "cold.test"))
	s := f.open(t, keystore.Options{PollInterval: time.Hour})
	if err := os.Rename(f.dir, f.dir+".away"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cold.test", "unknown.test"} {
		if _, err := s.Lookup(context.Background(), name); !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("Lookup(%s) = %v, want ErrUnavailable", name, err)
		}
	}
}

// TestRequireInit: a server's Open refuses a keystore that does not
// exist or was never initialised, and accepts it after Init (which is
// idempotent) or once it holds tenants.
func TestRequireInit(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	withTenant := t.TempDir()
	put(t, f.open(t, keystore.Options{Storage: &certmagic.FileStorage{Path: withTenant}}), f.bundle(t, testpki.ECDSAP256, "a.test"))
	tests := []struct {
		name string
		dir  string
		init int // times Init runs first
		want error
	}{
		{"missing directory", filepath.Join(t.TempDir(), "nothere"), 0, keystore.ErrNotInitialised},
		{"empty directory", t.TempDir(), 0, keystore.ErrNotInitialised},
		{"initialised", t.TempDir(), 1, nil},
		{"initialised twice", t.TempDir(), 2, nil},
		{"holding tenants", withTenant, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			storage := &certmagic.FileStorage{Path: tc.dir}
			for range tc.init {
				if err := keystore.Init(ctx, storage); err != nil {
					t.Fatal(err)
				}
			}
			s, err := keystore.Open(ctx, keystore.Options{Storage: storage, RequireInit: true, Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
		})
	}
}
